"""The sweep file and its search space: what `make sweep` reads before any trial runs.

`load_sweep` checks a sweep file against the base config (each problem one line naming the file
and the key) and fills in its defaults, the objective by the data's task (`dataset_task`:
`val_accuracy` for a classification, `val_mae` for a regression); `suggest`, `make_sampler` and `make_pruner` turn the
checked file into Optuna's terms; `grid_values` and `grid_size` count a grid.

Example::

    from pipelines import config
    from pipelines.sweep.space import load_sweep, plain_config

    base = plain_config(config.load_config("configs/digits.yaml"))
    sweep = load_sweep("sweeps/default.yaml", base)
    sweep["objective"], sorted(sweep["space"])[0]     # ('val_accuracy', 'model.blocks.0.units')
"""

from __future__ import annotations

import math
import pathlib
import tempfile
from typing import Callable

import yaml

from pipelines import config as config_lib
from setnet.config import suggest as did_you_mean  # 'suggest' here is Optuna's, below

SAMPLERS = ("tpe", "random", "grid")
DIRECTIONS = ("maximize", "minimize")
# What a training run logs per epoch (`pipelines.loop.Trainer.fit`): the loss and the task's metric
# (accuracy; a regression's mae), and with a validation split their val_ twins, where a regression's
# evaluation adds rmse. Each with the task that logs it (None: both) and the direction that improves it.
EPOCH_METRICS = {
    "val_accuracy": ("classification", "maximize"),
    "accuracy": ("classification", "maximize"),
    "val_mae": ("regression", "minimize"),
    "val_rmse": ("regression", "minimize"),
    "mae": ("regression", "minimize"),
    "val_loss": (None, "minimize"),
    "loss": (None, "minimize"),
}
# Without an objective in the sweep file. A regression's val_mae, not its val_loss: a sweep over
# train.loss (mse or huber) compares trials whose losses are different measures.
DEFAULT_OBJECTIVE = {"classification": "val_accuracy", "regression": "val_mae"}
SHIPPED_SWEEPS = pathlib.Path(__file__).resolve().parents[2] / "sweeps"


class SweepError(Exception):
    """A sweep file, argument or store problem; the message says where and what to do."""


# --------------------------------------------------------------------------- the sweep file

TOP_KEYS = {
    "study": "study name (default: <experiment>-<sweep file name>)",
    "objective": "per-epoch metric to optimise: " + ", ".join(EPOCH_METRICS)
                 + " (default: val_accuracy for a classification, val_mae for a regression)",
    "direction": "maximize or minimize (default: maximize for accuracy, minimize for losses and errors)",
    "sampler": "tpe, random or grid",
    "seed": "sampler seed",
    "trials": "number of trials (--trials overrides)",
    "pruner": "{kind: median, startup_trials: N, warmup_epochs: N} or none",
    "heartbeat_seconds": "how often a running trial says it is alive",
    "space": "config key -> {choices: [...]} or {low: a, high: b, log: true|false, step: s}",
}
PRUNER_KEYS = ("kind", "startup_trials", "warmup_epochs")
PARAM_KEYS = ("choices", "low", "high", "log", "step")


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def plain_config(cfg) -> dict:
    """A resolved config as plain nested dicts and lists (what its YAML file says)."""
    return yaml.safe_load(config_lib.dump(cfg))


def _flat_keys(tree, prefix: str = "") -> list[str]:
    out = []
    items = tree.items() if isinstance(tree, dict) else enumerate(tree) if isinstance(tree, list) else ()
    for key, value in items:
        path = f"{prefix}.{key}" if prefix else str(key)
        if isinstance(value, dict) or (isinstance(value, list) and value and all(isinstance(v, dict) for v in value)):
            out += _flat_keys(value, path)
        else:
            out.append(path)
    return out


def set_key(tree: dict, dotted: str, value) -> None:
    """Set ``model.blocks.1.rank`` in a plain config (list items by their index)."""
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if isinstance(node, list):
        node[int(parts[-1])] = value
    else:
        node[parts[-1]] = value


def _has_key(tree, dotted: str) -> bool:
    node = tree
    for part in dotted.split("."):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True


