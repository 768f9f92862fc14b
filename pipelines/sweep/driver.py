"""The sweep command itself: the parent MLflow run, K trial processes at a time until the study
has its trials, and the best trial so far (`summarize`).

`drive` finds the study and the parent run (a sweep run again with the same command continues
both), waits for the heartbeats of trials marked running so that those of a killed sweep are
retried, then keeps ``--parallel`` trial processes (`pipelines.sweep.trial`) going. Each trial
process dies with the driver (``PR_SET_PDEATHSIG``), so ``kill -9`` of the sweep leaves no orphan
training; after each finished trial the best one goes to ``best_trial.json`` and to the parent run.

Example (what ``python -m pipelines.sweep`` does)::

    ctx = Sweep(args)              # pipelines.sweep.study
    exit_code = drive(ctx, argv)   # argv: the command line, passed on to each trial process
"""

from __future__ import annotations

import ctypes
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

from pipelines.sweep.space import SweepError
from pipelines.sweep.study import (IDENTITY_ATTR, PARENT_ATTR, STUDY_TAG, TRIAL_ATTR, WORKER_ATTR, Sweep,
                                   with_warnings_off)
from pipelines.sweep.trial import TEST_SCORES
from pipelines.tracking import local_artifact_root, write_json
from pipelines.tracking_store import error_line, safe_uri

MAX_CONSECUTIVE_FAILURES = 3
PROJECT_ROOT = pathlib.Path(__file__).resolve().parents[2]


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
            STUDY_TAG: ctx.study_name, "sweep.role": "parent", "sweep.storage": safe_uri(ctx.storage_url)})
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
            f"{safe_uri(ctx.tracking_uri)}")
    client.set_tag(run_id, "sweep.trials", str(ctx.sweep["trials"]))
    study.set_user_attr(PARENT_ATTR, run_id)
    return run_id



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
               **{f"test_{k}": best.user_attrs.get(f"test_{k}") for k in TEST_SCORES
                  if k == "accuracy" or f"test_{k}" in best.user_attrs},
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
        raise SweepError(f"study {ctx.study_name!r} in {safe_uri(ctx.storage_url)} was started from another config, "
                         f"sweep file or --set; run it with those again to resume it, or pass --study-name NEW "
                         f"to start a new sweep")
    try:
        ctx.parent_id = _parent_run(ctx, study, printer)
    except Exception as e:
        raise SweepError(f"cannot reach the MLflow tracking store at {safe_uri(ctx.tracking_uri)} "
                         f"({type(e).__name__}: {error_line(e, ctx.tracking_uri)}); start it, or point "
                         f"--set mlflow.tracking_uri=... / $MLFLOW_TRACKING_URI at a running one") from None
    target, parallel = ctx.sweep["trials"], ctx.args.parallel
    trials = study.get_trials(deepcopy=False)
    if any(t.state == TrialState.RUNNING for t in trials):
        grace = 2 * ctx.sweep["heartbeat_seconds"] + 1
        printer(f"sweep {ctx.study_name}: {sum(t.state == TrialState.RUNNING for t in trials)} trial(s) marked "
                f"running; waiting {grace} s for their heartbeats, so that those of a killed sweep are retried")
        time.sleep(grace)
    printer(f"sweep {ctx.study_name}: {target} trial(s), {parallel} at a time, {ctx.sweep['sampler']} sampler, "
            f"{ctx.sweep['direction']} {ctx.sweep['objective']}; study in {safe_uri(ctx.storage_url)}; "
            f"trial logs in {ctx.folder / 'logs'}")
    workers: dict[str, tuple[subprocess.Popen, Any]] = {}
    tokens: set[str] = set()
    seq = len(list((ctx.folder / "logs").glob("worker-*.log"))) if (ctx.folder / "logs").is_dir() else 0
    failures = 0
    reported: set[int] = {t.number for t in trials if t.state.is_finished()}
    # The trial processes import this checkout's pipelines, whatever the working directory.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(PROJECT_ROOT), os.environ.get("PYTHONPATH")]))}
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

