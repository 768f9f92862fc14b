"""Hyperparameter sweeps with Optuna, tracked as one MLflow parent run: ``make sweep``.

    python -m pipelines.sweep --config configs/digits.yaml --sweep sweeps/default.yaml
    python -m pipelines.sweep --config configs/digits.yaml --sweep sweeps/default.yaml \\
        --trials 2 --parallel 2 --set train.epochs=2
    python -m pipelines.sweep ... --storage postgresql://user@db/optuna     # many machines, one sweep

The sweep file names a search space over any config key (choices, ranges, log-uniform ranges),
the objective (a per-epoch metric such as ``val_accuracy``), the sampler (grid, random or TPE)
and the pruner (median, on the per-epoch objective). ``--set`` applies to every trial,
``--trials`` caps the number of trials, ``--parallel K`` runs K trials at once.

Each trial is a process of its own that trains one config (`pipelines.train.train`) in the run
folder ``<runs_dir>/<experiment>/<study>-t<n>``, as a child MLflow run under the sweep's parent
run (which holds the sweep file, the base config and the best trial). The study lives in an
Optuna database (default ``sqlite:///<runs_dir>/optuna.db``, beside the MLflow store) with
heartbeats: a sweep killed with ``kill -9`` takes its trial processes with it, and the same
command run again finds the study and the parent run, marks the trials that lost their
heartbeat as failed, retries each of them once more as the same trial (same parameters, same
run folder: training resumes from its last checkpoint, the child run continues) and then goes on
with new trials. See docs/tracking.md.
"""

from __future__ import annotations

import argparse
import ctypes
import difflib
import hashlib
import json
import math
import os
import pathlib
import signal
import socket
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import yaml

from pipelines import config as config_lib
from pipelines.tracking import local_artifact_root, read_json, resolve_tracking_uri, write_json

STUDY_TAG = "sweep.study"
PARENT_ATTR = "mlflow.parent_run_id"
IDENTITY_ATTR = "sweep.identity"
TRIAL_ATTR = "sweep.trial"      # the trial's own number; a retry inherits its original's
WORKER_ATTR = "sweep.worker"    # which worker process runs it (the driver counts started trials by it)
SAMPLERS = ("tpe", "random", "grid")
DIRECTIONS = ("maximize", "minimize")
EPOCH_METRICS = ("val_accuracy", "val_loss", "accuracy", "loss")
MAX_CONSECUTIVE_FAILURES = 3
MAX_RETRIES = 3


class SweepError(Exception):
    """A sweep file, argument or store problem; the message says where and what to do."""


# --------------------------------------------------------------------------- the sweep file

TOP_KEYS = {
    "study": "study name (default: <experiment>-<sweep file name>)",
    "objective": "per-epoch metric to optimise: " + ", ".join(EPOCH_METRICS),
    "direction": "maximize or minimize (default: minimize for losses, else maximize)",
    "sampler": "tpe, random or grid",
    "seed": "sampler seed",
    "trials": "number of trials (--trials overrides)",
    "pruner": "{kind: median, startup_trials: N, warmup_epochs: N} or none",
    "heartbeat_seconds": "how often a running trial says it is alive",
    "space": "config key -> {choices: [...]} or {low: a, high: b, log: true|false, step: s}",
}
PRUNER_KEYS = ("kind", "startup_trials", "warmup_epochs")
PARAM_KEYS = ("choices", "low", "high", "log", "step")


def _did_you_mean(word: str, valid) -> str:
    near = difflib.get_close_matches(word, list(valid), n=1, cutoff=0.5)
    return f"; did you mean {near[0]!r}?" if near else ""


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


