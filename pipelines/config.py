"""Training configs: YAML files validated against one schema.

A config is a YAML mapping. Every key is checked on load: an unknown key fails
with the nearest valid key and the file it came from, a wrong type or an
out-of-range value fails with the allowed range. Omitted keys take the
defaults below, so a config names only what differs (``default.yaml`` is the
full reference). ``extends: other.yaml`` starts from another config (path
relative to the file) and overrides it key by key.

>>> cfg = load_config(None, overrides=["train.epochs=2"])
>>> cfg["train"]["epochs"], cfg["data"]["name"]
(2, 'synthetic_shapes')
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import pathlib
from typing import Any

import yaml

DATASETS = ("synthetic_shapes", "digits", "modelnet40", "modelnet10")
CONFIG_DIR = pathlib.Path(__file__).resolve().parent.parent / "configs"
DEFAULT_CONFIG = CONFIG_DIR / "default.yaml"


class ConfigError(ValueError):
    """A config file or override is invalid; the message says where and how to fix it."""


@dataclasses.dataclass(frozen=True)
class Field:
    """One leaf of the schema: its type, default and allowed values."""

    kind: str  # "int" | "float" | "str" | "bool" | "int_list" | "float_list" | "mapping"
    default: Any
    doc: str = ""
    choices: tuple | None = None
    min: float | None = None
    max: float | None = None
    min_exclusive: bool = False
    max_exclusive: bool = False
    nullable: bool = False
    positive: bool = True  # int_list items must be >= 1 (else >= 0)


@dataclasses.dataclass(frozen=True)
class BlockList:
    """A list of model blocks; each block's keys depend on its ``kind``."""

    default: tuple
    doc: str = ""


F = Field

# Keys each block kind accepts (shared keys first). A block is a mapping with `kind`.
BLOCK_SCHEMA: dict[str, dict[str, Field]] = {
    "common": {
        "kind": F("str", "linear", "equivariant layer type", choices=("linear", "quadratic", "folded")),
        "units": F("int", 64, "output channels", min=1, max=1 << 16),
        "pooling": F("str", "mean", "pool used inside the layer", choices=("sum", "mean", "max")),
        "activation": F("str", "relu", "activation after normalisation", choices=("relu", "gelu", "tanh", "linear")),
        "normalization": F("bool", True, "SetNormalization after the layer"),
        "dropout": F("float", 0.0, "dropout rate after the block", min=0.0, max=1.0, max_exclusive=True),
    },
    "linear": {},
    "quadratic": {
        "symmetric": F("bool", True, "identify x_i x_j with x_j x_i (4 orbits instead of 5)"),
        "rank": F("int", None, "factorised quadratic kernel rank (null: full kernel)", min=1, nullable=True),
    },
    "folded": {
        "group": F("str", "hyperoctahedral", "fold group", choices=("pairs", "hyperoctahedral")),
        "order": F("str", "linear", "folded map order", choices=("linear", "quadratic")),
    },
}

