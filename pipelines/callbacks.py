"""The callbacks a training run hands to the loop: the job checkpoint, MLflow's per-epoch record,
and the optional sections (teleportation, the network spectrum).

`pipelines.train.train` assembles them; callers add their own through ``train(cfg, callbacks=...)``
(a sweep's pruning reporter, a benchmark's early stopping), which run after these.

How ``train`` uses them (inside it, where the job, trainer and datasets exist)::

    cbs = job_callbacks(run_dir, job, signals, trainer, train_steps, every=0, start=0,
                        history_doc=history_doc, tracker=tracker, teleports_done=lambda: 0, chief=True)
    extra, teleport = optional_callbacks(cfg, train_epoch, val_ds, optimizer, run_dir, tracker,
                                         chief=True, say=print, position=None)
    trainer.fit(train_epoch, val_ds, epochs=cfg.train.epochs, callbacks=cbs + extra, ...)
"""

from __future__ import annotations

import pathlib
from typing import Callable

from pipelines.tracking import write_json


def job_callbacks(run_dir: pathlib.Path, job, signals, trainer, train_steps: int, every: int, start: int,
                  history_doc: dict, tracker, teleports_done: Callable[[], int], chief: bool) -> list:
    """The job checkpoint (`pipelines.checkpointing.JobCheckpoint`) and, with a tracker, the epoch's
    metrics sent to MLflow.

    Args:
        run_dir: the run folder (``history.json`` is written there by the chief).
        job: the `JobCheckpoint` to save into.
        signals: the `StopSignals` that decide at which step a SIGTERM or Ctrl-C stops the job.
        trainer: the `pipelines.loop.Trainer` (its epoch totals go into a mid-epoch checkpoint).
        train_steps: steps per epoch.
        every: ``train.checkpoint_every_steps`` (0: at epoch ends only).
        start: the global step training starts at (a resumed run's).
        history_doc: the run's history, extended at each epoch end.
        tracker: the `pipelines.tracking.Tracker`, or None.
        teleports_done: how many teleports have run (a checkpoint records it).
        chief: whether this process writes the history.
    """
    import keras

    from pipelines.checkpointing import Position, Stopped

    class JobCheckpoint(keras.callbacks.Callback):
        """The job checkpoint at epoch ends, every ``train.checkpoint_every_steps`` steps, and at
        the step where a stop signal takes effect. At an epoch end the history is written first:
        a kill in between re-trains that epoch, and the history is cut back to the checkpoint on
        resume, so it never runs ahead of the weights."""

        epoch = 0
        last = start  # the global step of the call before (steps_per_execution: a call runs several)

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            step = batch + 1
            global_step = self.epoch * train_steps + step
            crossed = every and global_step // every > self.last // every
            self.last = global_step
            stop = signals.should_stop(global_step)
            if stop or crossed:
                position = Position(self.epoch, step, global_step, tuple(trainer.epoch_totals), teleports_done())
                job.save(position)
                if stop:
                    raise Stopped(signals.signal_name, position)

        def on_epoch_end(self, epoch, logs=None):
            self.last = (epoch + 1) * train_steps
            history_doc["epochs"] = history_doc["epochs"][:epoch] + [dict(logs)]
            if chief:
                write_json(run_dir / "history.json", history_doc)
            position = Position(epoch + 1, 0, (epoch + 1) * train_steps, teleports=teleports_done())
            job.save(position)
            if signals.should_stop(position.global_step):
                raise Stopped(signals.signal_name, position)

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tracker.log_metrics(logs, step=epoch + 1)
            tracker.flush()

    out = [JobCheckpoint()]
    if tracker is not None:
        out.append(MlflowEpochLogger())
    return out