def load_sweep(path: str | pathlib.Path, base: dict) -> dict:
    """Read and check a sweep file against the base config (plain dict, see `plain_config`).

    Returns:
        The sweep with every default filled in: ``objective``, ``direction``, ``sampler``,
        ``seed``, ``trials``, ``pruner`` (dict or None), ``heartbeat_seconds``, ``study`` (or None)
        and ``space`` (key -> spec).

    Raises:
        SweepError: one line naming the file, the key and what to do.
    """
    path = pathlib.Path(path)
    where = str(path)
    try:
        # The config's YAML 1.2 numbers: `low: 1e-4` is a float here as in a config.
        raw = yaml.load(path.read_text(encoding="utf-8"), Loader=config_lib.Yaml12Loader)
    except FileNotFoundError:
        shipped = ", ".join(sorted(p.name for p in (pathlib.Path(__file__).resolve().parent.parent / "sweeps")
                                   .glob("*.yaml"))) or "none"
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
            raise SweepError(f"{where}: unknown key {key!r}{_did_you_mean(str(key), TOP_KEYS)} "
                             f"(keys: {', '.join(TOP_KEYS)})")
    sweep = {"study": raw.get("study"), "objective": raw.get("objective", "val_accuracy"),
             "sampler": raw.get("sampler", "tpe"), "seed": raw.get("seed", 0), "trials": raw.get("trials", 10),
             "heartbeat_seconds": raw.get("heartbeat_seconds", 10)}
    if sweep["objective"] not in EPOCH_METRICS:
        raise SweepError(f"{where}: objective {sweep['objective']!r} is not a per-epoch metric; use one of "
                         f"{', '.join(EPOCH_METRICS)}{_did_you_mean(str(sweep['objective']), EPOCH_METRICS)}")
    sweep["direction"] = raw.get("direction", "minimize" if sweep["objective"].endswith("loss") else "maximize")
    if sweep["direction"] not in DIRECTIONS:
        raise SweepError(f"{where}: direction must be maximize or minimize, got {sweep['direction']!r}")
    if sweep["sampler"] not in SAMPLERS:
        raise SweepError(f"{where}: sampler must be one of {', '.join(SAMPLERS)}, got {sweep['sampler']!r}"
                         f"{_did_you_mean(str(sweep['sampler']), SAMPLERS)}")
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
            raise SweepError(f"{where}: space key {key!r} is not a key of the config{_did_you_mean(key, keys)}")
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
    return sweep


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
            raise SweepError(f"{where}: unknown key pruner.{key}{_did_you_mean(str(key), PRUNER_KEYS)} "
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
            raise SweepError(f"{at}: unknown key {k!r}{_did_you_mean(str(k), PARAM_KEYS)} "
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
    from pipelines import config as config_lib

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


# --------------------------------------------------------------------------- Optuna


def default_storage(runs_dir: str | pathlib.Path) -> str:
    """``sqlite:///<runs_dir>/optuna.db``: the study beside the embedded MLflow store."""
    return f"sqlite:///{pathlib.Path(runs_dir).resolve() / 'optuna.db'}"


def open_storage(url: str, heartbeat_seconds: int):
    """RDBStorage with heartbeats: a trial whose process died is failed after 2 heartbeats and
    re-queued, with its parameters and reported epochs, by RetryHeartbeatStaleTrialCallback."""
    import optuna

    engine = {}
    if url.startswith("sqlite:"):
        pathlib.Path(url[len("sqlite:///"):]).parent.mkdir(parents=True, exist_ok=True)
        # Several trial processes write heartbeats to one SQLite file: wait for its lock, do not fail.
        engine = {"connect_args": {"timeout": 60}}
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RDBStorage(
            url, engine_kwargs=engine, heartbeat_interval=heartbeat_seconds, grace_period=2 * heartbeat_seconds,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                max_retry=MAX_RETRIES, inherit_intermediate_values=True))


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


def identity(config_text: str, sweep_text: str, overrides: list[str]) -> str:
    """What makes a study: the config, the sweep file and the --set overrides (hashed)."""
    blob = json.dumps([config_text, sweep_text, sorted(overrides)])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]


# --------------------------------------------------------------------------- the sweep context