SCHEMA: dict[str, Any] = {
    "extends": F("str", None, "config this one starts from (path relative to this file)", nullable=True),
    "experiment": F("str", "setnet-default", "MLflow experiment name"),
    "run_name": F("str", None, "run folder and MLflow run name (null: derived from the config)", nullable=True),
    "runs_dir": F("str", "runs", "folder for checkpoints, history, plots and the default MLflow store"),
    "seed": F("int", 0, "random seed for weights, shuffling and dropout", min=0, max=2**31 - 1),
    "data": {
        "name": F("str", "synthetic_shapes", "dataset: synthetic_shapes, digits, modelnet40 or modelnet10, "
                  "optionally with a builder config (synthetic_shapes/small)"),
        "num_points": F("int", 256, "points per set", min=1, max=1 << 20),
        "batch_size": F("int", 32, "global batch size (split across replicas)", min=1, max=1 << 16),
        "train_split": F("str", "train[:90%]", "split to train on (TFDS split syntax)"),
        "val_split": F("str", "train[90%:]", "split for per-epoch validation"),
        "test_split": F("str", "test", "split for the final test metrics"),
        "data_dir": F("str", None, "TFDS data dir (null: $TFDS_DATA_DIR, else data/tfds)", nullable=True),
        "manual_dir": F("str", None, "folder with manually downloaded data (ModelNet)", nullable=True),
        "allow_partial": F("bool", False, "accept an incomplete ModelNet copy (for smoke runs only)"),
        "augment": F("mapping", {"rotate": True, "scale": [0.8, 1.25], "jitter": 0.01},
                     "training augmentation (pipelines.input.AUGMENT_DEFAULTS; null: none)", nullable=True),
        "buckets": F("int_list", (), "set sizes to pad up to (bounds XLA recompilations; [] = pad to powers of two)"),
        "cache": F("bool", True, "cache decoded sets in memory"),
    },
    "model": {
        "type": F("str", "setnet", "architecture", choices=("setnet", "pointnet")),
        "blocks": BlockList(({"kind": "linear", "units": 64}, {"kind": "linear", "units": 128}),
                            "equivariant blocks, in order"),
        "global_pool": F("str", "max", "masked invariant pooling over the set", choices=("max", "mean", "sum")),
        "head": F("int_list", (128,), "hidden units of the classification head"),
        "head_dropout": F("float", 0.3, "dropout rate in the head", min=0.0, max=1.0, max_exclusive=True),
        "l2": F("float", 0.0, "L2 weight regularisation", min=0.0, max=1.0),
        "input_norm": F("str", "center_scale", "per-set input normalisation", choices=("none", "center", "center_scale")),
        "radius_feature": F("bool", True, "append each point's distance to the centroid as a 4th channel"),
        "norm_momentum": F("float", 0.9, "momentum of SetNormalization's moving statistics", min=0.0, max=1.0,
                           max_exclusive=True),
    },
    "train": {
        "epochs": F("int", 10, "epochs to train", min=1, max=100000),
        "steps_per_epoch": F("int", None, "cap on steps per epoch (null: the whole split)", min=1, nullable=True),
        "optimizer": F("str", "adam", "optimizer", choices=("adam", "adamw", "sgd")),
        "learning_rate": F("float", 1e-3, "peak learning rate", min=0.0, max=10.0, min_exclusive=True),
        "schedule": F("str", "cosine", "learning-rate schedule", choices=("constant", "cosine")),
        "warmup_epochs": F("int", 0, "linear warm-up epochs", min=0),
        "weight_decay": F("float", 0.0, "decoupled weight decay (adamw)", min=0.0, max=1.0),
        "momentum": F("float", 0.9, "momentum (sgd)", min=0.0, max=1.0, max_exclusive=True),
        "label_smoothing": F("float", 0.0, "label smoothing", min=0.0, max=1.0, max_exclusive=True),
        "strategy": F("str", "auto", "tf.distribute strategy", choices=("auto", "one_device", "mirrored", "multi_worker")),
        "xla": F("bool", True, "compile the step with XLA (jit_compile)"),
        "resume": F("str", "auto", "auto: resume an unfinished run of the same name; never: always start afresh",
                    choices=("auto", "never")),
        "log_every": F("int", 1, "progress-bar update interval in steps", min=1),
        # Symmetry teleportation (setnet.teleport.TeleportCallback; keys as its CONFIG_DEFAULTS).
        "teleport": {
            "enabled": F("bool", False, "teleport the weights along exact parameter symmetries"),
            "group": F("str", "scaling", "symmetry group to teleport along", choices=("scaling", "gl", "auto")),
            "epochs": F("int_list", (0,), "teleport at the start of these epochs (0-based)", positive=False),
            "steps": F("int_list", (), "... and before these optimizer steps (0-based global step)",
                       positive=False),
            "max_teleports": F("int", 3, "at most this many teleports in the whole run", min=0),
            "ascent_steps": F("int", 10, "gradient-ascent steps per teleport", min=1, max=10000),
            "learning_rate": F("float", 0.1, "ascent step size on log ‖∇L‖²", min=0.0, min_exclusive=True),
            "max_grad_norm": F("float", None, "cap on ‖∇L‖ after a teleport (null: none)", min=0.0,
                               min_exclusive=True, nullable=True),
            "max_grad_growth": F("float", None, "cap on the factor ‖∇L‖ may grow by in a teleport (null: none)",
                                 min=1.0, nullable=True),
            "optimizer_state": F("str", "transform", "map the optimizer state along (transform) or keep it",
                                 choices=("transform", "keep")),
        },
    },
    # Network spectrum (setnet.spectral.spectrum): energy of each layer's activations per isotypic
    # component of S_N, measured on validation batches and logged to MLflow.
    "spectrum": {
        "enabled": F("bool", False, "measure and log the network spectrum"),
        "every": F("int", 0, "every this many epochs (0: once, after training)", min=0),
        "max_batches": F("int", 4, "validation batches per measurement", min=1),
    },
    "export": {
        "enabled": F("bool", True, "export a SavedModel at the end"),
        "root": F("str", "exports", "export root (TF Serving layout <root>/<model_name>/<version>/)"),
        "model_name": F("str", None, "model name under the root (null: the experiment name)", nullable=True),
        "invariance_clouds": F("int", 8, "test clouds for the exported model's invariance check", min=1),
        "invariance_permutations": F("int", 4, "random permutations per cloud", min=1),
    },
    "mlflow": {
        "enabled": F("bool", True, "track the run in MLflow"),
        "tracking_uri": F("str", None, "tracking URI (null: $MLFLOW_TRACKING_URI, else sqlite:///<runs_dir>/mlflow.db)",
                          nullable=True),
        "registered_model": F("str", "setnet", "Model Registry name each export becomes a new version of "
                              "(null: do not register)", nullable=True),
    },
}


