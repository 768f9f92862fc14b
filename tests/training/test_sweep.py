"""Sweep -> compare -> register -> promote -> serve, end to end against a real `mlflow server`.

One module-scoped fixture does the expensive part once:
- starts `mlflow server` on loopback (the command line `make mlflow-ui` uses);
- runs a two-trial sweep of tiny digits models (3 epochs of 2 steps) and SIGKILLs the sweep command
  (only its process: its trial process must die with it) right after trial 0 checkpointed epoch 1;
- runs the same command again, which must retry trial 0 from its checkpoint and then run trial 1.
The tests then read what happened; the last one promotes the registered versions into an embedded
server's base path while the server runs, and predicts through its labels.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support.mlflow_server import MlflowServer

ROOT = pathlib.Path(__file__).resolve().parents[2]
STUDY, EXPERIMENT, MODEL = "t", "setnet-digits", "setnet"
pytestmark = [pytest.mark.slow, pytest.mark.timeout(1200)]

SWEEP_FILE = """\
study: t
sampler: random
seed: 1
heartbeat_seconds: 2
pruner: none
space:
  model.blocks.0.units: {choices: [8, 16]}
  train.learning_rate: {low: 0.001, high: 0.01, log: true}
"""


def _command(root: pathlib.Path, uri: str) -> list[str]:
    return [sys.executable, "-m", "pipelines.sweep", "--config", "configs/digits.yaml",
            "--sweep", str(root / "sweep.yaml"), "--trials", "2", "--set", f"runs_dir={root / 'runs'}",
            f"export.root={root / 'exports'}", "train.epochs=3", "train.steps_per_epoch=2", "train.xla=false",
            "data.test_split=test[:64]", "export.invariance_clouds=2", "export.invariance_permutations=2",
            "model.blocks=[{kind: linear, units: 8}, {kind: quadratic, units: 8, rank: 2}]", "model.head=[8]",
            f"mlflow.tracking_uri={uri}"]


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
        return True
    except ProcessLookupError:
        return False


@pytest.fixture(scope="module")
def swept(tmp_path_factory):
    import optuna

    root = tmp_path_factory.mktemp("sweep")
    (root / "sweep.yaml").write_text(SWEEP_FILE)
    server = MlflowServer(root)
    server.start()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    command = _command(root, server.uri)
    checkpoint = root / "runs" / EXPERIMENT / f"{STUDY}-t0" / "checkpoints" / "checkpoint"
    seen = {"root": root, "uri": server.uri}
    try:
        with open(root / "first.log", "w") as log:
            first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                     start_new_session=True)
            deadline = time.time() + 600
            while not checkpoint.exists():
                assert first.poll() is None, (root / "first.log").read_text()[-3000:]
                assert time.time() < deadline, "trial 0 did not checkpoint an epoch"
                time.sleep(0.1)
            first.send_signal(signal.SIGKILL)  # the sweep command only, as `kill -9 <pid>` would
            first.wait()
        deadline = time.time() + 30
        while _group_alive(first.pid) and time.time() < deadline:
            time.sleep(0.2)
        seen["orphans"] = _group_alive(first.pid)
        if seen["orphans"]:
            os.killpg(first.pid, signal.SIGKILL)
        storage = f"sqlite:///{root / 'runs' / 'optuna.db'}"
        study = optuna.load_study(study_name=STUDY, storage=storage)
        seen["after_kill"] = [(t.number, t.state.name) for t in study.get_trials()]
        seen["history_at_kill"] = json.loads((checkpoint.parent.parent / "history.json").read_text())
        seen["second"] = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
        seen["study"] = optuna.load_study(study_name=STUDY, storage=storage)
        yield seen
    finally:
        server.kill()


def test_a_killed_sweep_resumes_without_losing_or_duplicating_a_trial(swept):
    from mlflow import MlflowClient

    assert not swept["orphans"], "the trial process outlived the killed sweep command"
    assert swept["after_kill"] == [(0, "RUNNING")]
    assert len(swept["history_at_kill"]["epochs"]) >= 1 and not swept["history_at_kill"]["completed"]
    second = swept["second"]
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    out = second.stdout
    assert "waiting" in out and "continuing parent MLflow run" in out
    assert "trial 0 (a retry: it resumes from the run folder's last checkpoint)" in out
    assert "Resuming" in out and "after epoch" in out

    trials = swept["study"].get_trials()
    # Trial 0 failed by its lost heartbeat and was retried as the same trial (same parameters); then
    # one new trial. (On an overloaded machine a late heartbeat may add a retry that reuses the
    # finished result; each trial still completes exactly once.)
    assert (trials[0].state.name, trials[1].state.name) == ("FAIL", "COMPLETE")
    assert trials[1].user_attrs["sweep.trial"] == 0 and trials[1].params == trials[0].params
    logical = {t.user_attrs["sweep.trial"] for t in trials}
    assert len(logical) == 2
    assert all(sum(t.state.name == "COMPLETE" for t in trials if t.user_attrs["sweep.trial"] == n) == 1
               for n in logical)

    client = MlflowClient(swept["uri"])
    exp = client.get_experiment_by_name(EXPERIMENT)
    runs = client.search_runs([exp.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("sweep.role") == "parent"]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert len(runs) == 3 and sorted(r.info.run_name for r in children) == [f"{STUDY}-t{n}" for n in sorted(logical)]
    assert parent.info.status == "FINISHED" and all(r.info.status == "FINISHED" for r in children)
    assert {a.path for a in client.list_artifacts(parent.info.run_id, "sweep")} == {"sweep/sweep.yaml",
                                                                                   "sweep/base_config.yaml"}
    for child in children:
        steps = [m.step for m in client.get_metric_history(child.info.run_id, "loss")]
        assert sorted(steps) == [1, 2, 3], (child.info.run_name, steps)  # the retried trial: no epoch twice
        assert json.loads(child.data.tags["sweep.params"]) == next(
            t.params for t in trials if t.state.name == "COMPLETE" and t.user_attrs.get("mlflow_run_id") ==
            child.info.run_id)

    # Every export is a version of the registered model, linked to its run and tagged for promotion.
    versions = client.search_model_versions(f"name = '{MODEL}'")
    assert sorted(v.run_id for v in versions) == sorted(r.info.run_id for r in children)
    for v in versions:
        run = client.get_run(v.run_id)
        assert v.tags["invariance.passed"] == "True" and v.tags["dataset.name"] == "digits"
        assert float(v.tags["test.accuracy"]) == pytest.approx(run.data.metrics["test_accuracy"])
        assert v.tags["git.commit"] == run.data.tags["mlflow.source.git.commit"]
        assert run.data.tags["registry.version"] == v.version
    best = max((t for t in trials if t.state.name == "COMPLETE"), key=lambda t: t.value)
    assert parent.data.tags["sweep.best_run_id"] == best.user_attrs["mlflow_run_id"]
    assert parent.data.tags["sweep.best_model_version"] == client.get_run(
        best.user_attrs["mlflow_run_id"]).data.tags["registry.version"]


def test_compare_logs_the_sweeps_table_and_plots_to_the_parent(swept, tmp_path):
    from mlflow import MlflowClient

    from pipelines.sweep.report import compare_sweep

    lines = []
    got = compare_sweep(STUDY, EXPERIMENT, tracking_uri=swept["uri"], out=tmp_path, printer=lines.append)
    values = [t["value"] for t in got["trials"]]
    assert len(values) == 2 and values == sorted(values, reverse=True)
    assert got["table"].splitlines()[0].split()[:4] == ["trial", "state", "epochs", "val_accuracy"]
    client = MlflowClient(swept["uri"])
    logged = {a.path for a in client.list_artifacts(got["parent_run_id"], "compare")}
    for name in ("parallel_coordinates.png", "best_learning_curves.png", "trials.txt", "trials.json"):
        assert f"compare/{name}" in logged
        assert (tmp_path / name).stat().st_size > 0
    assert (tmp_path / "parallel_coordinates.png").read_bytes()[:4] == b"\x89PNG"
    assert "parameter importances" in lines[0]


def _probabilities(export_path: str, cloud: np.ndarray) -> np.ndarray:
    import tensorflow as tf

    fn = tf.saved_model.load(export_path).signatures["serving_default"]
    return fn(points=tf.constant(cloud[None], tf.float32))["probabilities"].numpy()[0]


def _wait_for(url: str, label: str, cloud: np.ndarray, expected: np.ndarray, timeout: float = 120) -> None:
    """Until the server answers through ``label`` with the expected model's probabilities."""
    import httpx

    deadline, last = time.time() + timeout, None
    while time.time() < deadline:
        r = httpx.post(f"{url}/v1/models/{MODEL}/labels/{label}:predict", json={"instances": [cloud.tolist()]},
                       timeout=30)
        last = (r.status_code, r.text[:300])
        if r.status_code == 200 and np.allclose(r.json()["predictions"][0]["probabilities"], expected, atol=1e-5):
            return
        time.sleep(0.3)
    raise AssertionError(f"{label} did not serve the expected model; last answer {last}")