class Sweep:
    """What the driver and the trial processes share: configs, sweep, study, MLflow parent."""

    def __init__(self, args):
        from pipelines import config as config_lib

        self.args = args
        self.overrides = [o for group in args.overrides for o in group]
        self.config_path = args.config
        self.cfg = config_lib.load_config(args.config, self.overrides)
        self.base = plain_config(self.cfg)
        self.sweep_path = pathlib.Path(args.sweep)
        self.sweep = load_sweep(self.sweep_path, self.base)
        if args.trials is not None:
            if args.trials < 1:
                raise SweepError(f"--trials must be >= 1, got {args.trials}")
            self.sweep["trials"] = args.trials
        size = grid_size(self.sweep)
        if size is not None and self.sweep["trials"] > size:
            self.sweep["trials"] = size
        self.experiment = self.base["experiment"]
        self.runs_dir = pathlib.Path(self.base["runs_dir"])
        self.study_name = args.study_name or self.sweep["study"] or f"{self.experiment}-{self.sweep_path.stem}"
        self.storage_url = args.storage or default_storage(self.runs_dir)
        self.folder = self.runs_dir / self.experiment / f"sweep-{self.study_name}"
        self.tracking_uri = (resolve_tracking_uri(self.base["mlflow"]["tracking_uri"], self.runs_dir)
                             if self.base["mlflow"]["enabled"] else None)
        config_text = pathlib.Path(args.config).read_text() if args.config else ""
        self.identity = identity(config_text, self.sweep_path.read_text(), self.overrides)
        self.parent_id: str | None = None
        self.run_lock = None

    def study(self, salt: int = 0):
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        return optuna.create_study(
            study_name=self.study_name, storage=open_storage(self.storage_url, self.sweep["heartbeat_seconds"]),
            sampler=make_sampler(self.sweep, salt), pruner=make_pruner(self.sweep), direction=self.sweep["direction"],
            load_if_exists=True)

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.tracking_uri)


# --------------------------------------------------------------------------- the trial process


def _trial_config(ctx: Sweep, params: dict, run_name: str, folder: pathlib.Path):
    from pipelines import config as config_lib

    tree = yaml.safe_load(yaml.safe_dump(ctx.base))
    for key, value in params.items():
        set_key(tree, key, value)
    tree["run_name"] = run_name
    path = folder / f"{run_name}.yaml"
    write_text_atomic(path, yaml.safe_dump(tree, sort_keys=False))
    return config_lib.load_config(path), tree


