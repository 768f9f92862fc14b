"""The sweep as the driver and every trial process see it: `Sweep` (the base config, the checked
sweep file, the Optuna study in its database, the MLflow client) and the study's storage.

The study lives in an Optuna database with heartbeats (default ``sqlite:///<runs_dir>/optuna.db``,
beside the embedded MLflow store; `open_storage`): a trial whose process died is failed after two
missed heartbeats and queued again with its parameters, so that the next run of the same sweep
command retries it.

Example::

    from pipelines.sweep.study import default_storage
    default_storage("runs")                                   # 'sqlite:////.../runs/optuna.db'
"""

from __future__ import annotations

import hashlib
import json
import pathlib

from pipelines.sweep.space import (SweepError, dataset_task, grid_size, load_sweep, make_pruner, make_sampler,
                                   plain_config)
from pipelines.tracking_store import resolve_tracking_uri

STUDY_TAG = "sweep.study"
PARENT_ATTR = "mlflow.parent_run_id"
IDENTITY_ATTR = "sweep.identity"
TRIAL_ATTR = "sweep.trial"      # the trial's own number; a retry inherits its original's
WORKER_ATTR = "sweep.worker"    # which worker process runs it (the driver counts started trials by it)
MAX_RETRIES = 3


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



def identity(config_text: str, sweep_text: str, overrides: list[str]) -> str:
    """What makes a study: the config, the sweep file and the --set overrides (hashed)."""
    blob = json.dumps([config_text, sweep_text, sorted(overrides)])
    return hashlib.sha1(blob.encode()).hexdigest()[:12]



def with_warnings_off(fn, *args):
    import warnings

    import optuna

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return fn(*args)



class Sweep:
    """What the driver and the trial processes share: configs, sweep, study, MLflow parent.

    Args:
        args: the parsed command line of ``python -m pipelines.sweep`` (`pipelines.sweep.__main__`):
            ``config``, ``sweep``, ``overrides`` (lists of ``KEY=VALUE``), ``trials``, ``storage``,
            ``study_name``.

    Raises:
        SweepError, pipelines.config.ConfigError: one line naming the file, the key and what to do.

    Example::

        import argparse
        args = argparse.Namespace(config="configs/digits.yaml", sweep="sweeps/default.yaml",
                                  overrides=[["train.epochs=2"]], trials=2, storage=None, study_name=None)
        ctx = Sweep(args)
        ctx.study_name, ctx.folder        # 'setnet-digits-default', runs/setnet-digits/sweep-setnet-digits-default
    """

    def __init__(self, args):
        from pipelines import config as config_lib

        self.args = args
        self.overrides = [o for group in args.overrides for o in group]
        self.config_path = args.config
        self.cfg = config_lib.load_config(args.config, self.overrides)
        self.base = plain_config(self.cfg)
        self.sweep_path = pathlib.Path(args.sweep)
        self.sweep = load_sweep(self.sweep_path, self.base, task=lambda: dataset_task(self.cfg))
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

