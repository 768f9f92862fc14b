"""One checkpoint for the whole job, at any step, and a clean stop on SIGTERM / Ctrl-C.

The contract is that of ``tf.keras.callbacks.BackupAndRestore`` under
MultiWorkerMirroredStrategy, for the project's own loop (`pipelines.loop.Trainer`):

- **One job checkpoint.** The chief alone writes to the job's checkpoint folder
  (``train.checkpoint_dir``, default ``<run folder>/checkpoints``; anything
  ``tf.io.gfile`` writes, such as ``gs://``). The other workers save too, at the same
  steps (a save may run collectives), into a local temporary folder that they delete
  at once. Every worker restores from the chief's folder, so a worker replaced by a
  machine with an empty disk restores what the others restore, provided the folder is
  shared storage.
- **Agreement.** Before training, the workers gather what they restored (the global
  step and a fingerprint of the weights); if any differ, every worker refuses
  (`CheckpointMismatchError`) instead of training on different weights.
- **Exact position.** The checkpoint holds the model, the optimizer (so the learning-rate
  schedule), the dropout seed generators, and the run's position: epoch, steps done in
  it, the epoch's running loss sums, and the teleports done. With the input keyed by
  ``(seed, epoch)`` (`pipelines.input.make_epochs`) a resumed run trains on the batches
  an uninterrupted run would have.
- **Stop signals** (`StopSignals`): SIGTERM (what Kubernetes and Slurm send before a kill)
  and Ctrl-C make training checkpoint at the next step boundary and raise `Stopped`. Under
  several workers the worker that got the signal announces the step to stop after through
  the coordination service that MultiWorkerMirroredStrategy runs, and waits until every
  worker has heard it, so all of them save at the same step.

Example (one device)::

    job = JobCheckpoint({"model": model, "optimizer": optimizer}, "runs/x/checkpoints", Task(0, 1, True))
    position = job.restore()            # None on a fresh run
    job.save(Position(epoch=1, step=0, global_step=100))
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import signal
import tempfile
import threading

import numpy as np
import tensorflow as tf

from pipelines.distribute import Task

# Exit codes of pipelines.train (docs/training.md): a stop after a checkpoint, a lost worker.
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143
EXIT_WORKER_LOST = 75


class CheckpointMismatchError(RuntimeError):
    """The workers restored different checkpoints; the message names each worker's step."""


class WorkerLostError(RuntimeError):
    """Another worker of a multi-worker job stopped answering; the message says how to resume."""


class Stopped(KeyboardInterrupt):
    """Training stopped on a signal after checkpointing; ``exit_code`` is 130 (SIGINT) or 143 (SIGTERM)."""

    def __init__(self, signal_name: str, position: "Position | None"):
        super().__init__(signal_name)
        self.signal_name = signal_name
        self.position = position
        self.exit_code = EXIT_TERMINATED if signal_name == "SIGTERM" else EXIT_INTERRUPTED


@dataclasses.dataclass
class Position:
    """Where a run is: ``step`` steps of epoch ``epoch`` (0-based) done, ``global_step`` in all;
    ``totals`` are the epoch's running sums (loss sum, correct, examples)."""

    epoch: int
    step: int
    global_step: int
    totals: tuple = (0.0, 0.0, 0.0)
    teleports: int = 0

    def describe(self, steps_per_epoch: int | None = None) -> str:
        if self.step == 0:
            return f"after epoch {self.epoch} (step {self.global_step})"
        of = f"/{steps_per_epoch}" if steps_per_epoch else ""
        return f"in epoch {self.epoch + 1}, after step {self.step}{of} (step {self.global_step})"


