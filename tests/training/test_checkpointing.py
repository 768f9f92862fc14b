"""The job checkpoint and the stop signals, in process (the end-to-end runs are in
test_exact_resume.py and test_worker_recovery.py)."""

import os
import pathlib
import signal

import numpy as np
import pytest
import tensorflow as tf

from pipelines import checkpointing
from pipelines.checkpointing import JobCheckpoint, Position, StopSignals, Stopped
from pipelines.config import load_config
from pipelines.distribute import Task
from pipelines.runs import checkpoint_folder, default_run_name
from pipelines.train import _resume_command
from tests.support.training import build

CHIEF = Task(index=0, num_workers=1, chief=True)


def _model():
    import keras

    from setnet.models import build_classifier

    model = build_classifier({"num_classes": 3, "head": [8], "head_dropout": 0.5,
                              "blocks": [{"kind": "linear", "units": 8, "dropout": 0.5}]})
    optimizer = keras.optimizers.Adam(1e-2)
    optimizer.build(model.trainable_variables)
    return model, optimizer


def test_save_and_restore_the_position_weights_optimizer_and_dropout_seeds(tmp_path):
    model, optimizer = _model()
    job = JobCheckpoint({"model": model, "optimizer": optimizer}, str(tmp_path / "ckpt"), CHIEF)
    assert job.restore() is None
    seeds = [v for v in model.non_trainable_variables if "seed_generator_state" in v.path]
    assert seeds  # dropout draws from these, and Keras' own tracking leaves them out
    for v in seeds:
        v.assign(v.value + 7)
    optimizer.iterations.assign(11)
    saved = [v.numpy().copy() for v in model.variables]
    job.save(Position(epoch=1, step=3, global_step=11, totals=(4.5, 2.0, 48.0), teleports=2))

    other, other_opt = _model()
    restored = JobCheckpoint({"model": other, "optimizer": other_opt}, str(tmp_path / "ckpt"), CHIEF).restore()
    assert restored == Position(epoch=1, step=3, global_step=11, totals=(4.5, 2.0, 48.0), teleports=2)
    assert int(other_opt.iterations.numpy()) == 11
    for a, b in zip(saved, (v.numpy() for v in other.variables)):
        np.testing.assert_array_equal(a, b)


def test_a_non_chief_saves_to_a_temporary_folder_it_deletes_and_reads_the_chiefs(tmp_path):
    model, optimizer = _model()
    chief = JobCheckpoint({"model": model, "optimizer": optimizer}, str(tmp_path / "job"), CHIEF)
    chief.save(Position(0, 2, 2))
    worker = JobCheckpoint({"model": model, "optimizer": optimizer}, str(tmp_path / "job"),
                           Task(index=1, num_workers=2, chief=False))
    worker.save(Position(0, 4, 4))
    assert worker.latest == chief.latest and chief.latest.endswith("ckpt-2")  # the chief's, not its own
    assert worker.restore().global_step == 2
    assert os.listdir(worker._write_dir) == []  # its own save is gone at once
    worker.close()
    assert not pathlib.Path(worker._write_dir).exists()


def test_a_checkpoint_of_another_model_is_refused_with_the_advice(tmp_path):
    model, optimizer = _model()
    JobCheckpoint({"model": model, "optimizer": optimizer}, str(tmp_path), CHIEF).save(Position(1, 0, 5))
    other, other_opt = build(tf.distribute.get_strategy())
    with pytest.raises(checkpointing.CheckpointMismatchError, match="start a new run with --fresh"):
        JobCheckpoint({"model": other, "optimizer": other_opt}, str(tmp_path), CHIEF).restore()


