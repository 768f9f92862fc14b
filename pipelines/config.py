"""Training configs: YAML files read into one typed config (frozen dataclasses).

`Config` composes the sections of a training run around the model section that `setnet.models`
owns (`setnet.models.ModelConfig`): ``data``, ``model``, ``train`` (with ``train.teleport``),
``spectrum``, ``export`` and ``mlflow``. Each key is a dataclass field defined once, with its
type, default, rule and meaning (`setnet.config.setting`); consumers read attributes
(``cfg.train.epochs``) and ``cfg.to_dict()`` gives plain dicts for YAML and MLflow.

A config file names only what differs from the defaults (``configs/default.yaml`` is the full
reference). ``extends: other.yaml`` starts from another config, looked for next to the file
first, then among the shipped configs (``configs/``), and overrides it key by key. Every key is
checked on load: an unknown key fails with the nearest valid key and the file it came from, a
wrong type or an out-of-range value with the allowed range. Numbers follow YAML 1.2, so
``learning_rate: 1e-3`` is a number (PyYAML alone reads it as a string).

>>> cfg = load_config(None, overrides=["train.epochs=2", "train.learning_rate=1e-3"])
>>> cfg.train.epochs, cfg.train.learning_rate, cfg.data.name
(2, 0.001, 'synthetic_shapes')
"""

from __future__ import annotations

import dataclasses
import pathlib
import re
from typing import Any

import yaml

from pipelines.datasets import DATASETS, USER_DATASETS
from setnet.config import ConfigError, Section, apply, reference_rows, setting, suggest
from setnet.models.config import BLOCKS, ModelConfig
from setnet.teleport.config import TeleportConfig

CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"

__all__ = ["CONFIG_DIR", "Config", "ConfigError", "DataConfig", "ExportConfig", "MlflowConfig", "SpectrumConfig",
           "TeleportConfig", "TrainConfig", "dump", "flatten", "load_config", "parse_override"]


# --------------------------------------------------------------------------- sections


@dataclasses.dataclass(frozen=True)
class DataConfig(Section):
    name: str = setting("synthetic_shapes", "dataset: synthetic_shapes, digits, modelnet40 or modelnet10, "
                        "optionally with a builder config (synthetic_shapes/small); set_folder or set_table for "
                        "your own sets (docs/own-data.md)")
    path: str | None = setting(None, "set_folder / set_table: the data (a folder of set files; a Parquet/CSV "
                               "table or a folder of shards), relative to the working directory")
    set_column: str | None = setting(None, "set_table: the column of set ids")
    target_column: tuple[str, ...] = setting((), "set_table: the target column (several: a vector regression "
                                             "target)")
    feature_columns: tuple[str, ...] = setting((), "set_table: the per-point features in order ([]: every other "
                                               "column)")
    xyz_columns: tuple[str, ...] = setting((), "set_folder / set_table: the 3 coordinate features that rotation, "
                                           "scaling and jitter act on ([]: x, y, z if named so, else the first "
                                           "three features when there are 3 or more)")
    task: str = setting("auto", "set_table: auto (a float or vector target is regression, else classification), "
                        "classification or regression", choices=("auto", "classification", "regression"))
    max_points: int = setting(100_000, "set_folder / set_table: the most points a stored set keeps", min=1)
    on_too_many: str = setting("subsample", "set_folder / set_table: a larger set is subsampled (seeded) or "
                               "refused", choices=("subsample", "refuse"))
    num_points: int = setting(256, "points per set", min=1, max=1 << 20)
    batch_size: int = setting(32, "global batch size (split across replicas)", min=1, max=1 << 16)
    train_split: str = setting("train[:90%]", "split to train on (TFDS split syntax)")
    val_split: str = setting("train[90%:]", "split for per-epoch validation")
    test_split: str = setting("test", "split for the final test metrics")
    data_dir: str | None = setting(None, "TFDS data dir (null: $TFDS_DATA_DIR, else data/tfds)")
    manual_dir: str | None = setting(None, "folder with manually downloaded data (ModelNet)")
    allow_partial: bool = setting(False, "accept an incomplete ModelNet copy (for smoke runs only)")
    augment: dict | None = setting({"rotate": True, "scale": [0.8, 1.25], "jitter": 0.01},
                                   "training augmentation (pipelines.input.AUGMENT_DEFAULTS; null: none)")
    buckets: tuple[int, ...] = setting((), "set sizes to pad up to (bounds XLA recompilations; [] = pad to "
                                       "powers of two)", item_min=1)
    cache: bool = setting(True, "cache decoded sets in memory")

    def check(self):
        dataset = self.name.partition("/")[0]
        if dataset not in DATASETS:
            raise ConfigError(f"name: unknown dataset {self.name!r}{suggest(dataset, DATASETS)} "
                              f"(known: {', '.join(DATASETS)}, optionally with a builder config like "
                              f"'synthetic_shapes/small')")
        if sorted(self.buckets) != list(self.buckets):
            raise ConfigError(f"buckets: must be increasing, got {list(self.buckets)}")
        user = dataset in USER_DATASETS
        if user and not self.path:
            raise ConfigError(f"path: {dataset} needs the data's location, e.g. path: data/my_sets "
                              "(docs/own-data.md)")
        if dataset == "set_table" and not (self.set_column and self.target_column):
            missing = "set_column" if not self.set_column else "target_column"
            raise ConfigError(f"{missing}: set_table needs the set-id column and the target column, "
                              "e.g. set_column: sid and target_column: label")
        if self.xyz_columns and len(self.xyz_columns) != 3:
            raise ConfigError(f"xyz_columns: name the 3 coordinate features (x, y, z), got {list(self.xyz_columns)}")
        given = [k for k in _USER_KEYS if getattr(self, k)]
        if not user and given:
            raise ConfigError(f"{given[0]}: only set_folder and set_table read it, but name is {self.name!r}")
        if dataset == "set_folder":
            table_only = [k for k in ("set_column", "target_column", "feature_columns") if getattr(self, k)]
            if table_only or self.task != "auto":
                key = table_only[0] if table_only else "task"
                raise ConfigError(f"{key}: set_table reads it; set_folder takes its classes from the "
                                  "folder names")

    def builder_params(self) -> dict | None:
        """The `set_folder` / `set_table` builder's parameters (None for the other datasets)."""
        dataset = self.name.partition("/")[0]
        if dataset not in USER_DATASETS:
            return None
        params = {"path": self.path, "xyz_columns": list(self.xyz_columns) or None,
                  "max_points": self.max_points, "on_too_many": self.on_too_many}
        if dataset == "set_table":
            target = list(self.target_column)
            params.update(set_column=self.set_column, target_column=target[0] if len(target) == 1 else target,
                          feature_columns=list(self.feature_columns) or None, task=self.task)
        return params


