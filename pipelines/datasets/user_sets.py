"""What the two builders of the user's own set data (`set_folder`, `set_table`) share.

The output contract, the same for both builders (docs/own-data.md):

- features: `points` (N, F) float32, N varies from set to set
  (`tfds.features.Tensor(shape=(None, F))`); `label` (`tfds.features.ClassLabel`) for classification
  or `target` (T,) float32 for regression; `set_id` (text, the set's id or relative file name);
- `info.metadata` (`tfds.core.MetadataDict`): `task` ("classification" or "regression"),
  `num_features` (F), `feature_names`, `xyz_columns` (names) and `spatial_axes` (their indices in
  `points`), `up_axis` (index of the y column when x, y, z are known), `class_names` or
  `target_names`, `class_counts` {split: {class: sets}} or `target_range` {name: [min, max]},
  `set_sizes` {split: {min, median, max}}, `max_points`, `on_too_many`, `subsampled` (sets cut
  down to `max_points`), `source` (the path read) and `source_format`.

Also here: the checks every set goes through (finite, not empty, at most `max_points`), the seeded
subsample, the seeded split and the config name derived from the parameters and the source files.

Example:

    import numpy as np
    from pipelines.datasets import user_sets
    pts, cut = user_sets.limit_points(np.ones((5, 3), np.float32), "s1", max_points=3,
                                      on_too_many="subsample", seed=0, where="table.parquet")
    assert pts.shape == (3, 3) and cut
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import pathlib
import re

import numpy as np
import tensorflow_datasets as tfds

from pipelines.datasets import DataFormatError

TASKS = ("auto", "classification", "regression")
ON_TOO_MANY = ("subsample", "refuse")
DEFAULT_MAX_POINTS = 100_000
DEFAULT_TEST_FRACTION = 0.2

log = logging.getLogger(__name__)


@dataclasses.dataclass(eq=False)
class UserSetsConfig(tfds.core.BuilderConfig):
    """Parameters both builders take (the training config's `data:` block passes them through).

    Attributes:
      path: the data: a folder (`set_folder`), a Parquet/CSV file or a folder of shards (`set_table`).
      xyz_columns: names of the features that are coordinates (x, y, z); default: the features
        named x, y, z if there are such.
      max_points: the most points a set may have.
      on_too_many: "subsample" (a seeded random `max_points` of the points, in their order) or
        "refuse" (a set larger than `max_points` stops the prepare with an error).
      test_fraction: the share of sets that go to `test` when the data names no splits.
      split_seed: seed of that split and of the subsample.
    """

    path: str = ""
    xyz_columns: tuple = ()
    max_points: int = DEFAULT_MAX_POINTS
    on_too_many: str = "subsample"
    test_fraction: float = DEFAULT_TEST_FRACTION
    split_seed: int = 0

    def check(self, kind: str) -> None:
        """Raises ValueError (one line, naming the parameter) for a value no data could satisfy."""
        if not self.path:
            raise ValueError(f"{kind} needs the data's location: pass path "
                             f"(python -m pipelines.prepare {kind} --path ...)")
        if self.on_too_many not in ON_TOO_MANY:
            raise ValueError(f"{kind}: on_too_many must be subsample or refuse, got {self.on_too_many!r}")
        if not (isinstance(self.max_points, int) and self.max_points >= 1):
            raise ValueError(f"{kind}: max_points must be a positive integer, got {self.max_points!r}")
        if not 0.0 <= self.test_fraction < 1.0:
            raise ValueError(f"{kind}: test_fraction must be in [0, 1), got {self.test_fraction!r}")


def as_tuple(value) -> tuple:
    """None, a string or a sequence of strings -> a tuple of strings (config fields are tuples)."""
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    return tuple(str(v) for v in value)


def fingerprint(files) -> list:
    """(name, size, mtime) of the source files: part of the config name, so that changed data is
    prepared afresh instead of a stale copy being reused."""
    out = []
    for f in files:
        st = pathlib.Path(f).stat()
        out.append([str(f), st.st_size, st.st_mtime_ns])
    return out


def config_name(kind: str, path: str, params: dict, files) -> str:
    """`<path's stem>_<12 hex>`: one TFDS config (one folder in the data dir) per data and parameters."""
    stem = re.sub(r"[^a-z0-9]+", "_", pathlib.Path(path).stem.lower()).strip("_") or kind
    blob = json.dumps({"kind": kind, "path": str(path), "params": params, "files": fingerprint(files)},
                      sort_keys=True, default=str)
    return f"{stem[:40]}_{hashlib.sha256(blob.encode()).hexdigest()[:12]}"


def stable_seed(set_id: str, seed: int) -> int:
    """A seed from the set's id and the split seed alone, so a set is treated alike everywhere."""
    return int.from_bytes(hashlib.sha256(f"{seed}:{set_id}".encode()).digest()[:8], "little")


def is_test(set_id: str, seed: int, fraction: float) -> bool:
    """The seeded split of data that names no splits: each set on its own, by a hash of its id."""
    return stable_seed(set_id, seed) / 2.0**64 < fraction


def check_points(points: np.ndarray, where: str) -> np.ndarray:
    """float32 (N, F) points of one set, or DataFormatError naming `where` (file, row or set)."""
    if points.ndim != 2:
        raise DataFormatError(f"{where}: expected a 2-D array (points, features), got shape "
                              f"{tuple(points.shape)}; store one row per point")
    if len(points) == 0:
        raise DataFormatError(f"{where}: the set is empty (no points); remove it or add its points")
    with np.errstate(over="ignore", invalid="ignore"):
        out = points.astype(np.float32)
    bad = ~np.isfinite(out)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        raise DataFormatError(f"{where}: row {row + 1} feature {col + 1} is {float(points[row, col])} "
                              "(NaN, Inf or beyond float32's range); fix or drop that point")
    return out


def limit_points(points: np.ndarray, set_id: str, *, max_points: int, on_too_many: str, seed: int,
                 where: str) -> tuple[np.ndarray, bool]:
    """`points`, or `max_points` of them (seeded by the set id, kept in their order) when there are
    more and `on_too_many` is "subsample"; "refuse" raises DataFormatError. Returns (points, cut)."""
    n = len(points)
    if n <= max_points:
        return points, False
    if on_too_many == "refuse":
        raise DataFormatError(f"{where}: set {set_id!r} has {n} points, more than max_points={max_points}; "
                              "raise max_points, or pass on_too_many=subsample to keep a random subset")
    rng = np.random.default_rng(stable_seed(set_id, seed))
    keep = np.sort(rng.choice(n, size=max_points, replace=False))
    return points[keep], True


def size_stats(sizes) -> dict:
    """{min, median, max} of the set sizes (ints; median as a float)."""
    sizes = np.asarray(sizes)
    if sizes.size == 0:
        return {"min": 0, "median": 0.0, "max": 0}
    return {"min": int(sizes.min()), "median": float(np.median(sizes)), "max": int(sizes.max())}


def check_train_classes(counts: dict, where: str) -> None:
    """DataFormatError when a class has sets in another split but none in `train` (a model could
    never learn it; its test score would only measure the gap)."""
    train = {c for c, n in counts.get("train", {}).items() if n}
    for split, per_class in sorted(counts.items()):
        only = sorted(c for c, n in per_class.items() if n and c not in train)
        if split != "train" and only:
            raise DataFormatError(
                f"{where}: class {only[0]!r} has sets in the {split} split but none in train"
                + (f" (also: {', '.join(map(repr, only[1:4]))})" if len(only) > 1 else "")
                + "; add training sets of it, or remove it from the data")


def xyz_of(feature_names, xyz_columns, where: str) -> tuple[list, list]:
    """(xyz names, their indices): the given ones (checked), else x, y, z where all three exist."""
    names = list(feature_names)
    if xyz_columns:
        missing = [c for c in xyz_columns if c not in names]
        if missing:
            raise DataFormatError(f"{where}: xyz column {missing[0]!r} is not among the features "
                                  f"({', '.join(names)}); name feature columns in xyz_columns")
        xyz = list(xyz_columns)
    else:
        xyz = ["x", "y", "z"] if {"x", "y", "z"} <= set(names) else []
    return xyz, [names.index(c) for c in xyz]


def features(num_features: int, task: str, class_names=None, num_targets: int = 1):
    """The FeaturesDict of the contract: points, label or target, set_id."""
    spec = {"points": tfds.features.Tensor(shape=(None, num_features), dtype=np.float32),
            "set_id": tfds.features.Text()}
    if task == "regression":
        spec["target"] = tfds.features.Tensor(shape=(num_targets,), dtype=np.float32)
    else:
        spec["label"] = (tfds.features.ClassLabel(names=list(class_names)) if class_names is not None
                         else tfds.features.ClassLabel())
    return tfds.features.FeaturesDict(spec)


def metadata(*, task, feature_names, xyz_columns, config: UserSetsConfig, source_format: str,
             class_names=None, target_names=None) -> dict:
    """The static part of `info.metadata` (what the data holds is added once it has been read)."""
    xyz, axes = xyz_of(feature_names, xyz_columns, config.path)
    meta = {"task": task, "num_features": len(feature_names), "feature_names": list(feature_names),
            "xyz_columns": xyz, "spatial_axes": axes, "max_points": config.max_points,
            "on_too_many": config.on_too_many, "source": str(config.path), "source_format": source_format}
    if len(axes) == 3:
        meta["up_axis"] = axes[1]  # y up, as in ModelNet; augmentation can override it
    if task == "regression":
        meta["target_names"] = list(target_names)
    else:
        meta["class_names"] = list(class_names)
    return meta


def log_subsampled(count: int, config: UserSetsConfig) -> None:
    if count:
        log.warning("%d set(s) had more than max_points=%d points and were subsampled to %d "
                    "(seeded by split_seed=%d and the set id)", count, config.max_points,
                    config.max_points, config.split_seed)


def config_or_path(config, path, params: dict, make_config):
    """A builder's config: the one given, or ``make_config(path, **params)``; one of the two, not both."""
    if path is not None:
        if config is not None:
            raise TypeError("pass either config= or path= (with its parameters), not both")
        return make_config(path, **params)
    if params:
        raise TypeError(f"parameters {sorted(params)} go with path=, not with config=")
    return config
