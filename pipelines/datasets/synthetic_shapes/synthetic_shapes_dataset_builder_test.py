"""Tests of the synthetic_shapes generator and its TFDS builder (TFDS's harness included)."""

import pathlib

import numpy as np
import pytest
from tensorflow_datasets import testing as tfds_testing

from pipelines.datasets.synthetic_shapes import synthetic_shapes_dataset_builder as ss
from tests.support import dummy_data as dd

DUMMY = pathlib.Path(ss.Builder.code_path).parent / "dummy_data"


class SyntheticShapesTfdsTest(tfds_testing.DatasetBuilderTestCase):
    """TFDS's checks on a small config; `dummy_data/expected_dummy.npz` holds its examples."""

    DATASET_CLASS = ss.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [dd.synthetic_dummy_config()]
    SPLITS = {"train": 10, "test": 5}

    def test_examples_are_the_committed_ones(self):
        # Same name and version must mean same data (TFDS's versioning contract): a change to the
        # generator that moves these points needs a new VERSION, and then new dummy data.
        builder = ss.Builder(data_dir=self.tmp_dir, config=self.BUILDER_CONFIG_NAMES_TO_TEST[0])
        builder.download_and_prepare()
        with open(DUMMY / "expected_dummy.npz", "rb") as f, np.load(f) as expected:
            for split in self.SPLITS:
                got = {ex["shape_id"].decode(): ex for ex in builder.as_dataset(split=split).as_numpy_iterator()}
                assert len(got) == self.SPLITS[split]
                for i in range(self.SPLITS[split]):
                    ex = got[f"{split}_{i:06d}"]
                    assert ex["label"] == expected[f"{split}_labels"][i]
                    np.testing.assert_allclose(ex["points"], expected[f"{split}_points"][i], atol=1e-5)


def test_dummy_data_is_what_the_writer_produces(tmp_path):
    written = dd.write_synthetic(tmp_path)
    assert (DUMMY / written.name).read_bytes() == written.read_bytes(), (
        "regenerate dummy_data with python -m tests.support.dummy_data (and bump VERSION)")


@pytest.mark.parametrize("label", range(len(ss.CLASS_NAMES)))
def test_every_class_is_finite_sized_and_deterministic(label):
    a = ss.generate_shape(label, np.random.default_rng(7), 300)
    b = ss.generate_shape(label, np.random.default_rng(7), 300)
    c = ss.generate_shape(label, np.random.default_rng(8), 300)
    assert a.shape == (300, 3) and a.dtype == np.float32
    assert np.isfinite(a).all()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Scale nuisance keeps shapes within ~unit size; offsets, noise and outliers stay small.
    assert 0.3 < np.linalg.norm(a - a.mean(0), axis=1).max() < 2.0


def test_rotation_is_proper_and_orthogonal():
    rng = np.random.default_rng(0)
    for _ in range(20):
        r = ss.random_rotation(rng)
        np.testing.assert_allclose(r @ r.T, np.eye(3), atol=1e-12)
        assert np.isclose(np.linalg.det(r), 1.0)


def test_surface_samplers_lie_on_their_surface():
    rng = np.random.default_rng(1)
    np.testing.assert_allclose(np.linalg.norm(ss._sphere(rng, 100), axis=1), 1.0)
    cube = ss._cube(rng, 200)
    np.testing.assert_allclose(np.abs(cube).max(axis=1), 1.0)
    torus = ss._torus(rng, 200)
    ring = np.linalg.norm(torus[:, :2], axis=1)
    tube = np.hypot(ring - 1.0, torus[:, 2])
    assert np.ptp(tube) < 1e-9  # constant tube radius
    assert np.all(ss._plane(rng, 50)[:, 2] == 0)


def test_splits_are_balanced_and_differ():
    train = list(ss.generate_split("train", 30, 64, seed=0))
    test = list(ss.generate_split("test", 30, 64, seed=0))
    assert [lab for _, lab, _ in train] == [i % 10 for i in range(30)]
    assert not np.array_equal(train[0][2], test[0][2])
    again = list(ss.generate_split("train", 30, 64, seed=0))
    assert all(np.array_equal(x[2], y[2]) for x, y in zip(train, again))
    other_seed = list(ss.generate_split("train", 30, 64, seed=1))
    assert not np.array_equal(train[0][2], other_seed[0][2])


def test_builder_prepares_a_custom_config(tmp_path):
    cfg = ss.SyntheticShapesConfig(name="t", train_size=12, test_size=5, points_per_shape=32, seed=3)
    builder = ss.Builder(data_dir=str(tmp_path), config=cfg)
    builder.download_and_prepare()
    assert builder.info.splits["train"].num_examples == 12
    assert builder.info.splits["test"].num_examples == 5
    assert builder.info.features["label"].names == list(ss.CLASS_NAMES)
    examples = list(builder.as_dataset(split="train").as_numpy_iterator())
    by_id = {ex["shape_id"].decode(): ex for ex in examples}
    expected = {f"train_{i:06d}": (lab, pts) for i, lab, pts in ss.generate_split("train", 12, 32, 3)}
    assert set(by_id) == set(expected)
    for key, (label, points) in expected.items():
        assert by_id[key]["label"] == label
        np.testing.assert_array_equal(by_id[key]["points"], points)