# Keys only the user-data builders read; a value given for another dataset is a mistake.
_USER_KEYS = ("path", "set_column", "target_column", "feature_columns", "xyz_columns")


@dataclasses.dataclass(frozen=True)
class TrainConfig(Section):
    epochs: int = setting(10, "epochs to train", min=1, max=100000)
    steps_per_epoch: int | None = setting(None, "cap on steps per epoch (null: the whole split)", min=1)
    optimizer: str = setting("adam", "optimizer", choices=("adam", "adamw", "sgd"))
    learning_rate: float = setting(1e-3, "peak learning rate", min=0.0, max=10.0, min_exclusive=True)
    schedule: str = setting("cosine", "learning-rate schedule", choices=("constant", "cosine"))
    warmup_epochs: int = setting(0, "linear warm-up epochs", min=0)
    weight_decay: float = setting(0.0, "decoupled weight decay (adamw)", min=0.0, max=1.0)
    momentum: float = setting(0.9, "momentum (sgd)", min=0.0, max=1.0, max_exclusive=True)
    label_smoothing: float = setting(0.0, "label smoothing", min=0.0, max=1.0, max_exclusive=True)
    loss: str = setting("auto", "training loss: auto is cross_entropy for classification and mse for regression "
                        "(the dataset's task)", choices=("auto", "cross_entropy", "mse", "huber"))
    huber_delta: float = setting(1.0, "huber: where the loss turns from quadratic to linear", min=0.0,
                                 min_exclusive=True)
    strategy: str = setting("auto", "tf.distribute strategy", choices=("auto", "one_device", "mirrored", "multi_worker"))
    xla: bool = setting(True, "compile the step with XLA (jit_compile)")
    steps_per_execution: int = setting(1, "training steps per call of the compiled function (as Keras' "
                                       "steps_per_execution; batch callbacks run once per call)", min=1, max=100000)
    mixed_precision: str = setting("none", "compute dtype with float32 variables (Keras mixed policy; float16 adds "
                                   "loss scaling); none: float32", choices=("none", "bfloat16", "float16"))
    resume: str = setting("auto", "auto: resume an unfinished run of the same name; never: always start afresh",
                          choices=("auto", "never"))
    log_every: int = setting(10, "read the running loss and accuracy from the device and update the progress "
                             "bar every this many steps", min=1)
    deterministic: bool = setting(False, "TensorFlow op determinism: a run and its resumption after a kill are "
                                  "bit-identical (slower; docs/training.md)")
    checkpoint_every_steps: int | None = setting(None, "also checkpoint every this many steps inside an epoch "
                                                 "(null: at epoch ends only)", min=1)
    checkpoint_dir: str | None = setting(None, "root of the job checkpoints, <root>/<experiment>/<run> (any "
                                         "tf.io.gfile location, e.g. gs://; multi_worker: storage every worker "
                                         "reads); null: <run folder>/checkpoints")
    teleport: TeleportConfig = setting(TeleportConfig(), "symmetry teleportation")

    def check(self):
        if self.warmup_epochs and self.warmup_epochs >= self.epochs:
            raise ConfigError(f"warmup_epochs: must be less than train.epochs ({self.epochs}), "
                              f"got {self.warmup_epochs}")


