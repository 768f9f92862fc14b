"""Multi-worker recovery, end to end: two MultiWorkerMirroredStrategy workers on 127.0.0.1
running ``python -m pipelines.train`` (through resume_job.py, which can hold a worker after a
step so that the test can kill it there).

- Worker 1 SIGKILLed in the middle of an epoch: the chief exits 75 within a bounded time with one
  line saying how to resume; both restarted with the same commands complete, end with identical
  weights, and the one MLflow run is FINISHED with each epoch logged once.
- Worker 1 replaced by a machine with an empty disk (its own runs folder, the job's checkpoint
  folder on shared storage): restarted with a checkpoint folder that is not the chief's, both
  workers refuse (exit 2) instead of training on different weights; with the shared one, it
  restores the chief's step and the job completes.
- SIGTERM to worker 1 alone: both workers checkpoint the same step and exit 143; restarted, they
  resume there.
"""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.support.training import free_ports

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
JOB = HERE / "resume_job.py"
EPOCHS, STEPS = 3, 4
NEVER = 10**6
pytestmark = [pytest.mark.slow, pytest.mark.timeout(900)]


class Job:
    """Two workers; each start runs the same command for a worker unless told otherwise."""

    def __init__(self, tmp, data_dir, runs=("runs", "runs"), checkpoint_dir=None):
        self.tmp, self.data_dir = tmp, data_dir
        self.workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
        self.runs = [tmp / r for r in runs]
        self.checkpoint_dir = checkpoint_dir

    def overrides(self, index, checkpoint_dir=None):
        out = [f"runs_dir={self.runs[index]}", "experiment=recovery", "data.name=synthetic_shapes/small",
               "data.num_points=32", "data.batch_size=16", f"train.epochs={EPOCHS}", f"train.steps_per_epoch={STEPS}",
               "train.strategy=multi_worker", "train.xla=false", "export.enabled=false",
               "model.blocks=[{kind: linear, units: 8}, {kind: linear, units: 8}]", "model.head=[8]",
               "model.head_dropout=0.0"]
        checkpoint_dir = checkpoint_dir or self.checkpoint_dir
        if checkpoint_dir:
            out.append(f"train.checkpoint_dir={checkpoint_dir}")
        return out

    def start(self, index, hold_after=NEVER, checkpoint_dir=None):
        env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": "", "TFDS_DATA_DIR": str(self.data_dir),
               "RESUME_JOB_WEIGHTS": str(self.tmp / f"weights{index}.npz"),
               "TF_CONFIG": json.dumps({"cluster": {"worker": self.workers},
                                        "task": {"type": "worker", "index": index}})}
        env.pop("MLFLOW_TRACKING_URI", None)
        marker = self.tmp / f"held{index}"
        return subprocess.Popen([sys.executable, str(JOB), str(marker), str(hold_after),
                                 *self.overrides(index, checkpoint_dir)], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout=400):
    outs = []
    try:
        for p in procs:
            outs.append(p.communicate(timeout=timeout))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    return outs


def _kill_worker1_mid_epoch(job):
    """Both start; worker 1 holds after step 6 (epoch 2 of 3, 4 steps each) and is SIGKILLed."""
    chief, worker = job.start(0), job.start(1, hold_after=STEPS + 2)
    marker = job.tmp / "held1"
    deadline = time.time() + 300
    while not marker.exists():
        assert worker.poll() is None and chief.poll() is None, _finish([chief, worker])
        assert time.time() < deadline, "worker 1 never reached the step"
        time.sleep(0.1)
    worker.send_signal(signal.SIGKILL)
    killed = time.time()
    out, err = chief.communicate(timeout=120)
    waited = time.time() - killed
    worker.communicate(timeout=30)
    assert chief.returncode == 75, out[-2000:] + err[-4000:]
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]
    assert line.startswith("error: lost contact with worker 1") and "restart every worker" in line, line
    return waited


