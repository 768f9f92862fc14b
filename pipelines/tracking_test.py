"""Tracker without TensorFlow: the embedded SQLite store, an unreachable server, refused records.

The end-to-end checks (training against a real `mlflow server`, killing it mid-run, `--sync`,
`make compare`) are in tests/training/test_mlflow.py.
"""

import json
import os
import socket

import pytest

from pipelines import tracking
from pipelines.tracking import PENDING_FILE, STATE_FILE, Tracker, local_artifact_root
from pipelines.tracking_store import resolve_tracking_uri


def _closed_port() -> int:
    # Bound and released: nothing listens there, so a connection is refused at once.
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One embedded store for the module (creating its tables takes seconds): (uri, runs_dir)."""
    runs = tmp_path_factory.mktemp("store") / "runs"
    runs.mkdir()
    return resolve_tracking_uri("sqlite:///" + str(runs.resolve() / "mlflow.db"), runs), runs


def test_tracking_uri_precedence(tmp_path, monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    assert resolve_tracking_uri(None, tmp_path / "runs") == f"sqlite:///{(tmp_path / 'runs').resolve()}/mlflow.db"
    assert local_artifact_root(resolve_tracking_uri(None, tmp_path), tmp_path) == (tmp_path / "mlartifacts").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert resolve_tracking_uri(None, tmp_path) == "http://127.0.0.1:5999"
    assert local_artifact_root("http://127.0.0.1:5999", tmp_path) is None  # the server decides
    assert resolve_tracking_uri("sqlite:///x.db", tmp_path) == "sqlite:///x.db"


def test_embedded_store_roundtrip_and_resume(store):
    from mlflow import MlflowClient

    uri, runs = store
    run_dir = runs / "exp" / "r1"
    run_dir.mkdir(parents=True)
    notes = []
    t = Tracker(uri, "exp", "r1", run_dir, artifact_root=local_artifact_root(uri, runs), printer=notes.append)
    t.log_params({"train.epochs": 2, "export.root": "a"})
    t.set_tags({"dataset.name": "digits"})
    t.log_metrics({"loss": 1.5, "accuracy": 0.25}, step=1)
    (run_dir / "config.yaml").write_text("train: {epochs: 2}\n")
    t.log_artifact(run_dir / "config.yaml", "config")
    assert t.flush() and not (run_dir / PENDING_FILE).exists()
    run_id = json.loads((run_dir / STATE_FILE).read_text())["run_id"]
    assert t.finish("FAILED")  # an interrupted training

    # The same folder again (a resume): the same MLflow run, running again; a param whose value
    # changed is kept as a tag instead of blocking the queue; missing epochs are re-sent.
    t2 = Tracker(uri, "exp", "r1", run_dir, printer=notes.append)
    assert t2.run_id == run_id
    t2.log_params({"train.epochs": 2, "export.root": "b"})
    t2.reconcile([{"loss": 1.5, "accuracy": 0.25}, {"loss": 1.0, "accuracy": 0.5}])
    assert t2.flush()
    client = MlflowClient(uri)
    run = client.get_run(run_id)
    assert run.info.status == "RUNNING"
    assert run.data.params["export.root"] == "a" and run.data.tags["resumed.export.root"] == "b"
    assert [(m.step, m.value) for m in client.get_metric_history(run_id, "loss")] == [(1, 1.5), (2, 1.0)]
    assert any("re-sending 1 epoch" in n for n in notes) and any("export.root" in n for n in notes)
    t2.log_metrics({"test_accuracy": 0.5}, step=2)
    assert t2.finish()
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED" and run.data.metrics["test_accuracy"] == 0.5
    assert [f.path for f in client.list_artifacts(run_id, "config")] == ["config/config.yaml"]
    assert run.info.artifact_uri.startswith((runs / "mlartifacts").resolve().as_uri())


def test_unreachable_store_keeps_every_record_on_disk(tmp_path, store):
    uri = f"http://127.0.0.1:{_closed_port()}"
    notes = []
    t = Tracker(uri, "exp-offline", "r1", tmp_path, printer=notes.append)
    t.log_params({"a": 1})
    t.log_metrics({"loss": 2.0}, step=1)
    assert not t.flush()
    t.log_metrics({"loss": 1.0}, step=2)
    assert not t.flush()
    assert not t.finish()
    # One notice when the store goes away, one at the end telling how to send the rest later.
    assert sum("cannot reach the tracking store" in n for n in notes) == 1
    assert "--sync" in notes[-1] and str(tmp_path) in notes[-1]
    pending = json.loads((tmp_path / PENDING_FILE).read_text())
    assert pending["tracking_uri"] == uri
    assert [r["op"] for r in pending["records"]] == ["params", "metrics", "metrics", "terminate"]
    assert [r["step"] for r in pending["records"] if r["op"] == "metrics"] == [1, 2]
    # A new process (e.g. --sync) picks the queue up from disk; the store is still away.
    assert len(Tracker(uri, "exp-offline", "r1", tmp_path, printer=notes.append).queue) == 4
    assert not tracking.sync(tmp_path, printer=notes.append)
    assert (tmp_path / PENDING_FILE).exists() and "still unreachable" in notes[-1]

    # The run never reached a store; sent to another one, it is created there with everything.
    from mlflow import MlflowClient

    uri2 = store[0]
    assert tracking.sync(tmp_path, printer=notes.append, tracking_uri=uri2)
    assert not (tmp_path / PENDING_FILE).exists() and "sent 4 pending record(s)" in notes[-1]
    state = json.loads((tmp_path / STATE_FILE).read_text())
    run = MlflowClient(uri2).get_run(state["run_id"])
    assert run.info.status == "FINISHED" and run.data.params == {"a": "1"} and run.info.run_name == "r1"
    assert MlflowClient(uri2).get_experiment(run.info.experiment_id).name == "exp-offline"
    assert sorted((m.step, m.value) for m in MlflowClient(uri2).get_metric_history(run.info.run_id, "loss")) \
        == [(1, 2.0), (2, 1.0)]


def test_sync_of_an_untracked_or_missing_folder(tmp_path):
    notes = []
    assert tracking.sync(tmp_path, printer=notes.append) and "nothing to send" in notes[-1]
    assert not tracking.sync(tmp_path / "nope", printer=notes.append) and "no such run folder" in notes[-1]
    (tmp_path / PENDING_FILE).write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        tracking.sync(tmp_path, printer=notes.append)


class _Flaky:
    """An MlflowClient whose every call fails while ``down`` (a store that went away)."""

    def __init__(self, inner):
        self.inner, self.down = inner, False

    def __getattr__(self, name):
        attr = getattr(self.inner, name)

        def call(*args, **kwargs):
            if self.down:
                raise ConnectionError("connection refused (simulated outage)")
            return attr(*args, **kwargs)

        return call if callable(attr) else attr


def test_store_back_mid_run_gets_the_backlog_in_order_and_refusals_do_not_block(store):
    from mlflow import MlflowClient

    uri, runs = store
    run_dir = runs / "exp" / "r2"
    run_dir.mkdir(parents=True)
    notes = []
    t = Tracker(uri, "exp", "r", run_dir, artifact_root=local_artifact_root(uri, runs), printer=notes.append)
    t.client = _Flaky(t.client)
    t.log_metrics({"loss": 4.0}, step=1)
    assert t.flush()
    t.client.down = True
    for step in (2, 3):
        t.log_metrics({"loss": 5.0 - step}, step=step)
        assert not t.flush()
        assert len(json.loads((run_dir / PENDING_FILE).read_text())["records"]) == step - 1
    t.client.down = False
    t.log_metrics({"bad*name": 1.0}, step=4)  # MLflow refuses this metric name
    t.log_metrics({"loss": 1.0}, step=4)
    assert t.flush() and not (run_dir / PENDING_FILE).exists()
    assert any("reachable again; sent 4 pending" in n for n in notes), notes
    assert any("refused a metrics record" in n and "bad*name" in n for n in notes), notes
    history = MlflowClient(uri).get_metric_history(t.run_id, "loss")
    assert [(m.step, m.value) for m in sorted(history, key=lambda m: m.step)] == [(1, 4.0), (2, 3.0), (3, 2.0), (4, 1.0)]


def test_a_file_store_takes_every_kind_of_record(tmp_path, monkeypatch):
    # MLflow 3 keeps its file store in maintenance mode and refuses it by default; a file: URI
    # works all the same: params, metrics, artifacts, a registered version, the final status.
    from mlflow import MlflowClient

    monkeypatch.chdir(tmp_path)  # where MLflow's file registry would create a stray mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    uri = (tmp_path / "store").as_uri()  # not ./mlruns, which MLflow would take for its default store
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "export" / "1").mkdir(parents=True)
    (run_dir / "export" / "1" / "saved_model.pb").write_bytes(b"")
    t = Tracker(uri, "exp", "r1", run_dir, artifact_root=local_artifact_root(uri, tmp_path), printer=print)
    t.log_params({"train.epochs": 1})
    t.log_metrics({"loss": 0.5}, step=1)
    t.log_artifact(run_dir / "export" / "1", "export/1")
    t.register_model("setnet-file-store", "export/1", {"invariance.passed": "True"})
    assert t.finish() and not (run_dir / PENDING_FILE).exists()
    assert not (tmp_path / "mlflow.db").exists() and "MLFLOW_TRACKING_URI" not in os.environ
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)  # the file registry's reads need it too (see above)
    client = MlflowClient(uri)
    run = client.get_run(t.run_id)
    assert run.info.status == "FINISHED" and run.data.params == {"train.epochs": "1"}
    assert run.data.metrics["loss"] == 0.5 and run.data.tags["registry.version"] == "1"
    assert [f.path for f in client.list_artifacts(t.run_id, "export/1")] == ["export/1/saved_model.pb"]
    assert client.get_model_version("setnet-file-store", "1").tags["invariance.passed"] == "True"
