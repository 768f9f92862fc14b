"""MLflow tracking end to end, against a real `mlflow server` on 127.0.0.1, and `make compare`.

One module-scoped fixture does the expensive part once (the tests then only read what it saw):
- starts `mlflow server` (SQLite backend, proxied artifacts, one worker, job execution off) with the
  same command line `make mlflow-ui` uses (`pipelines.compare.server_command`);
- trains run A (2 epochs) with MLFLOW_TRACKING_URI pointing at it;
- trains run B (3 epochs) and SIGKILLs the server right after epoch 1 reached it; training goes on,
  says so, and finishes (plots, export); then restarts the server on the same store and uploads
  what was missed with `python -m pipelines.train --sync RUN_DIR`;
- the two runs are the experiment `make compare` reads.
"""

import json
import os
import pathlib
import statistics
import subprocess
import sys

import pytest
import yaml

from tests.support.mlflow_server import MlflowServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
EXPERIMENT = "tracking-test"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]  # a hung server or training fails the module, not the suite
EPOCH_METRICS = ("loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds", "examples_per_second")


def _config(root: pathlib.Path, run_name: str, epochs: int, blocks: str):
    from pipelines.config import load_config

    return load_config(None, [
        f"runs_dir={root / 'runs'}", f"export.root={root / 'exports'}", f"experiment={EXPERIMENT}",
        f"run_name={run_name}", "data.name=synthetic_shapes/small", "data.num_points=32", "data.batch_size=16",
        "data.test_split=test[:48]", f"train.epochs={epochs}", "train.steps_per_epoch=3", "train.xla=false",
        "export.invariance_clouds=2", "export.invariance_permutations=2", f"model.blocks={blocks}",
        "model.head=[8]", "mlflow.tracking_uri=null"])


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    import keras
    from mlflow import MlflowClient

    from pipelines.train import train

    root = tmp_path_factory.mktemp("mlflow")
    server = MlflowServer(root)
    server.start()
    seen = {"uri": server.uri, "root": root}
    try:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MLFLOW_TRACKING_URI", server.uri)
            client = MlflowClient(server.uri)
            cfg_a = _config(root, "run-a", 2, "[{kind: linear, units: 8}]")
            seen["a"] = {"cfg": cfg_a, "out": []}
            seen["a"]["result"] = train(cfg_a, printer=seen["a"]["out"].append)

            class KillServerAfterFirstEpoch(keras.callbacks.Callback):
                # Runs after train.py's own callbacks, so epoch 1 has been sent; record that it
                # arrived, then take the server away.
                def on_epoch_end(self, epoch, logs=None):
                    if epoch == 0:
                        run_id = json.loads((run_dir_b / "mlflow.json").read_text())["run_id"]
                        seen["b"]["steps_at_kill"] = [m.step for m in client.get_metric_history(run_id, "loss")]
                        server.kill()

            cfg_b = _config(root, "run-b", 3, "[{kind: linear, units: 8}, {kind: linear, units: 16}]")
            run_dir_b = root / "runs" / EXPERIMENT / "run-b"
            seen["b"] = {"cfg": cfg_b, "out": []}
            seen["b"]["result"] = train(cfg_b, callbacks=[KillServerAfterFirstEpoch()],
                                        printer=seen["b"]["out"].append)
            pending = run_dir_b / "mlflow_pending.json"
            seen["b"]["pending"] = json.loads(pending.read_text()) if pending.exists() else None

            server.start()  # the same store, back again
            run_id = seen["b"]["result"]["mlflow_run_id"]
            seen["b"]["before_sync"] = ([m.step for m in client.get_metric_history(run_id, "loss")],
                                        client.get_run(run_id).info.status)
            seen["b"]["sync"] = subprocess.run(
                [sys.executable, "-m", "pipelines.train", "--sync", str(run_dir_b)], cwd=ROOT, capture_output=True,
                text=True, timeout=300, env={**os.environ, "PYTHONPATH": str(ROOT)})
            yield seen
    finally:
        server.kill()