def _assert_completed(job, outs, procs):
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, o[-2000:] + e[-4000:]
    assert "Resuming" in outs[0][0] and f"after epoch 1/{EPOCHS}" in outs[0][0], outs[0][0][-2000:]
    chief_w, worker_w = (np.load(job.tmp / f"weights{i}.npz") for i in range(2))
    assert len(chief_w.files) == len(worker_w.files) > 0
    for key in chief_w.files:
        assert np.array_equal(chief_w[key], worker_w[key]), key
    (run_dir,) = (job.runs[0] / "recovery").iterdir()
    history = json.loads((run_dir / "history.json").read_text())
    assert history["completed"] and len(history["epochs"]) == EPOCHS

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{job.runs[0] / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("recovery").experiment_id])
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(runs[0].info.run_id, "loss")]
    assert sorted(steps) == list(range(1, EPOCHS + 1)), steps


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("tfds")  # empty: the two workers of the first test prepare it together


def test_worker_killed_mid_epoch_then_both_restarted(tmp_path, data_dir):
    job = Job(tmp_path, data_dir)
    waited = _kill_worker1_mid_epoch(job)
    assert waited < 90, waited
    procs = [job.start(0), job.start(1)]
    _assert_completed(job, _finish(procs), procs)


def test_replaced_worker_with_an_empty_disk(tmp_path, data_dir):
    shared = tmp_path / "shared-checkpoints"
    job = Job(tmp_path, data_dir, runs=("runs0", "runs1"), checkpoint_dir=shared)
    _kill_worker1_mid_epoch(job)
    shutil.rmtree(job.runs[1], ignore_errors=True)  # the new machine has nothing of worker 1's
    # Its checkpoint folder is not the chief's: both refuse rather than train on different weights.
    procs = [job.start(0), job.start(1, checkpoint_dir=tmp_path / "not-shared")]
    outs = _finish(procs)
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 2, o[-2000:] + e[-4000:]
        line = e.strip().splitlines()[-1]
        assert line.startswith("error: the workers restored different checkpoints (worker 0: step 4, "
                               "worker 1: no checkpoint)"), line
    procs = [job.start(0), job.start(1)]
    _assert_completed(job, _finish(procs), procs)


def test_sigterm_to_one_worker_stops_both_at_the_same_step(tmp_path, data_dir):
    job = Job(tmp_path, data_dir)
    chief, worker = job.start(0), job.start(1, hold_after=STEPS + 2)
    deadline = time.time() + 300
    while not (tmp_path / "held1").exists():
        assert worker.poll() is None and chief.poll() is None, _finish([chief, worker])
        assert time.time() < deadline, "worker 1 never reached the step"
        time.sleep(0.1)
    worker.send_signal(signal.SIGTERM)
    (tmp_path / "held1.go").write_text("")
    outs = _finish([chief, worker], timeout=120)
    for p, (o, e) in zip((chief, worker), outs):
        assert p.returncode == 143, o[-2000:] + e[-4000:]
        line = e.strip().splitlines()[-1]
        # Worker 1 announced the step after its next one (7): both saved step 8, the chief's is the job's.
        assert line.startswith("SIGTERM: stopped in epoch 2, after step 4 (step 8), checkpoint written; "
                               "resume with: python -m pipelines.train --set"), line
    (run_dir,) = (job.runs[0] / "recovery").iterdir()
    assert (run_dir / "checkpoints" / "ckpt-8.index").exists()
    procs = [job.start(0), job.start(1)]
    outs = _finish(procs)
    for p, (o, e) in zip(procs, outs):
        assert p.returncode == 0, o[-2000:] + e[-4000:]
    assert f"in epoch 2/{EPOCHS} after step {STEPS}/{STEPS} (step 8;" in outs[0][0]
    chief_w, worker_w = (np.load(tmp_path / f"weights{i}.npz") for i in range(2))
    for key in chief_w.files:
        assert np.array_equal(chief_w[key], worker_w[key]), key
