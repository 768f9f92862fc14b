"""`set_table`: the user's own sets as one long table, one row per point (Parquet or CSV, sharded or not).

Columns: a set id (`set_column`), the target (`target_columns`: one class column, or one or more
numbers for regression), the features (`feature_columns`, default: every other column) and
optionally a split column (values such as train / test; default: a seeded split by a hash of the
set id, `test_fraction` of the sets in test). Rows of a set may be anywhere, in any shard.

Task (`task`): "classification" or "regression" when given; "auto" (the default) picks regression
for a floating-point target column or several target columns, classification for a string, integer
or boolean one. Class names are the column's values as text, sorted (numerically when all are
integers).

The table is read in record batches (`tables.py`), never whole: on one machine in three passes
(label columns; features into hash buckets on disk; one bucket at a time into sets), under Apache
Beam (`tfds.download.DownloadConfig(beam_runner=..., beam_options=...)`) as Beam transforms: row
groups are read in parallel and grouped by set id with a GroupByKey. The output contract is in
`pipelines/datasets/user_sets.py` and docs/own-data.md.

Example:

    import pyarrow as pa, pyarrow.parquet as pq
    from pipelines.datasets.set_table.set_table_dataset_builder import Builder
    pq.write_table(pa.table({"sid": ["a", "a", "b", "b", "c", "c"], "y": ["u", "u", "v", "v", "u", "u"],
                             "x": [1.0, 2, 3, 4, 5, 6], "z": [0.0, 1, 0, 1, 0, 1]}), "/tmp/pts.parquet")
    builder = Builder(data_dir="/tmp/tfds", path="/tmp/pts.parquet", set_column="sid",
                      target_column="y", test_fraction=0.0)
    builder.download_and_prepare()
    builder.info.metadata["class_counts"]   # {'train': {'u': 2, 'v': 1}}
"""

from __future__ import annotations

import dataclasses
import math
import pathlib
import re
import shutil
import tempfile

import numpy as np
import tensorflow_datasets as tfds

from pipelines.datasets import DataFormatError, user_sets
from pipelines.datasets.cleanup import undo_on_failure
from pipelines.datasets.set_table import tables

BUCKET_POINTS = 1 << 16   # points per spill bucket on one machine: memory is about one bucket
# Each bucket of each split is an open file while spilling; 256 stays well inside the usual limit
# of 1024 open files. Beyond 256 buckets (~1.7e7 points) buckets grow: the table's size over 256.
MAX_BUCKETS = 256
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


@dataclasses.dataclass(eq=False)
class SetTableConfig(user_sets.UserSetsConfig):
    """`UserSetsConfig` plus the columns and the task (see the module docstring)."""

    set_column: str = ""
    target_columns: tuple = ()
    feature_columns: tuple = ()
    split_column: str = ""
    task: str = "auto"
    bucket_points: int = BUCKET_POINTS


def make_config(path, *, set_column, target_column, feature_columns=None, xyz_columns=None,
                split_column=None, task: str = "auto", max_points: int = user_sets.DEFAULT_MAX_POINTS,
                on_too_many: str = "subsample", test_fraction: float = user_sets.DEFAULT_TEST_FRACTION,
                split_seed: int = 0, bucket_points: int = BUCKET_POINTS) -> SetTableConfig:
    """The config for the table at `path` with these parameters (its name identifies both).

    Args:
      path: a .parquet / .pq / .csv file, or a folder of them (shards; `_*` and `.*` files skipped).
      set_column: the column of set ids.
      target_column: the target column, or a list of them (several: a vector regression target).
      feature_columns: the per-point features, in this order; default every other column.
      xyz_columns: which features are coordinates; default x, y, z if all are features.
      split_column: a column naming each set's split; default a seeded split by set id.
      task: "auto", "classification" or "regression".
      max_points, on_too_many, test_fraction, split_seed: see `user_sets.UserSetsConfig`.
      bucket_points: points per spill bucket when preparing on one machine.
    """
    if task not in user_sets.TASKS:
        raise ValueError(f"set_table: task must be auto, classification or regression, got {task!r}")
    if not set_column:
        raise ValueError("set_table needs the set-id column (--set-column)")
    params = dict(set_column=str(set_column), target_columns=user_sets.as_tuple(target_column),
                  feature_columns=user_sets.as_tuple(feature_columns), xyz_columns=user_sets.as_tuple(xyz_columns),
                  split_column=str(split_column or ""), task=task, max_points=max_points,
                  on_too_many=on_too_many, test_fraction=float(test_fraction), split_seed=int(split_seed),
                  bucket_points=int(bucket_points))
    SetTableConfig(name="probe", path=str(path), **params).check("set_table")
    if not params["target_columns"]:
        raise ValueError("set_table needs a target column (--target-column)")
    root = pathlib.Path(path).expanduser().resolve()
    name = user_sets.config_name("set_table", str(root), params, tables._data_files(root))
    return SetTableConfig(name=name, path=str(root), description=f"point table {root}", **params)