# --------------------------------------------------------------------------- defaults


def _defaults(schema: dict) -> dict:
    out = {}
    for key, spec in schema.items():
        if isinstance(spec, dict):
            out[key] = _defaults(spec)
        elif isinstance(spec, BlockList):
            out[key] = [_check_block(f"{key}[{i}]", dict(b), "the schema") for i, b in enumerate(spec.default)]
        else:
            out[key] = list(spec.default) if isinstance(spec.default, tuple) else copy.deepcopy(spec.default)
    return out


def defaults() -> dict:
    """The full default config (no file read)."""
    return _defaults(SCHEMA)


# --------------------------------------------------------------------------- validation


def _where(source: str | None) -> str:
    return f" in {source}" if source else ""


def _suggest(key: str, valid) -> str:
    """'; did you mean X?' naming the closest valid keys (all of them when several are equally close)."""
    valid = list(valid)
    scored = sorted(((difflib.SequenceMatcher(None, key, v).ratio(), v) for v in valid), key=lambda t: -t[0])
    if not scored or scored[0][0] < 0.5:
        return ""
    best = [repr(v) for r, v in scored if r == scored[0][0]]
    return f"; did you mean {' or '.join(best)}?"


def _type_name(field: Field) -> str:
    names = {"int": "an integer", "float": "a number", "str": "a string", "bool": "true or false",
             "int_list": "a list of integers", "float_list": "a list of numbers", "mapping": "a mapping"}
    return names[field.kind] + (" or null" if field.nullable else "")


