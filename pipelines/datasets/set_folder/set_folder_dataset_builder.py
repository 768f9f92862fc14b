"""`set_folder`: the user's own sets, one file per set, in one folder per class.

Layout, as TFDS's ImageFolder: `DIR/<class>/<set file>`, or `DIR/train/<class>/...` and
`DIR/test/<class>/...` (any folder next to `train/` is a split too). Without split folders, a seeded
stratified split puts `test_fraction` of each class's sets (none of a class with one set) in `test`.
File formats: see `readers.py`. The per-point feature count F is read from the first set and every
other set must have it. The task is classification (the folder names are the classes). The output
contract (features, `info.metadata`) is in `pipelines/datasets/user_sets.py` and docs/own-data.md.

Each data folder and choice of parameters is its own TFDS config (named after the folder, with a
hash of the parameters and of the files' names, sizes and times), so changed data is prepared
afresh and several folders live side by side in one data dir.

Example:

    import pathlib, numpy as np
    from pipelines.datasets.set_folder.set_folder_dataset_builder import Builder
    for cls in ("a", "b"):
        pathlib.Path(f"/tmp/my_sets/{cls}").mkdir(parents=True, exist_ok=True)
        for i in range(3):
            np.save(f"/tmp/my_sets/{cls}/{i}.npy", np.random.rand(10, 3).astype("float32"))
    builder = Builder(data_dir="/tmp/tfds", path="/tmp/my_sets")
    builder.download_and_prepare()
    builder.info.metadata["class_names"]   # ['a', 'b']
"""

from __future__ import annotations

import dataclasses
import pathlib

import numpy as np
import tensorflow_datasets as tfds

from pipelines.datasets import DataFormatError, user_sets
from pipelines.datasets.cleanup import undo_on_failure
from pipelines.datasets.set_folder import readers


@dataclasses.dataclass(eq=False)
class SetFolderConfig(user_sets.UserSetsConfig):
    """`UserSetsConfig` plus `points_per_mesh`: the points drawn on each `.off` / `.ply` mesh."""

    points_per_mesh: int = 2048


def make_config(path, *, xyz_columns=None, max_points: int = user_sets.DEFAULT_MAX_POINTS,
                on_too_many: str = "subsample", test_fraction: float = user_sets.DEFAULT_TEST_FRACTION,
                split_seed: int = 0, points_per_mesh: int = 2048) -> SetFolderConfig:
    """The config for the folder `path` with these parameters (its name identifies both)."""
    params = dict(xyz_columns=user_sets.as_tuple(xyz_columns), max_points=max_points,
                  on_too_many=on_too_many, test_fraction=float(test_fraction), split_seed=int(split_seed),
                  points_per_mesh=int(points_per_mesh))
    probe = SetFolderConfig(name="probe", path=str(path), **params)
    probe.check("set_folder")
    if points_per_mesh < 1:
        raise ValueError(f"set_folder: points_per_mesh must be a positive integer, got {points_per_mesh!r}")
    root = pathlib.Path(path).expanduser().resolve()
    layout = readers.find_sets(root)
    name = user_sets.config_name("set_folder", str(root), params, layout.files())
    return SetFolderConfig(name=name, path=str(root), description=f"sets in {root}", **params)


def split_layout(layout: readers.Layout, test_fraction: float, seed: int) -> dict:
    """{split: [(class, rel)]}: the folder's own splits, or a seeded stratified train/test split."""
    if layout.given:
        return {s: items for s, items in layout.sets.items() if items}
    by_class = {}
    for cls, rel in layout.sets["all"]:
        by_class.setdefault(cls, []).append(rel)
    out = {"train": [], "test": []}
    for cls, rels in sorted(by_class.items()):
        order = np.random.default_rng(user_sets.stable_seed(cls, seed)).permutation(len(rels))
        n_test = min(round(len(rels) * test_fraction), len(rels) - 1)
        test = set(order[:n_test].tolist())
        for i, rel in enumerate(rels):
            out["test" if i in test else "train"].append((cls, rel))
    return {s: sorted(items, key=lambda t: t[1]) for s, items in out.items() if items}