class JobCheckpoint:
    """The job's checkpoint, written by the chief, read by every worker.

    Args:
        objects: what to save besides the position: ``{"model": model, "optimizer": optimizer, ...}``.
            The model's dropout seed generators are added (Keras does not track them).
        directory: the job's checkpoint folder (local path or a ``tf.io.gfile`` URL).
        task: this process's place in the cluster (`pipelines.distribute.task`).
        max_to_keep: checkpoints kept in ``directory``.
    """

    def __init__(self, objects: dict, directory: str, task: Task, max_to_keep: int = 2):
        self.directory = str(directory)
        self.task = task
        self._epoch = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
        self._step = tf.Variable(0, dtype=tf.int64, trainable=False, name="step_in_epoch")
        self._global_step = tf.Variable(0, dtype=tf.int64, trainable=False, name="global_step")
        self._totals = tf.Variable(np.zeros(3), dtype=tf.float64, trainable=False, name="epoch_totals")
        self._teleports = tf.Variable(0, dtype=tf.int64, trainable=False, name="teleports")
        position = {"epoch": self._epoch, "step_in_epoch": self._step, "global_step": self._global_step,
                    "epoch_totals": self._totals, "teleports": self._teleports}
        model = objects.get("model")
        if model is not None:
            # Dropout draws from SeedGenerator states, which the model's own checkpoint leaves out.
            rng = [v for v in model.non_trainable_variables if "seed_generator_state" in v.path]
            if rng:
                objects = {**objects, "rng": rng}
        self.checkpoint = tf.train.Checkpoint(**objects, position=position)
        if task.chief:
            self._write_dir = self.directory
        else:
            # The documented multi-worker pattern: a non-chief saves (its save may take part in
            # collectives) where nobody reads, and deletes it.
            self._write_dir = tempfile.mkdtemp(prefix=f"setnet-worker{task.index}-ckpt-")
        self.manager = tf.train.CheckpointManager(self.checkpoint, self._write_dir, max_to_keep=max_to_keep)

    @property
    def latest(self) -> str | None:
        """The newest checkpoint of the job's folder (the chief's), whichever worker asks."""
        return tf.train.latest_checkpoint(self.directory)

    def restore(self) -> Position | None:
        """Restore the newest job checkpoint; its `Position`, or None when there is none."""
        latest = self.latest
        if not latest:
            return None
        try:
            self.checkpoint.restore(latest).assert_existing_objects_matched()
        except (AssertionError, ValueError) as e:  # objects not matched; a variable of another shape
            raise CheckpointMismatchError(
                f"checkpoint {latest} does not hold this model and optimizer ({str(e).splitlines()[0][:200]}); "
                f"it was written by another config or an older version: start a new run with --fresh") from None
        return self.position()

    def position(self) -> Position:
        return Position(epoch=int(self._epoch.numpy()), step=int(self._step.numpy()),
                        global_step=int(self._global_step.numpy()),
                        totals=tuple(float(x) for x in self._totals.numpy()),
                        teleports=int(self._teleports.numpy()))

    def save(self, position: Position) -> str:
        """Save at ``position`` (every worker calls this at the same step)."""
        self._epoch.assign(position.epoch)
        self._step.assign(position.step)
        self._global_step.assign(position.global_step)
        self._totals.assign(np.asarray(position.totals, np.float64))
        self._teleports.assign(position.teleports)
        path = self.manager.save(checkpoint_number=position.global_step)
        if not self.task.chief:
            tf.io.gfile.rmtree(self._write_dir)
            tf.io.gfile.makedirs(self._write_dir)
        return path

    def close(self):
        if not self.task.chief:
            shutil.rmtree(self._write_dir, ignore_errors=True)

    def agree(self, strategy, position: Position | None, weights) -> None:
        """Refuse (`CheckpointMismatchError`) unless every worker restored the same step and weights.

        One all-gather of (global step, fingerprint of ``weights``) over the workers; a no-op
        with one worker.
        """
        if not isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) or self.task.num_workers < 2:
            return
        step = -1.0 if position is None else float(position.global_step)
        fingerprint = float(sum(np.abs(np.asarray(w, np.float64)).sum() for w in weights))
        mine = tf.constant([[step, fingerprint, float(self.task.index)]], tf.float64)
        gathered = strategy.gather(strategy.run(lambda: tf.identity(mine)), axis=0).numpy()
        steps = {int(r[2]): int(r[0]) for r in gathered}
        prints = {r[1] for r in gathered}
        if len(set(steps.values())) > 1 or len(prints) > 1:
            said = ", ".join(f"worker {i}: {'no checkpoint' if s < 0 else f'step {s}'}"
                             for i, s in sorted(steps.items()))
            same = " (the same step, different weights)" if len(set(steps.values())) == 1 else ""
            raise CheckpointMismatchError(
                f"the workers restored different checkpoints ({said}{same}) and would train on different "
                f"weights; every worker must read the chief's checkpoint folder {self.directory}: put it on "
                f"storage all workers share (--set train.checkpoint_dir=gs://... or a shared mount), then "
                f"restart every worker with the same command")


