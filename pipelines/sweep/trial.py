"""One trial, in a process of its own: the trial's config, its MLflow child run, one training
with the epoch objective reported to Optuna, and the result.

The driver (`pipelines.sweep.driver`) starts ``python -m pipelines.sweep ... --worker TOKEN`` per
trial; that process asks the study for a trial (a retry of a killed one first), trains the base
config with the trial's parameters in the run folder ``<runs_dir>/<experiment>/<study>-t<n>``, and
reports each epoch's objective, so that the median pruner can stop it. A retry has the same trial
number, hence the same run folder: training resumes from its last checkpoint and the child run
continues.

Example::

    objective_value([{"val_loss": 0.9}, {"val_loss": 0.7}], "val_loss", "minimize")   # 0.7
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import pathlib
import sys
from typing import Callable

import yaml

from pipelines import config as config_lib
from pipelines.sweep.space import set_key, suggest
from pipelines.sweep.study import PARENT_ATTR, STUDY_TAG, TRIAL_ATTR, WORKER_ATTR, Sweep
from pipelines.tracking import local_artifact_root, read_json

TEST_SCORES = ("accuracy", "mae", "rmse")  # a classification's test figure; a regression's two

def _trial_config(ctx: Sweep, params: dict, run_name: str, folder: pathlib.Path):
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
        _keep_test_scores(trial, done.get("test") or {})
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
                raise optuna.TrialPruned(f"{metric} {value:.4f} after epoch {epoch + 1} is worse than the median of "
                                         f"the earlier trials at that epoch")

    from pipelines.train import train

    try:
        result = train(cfg, callbacks=[ReportAndPrune()], printer=printer)
    except optuna.TrialPruned as e:
        printer(f"sweep {ctx.study_name}: trial {logical} pruned: {e}")
        _tag_child(ctx, child, {"sweep.state": "PRUNED"}, status="KILLED")
        raise
    value = objective_value(result["history"], metric, direction)
    _keep_test_scores(trial, {k: result.get(f"test_{k}") for k in TEST_SCORES})
    if result.get("export_path"):
        trial.set_user_attr("export_path", result["export_path"])
    _tag_child(ctx, child, {"sweep.state": "COMPLETE", "sweep.value": value})
    return value


def _keep_test_scores(trial, scores: dict) -> None:
    """The trial's test figures (``test_accuracy``; a regression's ``test_mae``, ``test_rmse``) as
    user attributes, for the summary. ``test_accuracy`` is always set (None for a regression)."""
    trial.set_user_attr("test_accuracy", scores.get("accuracy"))
    for key in TEST_SCORES[1:]:
        if scores.get(key) is not None:
            trial.set_user_attr(f"test_{key}", scores[key])


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

