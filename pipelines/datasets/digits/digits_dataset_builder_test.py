"""Tests of the digits point-set builder: TFDS's harness on `dummy_data/digits.csv.gz` (50 images
in the format of scikit-learn's file), and the real 1797 images."""

import pathlib
from unittest import mock

import numpy as np
from sklearn.datasets import load_digits
from tensorflow_datasets import testing as tfds_testing

from pipelines.datasets.digits import digits_dataset_builder as db
from tests.support import dummy_data as dd

DUMMY = pathlib.Path(db.Builder.code_path).parent / "dummy_data"


class DigitsTfdsTest(tfds_testing.DatasetBuilderTestCase):
    DATASET_CLASS = db.Builder
    SPLITS = {"train": 40, "test": 10}  # 5 images per digit, the real split's test fraction

    def setUp(self):
        super().setUp()
        source = mock.patch.object(db.Builder, "source_csv", staticmethod(lambda: DUMMY / "digits.csv.gz"))
        source.start()
        self.addCleanup(source.stop)


def test_dummy_data_is_what_the_writer_produces(tmp_path):
    written = dd.write_digits(tmp_path)
    assert (DUMMY / written.name).read_bytes() == written.read_bytes()
    images, labels = db.read_csv(written)
    assert images.shape == (50, 8, 8) and np.bincount(labels).tolist() == [5] * 10


def test_csv_reader_matches_load_digits():
    images, labels = db.read_csv(db.bundled_csv())
    digits = load_digits()
    np.testing.assert_array_equal(images, digits.images)
    np.testing.assert_array_equal(labels, digits.target)


def test_image_to_points_keeps_every_nonzero_pixel():
    image = np.zeros((8, 8))
    image[0, 0], image[7, 7], image[2, 5] = 16, 8, 1
    points = db.image_to_points(image)
    assert points.dtype == np.float32
    expected = {(-1.0, 1.0, 1.0), (1.0, -1.0, 0.5), (2 * 5 / 7 - 1, 1 - 2 * 2 / 7, 1 / 16)}
    got = sorted(tuple(float(v) for v in p) for p in points)
    np.testing.assert_allclose(got, sorted(expected), atol=1e-6)


def test_split_is_stratified_disjoint_and_complete():
    target = load_digits().target
    split = db.split_indices(target)
    train, test = split["train"], split["test"]
    assert len(train) == 1437 and len(test) == 360
    assert not set(train) & set(test) and len(set(train) | set(test)) == 1797
    assert np.all(np.bincount(target[test], minlength=10) >= 35)
    np.testing.assert_array_equal(db.split_indices(target)["test"], test)


def test_prepared_sets_match_the_images(tmp_path):
    builder = db.Builder(data_dir=str(tmp_path))
    builder.download_and_prepare()
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 1437, "test": 360}
    digits = load_digits()
    sizes = []
    for ex in builder.as_dataset(split="test").take(50).as_numpy_iterator():
        i = int(ex["shape_id"].decode().split("_")[1])
        assert ex["label"] == digits.target[i]
        np.testing.assert_array_equal(ex["points"], db.image_to_points(digits.images[i]))
        sizes.append(len(ex["points"]))
    assert len(set(sizes)) > 5  # variable-size sets
