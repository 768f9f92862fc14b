"""Prepares the real ModelNet40 subset in `../shared/data/modelnet40-subset/` (156 shapes).

$SETNET_SHARED_DIR may point at the `shared` folder (or at the subset itself). A missing subset is a
failure, never a skip (in CI and everywhere else): this is the one test that runs real ModelNet end to end.
"""

import os
import pathlib

import h5py
import numpy as np
import pytest

from pipelines import datasets
from pipelines.datasets import IncompleteDataError
from pipelines.datasets.modelnet import sources
from pipelines.input import make_dataset

ROOT = pathlib.Path(__file__).resolve().parents[3]


def _subset_dir() -> pathlib.Path:
    base = pathlib.Path(os.environ.get("SETNET_SHARED_DIR", ROOT.parent / "shared"))
    for candidate in (base, base / "data" / "modelnet40-subset"):
        if (candidate / "modelnet40_normal_resampled_subset").is_dir():
            return candidate
    message = (f"the real ModelNet40 subset is not at {base / 'data' / 'modelnet40-subset'}; "
               "set SETNET_SHARED_DIR to the folder that holds data/modelnet40-subset")
    pytest.fail(message)


@pytest.fixture(scope="module")
def subset():
    return _subset_dir()


@pytest.fixture(scope="module")
def prepared(subset, tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("tfds")
    builder = datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=subset, allow_partial=True)
    return builder, data_dir


def test_partial_copy_is_refused_by_default(subset, tmp_path):
    with pytest.raises(IncompleteDataError) as err:
        datasets.prepare("modelnet40", data_dir=tmp_path, manual_dir=subset)
    assert "found 127 of 9843 train, 29 of 2468 test shapes, 12155 missing" in str(err.value)


def test_real_subset_counts_classes_and_normalisation(prepared, subset):
    builder, _ = prepared
    info = builder.info
    assert info.config_name == "modelnet40_partial"
    assert {k: v.num_examples for k, v in info.splits.items()} == {"train": 127, "test": 29}
    assert info.metadata["found"] == {"train": 127, "test": 29}
    assert info.metadata["expected"] == {"train": 9843, "test": 2468}
    assert info.metadata["source"] == "text" and info.metadata["partial"] is True
    names = (subset / "modelnet40_normal_resampled_subset" / "modelnet40_shape_names.txt").read_text().split()
    assert info.features["label"].names == names == list(sources.MODELNET40_CLASSES)
    labels = set()
    for split in ("train", "test"):
        for ex in builder.as_dataset(split=split).as_numpy_iterator():
            points = ex["points"]
            assert points.shape == (2048, 3)
            assert np.abs(points.mean(axis=0)).max() < 1e-5
            assert np.linalg.norm(points, axis=1).max() == pytest.approx(1.0, abs=1e-5)
            labels.add(int(ex["label"]))
    # The subset's README says "all 40 classes", but it has no `door` shape: 39 class folders.
    present = {d.name for d in (subset / "modelnet40_normal_resampled_subset").iterdir() if d.is_dir()}
    assert labels == {names.index(c) for c in present}
    assert len(present) >= 39


@pytest.mark.parametrize("split", ["train", "test"])
def test_points_agree_with_the_derived_hdf5(prepared, subset, split):
    builder, _ = prepared
    derived = subset / "derived_pointnet_layout"
    ids = (derived / f"modelnet40_real_subset_{split}_ids.txt").read_text().split()
    examples = {ex["shape_id"].decode(): ex for ex in builder.as_dataset(split=split).as_numpy_iterator()}
    assert set(examples) == set(ids)
    with h5py.File(derived / f"modelnet40_real_subset_{split}.h5", "r") as f:
        data, normal, label = f["data"][:], f["normal"][:], f["label"][:, 0]
    for row, shape_id in enumerate(ids):
        np.testing.assert_allclose(examples[shape_id]["points"], data[row], atol=1e-5)
        np.testing.assert_allclose(examples[shape_id]["normals"], normal[row], atol=1e-6)
        assert examples[shape_id]["label"] == label[row]


def test_real_data_through_the_input_pipeline(prepared, subset):
    _, data_dir = prepared
    ds = make_dataset("modelnet40", "train", num_points=1024, batch_size=16, training=True,
                      augment={"rotate": True, "scale": True, "jitter": True, "dropout": True},
                      data_dir=data_dir, manual_dir=subset, allow_partial=True)
    batches = list(ds.as_numpy_iterator())
    assert len(batches) == 127 // 16
    features, label = batches[0]
    assert features["points"].shape == (16, 1024, 3) and label.max() < 40
    assert np.isfinite(features["points"]).all()


def test_modelnet10_from_the_same_subset(subset, tmp_path):
    builder = datasets.prepare("modelnet10", data_dir=tmp_path, manual_dir=subset, allow_partial=True)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 50, "test": 11}
    assert builder.info.metadata["expected"] == {"train": 3991, "test": 908}
    assert builder.info.features["label"].num_classes == 10