def test_sigterm_stops_at_the_next_step_boundary_and_a_second_ctrl_c_at_once():
    signals = StopSignals(CHIEF, multi_worker=False).install()
    try:
        assert not signals.should_stop(3)
        os.kill(os.getpid(), signal.SIGTERM)
        assert signals.received == "SIGTERM" and signals.should_stop(4) and signals.stop_at == 4
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)  # a second signal (Ctrl-C) does not wait
    finally:
        signals.close()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    stopped = Stopped("SIGTERM", Position(0, 4, 4))
    assert stopped.exit_code == 143 and Stopped("SIGINT", None).exit_code == 130
    assert isinstance(stopped, KeyboardInterrupt)  # nothing catching Exception swallows it


def test_the_resume_advice_drops_fresh_and_names_the_run(tmp_path):
    cfg = load_config(None, ["train.resume=never"])
    run = tmp_path / "default-2"
    command = _resume_command(["--fresh", "--set", "train.epochs=3"], run, cfg)
    assert command == "python -m pipelines.train --set train.epochs=3 --set run_name=default-2"
    plain = load_config(None, [])
    same = tmp_path / default_run_name(plain)
    assert _resume_command(["--set", "train.epochs=3"], same, plain) == \
        "python -m pipelines.train --set train.epochs=3"
    assert _resume_command(["--set", "train.resume=never"], run, cfg).endswith(
        "--set train.resume=never --set train.resume=auto --set run_name=default-2")


def test_the_checkpoint_folder_may_be_shared_storage(tmp_path):
    run = tmp_path / "runs" / "exp" / "r1"
    assert checkpoint_folder(load_config(None, []), run) == str(run / "checkpoints")
    cfg = load_config(None, ["train.checkpoint_dir=gs://bucket/ckpt/", "experiment=exp"])
    assert checkpoint_folder(cfg, run) == "gs://bucket/ckpt/exp/r1"


def test_a_lost_worker_error_names_the_worker():
    error = tf.errors.UnavailableError(None, None, "Collective ops is aborted by: The following tasks are "
                                       "unhealthy (stopped sending heartbeats):\n/job:worker/replica:0/task:1")
    assert checkpointing.worker_lost(error)
    assert checkpointing.lost_peer(error, Task(0, 2, True)) == "worker 1 (no heartbeat)"
    assert checkpointing.lost_peer(tf.errors.UnavailableError(None, None, "Socket closed"),
                                   Task(1, 2, False)) == "another worker"
    assert not checkpointing.worker_lost(tf.errors.InvalidArgumentError(None, None, "bad shape"))


def test_a_resumed_teleport_schedule_keeps_its_budget_and_does_not_repeat():
    from setnet.teleport import TeleportCallback

    x, y = np.zeros((4, 3), "float32"), np.zeros(4, "int64")
    cb = TeleportCallback((x, y), epochs=[0, 1, 2], steps=[3, 9], max_teleports=3)
    # Stopped in epoch 1 (0-based) after its start-of-epoch teleport, at optimizer step 8.
    cb.resume_at(2, epoch=1, step_in_epoch=3, global_step=8)
    assert len(cb.history) == 2 and cb._budget_left()
    assert cb.epochs == [0, 2] and cb._pending_steps == [9]
    cb.resume_at(0, epoch=2, step_in_epoch=0, global_step=10)  # at an epoch's start: it teleports then
    assert 2 in cb.epochs and cb._pending_steps == []


def test_fresh_names_the_unfinished_run_it_leaves(tmp_path):
    from pipelines.runs import note_unfinished_siblings

    cfg = load_config(None, [f"runs_dir={tmp_path}", "train.resume=never"])
    base = tmp_path / cfg.experiment / default_run_name(cfg)
    model, optimizer = _model()
    JobCheckpoint({"model": model, "optimizer": optimizer}, str(base / "checkpoints"), CHIEF).save(Position(1, 0, 5))
    said = []
    note_unfinished_siblings(cfg, base.with_name(base.name + "-2"), said.append)
    assert said == [f"--fresh: starting {base.name}-2; the unfinished run {base} is left as it is (resume it with "
                    f"the same command without --fresh and --set run_name={base.name})"]