@dataclasses.dataclass(frozen=True)
class SpectrumConfig(Section):
    """Network spectrum (`setnet.spectral.spectrum`): energy of each layer's activations per
    isotypic component of S_N, measured on validation batches and logged to MLflow."""

    enabled: bool = setting(False, "measure and log the network spectrum")
    every: int = setting(0, "every this many epochs (0: once, after training)", min=0)
    max_batches: int = setting(4, "validation batches per measurement", min=1)


@dataclasses.dataclass(frozen=True)
class ExportConfig(Section):
    enabled: bool = setting(True, "export a SavedModel at the end")
    root: str = setting("exports", "export root (TF Serving layout <root>/<model_name>/<version>/)")
    model_name: str | None = setting(None, "model name under the root (null: the experiment name)")
    invariance_clouds: int = setting(8, "test clouds for the exported model's invariance check", min=1)
    invariance_permutations: int = setting(4, "random permutations per cloud", min=1)

    def check(self):
        # The export is written with pathlib and read back by the invariance check: a gs:// root
        # would become a local folder named "gs:".
        if "://" in self.root:
            raise ConfigError(f"root: exports are written to a local folder, got {self.root!r}; export "
                              "locally and copy the version folder (e.g. gsutil cp -r), or point TF Serving's "
                              "--model_base_path at a synced folder")


@dataclasses.dataclass(frozen=True)
class MlflowConfig(Section):
    enabled: bool = setting(True, "track the run in MLflow")
    tracking_uri: str | None = setting(None, "tracking URI (null: $MLFLOW_TRACKING_URI, else "
                                       "sqlite:///<runs_dir>/mlflow.db)")
    registered_model: str | None = setting("setnet", "Model Registry name each export becomes a new version of "
                                           "(null: do not register; docs/tracking.md)")


@dataclasses.dataclass(frozen=True)
class Config(Section):
    """A whole training run: what `load_config` returns and `pipelines.train.train` runs."""

    experiment: str = setting("setnet-default", "MLflow experiment name")
    run_name: str | None = setting(None, "run folder and MLflow run name (null: derived from the config)")
    runs_dir: str = setting("runs", "folder for checkpoints, history, plots and the default MLflow store")
    seed: int = setting(0, "random seed for weights, shuffling and dropout", min=0, max=2**31 - 1)
    data: DataConfig = setting(DataConfig(), "dataset and input pipeline")
    model: ModelConfig = setting(ModelConfig(), "the classifier (setnet.models.ModelConfig)")
    train: TrainConfig = setting(TrainConfig(), "optimisation")
    spectrum: SpectrumConfig = setting(SpectrumConfig(), "network spectrum")
    export: ExportConfig = setting(ExportConfig(), "SavedModel export")
    mlflow: MlflowConfig = setting(MlflowConfig(), "tracking")


# --------------------------------------------------------------------------- YAML


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader reading numbers as YAML 1.2 does: ``1e-3`` and ``1E5`` are floats, not strings."""


Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"))


def _read_yaml(path: pathlib.Path) -> dict:
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        known = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"config file {path} not found; the shipped configs are: {known}") from None
    except IsADirectoryError:
        inside = ", ".join(sorted(p.name for p in path.glob("*.yaml"))[:5]) or "no .yaml files"
        raise ConfigError(f"config {path} is a directory ({inside}); pass a YAML file, "
                          f"e.g. --config configs/default.yaml") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"config {path} is not UTF-8 text (byte {e.start}); save it as UTF-8") from None
    except OSError as e:
        raise ConfigError(f"config {path} cannot be read: {e.strerror}") from None
    try:
        data = yaml.load(text, Loader=Yaml12Loader)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {yaml_problem(e)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (key: value lines), "
                          f"got {type(data).__name__}")
    return data


def yaml_problem(e: yaml.YAMLError) -> str:
    """'line 3, column 7: <problem>': PyYAML's multi-line message in one line."""
    mark = getattr(e, "problem_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}" if mark else problem


def _resolve_extends(parent: Any, path: pathlib.Path) -> pathlib.Path:
    if not isinstance(parent, str) or not parent:
        raise ConfigError(f"extends: must be a file name, got {parent!r} in {path}")
    for candidate in (path.parent / parent, CONFIG_DIR / parent):
        if candidate.is_file():
            return candidate
    known = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"extends: {parent!r} is neither next to {path} nor in {CONFIG_DIR} (shipped: {known}) "
                      f"in {path}")