_KEY = "setnet/stop_at_step"
_DONE = "done"


class StopSignals:
    """SIGTERM and SIGINT stop training at a step boundary that every worker agrees on.

    `install` in the main thread; at every step boundary `should_stop(global_step)`; `close`
    at the end. A second Ctrl-C interrupts at once (a plain KeyboardInterrupt).

    Args:
        task: this process's place in the cluster.
        multi_worker: agree on the step through the coordination service of
            MultiWorkerMirroredStrategy.
    """

    def __init__(self, task: Task, multi_worker: bool):
        self.task = task
        self.multi_worker = multi_worker and task.num_workers > 1
        self.received: str | None = None  # the signal this process got
        self.signal_name: str | None = None  # ... or the one another worker got, that stops the job
        self.stop_at: int | None = None
        self._announced = False
        self._previous: dict = {}
        self._watcher: threading.Thread | None = None

    def install(self) -> "StopSignals":
        if threading.current_thread() is not threading.main_thread():
            return self  # signal handlers can only be set from the main thread
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)
        if self.multi_worker:
            self._watcher = threading.Thread(target=self._watch, name="setnet-stop-watcher", daemon=True)
            self._watcher.start()
        return self

    def _handle(self, signum, frame):
        name = signal.Signals(signum).name
        if self.received and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: now
        self.received = self.received or name
        self.signal_name = self.signal_name or self.received
        if signum == signal.SIGINT:
            print(f"\n{name}: stopping after the current step (a checkpoint is written); Ctrl-C again to stop "
                  "at once", flush=True)

    def _watch(self):
        from tensorflow.python.eager import context

        try:
            value = context.context().get_config_key_value(_KEY)
            if value == _DONE:
                return
            step, _, name = value.partition(":")
            self.signal_name = self.received or name
            self.stop_at = int(step)
            context.context().set_config_key_value(f"{_KEY}/ack/{self.task.index}", "1")
        except Exception:  # the job is going down anyway; the step loop reports it
            return

    def should_stop(self, global_step: int) -> bool:
        """True when the job stops after ``global_step`` (every worker gets True at the same step)."""
        if self.stop_at is not None:
            return global_step >= self.stop_at
        if self.received is None:
            return False
        if not self.multi_worker:
            self.stop_at = global_step
            return True
        if not self._announced:
            from tensorflow.python.eager import context

            self._announced = True
            try:
                # One step ahead: the others may already be waiting in the next step's collectives.
                context.context().set_config_key_value(_KEY, f"{global_step + 1}:{self.received}")
            except tf.errors.AlreadyExistsError:
                return False  # another worker announced first; its step arrives through the watcher
            for index in range(self.task.num_workers):
                context.context().get_config_key_value(f"{_KEY}/ack/{index}")
        return self.stop_at is not None and global_step >= self.stop_at

    def close(self):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)
        self._previous = {}
        if self._watcher is not None and self._watcher.is_alive():
            from tensorflow.python.eager import context

            try:
                context.context().set_config_key_value(_KEY, _DONE)
            except Exception:  # the key is set already, or the service is gone
                pass
            self._watcher.join(timeout=5)
        self._watcher = None


def worker_lost(error: Exception) -> bool:
    """Whether a TensorFlow error means another worker went away (collectives aborted or unreachable)."""
    lost = (tf.errors.UnavailableError, tf.errors.DeadlineExceededError, tf.errors.CancelledError,
            tf.errors.AbortedError)
    if isinstance(error, lost):
        return True
    text = str(error).lower()
    return isinstance(error, tf.errors.OpError) and any(
        s in text for s in ("collective", "heartbeat", "coordination service", "is down", "peer"))


def lost_peer(error: Exception, task: Task) -> str:
    """Which worker a lost-worker error names ("worker 1 (no heartbeat)"), for a one-line message."""
    text = str(error)
    found = sorted({int(m.group(2)) for m in re.finditer(r"/job:(worker|chief)/replica:\d+/task:(\d+)", text)}
                   - {task.index})
    why = " (no heartbeat)" if "heartbeat" in text else ""
    if found:
        return ", ".join(f"worker {i}" for i in found) + why
    return "another worker" + why
