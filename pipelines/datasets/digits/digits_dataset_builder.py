"""`digits`: scikit-learn's handwritten digits as variable-size point sets.

Real data that ships inside scikit-learn (1797 scans of 8x8 images, UCI "optdigits" test set), so it
runs through the whole pipeline on a fresh machine without a download. Each image becomes the set of
its non-zero pixels, one point `(x, y, intensity)` per pixel: x, y in [-1, 1] (y up), intensity in
(0, 1]. Sets have 16 to 42 points, so batches need padding and a mask.

Example:

    from sklearn.datasets import load_digits
    from pipelines.datasets.digits.digits_dataset_builder import image_to_points
    points = image_to_points(load_digits().images[0])   # (n, 3) float32, n = non-zero pixels
"""

from __future__ import annotations

import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = tuple(str(d) for d in range(10))
TEST_SIZE = 360          # 20% of 1797, stratified by class
SPLIT_SEED = 0


def image_to_points(image: np.ndarray) -> np.ndarray:
    """(8, 8) image with values 0..16 -> (n, 3) float32 points (x, y, intensity) of non-zero pixels."""
    rows, cols = np.nonzero(image)
    size = image.shape[0] - 1
    x = 2.0 * cols / size - 1.0
    y = 1.0 - 2.0 * rows / size   # image rows grow downwards; y grows upwards
    return np.stack([x, y, image[rows, cols] / 16.0], axis=1).astype(np.float32)


def split_indices():
    """Deterministic stratified split of the 1797 images: {"train": idx, "test": idx}."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    target = load_digits().target
    train, test = train_test_split(np.arange(len(target)), test_size=TEST_SIZE, stratify=target,
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

    def _split_generators(self, dl_manager):
        del dl_manager  # the data ships with scikit-learn
        return {split: self._generate_examples(idx) for split, idx in split_indices().items()}

    def _generate_examples(self, indices):
        from sklearn.datasets import load_digits

        digits = load_digits()
        for i in indices:
            key = f"digit_{i:04d}"
            yield key, {"points": image_to_points(digits.images[i]), "label": int(digits.target[i]),
                        "shape_id": key}
