"""`digits`: scikit-learn's handwritten digits as variable-size point sets.

Real data that ships inside scikit-learn (1797 scans of 8x8 images, UCI "optdigits" test set, in
`sklearn/datasets/data/digits.csv.gz`: one image a line, 64 pixel values 0..16 then the digit), so it
runs through the whole pipeline on a fresh machine without a download. Each image becomes the set of
its non-zero pixels, one point `(x, y, intensity)` per pixel: x, y in [-1, 1] (y up), intensity in
(0, 1]. Sets have 16 to 42 points, so batches need padding and a mask.

Example:

    from sklearn.datasets import load_digits
    from pipelines.datasets.digits.digits_dataset_builder import image_to_points
    points = image_to_points(load_digits().images[0])   # (n, 3) float32, n = non-zero pixels
"""

from __future__ import annotations

import gzip
import importlib.resources
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from pipelines.datasets import DataFormatError

CLASS_NAMES = tuple(str(d) for d in range(10))
# 360 of the 1797 images, stratified by class; the same fraction of a smaller file (the test fixture).
TEST_FRACTION = 360 / 1797
SPLIT_SEED = 0


def bundled_csv() -> pathlib.Path:
    """scikit-learn's copy of the data: `digits.csv.gz`, the file `load_digits` reads."""
    return pathlib.Path(str(importlib.resources.files("sklearn.datasets") / "data" / "digits.csv.gz"))


def read_csv(path) -> tuple[np.ndarray, np.ndarray]:
    """Images (n, 8, 8) and labels (n,) of a `digits.csv.gz` file (64 pixels, then the label)."""
    with gzip.open(path, "rt") as f:
        table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    if table.shape[1] != 65:
        raise DataFormatError(f"{path}: {table.shape[1]} columns, expected 65 (64 pixels and the label); "
                              "not scikit-learn's digits.csv.gz: reinstall scikit-learn")
    return table[:, :64].reshape(-1, 8, 8), table[:, 64]


def image_to_points(image: np.ndarray) -> np.ndarray:
    """(8, 8) image with values 0..16 -> (n, 3) float32 points (x, y, intensity) of non-zero pixels."""
    rows, cols = np.nonzero(image)
    size = image.shape[0] - 1
    x = 2.0 * cols / size - 1.0
    y = 1.0 - 2.0 * rows / size   # image rows grow downwards; y grows upwards
    return np.stack([x, y, image[rows, cols] / 16.0], axis=1).astype(np.float32)


def split_indices(labels: np.ndarray) -> dict:
    """Deterministic stratified split of the images with these labels: {"train": idx, "test": idx}.

    For the 1797 images of scikit-learn's file: 1437 train, 360 test.
    """
    from sklearn.model_selection import train_test_split

    test_size = round(len(labels) * TEST_FRACTION)
    train, test = train_test_split(np.arange(len(labels)), test_size=test_size, stratify=labels,
                                   random_state=SPLIT_SEED)
    return {"train": np.sort(train), "test": np.sort(test)}


class Builder(tfds.core.GeneratorBasedBuilder):
    """scikit-learn digits as point sets (x, y, intensity) of the non-zero pixels."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "points": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                "shape_id": tfds.features.Text(),
            }),
            supervised_keys=("points", "label"),
            # Channel 2 is intensity, not space: rotations turn the x-y plane, scaling and jitter
            # touch x and y only.
            metadata=tfds.core.MetadataDict(up_axis=2, spatial_axes=[0, 1]),
            homepage="https://archive.ics.uci.edu/dataset/80/optical+recognition+of+handwritten+digits",
            citation="Alpaydin, E. and Kaynak, C. (1998). Optical Recognition of Handwritten Digits. UCI.",
        )

    # The file is read where scikit-learn installed it, not through the download manager: it is
    # already on the machine, and copying it into TFDS's downloads would gain nothing. Tests point
    # this at `dummy_data/digits.csv.gz`.
    source_csv = staticmethod(bundled_csv)

    def _split_generators(self, dl_manager):
        del dl_manager  # nothing to download
        images, labels = read_csv(self.source_csv())
        return {split: self._generate_examples(images, labels, idx)
                for split, idx in split_indices(labels).items()}

    def _generate_examples(self, images, labels, indices):
        for i in indices:
            key = f"digit_{i:04d}"
            yield key, {"points": image_to_points(images[i]), "label": int(labels[i]), "shape_id": key}