def write_text_atomic(path: pathlib.Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _child_run(ctx: Sweep, tree: dict, run_dir: pathlib.Path, logical: int, params: dict, parent_id: str | None,
               say) -> str | None:
    """The trial's MLflow run: the one its run folder already logs to, else a new child of the parent."""
    from pipelines import tracking

    if ctx.tracking_uri is None or parent_id is None:
        return None
    state = read_json(run_dir / tracking.STATE_FILE)
    if state and state.get("tracking_uri") == ctx.tracking_uri and state.get("run_id"):
        return state["run_id"]
    try:
        client = ctx.client()
        exp = client.get_experiment_by_name(ctx.experiment)
        exp_id = exp.experiment_id if exp else client.create_experiment(
            ctx.experiment, artifact_location=local_artifact_root(ctx.tracking_uri, ctx.runs_dir))
        run = client.create_run(exp_id, run_name=run_dir.name, tags={
            "mlflow.parentRunId": parent_id, STUDY_TAG: ctx.study_name, "sweep.trial": str(logical),
            "sweep.params": json.dumps(params, sort_keys=True)})
    except Exception as e:  # the store is away: training logs to a run of its own once it is back
        say(f"sweep: cannot create the child MLflow run ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
            f"the trial's run will not be nested under the sweep")
        return None
    tracking.adopt_run(run_dir, ctx.tracking_uri, run.info.run_id, exp_id, ctx.experiment)
    return run.info.run_id


def objective_value(history: list[dict], metric: str, direction: str) -> float:
    values = [h[metric] for h in history if metric in h and h[metric] is not None and not math.isnan(h[metric])]
    if not values:
        return float("nan")
    return max(values) if direction == "maximize" else min(values)


def _hold_run_folder(run_dir: pathlib.Path, printer):
    """An exclusive lock on the trial's run folder: two attempts of one trial never train in it at
    once. The kernel drops the lock when its process dies, kill -9 included."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    lock = open(run_dir / ".trial.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        printer(f"{run_dir} is still in use by an earlier attempt of this trial; waiting for it to end")
        fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def run_trial(ctx: Sweep, trial, token: str, printer: Callable[[str], None] = print) -> float:
    """The objective: one training of the base config with the trial's parameters."""
    import keras
    import optuna

    trial.set_user_attr(WORKER_ATTR, token)
    if TRIAL_ATTR not in trial.user_attrs:
        trial.set_user_attr(TRIAL_ATTR, trial.number)
    logical = trial.user_attrs[TRIAL_ATTR]
    params = {key: suggest(trial, key, spec) for key, spec in ctx.sweep["space"].items()}
    run_name = f"{ctx.study_name}-t{logical}"
    cfg, tree = _trial_config(ctx, params, run_name, ctx.folder / "trials")
    run_dir = pathlib.Path(tree["runs_dir"]) / tree["experiment"] / run_name
    retry = " (a retry: it resumes from the run folder's last checkpoint)" if logical != trial.number else ""
    printer(f"sweep {ctx.study_name}: trial {logical}{retry}: {json.dumps(params)}; run folder {run_dir}")
    metric, direction = ctx.sweep["objective"], ctx.sweep["direction"]
    trial.set_user_attr("run_dir", str(run_dir))
    ctx.run_lock = _hold_run_folder(run_dir, printer)  # held until the next trial or the end of the process
    done = read_json(run_dir / "history.json")
    if logical != trial.number and done and done.get("completed"):
        # An earlier attempt was taken for dead (its heartbeat came late, e.g. on an overloaded
        # machine) but finished: its training is this trial's result, not a reason to train again.
        printer(f"sweep {ctx.study_name}: trial {logical} was finished by an earlier attempt; using its result")
        state = read_json(run_dir / "mlflow.json") or {}
        if state.get("run_id"):
            trial.set_user_attr("mlflow_run_id", state["run_id"])
        trial.set_user_attr("test_accuracy", done.get("test", {}).get("accuracy"))
        exported = (read_json(run_dir / "invariance.json") or {}).get("export")
        if exported:
            trial.set_user_attr("export_path", exported)
        return objective_value(done["epochs"], metric, direction)
    child = _child_run(ctx, tree, run_dir, logical, params, ctx.parent_id, printer)
    if child:
        trial.set_user_attr("mlflow_run_id", child)

    class ReportAndPrune(keras.callbacks.Callback):
        """Each epoch's objective goes to Optuna; the median pruner may stop the trial there."""

        def on_epoch_end(self, epoch, logs=None):
            value = (logs or {}).get(metric)
            if value is None or math.isnan(value):
                return
            trial.report(float(value), step=epoch + 1)
            if trial.should_prune():
                raise optuna.TrialPruned(f"{metric} {value:.4f} after epoch {epoch + 1} is below the median of "
                                         f"the earlier trials at that epoch")

    from pipelines.train import train

    try:
        result = train(cfg, callbacks=[ReportAndPrune()], printer=printer)
    except optuna.TrialPruned as e:
        printer(f"sweep {ctx.study_name}: trial {logical} pruned: {e}")
        _tag_child(ctx, child, {"sweep.state": "PRUNED"}, status="KILLED")
        raise
    value = objective_value(result["history"], metric, direction)
    trial.set_user_attr("test_accuracy", result["test_accuracy"])
    if result.get("export_path"):
        trial.set_user_attr("export_path", result["export_path"])
    _tag_child(ctx, child, {"sweep.state": "COMPLETE", "sweep.value": value})
    return value


def _tag_child(ctx: Sweep, run_id: str | None, tags: dict, status: str | None = None) -> None:
    if not run_id:
        return
    try:
        client = ctx.client()
        for k, v in tags.items():
            client.set_tag(run_id, k, str(v))
        if status:
            client.set_terminated(run_id, status=status)
    except Exception:  # the child's own records reach the store through its Tracker queue; these are extras
        pass


def worker_main(ctx: Sweep, token: str) -> int:
    """One trial in this process (the driver starts one process per trial)."""
    study = ctx.study(salt=_salt(token))
    ctx.parent_id = study.user_attrs.get(PARENT_ATTR)
    try:
        study.optimize(lambda t: run_trial(ctx, t, token), n_trials=1, gc_after_trial=False)
    except Exception as e:
        print(f"error: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    return 0


def _salt(token: str) -> int:
    # Each trial process builds its own sampler: seeded alike, parallel processes would draw the
    # same random points. Host and worker number (not the pid) make the salt, so that a sequential
    # sweep on one machine draws the same trials each time.
    host, seq = token.split("@")[0].rsplit("|", 1)
    return int(hashlib.sha1(host.encode()).hexdigest()[:6], 16) + int(seq)


# --------------------------------------------------------------------------- the parent run


def _parent_run(ctx: Sweep, study, say) -> str | None:
    """Find the sweep's parent run by its study tag, else create it; log the sweep file and config."""
    if ctx.tracking_uri is None:
        return None
    from mlflow.entities import Param

    client = ctx.client()
    exp = client.get_experiment_by_name(ctx.experiment)
    exp_id = exp.experiment_id if exp else client.create_experiment(
        ctx.experiment, artifact_location=local_artifact_root(ctx.tracking_uri, ctx.runs_dir))
    found = client.search_runs([exp_id], filter_string=f"tags.`{STUDY_TAG}` = '{ctx.study_name}' "
                                                       f"and tags.`sweep.role` = 'parent'",
                               order_by=["attributes.start_time ASC"], max_results=1)
    if found:
        run_id = found[0].info.run_id
        if found[0].info.status != "RUNNING":
            client.update_run(run_id, status="RUNNING")
        say(f"sweep {ctx.study_name}: continuing parent MLflow run {run_id}")
    else:
        run = client.create_run(exp_id, run_name=f"sweep-{ctx.study_name}", tags={
            STUDY_TAG: ctx.study_name, "sweep.role": "parent", "sweep.storage": _safe_url(ctx.storage_url)})
        run_id = run.info.run_id
        params = {"sweep.objective": ctx.sweep["objective"], "sweep.direction": ctx.sweep["direction"],
                  "sweep.sampler": ctx.sweep["sampler"], "sweep.seed": ctx.sweep["seed"],
                  "sweep.pruner": json.dumps(ctx.sweep["pruner"]), "sweep.file": str(ctx.sweep_path),
                  "sweep.config": str(ctx.config_path), "sweep.set": " ".join(ctx.overrides),
                  "sweep.space": json.dumps(ctx.sweep["space"], sort_keys=True)[:6000]}
        client.log_batch(run_id, params=[Param(k, str(v)) for k, v in params.items()], synchronous=True)
        with tempfile.TemporaryDirectory() as tmp:
            sweep_copy = pathlib.Path(tmp) / ctx.sweep_path.name
            sweep_copy.write_text(ctx.sweep_path.read_text())
            client.log_artifact(run_id, str(sweep_copy), "sweep")
            base = pathlib.Path(tmp) / "base_config.yaml"
            base.write_text(yaml.safe_dump(ctx.base, sort_keys=False))
            client.log_artifact(run_id, str(base), "sweep")
        say(f"sweep {ctx.study_name}: parent MLflow run {run_id} in experiment {ctx.experiment!r} at "
            f"{ctx.tracking_uri}")
    client.set_tag(run_id, "sweep.trials", str(ctx.sweep["trials"]))
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id


def _safe_url(url: str) -> str:
    """A storage URL without its password."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def summarize(ctx: Sweep, study, finished: bool, printer: Callable[[str], None] = print) -> dict | None:
    """The best trial so far, written to the sweep folder and to the parent run's tags and metrics
    (a tracking store that is away costs the parent's copy, not the sweep)."""
    try:
        return _summarize(ctx, study, finished)
    except Exception as e:
        printer(f"sweep {ctx.study_name}: cannot update the parent MLflow run ({type(e).__name__}: "
                f"{(str(e).splitlines() or [''])[0][:200]}); the sweep goes on, and "
                f"{ctx.folder / 'best_trial.json'} has the best trial")
        return None


def _summarize(ctx: Sweep, study, finished: bool) -> dict | None:
    from optuna.trial import TrialState

    done = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.COMPLETE and t.value is not None
            and not math.isnan(t.value)]
    if not done:
        return None
    pick = max if ctx.sweep["direction"] == "maximize" else min
    best = pick(done, key=lambda t: t.value)
    summary = {"study": ctx.study_name, "objective": ctx.sweep["objective"], "direction": ctx.sweep["direction"],
               "trial": best.user_attrs.get(TRIAL_ATTR, best.number), "value": best.value, "params": best.params,
               "run_dir": best.user_attrs.get("run_dir"), "mlflow_run_id": best.user_attrs.get("mlflow_run_id"),
               "test_accuracy": best.user_attrs.get("test_accuracy"),
               "export_path": best.user_attrs.get("export_path"), "completed_trials": len(done)}
    write_json(ctx.folder / "best_trial.json", summary)
    if ctx.parent_id:
        client = ctx.client()
        if summary["mlflow_run_id"]:
            tags = client.get_run(summary["mlflow_run_id"]).data.tags
            if tags.get("registry.version"):
                summary["registered_model"] = tags.get("registry.model")
                summary["registered_version"] = tags.get("registry.version")
    write_json(ctx.folder / "best_trial.json", summary)
    if ctx.parent_id:
        from mlflow.entities import Metric, RunTag

        tags = {"sweep.best_trial": summary["trial"], "sweep.best_value": summary["value"],
                "sweep.best_run_id": summary["mlflow_run_id"] or "",
                **{f"sweep.best.{k}": v for k, v in best.params.items()}}
        if summary.get("registered_version"):
            tags["sweep.best_model_version"] = summary["registered_version"]
        now = int(time.time() * 1000)
        client.log_batch(ctx.parent_id, tags=[RunTag(k, str(v)) for k, v in tags.items()],
                         metrics=[Metric(f"best_{ctx.sweep['objective']}", float(best.value), now, len(done))],
                         synchronous=True)
        client.log_artifact(ctx.parent_id, str(ctx.folder / "best_trial.json"))
        if finished:
            client.set_terminated(ctx.parent_id, status="FINISHED")
    return summary


# --------------------------------------------------------------------------- the driver


def _die_with_parent():
    """In the trial process, before exec: die when the driver dies (kill -9 included), and leave
    Ctrl-C to the driver (a trial interrupted by SIGINT would be marked FAIL, not retried)."""
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:  # the driver died before the line above took effect
        os._exit(1)


def _counts(trials, tokens: set[str]):
    from optuna.trial import TrialState

    originals = [t for t in trials if "failed_trial" not in t.system_attrs]
    waiting = [t for t in trials if t.state == TrialState.WAITING]
    running = [t for t in trials if t.state == TrialState.RUNNING]
    registered = {t.user_attrs.get(WORKER_ATTR) for t in trials} & tokens
    return originals, waiting, running, registered


def drive(ctx: Sweep, argv: list[str], printer: Callable[[str], None] = print) -> int:
    """Run the sweep: K trial processes at a time until ``trials`` trials are done."""
    import optuna
    from optuna.trial import TrialState

    ctx.folder.mkdir(parents=True, exist_ok=True)
    study = ctx.study()
    known = study.user_attrs.get(IDENTITY_ATTR)
    if known is None:
        study.set_user_attr(IDENTITY_ATTR, ctx.identity)
    elif known != ctx.identity:
        raise SweepError(f"study {ctx.study_name!r} in {_safe_url(ctx.storage_url)} was started from another config, "
                         f"sweep file or --set; run it with those again to resume it, or pass --study-name NEW "
                         f"to start a new sweep")
    try:
        ctx.parent_id = _parent_run(ctx, study, printer)
    except Exception as e:
        raise SweepError(f"cannot reach the MLflow tracking store at {ctx.tracking_uri} "
                         f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); start it, or point "
                         f"--set mlflow.tracking_uri=... / $MLFLOW_TRACKING_URI at a running one") from None
    target, parallel = ctx.sweep["trials"], ctx.args.parallel
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.RUNNING for t in trials):
        grace = 2 * ctx.sweep["heartbeat_seconds"] + 1
        printer(f"sweep {ctx.study_name}: {sum(t.state == TrialState.RUNNING for t in trials)} trial(s) marked "
                f"running; waiting {grace} s for their heartbeats, so that those of a killed sweep are retried")
        time.sleep(grace)
    printer(f"sweep {ctx.study_name}: {target} trial(s), {parallel} at a time, {ctx.sweep['sampler']} sampler, "
            f"{ctx.sweep['direction']} {ctx.sweep['objective']}; study in {_safe_url(ctx.storage_url)}; "
            f"trial logs in {ctx.folder / 'logs'}")
    workers: dict[str, tuple[subprocess.Popen, Any]] = {}
    tokens: set[str] = set()
    seq = len(list((ctx.folder / "logs").glob("worker-*.log"))) if (ctx.folder / "logs").is_dir() else 0
    failures = 0
    reported: set[int] = {t.number for t in trials if t.state.is_finished()}
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(pathlib.Path(__file__).resolve()
                                                                          .parent.parent),
                                                                     os.environ.get("PYTHONPATH")]))}
    try:
        while True:
            with_warnings_off(optuna.storages.fail_stale_trials, study)
            exited = [tok for tok, (proc, _) in workers.items() if proc.poll() is not None]
            trials = study.get_trials(deepcopy=False)
            originals, waiting, running, registered = _counts(trials, tokens)
            for tok in exited:
                proc, log = workers.pop(tok)
                log.close()
                if tok not in registered:
                    tail = pathlib.Path(log.name).read_text().strip().splitlines()[-1:] or ["(see above)"]
                    raise SweepError(f"a trial process exited (code {proc.returncode}) before it started a "
                                     f"trial: {tail[0][:300]} (log: {log.name})")
            for t in trials:
                if t.state.is_finished() and t.number not in reported:
                    reported.add(t.number)
                    failures = failures + 1 if t.state == TrialState.FAIL and not _was_stale(t, trials) else 0
                    _announce(ctx, t, study, printer)
                    summarize(ctx, study, finished=False, printer=printer)
            if failures >= MAX_CONSECUTIVE_FAILURES:
                raise SweepError(f"{failures} trials in a row failed with an error; see the logs in "
                                 f"{ctx.folder / 'logs'} (the sweep resumes with the same command once fixed)")
            unregistered = [tok for tok in workers if tok not in registered]
            if len(workers) < parallel and not unregistered and (waiting or len(originals) < target):
                seq += 1
                token = f"{socket.gethostname()}|{seq}@{os.getpid()}.{time.time():.0f}"
                log_path = ctx.folder / "logs" / f"worker-{seq}.log"
                log_path.parent.mkdir(parents=True, exist_ok=True)
                log = open(log_path, "a")
                out = None if parallel == 1 else log
                proc = subprocess.Popen([sys.executable, "-m", "pipelines.sweep", *argv, "--worker", token],
                                        stdout=out, stderr=subprocess.STDOUT if out else None, env=env,
                                        preexec_fn=_die_with_parent)
                workers[token] = (proc, log)
                tokens.add(token)
                continue
            if not workers and not waiting and not running and len(originals) >= target:
                break
            if not workers and not waiting and len(originals) >= target and running:
                time.sleep(1)  # trials of other machines, or stale ones about to be retried
                continue
            time.sleep(0.5)
    except KeyboardInterrupt:
        for proc, _ in workers.values():
            proc.kill()
        printer(f"\nsweep {ctx.study_name} interrupted; run the same command to resume it (the interrupted "
                f"trials are retried from their last checkpoint)")
        return 130
    summary = summarize(ctx, study, finished=True, printer=printer)
    states = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name] = states.get(t.state.name, 0) + 1
    printer(f"sweep {ctx.study_name} done: {', '.join(f'{n} {s.lower()}' for s, n in sorted(states.items()))}")
    if summary:
        printer(f"best: trial {summary['trial']}, {ctx.sweep['objective']} {summary['value']:.4f}, "
                f"{json.dumps(summary['params'])}; run {summary['run_dir']}"
                + (f"; registered as {summary['registered_model']} version {summary['registered_version']} "
                   f"(make promote MODEL={summary['registered_model']} VERSION={summary['registered_version']} "
                   f"ALIAS=champion)" if summary.get("registered_version") else ""))
    return 0