def load_sweep(path: str | pathlib.Path, base: dict, task: str | Callable[[], str] | None = None) -> dict:
    """Read and check a sweep file against the base config (plain dict, see `plain_config`).

    Args:
        path: the sweep file.
        base: the base config as plain dicts and lists.
        task: the task of the config's data, ``classification`` or ``regression``, or a function
            that tells it; None: `dataset_task` of `base`. Asked only when the objective depends on
            it: none given (the default is the task's), or a metric only one task logs.

    Returns:
        The sweep with every default filled in: ``objective``, ``direction``, ``sampler``,
        ``seed``, ``trials``, ``pruner`` (dict or None), ``heartbeat_seconds``, ``study`` (or None)
        and ``space`` (key -> spec).

    Raises:
        SweepError: one line naming the file, the key and what to do.

    Example::

        base = plain_config(config.load_config("configs/own_regression.yaml"))
        load_sweep("sweeps/default.yaml", base, task="regression")["objective"]   # 'val_mae'
    """
    path = pathlib.Path(path)
    where = str(path)
    try:
        # The config's YAML 1.2 numbers: `low: 1e-4` is a float here as in a config.
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=config_lib.Yaml12Loader)
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.name for p in SHIPPED_SWEEPS.glob("*.yaml"))) or "none"
        raise SweepError(f"sweep file {path} not found (shipped sweeps in sweeps/: {shipped})") from None
    except (OSError, UnicodeDecodeError) as e:
        raise SweepError(f"sweep file {path} cannot be read: {e}") from None
    except yaml.YAMLError as e:
        raise SweepError(f"{where} is not valid YAML: {config_lib.yaml_problem(e)}") from None
    if not isinstance(raw, dict):
        raise SweepError(f"{where}: the top level must be a mapping with a 'space:' section, got "
                         f"{type(raw).__name__}")
    for key in raw:
        if key not in TOP_KEYS:
            raise SweepError(f"{where}: unknown key {key!r}{did_you_mean(str(key), TOP_KEYS)} "
                             f"(keys: {', '.join(TOP_KEYS)})")
    sweep = {"study": raw.get("study"), "sampler": raw.get("sampler", "tpe"), "seed": raw.get("seed", 0),
             "trials": raw.get("trials", 10), "heartbeat_seconds": raw.get("heartbeat_seconds", 10)}
    objective = raw.get("objective")
    if objective is not None and objective not in EPOCH_METRICS:
        raise SweepError(f"{where}: objective {objective!r} is not a per-epoch metric; use one of "
                         f"{', '.join(EPOCH_METRICS)}{did_you_mean(str(objective), EPOCH_METRICS)}")
    if raw.get("direction", DIRECTIONS[0]) not in DIRECTIONS:
        raise SweepError(f"{where}: direction must be maximize or minimize, got {raw['direction']!r}")
    if sweep["sampler"] not in SAMPLERS:
        raise SweepError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, got {sweep['sampler']!r}"
                         f"{did_you_mean(str(sweep['sampler']), SAMPLERS)}")
    for key in ("seed", "trials", "heartbeat_seconds"):
        value = sweep[key]
        if isinstance(value, bool) or not isinstance(value, int) or value < (0 if key == "seed" else 1):
            raise SweepError(f"{where}: {key} must be an integer >= {0 if key == 'seed' else 1}, got {value!r}")
    if sweep["study"] is not None and (not isinstance(sweep["study"], str) or not sweep["study"].strip()):
        raise SweepError(f"{where}: study must be a name, got {sweep['study']!r}")
    sweep["pruner"] = _check_pruner(raw.get("pruner", {"kind": "median"}), where)
    space = raw.get("space")
    if not isinstance(space, dict) or not space:
        raise SweepError(f"{where}: 'space:' must map config keys to distributions, e.g. "
                         f"space: {{train.learning_rate: {{low: 0.0003, high: 0.01, log: true}}}}")
    keys = _flat_keys(base)
    sweep["space"] = {}
    for key, spec in space.items():
        key = str(key)
        if not _has_key(base, key):
            raise SweepError(f"{where}: space key {key!r} is not a key of the config{did_you_mean(key, keys)}")
        if isinstance(_get(base, key), dict):
            raise SweepError(f"{where}: space key {key!r} is a section; name one of its keys, e.g. "
                             f"{next((k for k in keys if k.startswith(key + '.')), key + '.<key>')!r}")
        sweep["space"][key] = _check_param(key, spec, where)
    if sweep["sampler"] == "grid":
        for key, spec in sweep["space"].items():
            if grid_values(spec) is None:
                raise SweepError(f"{where}: space.{key}: grid search needs choices or an integer range "
                                 f"(low, high, step); this is a continuous range. Use sampler: tpe or random, "
                                 f"or list choices")
    _check_values(sweep["space"], base, where)
    # Last: telling the task may read the data, which the checks above never need.
    sweep["objective"] = _objective(objective, task, base, where)
    sweep["direction"] = raw.get("direction", EPOCH_METRICS[sweep["objective"]][1])
    return sweep