def _check_value(path: str, value: Any, field: Field, source: str | None) -> Any:
    """The value converted to the field's type, or a ConfigError saying what is allowed."""
    def fail(why: str):
        raise ConfigError(f"{path}: {why}{_where(source)}")

    if value is None:
        if field.nullable:
            return None
        fail(f"must be {_type_name(field)}, got null")
    kind = field.kind
    if kind == "bool":
        if not isinstance(value, bool):
            fail(f"must be true or false, got {value!r}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            if isinstance(value, float) and value.is_integer():
                value = int(value)
            else:
                fail(f"must be an integer, got {value!r}")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            fail(f"must be a number, got {value!r}")
        value = float(value)
    elif kind == "str":
        if not isinstance(value, str):
            fail(f"must be a string, got {value!r}")
    elif kind in ("int_list", "float_list"):
        if not isinstance(value, (list, tuple)):
            fail(f"must be {_type_name(field)}, got {value!r}")
        want_int = kind == "int_list"
        for item in value:
            ok = isinstance(item, int) if want_int else isinstance(item, (int, float))
            if isinstance(item, bool) or not ok:
                fail(f"must be {_type_name(field)}, got item {item!r}")
            if want_int and item < (1 if field.positive else 0):
                fail(f"items must be {'positive' if field.positive else '>= 0'}, got {item!r}")
        value = list(value)
    elif kind == "mapping":
        if not isinstance(value, dict):
            fail(f"must be a mapping (key: value lines), got {value!r}")
    if field.choices is not None and value not in field.choices:
        fail(f"must be one of {', '.join(map(str, field.choices))}, got {value!r}{_suggest(str(value), field.choices)}")
    if field.min is not None and kind in ("int", "float"):
        if value < field.min or (field.min_exclusive and value == field.min):
            op = ">" if field.min_exclusive else ">="
            fail(f"must be {op} {field.min}, got {value!r}")
    if field.max is not None and kind in ("int", "float"):
        if value > field.max or (field.max_exclusive and value == field.max):
            op = "<" if field.max_exclusive else "<="
            fail(f"must be {op} {field.max}, got {value!r}")
    return value


def _block_fields(kind: str) -> dict[str, Field]:
    return {**BLOCK_SCHEMA["common"], **BLOCK_SCHEMA[kind]}


def _check_block(path: str, block: Any, source: str | None) -> dict:
    if not isinstance(block, dict):
        raise ConfigError(f"{path}: each block must be a mapping like {{kind: linear, units: 64}}, "
                          f"got {block!r}{_where(source)}")
    kind = block.get("kind", "linear")
    kind = _check_value(f"{path}.kind", kind, BLOCK_SCHEMA["common"]["kind"], source)
    fields = _block_fields(kind)
    out = {}
    for key, value in block.items():
        if key not in fields:
            other = [k for k in BLOCK_SCHEMA if k not in ("common", kind) and key in BLOCK_SCHEMA[k]]
            hint = f" (it belongs to {other[0]!r} blocks)" if other else _suggest(key, fields)
            raise ConfigError(f"unknown key {path}.{key!r} for a {kind!r} block{hint}{_where(source)}; "
                              f"valid keys: {', '.join(fields)}")
        out[key] = _check_value(f"{path}.{key}", value, fields[key], source)
    for key, field in fields.items():
        out.setdefault(key, copy.deepcopy(field.default))
    return out


def _sections_with(key: str, schema: dict = None, prefix: str = "") -> list[str]:
    """Dotted paths of every schema entry named ``key`` (e.g. 'epochs' -> ['train.epochs'])."""
    out = []
    for name, spec in (SCHEMA if schema is None else schema).items():
        path = f"{prefix}.{name}" if prefix else name
        if isinstance(spec, dict):
            out += _sections_with(key, spec, path)
        elif name == key and prefix:
            out.append(path)
    return out


def _merge(base: dict, update: dict, schema: dict, prefix: str, source: str | None) -> dict:
    """base updated by update, validating every key of update against schema."""
    if not isinstance(update, dict):
        where = f"{prefix!r}" if prefix else "the top level"
        raise ConfigError(f"{where} must be a mapping, got {update!r}{_where(source)}")
    out = dict(base)
    for key, value in update.items():
        path = f"{prefix}.{key}" if prefix else str(key)
        if key not in schema:
            # A valid key put in the wrong section is a commoner slip than a typo, and an exact
            # name elsewhere is a surer hint than a fuzzy match here.
            homes = _sections_with(str(key))
            near = (f"; did you mean {' or '.join(repr(h) for h in homes)}?" if homes
                    else _suggest(str(key), schema))
            raise ConfigError(f"unknown key {path!r}{near}{_where(source)}")
        spec = schema[key]
        if isinstance(spec, dict):
            out[key] = _merge(base.get(key, {}), value if value is not None else {}, spec, path, source)
        elif isinstance(spec, BlockList):
            if not isinstance(value, list) or not value:
                raise ConfigError(f"{path}: must be a non-empty list of blocks, got {value!r}{_where(source)}")
            out[key] = [_check_block(f"{path}[{i}]", b, source) for i, b in enumerate(value)]
        else:
            out[key] = _check_value(path, value, spec, source)
    return out


def _read_yaml(path: pathlib.Path) -> dict:
    try:
        text = path.read_text()
    except FileNotFoundError:
        known = ", ".join(sorted(p.name for p in CONFIG_DIR.glob("*.yaml")))
        raise ConfigError(f"config file {path} not found; the shipped configs are: {known}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"{path} is not valid YAML: {e}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys, got {type(data).__name__}")
    return data


def _load_file(path: pathlib.Path, seen: tuple = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself via {' -> '.join(map(str, seen))}")
    raw = _read_yaml(path)
    parent = raw.get("extends")
    if parent is not None:
        if not isinstance(parent, str):
            raise ConfigError(f"extends: must be a file name, got {parent!r} in {path}")
        base = _load_file(path.parent / parent, seen + (path,))
    else:
        base = defaults()
    merged = _merge(base, raw, SCHEMA, "", str(path))
    merged["extends"] = None
    return merged


def parse_override(text: str) -> tuple[list[str], Any]:
    """'train.epochs=5' -> (['train', 'epochs'], 5); the value is read as YAML."""
    if "=" not in text:
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set train.epochs=5")
    key, _, value = text.partition("=")
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {text!r}: empty key")
    try:
        parsed = yaml.safe_load(value) if value.strip() else None
    except yaml.YAMLError as e:
        raise ConfigError(f"--set {text!r}: the value is not valid YAML ({e})") from None
    return key.split("."), parsed


def _nest(keys: list[str], value: Any) -> dict:
    out: Any = value
    for k in reversed(keys):
        out = {k: out}
    return out


def load_config(path: str | pathlib.Path | None = None, overrides: list[str] | tuple = ()) -> dict:
    """Load and validate a config file (None: configs/default.yaml, or the built-in defaults if absent).

    Args:
        path: YAML file.
        overrides: ``KEY=VALUE`` strings with dotted keys (``train.epochs=5``), values read as YAML.

    Returns:
        The resolved config: every key of the schema present, types checked.

    Raises:
        ConfigError: unknown key (naming the nearest valid one), wrong type or out-of-range value,
            each naming the file or override it came from.
    """
    if path is None:
        cfg = _load_file(DEFAULT_CONFIG) if DEFAULT_CONFIG.exists() else defaults()
    else:
        cfg = _load_file(pathlib.Path(path))
    for text in overrides:
        keys, value = parse_override(text)
        if keys[0] == "extends":
            raise ConfigError("--set extends=...: pass the file with --config instead")
        cfg = _merge(cfg, _nest(keys, value), SCHEMA, "", f"--set {text}")
    _check_consistency(cfg)
    return cfg


def _check_consistency(cfg: dict) -> None:
    """Rules that involve more than one key."""
    dataset = cfg["data"]["name"].partition("/")[0]
    if dataset not in DATASETS:
        raise ConfigError(f"data.name: unknown dataset {cfg['data']['name']!r}{_suggest(dataset, DATASETS)} "
                          f"(known: {', '.join(DATASETS)}, optionally with a builder config like "
                          f"'synthetic_shapes/small')")
    model = cfg["model"]
    for i, block in enumerate(model["blocks"]):
        if block["kind"] in ("quadratic", "folded") and block["pooling"] == "max":
            raise ConfigError(f"model.blocks[{i}].pooling: a {block['kind']} block pools with sum or mean, "
                              f"got 'max'")
    if model["type"] == "setnet":
        folds = sum(1 for b in model["blocks"] if b["kind"] == "folded")
        if folds and model["blocks"][0]["kind"] == "folded":
            raise ConfigError("model.blocks[0]: a folded block pairs its input with the previous block's input, "
                              "so it cannot be the first block; put a linear or quadratic block before it")
    buckets = cfg["data"]["buckets"]
    if buckets and sorted(buckets) != list(buckets):
        raise ConfigError(f"data.buckets: must be increasing, got {buckets}")
    if cfg["train"]["warmup_epochs"] >= cfg["train"]["epochs"] and cfg["train"]["warmup_epochs"]:
        raise ConfigError(f"train.warmup_epochs ({cfg['train']['warmup_epochs']}) must be less than "
                          f"train.epochs ({cfg['train']['epochs']})")


def flatten(cfg: dict, prefix: str = "") -> dict[str, Any]:
    """{'train': {'epochs': 5}} -> {'train.epochs': 5}; lists of blocks become 'model.blocks.0.units' etc."""
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


def dump(cfg: dict) -> str:
    """The resolved config as YAML (what the run logs as its artifact)."""
    clean = {k: v for k, v in cfg.items() if k != "extends"}
    return yaml.safe_dump(clean, sort_keys=False, default_flow_style=None)