def optional_callbacks(cfg, train_epoch, val_ds, optimizer, run_dir, tracker, chief, say, position,
                       objective=None):
    """Teleportation (``train.teleport``) and the network spectrum (``spectrum``), when enabled.

    Args:
        cfg: the run's config.
        train_epoch: ``epoch -> dataset`` of the training batches (teleports draw from epoch 0's).
        val_ds: the validation batches (the spectrum is measured on them).
        optimizer: the loop's optimizer, whose state a teleport maps along.
        run_dir: the run folder (spectrum tables and plots go under ``spectrum/``).
        tracker: the `pipelines.tracking.Tracker`, or None.
        chief: whether this process reports (only the chief measures the spectrum).
        say: where notices go.
        position: the checkpoint position a resumed run starts at, or None.
        objective: the loop's task (its Keras loss drives the teleports); None: class-id labels
            and logits.

    Returns:
        (callbacks, the teleport callback or None).

    Example (both sections off, as in the shipped configs)::

        from pipelines.config import load_config

        cbs, teleport = optional_callbacks(load_config(None, []), None, None, None, None, None,
                                           chief=True, say=print, position=None)
        assert cbs == [] and teleport is None
    """
    import keras

    out = []
    teleport = None
    tele_cfg = cfg.train.teleport
    if tele_cfg.enabled:
        from setnet.teleport import TeleportCallback

        # The loop's own loss (labels are class ids, the model returns logits) and optimizer, whose
        # state the teleport maps along; batches come from the plain (undistributed) training set,
        # epoch 0's batches in a cycle, each teleport the next: a resumed run skips those used.
        done = position.teleports if position is not None else 0
        teleport = TeleportCallback.from_config_section(
            tele_cfg.to_dict(), train_epoch(0).repeat().skip(done),
            loss=objective.keras_loss() if objective is not None else
            keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            optimizer=optimizer, verbose=1 if chief else 0)
        if position is not None:
            teleport.resume_at(done, epoch=position.epoch, step_in_epoch=position.step,
                               global_step=position.global_step)
        out.append(teleport)

        class TeleportLogger(keras.callbacks.Callback):
            """Sends each teleport's figures through the Tracker (which survives a store outage)."""

            logged = len(teleport.history)  # those before a resume were sent by then

            def on_epoch_end(self, epoch, logs=None):
                for i, result in enumerate(teleport.history[self.logged:], start=self.logged + 1):
                    figures = {f"teleport/{k}": float(v) for k, v in result.items()
                               if isinstance(v, (int, float)) and not isinstance(v, bool)
                               and k not in ("epoch", "step")}
                    if tracker is not None:
                        tracker.log_metrics({**figures, "teleport/count": i}, step=int(result["step"]))
                self.logged = len(teleport.history)

        out.append(TeleportLogger())
    spec_cfg = cfg.spectrum
    if spec_cfg.enabled and chief:
        from setnet.spectral.spectrum import network_spectrum, spectrum_metrics, spectrum_table, \
            write_spectrum_artifacts

        class SpectrumLogger(keras.callbacks.Callback):
            """Energy per isotypic component of each layer on validation batches, every ``every``
            epochs (or once at the end); metrics and the table/PNG go through the Tracker."""

            def _measure(self, epoch_done: int):
                spectrum = network_spectrum(self.model, val_ds, max_batches=spec_cfg.max_batches, progress=False)
                folder = run_dir / "spectrum" / f"epoch_{epoch_done}"
                write_spectrum_artifacts(spectrum, folder, title=f"{run_dir.name}: epoch {epoch_done}")
                say(f"network spectrum after epoch {epoch_done} ({folder}):\n{spectrum_table(spectrum)}")
                if tracker is not None:
                    tracker.log_metrics(spectrum_metrics(spectrum), step=epoch_done)
                    tracker.log_artifact(folder, f"spectrum/epoch_{epoch_done}")

            def on_epoch_end(self, epoch, logs=None):
                self.last = epoch + 1
                if spec_cfg.every and (epoch + 1) % spec_cfg.every == 0:
                    self._measure(epoch + 1)

            def on_train_end(self, logs=None):
                last = getattr(self, "last", None)
                if not spec_cfg.every and last is not None:
                    self._measure(last)

        out.append(SpectrumLogger())
    return out, teleport