def _objective(objective: str | None, task, base: dict, where: str) -> str:
    """The sweep's objective: the one given, if the data's task logs it; else the task's default."""
    needs = EPOCH_METRICS[objective][0] if objective else None
    if objective and needs is None:
        return objective
    try:
        task = (task or (lambda: dataset_task(_as_config(base))))
        task = task() if callable(task) else task
    except Exception as e:  # missing or unreadable data: every trial would stop at the same point
        data = base["data"]
        what = f"{data['name']}" + (f" at {data['path']}" if data.get("path") else "")
        why = f"{type(e).__name__}: {(str(e).splitlines() or [''])[0][:300]}"
        if objective:
            raise SweepError(f"{where}: objective {objective!r} is logged by a {needs} only, and the task of "
                             f"the data ({what}) cannot be told ({why}); fix the data, or use objective: "
                             f"val_loss, which every run logs") from None
        raise SweepError(f"{where}: no objective given, and the task of the data ({what}) cannot be told "
                         f"({why}); set objective: (val_accuracy for a classification; val_mae, val_rmse or "
                         f"val_loss for a regression)") from None
    if objective is None:
        return DEFAULT_OBJECTIVE[task]
    if needs != task:
        fits = [m for m, (t, _) in EPOCH_METRICS.items() if t in (None, task)]
        raise SweepError(f"{where}: objective {objective!r} is a {needs} metric, but the config's data "
                         f"({base['data']['name']}) is a {task}, which logs {', '.join(fits)}; use one of those "
                         f"(or leave objective: out for {DEFAULT_OBJECTIVE[task]})")
    return objective


def dataset_task(cfg) -> str:
    """The task of a config's data, ``classification`` or ``regression``, without preparing it.

    The dataset's builder says it: a ``target`` feature is a regression, a ``label`` a
    classification (the contract of `pipelines.datasets`). For ``set_table`` with ``task: auto`` the
    builder reads the table's schema (a float or vector target is a regression), so the table
    must be there.

    Raises:
        The dataset's own errors (`pipelines.datasets.DataNotFoundError`, ``DataFormatError``,
        ValueError) when the data cannot be read.

    Example::

        dataset_task(config.load_config("configs/digits.yaml"))   # 'classification'
    """
    import logging

    from pipelines import datasets

    data = cfg.data
    absl = logging.getLogger("absl")
    level = absl.level
    absl.setLevel(logging.ERROR)  # TFDS's "Using custom data configuration" is for the trials to say
    try:
        builder = datasets.get_builder(data.name, data_dir=data.data_dir, allow_partial=data.allow_partial,
                                       params=data.builder_params())
        return "regression" if "target" in builder.info.features else "classification"
    finally:
        absl.setLevel(level)


def _as_config(base: dict):
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp) / "base.yaml"
        path.write_text(yaml.safe_dump(base, sort_keys=False))
        return config_lib.load_config(path)


def _get(tree, dotted: str):
    node = tree
    for part in dotted.split("."):
        node = node[int(part)] if isinstance(node, list) else node[part]
    return node


def _check_pruner(pruner, where: str):
    if pruner in (None, "none", False):
        return None
    if pruner == "median":
        pruner = {"kind": "median"}
    if not isinstance(pruner, dict):
        raise SweepError(f"{where}: pruner must be none or {{kind: median, startup_trials: 2, warmup_epochs: 1}}, "
                         f"got {pruner!r}")
    for key in pruner:
        if key not in PRUNER_KEYS:
            raise SweepError(f"{where}: unknown key pruner.{key}{did_you_mean(str(key), PRUNER_KEYS)} "
                             f"(keys: {', '.join(PRUNER_KEYS)})")
    out = {"kind": pruner.get("kind", "median"), "startup_trials": pruner.get("startup_trials", 2),
           "warmup_epochs": pruner.get("warmup_epochs", 1)}
    if out["kind"] != "median":
        raise SweepError(f"{where}: pruner.kind must be median (or pruner: none), got {out['kind']!r}")
    for key in ("startup_trials", "warmup_epochs"):
        if isinstance(out[key], bool) or not isinstance(out[key], int) or out[key] < 0:
            raise SweepError(f"{where}: pruner.{key} must be an integer >= 0, got {out[key]!r}")
    return out