class Builder(tfds.core.GeneratorBasedBuilder):
    """The user's sets, one file per set, a folder per class (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: npy, npz, txt/csv, h5, ply, off."}

    def __init__(self, *, config=None, path=None, data_dir=None, version=None, file_format=None, **params):
        """Takes `config` (a `SetFolderConfig`), or `path` and the parameters of `make_config`."""
        config = user_sets.config_or_path(config, path, params, make_config)
        self._layout = self._first = None
        self._sizes, self._subsampled = {}, 0
        super().__init__(data_dir=data_dir, config=config, version=version, file_format=file_format)

    def download_and_prepare(self, *args, **kwargs):
        # Also under plain TFDS use: a prepare that fails on a bad file leaves nothing behind.
        with undo_on_failure(self.data_dir_root, self.name):
            return super().download_and_prepare(*args, **kwargs)

    # -- what the data holds --------------------------------------------------------------------

    def _scan(self):
        """(layout, splits, F, feature names) of the configured folder, read once."""
        if self._layout is None:
            cfg = self.builder_config
            cfg.check("set_folder")
            layout = readers.find_sets(cfg.path)
            splits = split_layout(layout, cfg.test_fraction, cfg.split_seed)
            cls, rel = next(iter(splits.get("train") or next(iter(splits.values()))))
            points, names = readers.read_set(layout.root / rel, seed=user_sets.stable_seed(rel, cfg.split_seed),
                                             points_per_mesh=cfg.points_per_mesh)
            if points.ndim != 2 or points.size == 0:
                user_sets.check_points(points, str(layout.root / rel))  # names the shape or the emptiness
            width = points.shape[1]
            if width == 0:
                raise DataFormatError(f"{layout.root / rel}: no features (shape {tuple(points.shape)}); a set "
                                      "file holds one row per point and at least one column")
            self._named = names is not None
            if names is None:
                names = list(readers.MESH_NAMES[:width]) + [f"f{i}" for i in range(3, width)]
                names = names if width >= 3 else [f"f{i}" for i in range(width)]
            self._layout, self._first = (layout, splits), (width, list(names))
        return self._layout + self._first

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        if cfg is None:  # the bare class (TFDS's registry, catalogue): no data to describe yet
            return self.dataset_info_from_configs(
                features=user_sets.features(None, "classification"),
                supervised_keys=("points", "label"))
        layout, splits, width, names = self._scan()
        classes = sorted({c for items in splits.values() for c, _ in items})
        meta = user_sets.metadata(task="classification", feature_names=names,
                                  xyz_columns=cfg.xyz_columns, config=cfg, source_format="folder",
                                  class_names=classes)
        return self.dataset_info_from_configs(
            features=user_sets.features(width, "classification", classes),
            supervised_keys=("points", "label"),
            metadata=tfds.core.MetadataDict(meta),
        )

    # -- generation -----------------------------------------------------------------------------

    def _split_generators(self, dl_manager):
        del dl_manager  # the data is the user's folder
        layout, splits, _, _ = self._scan()
        counts = {s: {} for s in splits}
        for split, items in splits.items():
            for cls, _ in items:
                counts[split][cls] = counts[split].get(cls, 0) + 1
        user_sets.check_train_classes(counts, str(layout.root))
        self.info.metadata["class_counts"] = counts
        self._sizes, self._subsampled = {s: [] for s in splits}, 0
        return {split: self._generate_examples(split, items) for split, items in splits.items()}

    def _generate_examples(self, split, items):
        cfg = self.builder_config
        layout, _, width, names = self._scan()
        for cls, rel in items:
            path = layout.root / rel
            points, file_names = readers.read_set(path, seed=user_sets.stable_seed(rel, cfg.split_seed),
                                                  points_per_mesh=cfg.points_per_mesh)
            if points.ndim == 2 and len(points) and points.shape[1] != width:
                raise DataFormatError(f"{path}: {points.shape[1]} features per point, but the first set "
                                      f"has {width} ({', '.join(names)}); every set needs the same features")
            # Files without names (.npy, .npz, headerless text) sit beside named ones (.ply, text
            # with a header): only two sets that both name their features must agree.
            if (file_names is not None and self._named and points.ndim == 2 and list(file_names) != names
                    and len(points)):
                raise DataFormatError(f"{path}: features named {', '.join(file_names)}, but the first set's "
                                      f"are {', '.join(names)}; give every file the same columns")
            points = user_sets.check_points(points, str(path))
            points, cut = user_sets.limit_points(points, rel, max_points=cfg.max_points,
                                                 on_too_many=cfg.on_too_many, seed=cfg.split_seed,
                                                 where=str(path))
            self._subsampled += cut
            self._sizes[split].append(len(points))
            yield rel, {"points": points, "label": cls, "set_id": rel}

    def _download_and_prepare(self, dl_manager, download_config):
        super()._download_and_prepare(dl_manager, download_config)
        self.info.metadata["set_sizes"] = {s: user_sets.size_stats(v) for s, v in self._sizes.items()}
        self.info.metadata["subsampled"] = int(self._subsampled)
        user_sets.log_subsampled(self._subsampled, self.builder_config)

