"""MLflow tracking that never loses a record, and a store lost mid-run never stops training.

Every record (params, tags, metrics, artifacts, the final status) goes into a
queue first and is sent from there. When the tracking server cannot be reached
the queue is written to ``<run_dir>/mlflow_pending.json`` and training goes on;
each later flush (one per epoch) tries again, and a run that ends while the
server is still away says so and leaves the queue on disk, to be sent with
``python -m pipelines.train --sync <run_dir>``. The run id lives in
``<run_dir>/mlflow.json``, so a resumed run continues the same MLflow run; on
resume, epochs present in the local history but missing from MLflow (a kill
between the checkpoint and the upload) are sent again, and only those.

Tracking URI (`pipelines.tracking_store.resolve_tracking_uri`): ``mlflow.tracking_uri``
from the config, else ``$MLFLOW_TRACKING_URI``, else ``sqlite:///<runs_dir>/mlflow.db`` with
artifacts under ``<runs_dir>/mlartifacts``. A ``file:`` URI (or a plain folder)
is MLflow's file store, kept by MLflow 3 in maintenance mode; it works.

Outages are for after the start: `pipelines.tracking_store.check_store` runs
before a training prepares or writes anything, and a store that cannot work (a
server that does not answer, a scheme MLflow does not know, a database that
cannot be created or opened, a missing driver) stops it with one line.
"""

from __future__ import annotations

import json
import os
import pathlib
import time
from typing import Any, Callable

from pipelines.tracking_store import error_line, global_tracking_uri, open_client, safe_uri

STATE_FILE = "mlflow.json"
PENDING_FILE = "mlflow_pending.json"
MAX_PARAM_LENGTH = 6000


class RunFolderError(ValueError):
    """A run folder's tracking file cannot be read; the message names it and what to do."""


def local_artifact_root(uri: str, runs_dir: str | pathlib.Path) -> str | None:
    """Where experiments of a local (sqlite) store keep artifacts; None for servers (they decide)."""
    if uri.startswith("sqlite:"):
        return (pathlib.Path(runs_dir).resolve() / "mlartifacts").as_uri()
    return None


def _rejected(error: Exception) -> bool:
    """True when the store answered and refused the request (HTTP 4xx), as opposed to being away."""
    from mlflow.exceptions import MlflowException, RestException

    if isinstance(error, RestException):
        return 400 <= error.get_http_status_code() < 500
    # Local (sqlite) stores raise MlflowException directly; only a validation error is a refusal.
    return isinstance(error, MlflowException) and error.error_code == "INVALID_PARAMETER_VALUE"


def write_json(path: pathlib.Path, data) -> None:
    """Write through a temporary file and rename, so that a kill leaves the old file or the new one."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=str))
    os.replace(tmp, path)


def read_json(path: pathlib.Path):
    """A run folder's JSON file, or None when it is missing or was cut short by a kill mid-write."""
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError:
        return None


