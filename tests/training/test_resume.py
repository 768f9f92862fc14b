"""Fault tolerance and the command line, end to end in subprocesses (the way users run training).

- A run SIGKILLed mid-epoch and started again with the same command resumes after its last
  completed epoch, continues the same MLflow run, and ends with the planned epochs, a complete
  per-epoch history (locally and in MLflow) and an export.
- Bad configs and missing ModelNet data exit with code 2 and a message, not a traceback.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import pytest

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
EPOCHS = 3
# Every test here starts pipelines.train in a process of its own, the way users run it.
pytestmark = pytest.mark.slow


def _env(tmp_path, **extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    for key in ("TF_CONFIG", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    env.update(extra)
    return env


def _overrides(tmp_path):
    return [f"runs_dir={tmp_path / 'runs'}", f"export.root={tmp_path / 'exports'}", "experiment=resume-test",
            "data.name=synthetic_shapes/small", "data.num_points=32", "data.batch_size=16",
            f"train.epochs={EPOCHS}", "train.steps_per_epoch=6", "export.invariance_clouds=2",
            "export.invariance_permutations=2", "model.blocks=[{kind: linear, units: 8}, {kind: linear, units: 8}]",
            "model.head=[8]"]


@pytest.mark.timeout(400)
def test_sigkill_mid_epoch_then_same_command_resumes(tmp_path):
    marker = tmp_path / "paused"
    # Held after the third step of epoch 2 (6 steps an epoch): epoch 1 is checkpointed, epoch 2 is not.
    command = [sys.executable, str(HERE / "resume_job.py"), str(marker), "9", *_overrides(tmp_path)]
    env = _env(tmp_path)

    first = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                             text=True)
    deadline = time.time() + 240
    while not marker.exists():
        assert first.poll() is None, f"the job ended before the pause:\n{first.stdout.read()[-4000:]}"
        assert time.time() < deadline, "the job never reached the pause"
        time.sleep(0.2)
    run_dirs = list((tmp_path / "runs" / "resume-test").iterdir())
    assert len(run_dirs) == 1
    run_dir = run_dirs[0]
    # Mid-epoch 2: epoch 1 is checkpointed and recorded, epoch 2 is not.
    history = json.loads((run_dir / "history.json").read_text())
    assert len(history["epochs"]) == 1 and not history["completed"]
    run_id = json.loads((run_dir / "mlflow.json").read_text())["run_id"]
    first.send_signal(signal.SIGKILL)
    first_out = first.communicate(timeout=30)[0]
    assert first.returncode == -signal.SIGKILL
    assert "Epoch 2/3" in first_out and "test accuracy" not in first_out

    second = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-5000:]
    out = second.stdout
    assert f"Resuming {run_dir} after epoch 1/{EPOCHS}" in out, out[-3000:]
    assert "Epoch 1/3" not in out and "Epoch 2/3" in out and "Epoch 3/3" in out
    assert "test accuracy" in out

    history = json.loads((run_dir / "history.json").read_text())
    assert history["completed"] and len(history["epochs"]) == EPOCHS
    for logs in history["epochs"]:
        assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds",
                "examples_per_second"} <= set(logs)
    assert json.loads((run_dir / "mlflow.json").read_text())["run_id"] == run_id
    assert [p.name for p in (tmp_path / "exports" / "resume-test").iterdir()] == ["1"]

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'runs' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resume-test")
    runs = client.search_runs([experiment.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # the same run continued, no second one
    run = runs[0]
    assert run.info.status == "FINISHED"
    for key in ("loss", "val_accuracy", "lr", "epoch_seconds"):
        steps = sorted(m.step for m in client.get_metric_history(run_id, key))
        assert steps == list(range(1, EPOCHS + 1)), (key, steps)
    assert "test_accuracy" in run.data.metrics
    assert run.data.params["train.epochs"] == str(EPOCHS)


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "pipelines.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_bad_config_exits_2_with_the_message(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("extends: " + str(ROOT / "configs" / "default.yaml") + "\ntrain:\n  epoch: 3\n")
    proc = _cli(["--config", str(bad)], _env(tmp_path))
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert f"unknown key 'train.epoch'; did you mean 'epochs'? in {bad}" in proc.stderr
    proc = _cli(["--set", "train.epochs=zero"], _env(tmp_path))
    assert proc.returncode == 2 and "train.epochs: must be an integer, got 'zero'" in proc.stderr


@pytest.mark.timeout(300)
def test_modelnet_without_data_exits_2_with_the_instructions(tmp_path):
    (tmp_path / "tfds").mkdir()
    (tmp_path / "manual").mkdir()
    env = _env(tmp_path, TFDS_DATA_DIR=str(tmp_path / "tfds"), SETNET_MODELNET_DIR=str(tmp_path / "manual"))
    proc = _cli(["--config", "configs/modelnet.yaml", "--set", f"runs_dir={tmp_path / 'runs'}"], env)
    assert proc.returncode == 2, proc.stdout[-2000:] + proc.stderr[-4000:]
    assert "Traceback" not in proc.stderr
    message = proc.stderr[proc.stderr.index("\nerror: ") + 1:]  # TFDS may log a warning first
    assert message.startswith("error: modelnet40: no ModelNet data found")
    assert str(tmp_path / "manual") in message  # where it looked
    assert "python -m pipelines.prepare modelnet40" in message  # and how to get the data