def test_promote_serves_the_best_trial_then_a_challenger_and_rolls_back(swept, tmp_path, capsys):
    from mlflow import MlflowClient

    from serving import promote
    from serving.server.process import ServerProcess

    client = MlflowClient(swept["uri"])
    parent = client.search_runs([client.get_experiment_by_name(EXPERIMENT).experiment_id],
                                filter_string="tags.`sweep.role` = 'parent'")[0]
    best = int(parent.data.tags["sweep.best_model_version"])
    (other,) = [int(v.version) for v in client.search_model_versions(f"name = '{MODEL}'") if int(v.version) != best]
    exports = {int(v.version): v.tags["export.path"] for v in client.search_model_versions(f"name = '{MODEL}'")}
    cloud = np.random.default_rng(0).uniform(0, 1, size=(40, 3)).astype(np.float32)
    expected = {v: _probabilities(p, cloud) for v, p in exports.items()}
    assert not np.allclose(expected[best], expected[other], atol=1e-5)

    base, config = tmp_path / "serve" / MODEL, tmp_path / "models.config"
    config.write_text(f'model_config_list {{ config {{ name: "{MODEL}" base_path: "{base}" '
                      f'model_platform: "tensorflow" }} }}\n')
    flags = ["--model", MODEL, "--base-path", str(base), "--model-config-file", str(config),
             "--tracking-uri", swept["uri"]]
    with ServerProcess(["--model-config-file", str(config), "--model-config-file-poll-wait-seconds", "0.5",
                        "--file-system-poll-wait-seconds", "0.5"], tmp_path) as server:
        url = server.wait_ready()
        assert promote.main([*flags, "--version", str(best), "--alias", "champion"]) == 0
        _wait_for(url, "stable", cloud, expected[best])

        assert promote.main([*flags, "--version", str(other), "--alias", "challenger"]) == 0
        _wait_for(url, "canary", cloud, expected[other])
        _wait_for(url, "stable", cloud, expected[best])

        assert promote.main([*flags, "--version", str(other), "--alias", "champion"]) == 0
        _wait_for(url, "stable", cloud, expected[other])
        assert promote.main([*flags, "--rollback"]) == 0
        _wait_for(url, "stable", cloud, expected[best])
        out = capsys.readouterr().out
        assert f"rolled back: {MODEL} version {best} is champion" in out

        # A version that does not exist: refused, and the server goes on serving what it served.
        before = sorted(p.name for p in base.iterdir()), config.read_text()
        assert promote.main([*flags, "--version", "99"]) == 2
        assert "has no version 99" in capsys.readouterr().err
        assert (sorted(p.name for p in base.iterdir()), config.read_text()) == before
        _wait_for(url, "stable", cloud, expected[best])
    # Each registry version was copied once (the rollback reused its folder), and nothing half-done remains.
    assert sorted(p.name for p in base.iterdir()) == ["1", "2"]
    aliases = client.get_registered_model(MODEL).aliases
    assert {k: int(v) for k, v in aliases.items()} == {"champion": best, "challenger": other}