class Tracker:
    """Queued, resumable logging to one MLflow run.

    Args:
        tracking_uri: MLflow tracking URI (see `pipelines.tracking_store.resolve_tracking_uri`).
        experiment: experiment name (created when missing).
        run_name: MLflow run name.
        run_dir: the run's local folder (state and pending queue live here).
        artifact_root: artifact location for a new experiment (local stores only).
        printer: where the notices go.
        reopen: mark an existing MLflow run RUNNING again (a resumed training); `sync` passes False
            so that uploading a finished run's records does not reopen it.

    Example (an embedded store in a temporary folder)::

        import tempfile
        from pipelines.tracking_store import resolve_tracking_uri
        d = tempfile.mkdtemp()
        tracker = Tracker(resolve_tracking_uri(None, d), "demo", "run-1", d,
                          artifact_root=local_artifact_root(resolve_tracking_uri(None, d), d))
        tracker.log_params({"train.epochs": 2})
        tracker.log_metrics({"loss": 0.5}, step=1)
        assert tracker.finish()
    """

    def __init__(self, tracking_uri: str, experiment: str, run_name: str, run_dir: str | pathlib.Path,
                 artifact_root: str | None = None, printer: Callable[[str], None] = print, reopen: bool = True):
        self.uri = tracking_uri
        self.experiment = experiment
        self.run_name = run_name
        self.run_dir = pathlib.Path(run_dir)
        self.artifact_root = artifact_root
        self.print = printer
        self.reopen = reopen
        self._reopened = False
        self.queue: list[dict] = []
        self.offline = False
        self.run_id: str | None = None
        self._history_for_reconcile: list[dict] | None = None
        state = self._read(STATE_FILE)
        if state and state.get("tracking_uri") == tracking_uri:
            self.run_id = state.get("run_id")
        elif state:
            self.print(f"MLflow: this run was tracked at {safe_uri(str(state.get('tracking_uri')))}; now logging "
                       f"to {safe_uri(tracking_uri)}, so a new MLflow run is started there (with the full history)")
        pending = self._read(PENDING_FILE)
        if pending:
            self.queue.extend(pending.get("records", []))
        self.client = open_client(tracking_uri)

    # ---- persistence

    def _read(self, name: str):
        return read_json(self.run_dir / name)

    def _save_state(self, experiment_id: str) -> None:
        write_json(self.run_dir / STATE_FILE, {"tracking_uri": self.uri, "run_id": self.run_id,
                                                "experiment_id": experiment_id,
                                                "experiment": self.experiment})

    def _save_pending(self) -> None:
        path = self.run_dir / PENDING_FILE
        if self.queue:
            write_json(path, {"tracking_uri": self.uri, "run_id": self.run_id, "experiment": self.experiment,
                               "run_name": self.run_name, "records": self.queue})
        elif path.exists():
            path.unlink()

    # ---- queueing

    def log_params(self, params: dict[str, Any]) -> None:
        clean = {k[:250]: str(v)[:MAX_PARAM_LENGTH] for k, v in params.items()}
        self.queue.append({"op": "params", "params": clean})

    def set_tags(self, tags: dict[str, Any]) -> None:
        self.queue.append({"op": "tags", "tags": {k: str(v) for k, v in tags.items()}})

    def log_metrics(self, metrics: dict[str, float], step: int) -> None:
        values = {k: float(v) for k, v in metrics.items() if v is not None}
        self.queue.append({"op": "metrics", "metrics": values, "step": int(step),
                           "timestamp": int(time.time() * 1000)})

    def log_artifact(self, path: str | pathlib.Path, artifact_path: str | None = None) -> None:
        self.queue.append({"op": "artifact", "path": str(pathlib.Path(path).resolve()),
                           "artifact_path": artifact_path})

    def register_model(self, name: str, artifact_path: str, tags: dict[str, Any] | None = None) -> None:
        """Register this run's artifact folder ``artifact_path`` (an export) as a new version of the
        registered model ``name`` (see `pipelines.registry`); queued after the artifact itself."""
        self.queue.append({"op": "register", "name": name, "artifact_path": artifact_path,
                           "tags": {k: str(v) for k, v in (tags or {}).items()}})

    def terminate(self, status: str = "FINISHED") -> None:
        self.queue.append({"op": "terminate", "status": status, "end_time": int(time.time() * 1000)})

    def reconcile(self, history: list[dict]) -> None:
        """On resume: at the next flush, send the epochs of ``history`` that MLflow does not have."""
        self._history_for_reconcile = history

    # ---- sending

    def _ensure_run(self) -> None:
        if self.run_id is not None:
            if self.reopen and not self._reopened:
                # A resumed run was marked FAILED (or left RUNNING by a kill): it is running again.
                if self.client.get_run(self.run_id).info.status != "RUNNING":
                    self.client.update_run(self.run_id, status="RUNNING")
                self._reopened = True
            return
        exp = self.client.get_experiment_by_name(self.experiment)
        exp_id = exp.experiment_id if exp else self.client.create_experiment(
            self.experiment, artifact_location=self.artifact_root)
        run = self.client.create_run(exp_id, run_name=self.run_name)
        self.run_id = run.info.run_id
        self._save_state(exp_id)

    def _reconcile_now(self) -> None:
        history, self._history_for_reconcile = self._history_for_reconcile, None
        if not history:
            return
        have = {m.step for m in self.client.get_metric_history(self.run_id, "loss")}
        # Only epoch records count (they carry "loss"); the final test metrics share the last step.
        queued = {r["step"] for r in self.queue if r["op"] == "metrics" and "loss" in r["metrics"]}
        missing = [(i + 1, h) for i, h in enumerate(history) if i + 1 not in have and i + 1 not in queued]
        now = int(time.time() * 1000)
        self.queue[0:0] = [{"op": "metrics", "step": step, "timestamp": now,
                            "metrics": {k: float(v) for k, v in logs.items()
                                        if isinstance(v, (int, float)) and not isinstance(v, bool)}}
                           for step, logs in missing]
        if missing:
            self.print(f"MLflow: re-sending {len(missing)} epoch(s) the tracking store did not have")

    def _send(self, record: dict) -> None:
        from mlflow.entities import Metric, Param, RunTag

        op = record["op"]
        if op == "params":
            have = self.client.get_run(self.run_id).data.params
            changed = {k: v for k, v in record["params"].items() if k in have and have[k] != v}
            if changed:
                # MLflow params are write-once; a resumed run started with e.g. another export.root
                # keeps the first values, and the new ones go into tags so nothing is hidden.
                self.print(f"MLflow: params changed since this run started, kept as tags 'resumed.<key>': "
                           f"{', '.join(sorted(changed))}")
                self.client.log_batch(self.run_id, tags=[RunTag(f"resumed.{k}"[:250], v) for k, v in changed.items()],
                                      synchronous=True)
            items = [(k, v) for k, v in record["params"].items() if k not in have]
            for i in range(0, len(items), 100):
                self.client.log_batch(self.run_id, params=[Param(k, v) for k, v in items[i:i + 100]],
                                      synchronous=True)
        elif op == "tags":
            self.client.log_batch(self.run_id, tags=[RunTag(k, v) for k, v in record["tags"].items()],
                                  synchronous=True)
        elif op == "metrics":
            metrics = [Metric(k, v, record["timestamp"], record["step"]) for k, v in record["metrics"].items()]
            self.client.log_batch(self.run_id, metrics=metrics, synchronous=True)
        elif op == "artifact":
            path = pathlib.Path(record["path"])
            if path.is_dir():
                self.client.log_artifacts(self.run_id, str(path), record["artifact_path"])
            elif path.exists():
                self.client.log_artifact(self.run_id, str(path), record["artifact_path"])
            else:
                self.print(f"MLflow: artifact {path} no longer exists; skipped")
        elif op == "register":
            from pipelines.registry import register_export

            with global_tracking_uri(self.uri):
                version = register_export(self.client, record["name"], self.run_id, record["artifact_path"],
                                          record["tags"])
            self.print(f"MLflow: {record['artifact_path']} is version {version.version} of registered model "
                       f"{record['name']!r}")
        elif op == "terminate":
            self.client.set_terminated(self.run_id, status=record["status"], end_time=record["end_time"])
        else:
            raise ValueError(f"unknown pending record {op!r}")

    def flush(self) -> bool:
        """Send what is queued; True when everything went through."""
        sent = 0
        try:
            self._ensure_run()
            if self._history_for_reconcile is not None:
                self._reconcile_now()
            while self.queue:
                try:
                    self._send(self.queue[0])
                except Exception as e:
                    if not _rejected(e):
                        raise
                    # The store answered and refused this record (a 4xx): retrying cannot help, and
                    # keeping it would block every later record, so it is dropped, loudly.
                    self.print(f"MLflow: the tracking store refused a {self.queue[0]['op']} record and it is "
                               f"dropped: {str(e).splitlines()[0][:300]}")
                self.queue.pop(0)
                sent += 1
        except Exception as e:  # the store is away (connection, timeout, 5xx): keep the records, keep training
            if not self.offline:
                self.print(f"MLflow: cannot reach the tracking store at {safe_uri(self.uri)} "
                           f"({type(e).__name__}: {error_line(e, self.uri)}); "
                           f"training goes on, and {len(self.queue)} record(s) are kept in "
                           f"{self.run_dir / PENDING_FILE} until it is back")
            self.offline = True
            self._save_pending()
            return False
        if self.offline:
            self.print(f"MLflow: the tracking store is reachable again; sent {sent} pending record(s)")
            self.offline = False
        self._save_pending()
        return True

    def finish(self, status: str = "FINISHED") -> bool:
        """Queue the final status and flush; if the store is still away, say where everything is."""
        self.terminate(status)
        ok = self.flush()
        if not ok:
            self.print(f"MLflow: the tracking store at {safe_uri(self.uri)} is still unreachable. Nothing is lost: "
                       f"metrics are in {self.run_dir / 'history.json'}, the unsent records in "
                       f"{self.run_dir / PENDING_FILE}; send them later with "
                       f"`python -m pipelines.train --sync {self.run_dir}`")
        return ok