def _check_param(key: str, spec, where: str) -> dict:
    at = f"{where}: space.{key}"
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        raise SweepError(f"{at}: expected {{choices: [a, b]}} or {{low: a, high: b}} (log: true for "
                         f"log-uniform), got {spec!r}")
    for k in spec:
        if k not in PARAM_KEYS:
            raise SweepError(f"{at}: unknown key {k!r}{did_you_mean(str(k), PARAM_KEYS)} "
                             f"(a distribution is choices, or low/high with optional log and step)")
    if "choices" in spec:
        extra = [k for k in spec if k != "choices"]
        if extra:
            raise SweepError(f"{at}: choices cannot be combined with {', '.join(extra)}")
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise SweepError(f"{at}: choices must be a non-empty list, got {choices!r}")
        for c in choices:
            if c is not None and not isinstance(c, (bool, int, float, str)):
                raise SweepError(f"{at}: choices must be numbers, strings, true/false or null, got {c!r}")
        if len(set(map(repr, choices))) != len(choices):
            raise SweepError(f"{at}: choices repeat a value: {choices}")
        return {"choices": choices}
    if "low" not in spec or "high" not in spec:
        raise SweepError(f"{at}: a range needs both low and high (or give choices: [...])")
    low, high, log, step = spec["low"], spec["high"], spec.get("log", False), spec.get("step")
    if not _is_number(low) or not _is_number(high):
        raise SweepError(f"{at}: low and high must be numbers, got {low!r} and {high!r}")
    if not low < high:
        raise SweepError(f"{at}: low ({low}) must be less than high ({high})")
    if not isinstance(log, bool):
        raise SweepError(f"{at}: log must be true or false, got {log!r}")
    if log and low <= 0:
        raise SweepError(f"{at}: a log-uniform range needs low > 0, got {low}")
    if step is not None:
        if not _is_number(step) or step <= 0:
            raise SweepError(f"{at}: step must be a positive number, got {step!r}")
        if log:
            raise SweepError(f"{at}: step and log cannot be combined (Optuna samples a log range continuously)")
    integer = isinstance(low, int) and isinstance(high, int) and (step is None or isinstance(step, int))
    return {"low": low, "high": high, "log": log, "step": step, "int": integer}


def grid_values(spec: dict) -> list | None:
    """Every value of a distribution when it has finitely many (choices, integer ranges), else None."""
    if "choices" in spec:
        return list(spec["choices"])
    if spec["int"] and not spec["log"]:
        return list(range(spec["low"], spec["high"] + 1, spec["step"] or 1))
    return None


def _check_values(space: dict, base: dict, where: str) -> None:
    """Every choice and both ends of every range must be a valid value of its config key."""
    with tempfile.TemporaryDirectory() as tmp:
        for key, spec in space.items():
            values = spec["choices"] if "choices" in spec else [spec["low"], spec["high"]]
            for value in values:
                trial = yaml.safe_load(yaml.safe_dump(base))
                set_key(trial, key, value)
                path = pathlib.Path(tmp) / "trial.yaml"
                path.write_text(yaml.safe_dump(trial, sort_keys=False))
                try:
                    config_lib.load_config(path)
                except config_lib.ConfigError as e:
                    msg = str(e).replace(f" in {path.resolve()}", "").replace(f" in {path}", "")
                    raise SweepError(f"{where}: space.{key}: the value {value!r} is not valid for the config: "
                                     f"{msg}") from None


# --------------------------------------------------------------------------- in Optuna's terms


def make_sampler(sweep: dict, salt: int = 0):
    import optuna

    seed = (sweep["seed"] * 1_000_003 + salt) % (2**31)
    if sweep["sampler"] == "grid":
        return optuna.samplers.GridSampler({k: grid_values(s) for k, s in sweep["space"].items()}, seed=seed)
    if sweep["sampler"] == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    return optuna.samplers.TPESampler(seed=seed)


def make_pruner(sweep: dict):
    import optuna

    p = sweep["pruner"]
    if p is None:
        return optuna.pruners.NopPruner()
    return optuna.pruners.MedianPruner(n_startup_trials=p["startup_trials"], n_warmup_steps=p["warmup_epochs"])


def suggest(trial, key: str, spec: dict):
    if "choices" in spec:
        return trial.suggest_categorical(key, spec["choices"])
    if spec["int"]:
        return trial.suggest_int(key, spec["low"], spec["high"], step=spec["step"] or 1, log=spec["log"])
    return trial.suggest_float(key, float(spec["low"]), float(spec["high"]), step=spec["step"], log=spec["log"])


def grid_size(sweep: dict) -> int | None:
    if sweep["sampler"] != "grid":
        return None
    return math.prod(len(grid_values(s)) for s in sweep["space"].values())