def _load_file(path: pathlib.Path, seen: tuple = ()) -> Config:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself via {' -> '.join(map(str, seen))}")
    raw = _read_yaml(path)
    parent = raw.pop("extends", None)
    base = _load_file(_resolve_extends(parent, path), seen + (path,)) if parent is not None else Config()
    return apply(base, raw, source=str(path), root=Config)


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); the value is read as YAML (1.2 numbers)."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        parsed = yaml.load(value, Loader=Yaml12Loader) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({yaml_problem(e)})") from None
    return key.split("."), parsed


def load_config(path: str | pathlib.Path | None = None, overrides: list[str] | tuple = ()) -> Config:
    """Load and check a config file (None: configs/default.yaml), then apply ``--set`` overrides.

    Args:
        path: YAML file.
        overrides: ``KEY=VALUE`` strings with dotted keys (``train.epochs=5``), values read as YAML.

    Returns:
        The resolved `Config`: every key present, typed and checked.

    Raises:
        ConfigError: unreadable file, unknown key (naming the nearest valid one), wrong type or
            out-of-range value, each naming the file or override it came from.

    Example:

    >>> load_config("configs/modelnet.yaml", ["data.batch_size=16"]).data.batch_size
    16
    """
    if path is None:
        cfg = _load_file(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else Config()
    else:
        cfg = _load_file(pathlib.Path(path))
    parsed = []
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "extends":
            raise ConfigError("--set extends=...: pass the file with --config instead")
        nested: Any = value
        for k in reversed(keys):
            nested = {k: nested}
        parsed.append((text, nested))
    for i, (text, nested) in enumerate(parsed):
        try:
            cfg = apply(cfg, nested, source=f"--set {text}", root=Config)
        except ConfigError:
            # A rule across keys may hold only once a later --set is in (--set train.epochs=1
            # --set train.warmup_epochs=0 on a config with warm-up): the rest applied together
            # decide; if they fail too, this override's own error is the one to show.
            together: dict = {}
            for _, later in parsed[i:]:
                _merge_into(together, later)
            try:
                return apply(cfg, together, source="--set " + " ".join(t for t, _ in parsed[i:]), root=Config)
            except ConfigError:
                pass
            raise
    return cfg


def _merge_into(target: dict, update: dict) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(target.get(key), dict):
            _merge_into(target[key], value)
        else:
            target[key] = value


# --------------------------------------------------------------------------- output


def flatten(cfg: Config | dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 5}} -> {'train.epochs': 5}; lists of blocks become 'model.blocks.0.units' etc."""
    if isinstance(cfg, Section):
        cfg = cfg.to_dict()
    out: dict[str, Any] = {}
    for key, value in cfg.items():
        path = f"{prefix}.{key}" if prefix else key
        if isinstance(value, dict):
            out.update(flatten(value, path))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for i, item in enumerate(value):
                out.update(flatten(item, f"{path}.{i}"))
        else:
            out[path] = value
    return out


def dump(cfg: Config) -> str:
    """The resolved config as YAML (what the run keeps as config.yaml); it loads back to `cfg`."""
    return yaml.safe_dump(cfg.to_dict(), sort_keys=False, default_flow_style=None)


def reference_markdown() -> str:
    """The key tables of docs/training.md, from the dataclasses (a test checks the docs hold them)."""
    lines = ["| key | type | default | allowed | meaning |", "|---|---|---|---|---|"]
    for key, kind, default, allowed, doc in reference_rows(Config):
        lines.append(f"| `{key}` | {kind} | {default} | {allowed} | {doc} |")
    lines += ["", "| block key | blocks | default | allowed | meaning |", "|---|---|---|---|---|"]
    seen: dict[str, list[str]] = {}
    rows: dict[str, tuple] = {}
    for kind, cls in BLOCKS.items():
        for key, _, default, allowed, doc in reference_rows(cls):
            seen.setdefault(key, []).append(kind)
            rows.setdefault(key, (default, allowed, doc))  # kind: the first block class's, linear
    for key, kinds in seen.items():
        where = "all" if len(kinds) == len(BLOCKS) else ", ".join(kinds)
        default, allowed, doc = rows[key]
        lines.append(f"| `{key}` | {where} | {default} | {allowed} | {doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(reference_markdown())