def with_warnings_off(fn, *args):
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return fn(*args)


def _was_stale(trial, trials) -> bool:
    """A failed trial that has a retry was killed, not broken."""
    return any(t.system_attrs.get("retry_history", [None])[-1] == trial.number for t in trials)


def _announce(ctx: Sweep, t, study, printer) -> None:
    logical = t.user_attrs.get(TRIAL_ATTR, t.number)
    if t.state.name == "COMPLETE":
        printer(f"sweep {ctx.study_name}: trial {logical} done: {ctx.sweep['objective']} {t.value:.4f} "
                f"{json.dumps(t.params)}")
    elif t.state.name == "PRUNED":
        printer(f"sweep {ctx.study_name}: trial {logical} pruned after epoch {t.last_step} {json.dumps(t.params)}")
    else:
        why = "its process died; retried" if _was_stale(t, study.get_trials(deepcopy=False)) else \
            f"failed; see {ctx.folder / 'logs'}"
        printer(f"sweep {ctx.study_name}: trial {logical} {why}")


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.sweep", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None, help="base training config (default: configs/default.yaml)")
    p.add_argument("--sweep", required=True, help="sweep file: search space, objective, sampler (sweeps/*.yaml)")
    p.add_argument("--trials", type=int, default=None, help="number of trials (default: the sweep file's)")
    p.add_argument("--parallel", type=int, default=1, help="trials at once, each a process (default: 1)")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="config override for every trial, e.g. --set train.epochs=2")
    p.add_argument("--storage", default=None,
                   help="Optuna storage URL (default: sqlite:///<runs_dir>/optuna.db); a shared database "
                        "(postgresql://...) lets machines work on one sweep")
    p.add_argument("--study-name", default=None, help="study name (default: the sweep file's study, else "
                                                      "<experiment>-<sweep file name>)")
    p.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    return p


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    from pipelines.config import ConfigError

    if args.parallel < 1:
        print(f"error: --parallel must be >= 1, got {args.parallel}", file=sys.stderr)
        return 2
    try:
        ctx = Sweep(args)
        if args.worker:
            return worker_main(ctx, args.worker)
        return drive(ctx, argv)
    except (SweepError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