def adopt_run(run_dir: str | pathlib.Path, tracking_uri: str, run_id: str, experiment_id: str,
              experiment: str) -> None:
    """Make the run folder log into an MLflow run created elsewhere, as if it had created it.

    A sweep creates each trial's run as a child of its parent run (tag ``mlflow.parentRunId``) before
    the trial trains; training then finds the run id here and logs into it, and a retried trial
    continues it.
    """
    run_dir = pathlib.Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json(run_dir / STATE_FILE, {"tracking_uri": tracking_uri, "run_id": run_id,
                                      "experiment_id": experiment_id, "experiment": experiment})


def sync(run_dir: str | pathlib.Path, printer: Callable[[str], None] = print, tracking_uri: str | None = None) -> bool:
    """Send a run's pending records (``python -m pipelines.train --sync RUN_DIR``).

    They go to the store the run was tracked at (recorded in the run folder), unless ``tracking_uri``
    names another one; $MLFLOW_TRACKING_URI is used only when the folder records none.
    """
    run_dir = pathlib.Path(run_dir)
    if not run_dir.is_dir():
        printer(f"{run_dir}: no such run folder")
        return False
    pending = _load(run_dir / PENDING_FILE) or {}
    state = _load(run_dir / STATE_FILE) or {}
    if not pending and not state:
        printer(f"{run_dir}: nothing to send (no {PENDING_FILE}, and the run was never tracked)")
        return True
    uri = (tracking_uri or pending.get("tracking_uri") or state.get("tracking_uri")
           or os.environ.get("MLFLOW_TRACKING_URI"))
    if not uri:
        printer(f"{run_dir}: no tracking URI recorded in {PENDING_FILE} or {STATE_FILE}; pass one")
        return False
    # A run that never reached a store has no state file; its pending file names the experiment.
    experiment = state.get("experiment") or pending.get("experiment") or "setnet"
    tracker = Tracker(uri, experiment, pending.get("run_name") or run_dir.name, run_dir, printer=printer,
                      artifact_root=local_artifact_root(uri, run_dir.parent.parent), reopen=False)
    history = _load(run_dir / "history.json") or {}
    # Epochs a kill cut off between the checkpoint and the upload are in the history, not the queue.
    tracker.reconcile(history.get("epochs", []))
    queued = len(tracker.queue)
    ok = tracker.flush()
    printer(f"{run_dir}: {f'sent {queued} pending record(s)' if ok else 'the store is still unreachable; records kept'}"
            f" ({safe_uri(uri)})")
    return ok


def _load(path: pathlib.Path):
    if not path.exists():
        return None
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RunFolderError(f"{path} is not valid JSON ({e}); it was written by an interrupted process? "
                             f"Move it aside and run --sync again") from None