def _histories(client, run_id):
    return {k: [(m.step, m.value) for m in sorted(client.get_metric_history(run_id, k), key=lambda m: m.step)]
            for k in EPOCH_METRICS}


def _artifacts(client, run_id, path=None):
    out = []
    for f in client.list_artifacts(run_id, path):
        out += _artifacts(client, run_id, f.path) if f.is_dir else [f.path]
    return out


def _check_complete_run(client, run_id, run_dir: pathlib.Path, result: dict, tmp_path):
    """Everything the issue lists, as the MLflow client reads it back."""
    history = json.loads((run_dir / "history.json").read_text())
    assert history["completed"]
    hist = _histories(client, run_id)
    for key in EPOCH_METRICS:
        assert [s for s, _ in hist[key]] == list(range(1, len(history["epochs"]) + 1)), key
        assert [v for _, v in hist[key]] == pytest.approx([e[key] for e in history["epochs"]], rel=1e-6), key
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.metrics["test_accuracy"] == pytest.approx(result["test_accuracy"])
    assert run.data.metrics["test_loss"] == pytest.approx(result["test_loss"])
    assert run.data.metrics["best_val_accuracy"] == pytest.approx(max(e["val_accuracy"] for e in history["epochs"]))

    files = _artifacts(client, run_id)
    version = pathlib.Path(result["export_path"]).name
    for name in ("config/config.yaml", "plots/learning_curves.png", "plots/confusion_matrix.png", "invariance.json",
                 "history.json", f"export/{version}/saved_model.pb"):
        assert name in files, (name, files)
    assert any(f.startswith(f"export/{version}/variables/") for f in files)
    assert f"export/{version}/assets/class_names.txt" in files
    got = pathlib.Path(client.download_artifacts(run_id, "", str(tmp_path)))
    for png in ("learning_curves", "confusion_matrix"):
        assert (got / "plots" / f"{png}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    invariance = json.loads((got / "invariance.json").read_text())
    assert invariance["invariance"]["passed"] is True
    assert invariance["invariance"]["clouds"] == 2 and invariance["invariance"]["permutations"] == 2
    assert (got / "config" / "config.yaml").read_text() == (run_dir / "config.yaml").read_text()
    return run


def test_run_logs_config_commit_dataset_metrics_plots_export(tracked, tmp_path):
    from mlflow import MlflowClient

    from pipelines.config import flatten
    from pipelines.input import dataset_info

    a = tracked["a"]
    client = MlflowClient(tracked["uri"])
    run_dir = pathlib.Path(a["result"]["run_dir"])
    run = _check_complete_run(client, a["result"]["mlflow_run_id"], run_dir, a["result"], tmp_path)
    assert client.get_experiment(run.info.experiment_id).name == EXPERIMENT
    assert run.info.run_name == "run-a" and len(_histories(client, run.info.run_id)["loss"]) == 2

    params = run.data.params
    flat = flatten(a["cfg"])
    assert {k: params[k] for k in flat} == {k: str(v) for k, v in flat.items()}
    assert int(params["model.parameters"]) > 0
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["data"]["num_points"] == 32

    tags = run.data.tags
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True)
    assert tags["mlflow.source.git.commit"] == (head.stdout.strip() if head.returncode == 0 else "unknown")
    info = dataset_info("synthetic_shapes/small")
    assert tags["dataset.name"] == "synthetic_shapes/small" and tags["dataset.version"] == str(info["version"])
    assert tags["export.invariance_passed"] == "True" and tags["export.path"] == a["result"]["export_path"]
    assert any(f"MLflow: run {run.info.run_id}" in line for line in a["out"])
    assert not any("cannot reach" in line for line in a["out"])