def class_order(names) -> list:
    """Class names sorted, numerically when every one is an integer ("2" before "10")."""
    names = sorted(set(names))
    if all(re.fullmatch(r"-?\d+", n) for n in names):
        return sorted(names, key=int)
    return names


class Builder(tfds.core.GeneratorBasedBuilder):
    """The user's sets as a long table of points (see the module docstring)."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release: Parquet and CSV, sharded, on one machine or Beam."}

    def __init__(self, *, config=None, path=None, data_dir=None, version=None, file_format=None, **params):
        """Takes `config` (a `SetTableConfig`), or `path` and the parameters of `make_config`."""
        config = user_sets.config_or_path(config, path, params, make_config)
        self._table = self._split_of = self._scan = None
        self._beam = False
        self._spill_dir = None
        self._shared = {}
        super().__init__(data_dir=data_dir, config=config, version=version, file_format=file_format)

    def download_and_prepare(self, *args, **kwargs):
        # Also under plain TFDS use: a prepare that fails on bad data leaves nothing behind.
        with undo_on_failure(self.data_dir_root, self.name):
            return super().download_and_prepare(*args, **kwargs)

    def _spec(self) -> tables.TableSpec:
        if self._table is None:
            cfg = self.builder_config
            cfg.check("set_table")
            self._table = tables.TableSpec.open(
                cfg.path, set_column=cfg.set_column, target_columns=cfg.target_columns,
                feature_columns=list(cfg.feature_columns) or None, split_column=cfg.split_column or None,
                task=cfg.task)
        return self._table

    def _info(self) -> tfds.core.DatasetInfo:
        cfg = self.builder_config
        if cfg is None:  # the bare class (TFDS's registry, catalogue): no data to describe yet
            return self.dataset_info_from_configs(features=user_sets.features(None, "classification"),
                                                  supervised_keys=("points", "label"))
        spec = self._spec()
        # Class names are known only after reading the target column: the label gets them in
        # `_split_generators` (as TFDS's ImageFolder does), and a prepared copy restores them.
        meta = user_sets.metadata(task=spec.task, feature_names=spec.feature_columns,
                                  xyz_columns=cfg.xyz_columns, config=cfg,
                                  source_format="+".join(sorted(set(spec.formats))),
                                  class_names=[], target_names=spec.target_columns)
        meta.pop("class_names", None)
        meta.update(set_column=spec.set_column, target_columns=list(spec.target_columns),
                    split_column=spec.split_column)
        key = "target" if spec.task == "regression" else "label"
        return self.dataset_info_from_configs(
            features=user_sets.features(spec.num_features, spec.task, None, len(spec.target_columns)),
            supervised_keys=("points", key),
            metadata=tfds.core.MetadataDict(meta),
        )

    # -- generation -----------------------------------------------------------------------------

    def _download_and_prepare(self, dl_manager, download_config):
        self._beam = download_config.beam_runner is not None or download_config.beam_options is not None
        try:
            super()._download_and_prepare(dl_manager, download_config)
        finally:
            if self._spill_dir is not None:
                shutil.rmtree(self._spill_dir, ignore_errors=True)
                self._spill_dir = None
        user_sets.log_subsampled(self.info.metadata.get("subsampled", 0), self.builder_config)

    def _splits(self, spec, scan) -> dict:
        """{set id: split}, checking the split column's names."""
        cfg = self.builder_config
        if spec.split_column:
            for sid, split in scan.splits.items():
                if not _SPLIT_NAME.match(split):
                    index, row = scan.first_seen[sid]
                    raise DataFormatError(f"{spec.files[index]} row {row}: split {split!r} of set {sid!r} is not "
                                          "a split name (letters, digits, _: train, test, validation)")
            return dict(scan.splits)
        return {sid: "test" if user_sets.is_test(sid, cfg.split_seed, cfg.test_fraction) else "train"
                for sid in scan.counts}

    def _split_generators(self, dl_manager):
        del dl_manager  # the data is the user's table
        cfg, spec = self.builder_config, self._spec()
        scan = tables.scan_sets(spec)
        split_of = self._splits(spec, scan)
        names = sorted(set(split_of.values()), key=lambda s: (s != "train", s))
        too_many = [sid for sid, n in scan.counts.items() if n > cfg.max_points]
        if too_many and cfg.on_too_many == "refuse":
            sid = too_many[0]
            index, row = scan.first_seen[sid]
            user_sets.limit_points(np.empty((scan.counts[sid], 0)), sid, max_points=cfg.max_points,
                                   on_too_many="refuse", seed=cfg.split_seed,
                                   where=f"{spec.files[index]} row {row}")
        sizes = {s: [] for s in names}
        for sid, n in scan.counts.items():
            sizes[split_of[sid]].append(min(n, cfg.max_points))
        meta = {"set_sizes": {s: user_sets.size_stats(sizes[s]) for s in names},
                "subsampled": len(too_many), "num_points": scan.rows}
        if spec.task == "classification":
            classes = class_order(scan.targets.values())
            counts = {s: {} for s in names}
            for sid, target in scan.targets.items():
                per = counts[split_of[sid]]
                per[target] = per.get(target, 0) + 1
            user_sets.check_train_classes(counts, f"{spec.root} (column {spec.target_columns[0]!r})")
            self.info.features["label"].names = classes
            meta.update(class_names=classes, class_counts=counts)
        else:
            values = np.array(list(scan.targets.values()), dtype=np.float64).reshape(len(scan.targets), -1)
            meta["target_range"] = {name: [float(values[:, i].min()), float(values[:, i].max())]
                                    for i, name in enumerate(spec.target_columns)}
        self.info.metadata.update(meta)
        self._split_of, self._scan = split_of, scan
        if self._beam:
            return {s: self._beam_split(s) for s in names}
        buckets = min(MAX_BUCKETS, max(1, math.ceil(scan.rows / cfg.bucket_points)))
        folder = pathlib.Path(self.data_dir_root) / self.name
        folder.mkdir(parents=True, exist_ok=True)
        self._spill_dir = pathlib.Path(tempfile.mkdtemp(prefix=".spill-", dir=folder))
        files = tables.spill(spec, split_of.__getitem__, buckets, self._spill_dir)
        return {s: self._generate_examples(s, files.get(s, [])) for s in names}

    def _generate_examples(self, split, bucket_files):
        for sid, points in tables.grouped_sets(bucket_files):
            yield sid, make_example(sid, points, self._scan.targets[sid], self._spec().task,
                                    self.builder_config)

    def _beam_split(self, split):
        """The split's examples as a Beam transform; the read and the GroupByKey are shared by all
        splits of one pipeline (each split keeps its sets)."""
        import apache_beam as beam

        spec, cfg = self._spec(), self.builder_config
        shared = self._shared

        @beam.ptransform_fn
        def generate(pbegin):
            key = id(pbegin.pipeline)
            if key not in shared:
                shared[key] = (pbegin
                               | "ListChunks" >> beam.Create(spec.chunks())
                               | "ReadChunks" >> beam.FlatMap(tables.read_chunk, spec)
                               | "GroupBySet" >> beam.GroupByKey()
                               | "MakeSets" >> beam.Map(_make_set, spec.split_column or None, cfg))
            return (shared[key]
                    | f"Keep_{split}" >> beam.Filter(_in_split, split)
                    | f"Examples_{split}" >> beam.Map(_keyed_example, spec.task, cfg))

        return generate()


def make_example(sid, points, target, task, cfg):
    """The TFDS example of one set (subsampled or refused past `cfg.max_points`)."""
    points, _ = user_sets.limit_points(points, sid, max_points=cfg.max_points, on_too_many=cfg.on_too_many,
                                       seed=cfg.split_seed, where=f"{cfg.path} set {sid!r}")
    if task == "regression":
        return {"points": points, "target": np.asarray(target, np.float32), "set_id": sid}
    return {"points": points, "label": target, "set_id": sid}


def _in_split(item, split):
    return item[0] == split


def _keyed_example(item, task, cfg):
    _, sid, points, target = item
    return sid, make_example(sid, points, target, task, cfg)


def _make_set(grouped, split_column, cfg):
    """(split, set id, points, target) of one grouped set."""
    sid, parts = grouped
    points, target, split = tables.assemble(list(parts))
    if not split_column:
        split = "test" if user_sets.is_test(sid, cfg.split_seed, cfg.test_fraction) else "train"
    return split, sid, points, target
