"""Exact resume and reproducible runs, end to end in subprocesses (``train.deterministic: true``).

- Two uninterrupted runs, the first one generating the dataset in its own process and the second
  reading it, give identical figures (the first run used to differ).
- A run SIGKILLed after any step (hypothesis picks it) and started again with the same command
  ends bit-identical to the uninterrupted run: every epoch's loss and accuracy, the final
  weights, optimizer state and dropout seeds, and the test accuracy.
- SIGTERM checkpoints at the next step and exits 143 with the command that resumes; the
  resumed run is bit-identical too.
"""

import json
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
JOB = HERE / "resume_job.py"
EPOCHS, STEPS = 2, 5
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


def _env(data_dir):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "TFDS_DATA_DIR": str(data_dir)}
    for key in ("TF_CONFIG", "MLFLOW_TRACKING_URI"):
        env.pop(key, None)
    return env


def _overrides(folder):
    # Dropout on, so that the seed generators' state matters; a checkpoint every 3 steps, so that
    # kills land before, on and after step checkpoints and epoch ends.
    return [f"runs_dir={folder / 'runs'}", "experiment=exact", "data.name=synthetic_shapes/small",
            "data.num_points=32", "data.batch_size=16", f"train.epochs={EPOCHS}", f"train.steps_per_epoch={STEPS}",
            "train.checkpoint_every_steps=3", "train.deterministic=true", "mlflow.enabled=false",
            "export.enabled=false", "model.blocks=[{kind: linear, units: 8}, {kind: linear, units: 8, dropout: 0.3}]",
            "model.head=[8]", "model.head_dropout=0.3"]


def _cli(folder, data_dir):
    args = [x for o in _overrides(folder) for x in ("--set", o)]
    return subprocess.run([sys.executable, "-m", "pipelines.train", *args], cwd=ROOT, env=_env(data_dir),
                          capture_output=True, text=True, timeout=400)


def _outcome(folder) -> dict:
    """Every epoch's figures, the test accuracy and every saved value of the final checkpoint."""
    import tensorflow as tf

    (run_dir,) = (folder / "runs" / "exact").iterdir()
    history = json.loads((run_dir / "history.json").read_text())
    assert history["completed"], history
    reader = tf.train.load_checkpoint(str(run_dir / "checkpoints" / f"ckpt-{EPOCHS * STEPS}"))
    values = {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()
              if k.startswith(("model/", "optimizer/", "rng/", "position/"))}
    figures = [{k: e[k] for k in ("loss", "accuracy", "val_loss", "val_accuracy")} for e in history["epochs"]]
    return {"epochs": figures, "test": history["test"], "values": values}


def _assert_identical(a, b):
    assert a["epochs"] == b["epochs"]
    assert a["test"] == b["test"]
    assert sorted(a["values"]) == sorted(b["values"])
    assert any(k.startswith("rng/") for k in a["values"])  # the dropout seeds are in the checkpoint
    for key, value in a["values"].items():
        assert np.array_equal(value, b["values"][key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted run on a fresh data dir (it generates the dataset), and a second one."""
    tmp = tmp_path_factory.mktemp("exact")
    data_dir = tmp / "tfds"
    first = _cli(tmp / "first", data_dir)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-4000:]
    assert "Generating" in first.stderr + first.stdout  # this run did prepare the data
    second = _cli(tmp / "second", data_dir)
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-4000:]
    return data_dir, _outcome(tmp / "first"), _outcome(tmp / "second")


def test_the_first_run_equals_the_second(reference):
    _, first, second = reference
    _assert_identical(first, second)
    assert first["epochs"][0]["loss"] != first["epochs"][1]["loss"]  # it trained


def _hold(folder, data_dir, pause_step):
    marker = folder / "held"
    proc = subprocess.Popen([sys.executable, str(JOB), str(marker), str(pause_step), *_overrides(folder)], cwd=ROOT,
                            env=_env(data_dir), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not marker.exists():
        assert proc.poll() is None, proc.communicate()[1][-4000:]
        assert time.time() < deadline, "the job never reached the step"
        time.sleep(0.1)
    return proc, marker


@settings(max_examples=2, deadline=None, suppress_health_check=list(HealthCheck))
@given(kill_after=st.integers(min_value=1, max_value=EPOCHS * STEPS - 1))
def test_sigkill_after_any_step_then_resume_is_bit_identical(reference, kill_after):
    data_dir, expected, _ = reference
    with tempfile.TemporaryDirectory() as tmp:
        folder = pathlib.Path(tmp)
        proc, marker = _hold(folder, data_dir, kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=60)
        resumed = subprocess.run([sys.executable, str(JOB), str(marker), str(kill_after), *_overrides(folder)],
                                 cwd=ROOT, env=_env(data_dir), capture_output=True, text=True, timeout=400)
        assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
        if kill_after >= 3:
            assert "Resuming" in resumed.stdout, resumed.stdout[-2000:]
        _assert_identical(_outcome(folder), expected)


def test_sigterm_checkpoints_exits_143_and_resumes_exactly(reference, tmp_path):
    data_dir, expected, _ = reference
    proc, marker = _hold(tmp_path, data_dir, 2)
    proc.send_signal(signal.SIGTERM)
    marker.with_name(marker.name + ".go").write_text("")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, out[-2000:] + err[-4000:]
    assert "Traceback" not in err
    (run_dir,) = (tmp_path / "runs" / "exact").iterdir()
    assert (run_dir / "checkpoints" / "ckpt-3.index").exists()  # the step after the signal
    line = err.strip().splitlines()[-1]
    assert line.startswith("SIGTERM: stopped in epoch 1, after step 3/") or "after step 3" in line, line
    assert "resume with: python -m pipelines.train --set" in line
    resumed = subprocess.run([sys.executable, str(JOB), str(marker), "2", *_overrides(tmp_path)], cwd=ROOT,
                             env=_env(data_dir), capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stdout[-2000:] + resumed.stderr[-4000:]
    assert f"Resuming {run_dir} in epoch 1/{EPOCHS} after step 3/{STEPS}" in resumed.stdout
    _assert_identical(_outcome(tmp_path), expected)