def test_server_outage_training_goes_on_and_sync_uploads_the_rest(tracked, tmp_path):
    from mlflow import MlflowClient

    from pipelines import tracking

    b = tracked["b"]
    result = b["result"]
    run_dir = pathlib.Path(result["run_dir"])
    # Epoch 1 reached the server before it was killed; training then went on to the end.
    assert b["steps_at_kill"] == [1]
    assert len(result["history"]) == 3 and pathlib.Path(result["export_path"], "saved_model.pb").exists()
    out = "\n".join(b["out"])
    assert out.count("cannot reach the tracking store") == 1, out
    assert "still unreachable" in out and f"--sync {run_dir}" in out and "test accuracy" in out
    # What the server missed was kept on disk: epochs 2 and 3, the test metrics, the artifacts, the end.
    ops = [r["op"] for r in b["pending"]["records"]]
    assert ops[-1] == "terminate" and "artifact" in ops
    assert [r["step"] for r in b["pending"]["records"] if r["op"] == "metrics" and "loss" in r["metrics"]] == [2, 3]
    assert b["before_sync"] == ([1], "RUNNING")

    sync = b["sync"]
    assert sync.returncode == 0, sync.stdout[-2000:] + sync.stderr[-3000:]
    assert "sent" in sync.stdout and not (run_dir / "mlflow_pending.json").exists()
    client = MlflowClient(tracked["uri"])
    run_id = result["mlflow_run_id"]
    _check_complete_run(client, run_id, run_dir, result, tmp_path)
    # A second sync has nothing to add and duplicates nothing.
    notes = []
    assert tracking.sync(run_dir, printer=notes.append)
    assert [s for s, _ in _histories(client, run_id)["loss"]] == [1, 2, 3]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_compare_reads_the_experiment_through_mlflow(tracked, tmp_path):
    from pipelines.compare import compare

    lines = []
    got = compare(EXPERIMENT, tracking_uri=tracked["uri"], runs_dir=tmp_path, out=tmp_path / "cmp.png",
                  extra_params=["data.num_points"], printer=lines.append)
    rows = {r["run"]: r for r in got["rows"]}
    assert set(rows) == {"run-a", "run-b"}
    for name, key, epochs, model in (("run-a", "a", 2, "setnet l8"), ("run-b", "b", 3, "setnet l8-l16")):
        row, result = rows[name], tracked[key]["result"]
        assert row["model"] == model and row["epochs"] == epochs and row["status"] == "FINISHED"
        assert row["test_accuracy"] == pytest.approx(result["test_accuracy"])
        assert row["best_val_accuracy"] == pytest.approx(max(h["val_accuracy"] for h in result["history"]))
        assert row["examples_per_second"] == pytest.approx(
            statistics.median(h["examples_per_second"] for h in result["history"]))
        assert row["train_minutes"] == pytest.approx(sum(h["epoch_seconds"] for h in result["history"]) / 60)
        assert row["num_points"] == 32 and row["data.num_points"] == "32" and row["batch_size"] == 16
    assert [r["run"] for r in got["rows"]] == sorted(rows, key=lambda n: -rows[n]["test_accuracy"])
    # Keys that differ between the runs get a column of their own, without the blocks only B has.
    assert got["columns"] == ["data.num_points", "train.epochs"]
    table = lines[0]
    assert "best val acc" in table and "test acc" in table and "examples/s" in table
    assert "run-a" in table and "run-b" in table and "setnet l8-l16" in table
    assert (tmp_path / "cmp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Without a name: the experiment with the latest run (there is one here).
    assert compare(tracking_uri=tracked["uri"], runs_dir=tmp_path, printer=lines.append)["experiment"] == EXPERIMENT
    assert (tmp_path / EXPERIMENT / "comparison.png").exists()


def test_compare_errors_name_what_exists(tracked, tmp_path, capsys, monkeypatch):
    from pipelines.compare import CompareError, main, server_command
    from pipelines.tracking_store import TrackingStoreError, existing_store_uri

    assert main(["--experiment", "no-such-experiment", "--tracking-uri", tracked["uri"]]) == 2
    err = capsys.readouterr().err
    assert "'no-such-experiment' does not exist" in err and EXPERIMENT in err
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingStoreError, match="no MLflow store at .*make train"):
        existing_store_uri(None, tmp_path)  # and no empty store is created by looking
    assert not (tmp_path / "mlflow.db").exists()
    with pytest.raises(CompareError, match="already serves the MLflow UI"):
        server_command(tracked["uri"], tmp_path)
