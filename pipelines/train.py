"""Train, evaluate, track and export a set classifier or regressor: ``make train [CONFIG=configs/x.yaml]``.

    python -m pipelines.train --config configs/modelnet.yaml --set train.epochs=5 data.batch_size=16
    python -m pipelines.train --sync runs/<experiment>/<run>     # upload what MLflow missed

A run lives in ``<runs_dir>/<experiment>/<run_name>/``: ``checkpoints/`` (the job checkpoint, at
every epoch end and every ``train.checkpoint_every_steps`` steps; `pipelines.checkpointing`),
``history.json`` (every epoch's metrics), ``config.yaml``, the plots, and ``mlflow.json`` (the
MLflow run id). Started again with the same command, an unfinished run resumes at its last
checkpoint, on the batches an uninterrupted run would have trained on, and continues the same
MLflow run; a finished one is left alone and a new run (``-2``, ``-3``...) starts.

Exit codes: 0 done; 2 bad config, missing data, impossible strategy, or workers that restored
different checkpoints; 75 a worker of a multi-worker job was lost (restart them all to resume);
130 Ctrl-C and 143 SIGTERM, each after writing a checkpoint. See docs/training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import functools
import hashlib
import json
import math
import os
import pathlib
import platform
import subprocess
import sys
import time
from typing import Callable

from pipelines import config as config_lib
from pipelines.config import Config, ConfigError
from pipelines.tracking import read_json, write_json

PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
# Keys that change where or how a run is reported, not what it trains: left out of the run's name.
_NOT_IN_NAME = ("run_name", "runs_dir", "train.resume", "train.log_every", "train.deterministic",
                "train.checkpoint_every_steps", "train.checkpoint_dir", "mlflow.", "export.", "experiment")


# --------------------------------------------------------------------------- run folder


def config_digest(cfg: Config) -> str:
    flat = {k: v for k, v in config_lib.flatten(cfg).items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in _NOT_IN_NAME)}
    return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_name(cfg: Config) -> str:
    if cfg.model.type.startswith("pointnet"):
        arch = cfg.model.type
    else:
        arch = "setnet-" + "".join(b.kind[0] for b in cfg.model.blocks)  # l / q / f per block
    data = cfg.data.name.replace("/", "-")
    return f"{data}-{arch}-{config_digest(cfg)}"


def _history(run_dir: pathlib.Path) -> dict | None:
    return read_json(run_dir / "history.json")


def resolve_run_dir(cfg: Config) -> tuple[pathlib.Path, bool]:
    """(run folder, resuming?). The first folder of this name that is not finished is resumed."""
    base = pathlib.Path(cfg.runs_dir) / cfg.experiment / (cfg.run_name or default_run_name(cfg))
    candidate, i = base, 1
    while True:
        hist = _history(candidate)
        exists = candidate.exists() and any(candidate.iterdir())
        if not exists:
            return candidate, False
        if cfg.train.resume == "auto" and not (hist or {}).get("completed"):
            return candidate, True
        i += 1
        candidate = base.with_name(f"{base.name}-{i}")


def git_commit() -> tuple[str, bool]:
    """(commit, dirty) of the project checkout, or ("unknown", False) outside git."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = bool(subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                                    capture_output=True, text=True, timeout=10).stdout.strip())
        return commit or "unknown", dirty
    except (OSError, subprocess.SubprocessError):
        return "unknown", False


def hardware() -> str:
    import tensorflow as tf

    gpus = tf.config.list_physical_devices("GPU")
    cpu = platform.processor() or platform.machine()
    return f"{len(gpus)} GPU(s)" if gpus else f"CPU {cpu}, {os.cpu_count()} cores"


# --------------------------------------------------------------------------- pieces


def make_optimizer(train_cfg: config_lib.TrainConfig, steps_per_epoch: int):
    import keras

    lr = train_cfg.learning_rate
    total = max(1, train_cfg.epochs * steps_per_epoch)
    warmup = train_cfg.warmup_epochs * steps_per_epoch
    if train_cfg.schedule == "cosine":
        if warmup:
            schedule = keras.optimizers.schedules.CosineDecay(
                lr * 0.01, decay_steps=max(1, total - warmup), warmup_target=lr, warmup_steps=warmup)
        else:
            schedule = keras.optimizers.schedules.CosineDecay(lr, decay_steps=total)
    else:
        schedule = lr
    name = train_cfg.optimizer
    if name == "adam":
        optimizer = keras.optimizers.Adam(schedule)
    elif name == "adamw":
        optimizer = keras.optimizers.AdamW(schedule, weight_decay=train_cfg.weight_decay)
    else:
        optimizer = keras.optimizers.SGD(schedule, momentum=train_cfg.momentum, nesterov=True)
    if train_cfg.mixed_precision == "float16":
        # float16 gradients underflow without a loss scale; bfloat16 has float32's exponent range.
        return keras.optimizers.LossScaleOptimizer(optimizer)
    return optimizer


POLICIES = {"none": "float32", "bfloat16": "mixed_bfloat16", "float16": "mixed_float16"}


def _with_precision_policy(fn):
    """Runs ``fn(cfg, ...)`` under the Keras dtype policy of ``cfg.train.mixed_precision``, set
    before any model is built (layers take the policy when created) and restored afterwards, so
    that a process training several configs (tests, sweeps) does not carry one run's policy on."""
    @functools.wraps(fn)
    def wrapper(cfg, *args, **kwargs):
        import keras

        previous = keras.config.dtype_policy()
        keras.config.set_dtype_policy(POLICIES[cfg.train.mixed_precision])
        try:
            return fn(cfg, *args, **kwargs)
        finally:
            keras.config.set_dtype_policy(previous)
    return wrapper


def _callbacks(run_dir, job, signals, trainer, train_steps, every, start, history_doc, tracker, teleports_done,
               chief):
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

    checkpoint = JobCheckpoint()
    out = [checkpoint]
    if tracker is not None:
        out.append(MlflowEpochLogger())
    return out


def build_model(cfg: Config, info: dict, name: str | None = None):
    """The classifier or regressor for a dataset (`pipelines.input.dataset_info`): its task, its F
    and its coordinate features."""
    from setnet.models import build_classifier, build_regressor

    shape = {"num_features": info["num_features"], "spatial_axes": info["spatial_axes"]}
    if name is not None:
        shape["name"] = name
    if info["task"] == "regression":
        return build_regressor(cfg.model, num_targets=info["num_targets"], **shape)
    return build_classifier(cfg.model, num_classes=info["num_classes"], **shape)


def make_objective(cfg: Config, info: dict):
    """The loop's task (`pipelines.tasks`) for the dataset's task and ``train.loss``."""
    from pipelines.tasks import make_task

    try:
        return make_task(info["task"], loss=cfg.train.loss, label_smoothing=cfg.train.label_smoothing,
                         huber_delta=cfg.train.huber_delta)
    except ValueError as e:
        raise ConfigError(f"{e} (dataset {cfg.data.name})") from None


def describe_data(info: dict) -> str:
    """'3-class' or 'regression (2 targets)', and the features per point."""
    what = (f"{info['num_classes']}-class" if info["task"] == "classification" else
            f"regression ({info['num_targets']} target{'s' if info['num_targets'] > 1 else ''}),")
    return f"{what} {info['num_features']}-feature"


def _optional_callbacks(cfg, train_epoch, val_ds, optimizer, run_dir, tracker, chief, say, position,
                        objective=None):
    """Teleportation (``train.teleport``) and the network spectrum (``spectrum``), when enabled:
    (callbacks, the teleport callback or None)."""
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


def checkpoint_folder(cfg: Config, run_dir: pathlib.Path) -> str:
    """The job's checkpoint folder: ``train.checkpoint_dir/<experiment>/<run>`` (any ``tf.io.gfile``
    location, e.g. gs://), else ``<run folder>/checkpoints``."""
    root = cfg.train.checkpoint_dir
    if not root:
        return str(run_dir / "checkpoints")
    return f"{root.rstrip('/')}/{cfg.experiment}/{run_dir.name}"


@contextlib.contextmanager
def _preparing(data: config_lib.DataConfig, say):
    """One process at a time prepares data in a local data dir (an exclusive lock on a file in it):
    workers started together on an empty data dir wait for the first instead of racing it."""
    from pipelines import datasets

    root = data.data_dir or str(datasets.default_data_dir())
    if "://" in root:  # no file locks on object stores: prepare it beforehand (docs/training.md)
        yield
        return
    folder = pathlib.Path(root).expanduser()
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".setnet-prepare.lock", "a") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process preparing data in {folder}")
            fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _note_unfinished_siblings(cfg: Config, run_dir: pathlib.Path, say) -> None:
    """--fresh beside unfinished runs of the same name: say how to resume them instead."""
    import tensorflow as tf

    base = cfg.run_name or default_run_name(cfg)
    parent = pathlib.Path(cfg.runs_dir) / cfg.experiment
    for candidate in sorted(parent.glob(f"{base}*")):
        if candidate == run_dir or not (candidate.name == base or candidate.name.startswith(base + "-")):
            continue
        if not (_history(candidate) or {}).get("completed") and tf.train.latest_checkpoint(
                checkpoint_folder(cfg, candidate)):
            say(f"--fresh: starting {run_dir.name}; the unfinished run {candidate} is left as it is "
                f"(resume it with the same command without --fresh and --set run_name={candidate.name})")


def _split_size(name: str, split: str, data: config_lib.DataConfig) -> int:
    from pipelines import datasets

    builder = datasets.load_prepared(name, data_dir=data.data_dir, manual_dir=data.manual_dir,
                                     allow_partial=data.allow_partial, params=data.builder_params())
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"data split {split!r} does not exist in {name} (splits: "
                          f"{', '.join(builder.info.splits)}; slices like 'train[:90%]' work too): {e}") from None


# --------------------------------------------------------------------------- training


@_with_precision_policy
def train(cfg: Config, *, callbacks=(), printer: Callable[[str], None] = print) -> dict:
    """Run one training job from a resolved config (see `pipelines.config.load_config`).

    Returns:
        dict with ``test_loss`` and ``test_accuracy`` (a regression: ``test_mae``, ``test_rmse`` and
        ``test_accuracy`` None), ``run_dir``, ``mlflow_run_id``, ``export_path``, ``history`` (every
        epoch's logs), ``compilations`` and ``resumed``.

    Raises:
        pipelines.checkpointing.Stopped: SIGTERM or Ctrl-C; the job checkpoint was written first.
        pipelines.checkpointing.WorkerLostError: another worker of the job went away.
        pipelines.checkpointing.CheckpointMismatchError: the workers restored different checkpoints.
    """
    import keras
    import tensorflow as tf

    from pipelines import checkpointing, distribute, loop
    from pipelines.input import dataset_info, make_epochs

    t_start = time.time()
    data, tcfg = cfg.data, cfg.train
    strategy = distribute.make_strategy(tcfg.strategy)
    task = distribute.task(strategy)
    say = printer if task.chief else (lambda *_: None)

    # The data first, before any seed is set: preparing a dataset draws from the global generators
    # (TFDS names its temporary folder with Python's `random`), which shifted a first run's weights
    # and dropout against every later run, and gave concurrent workers the same temporary folder.
    splits = {"train": data.train_split, "val": data.val_split, "test": data.test_split}
    with _preparing(data, say):
        info = dataset_info(data.name, data_dir=data.data_dir, manual_dir=data.manual_dir,
                            allow_partial=data.allow_partial, params=data.builder_params())
        sizes = {s: _split_size(data.name, split, data) for s, split in splits.items()}
    if tcfg.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(cfg.seed)

    batch = data.batch_size
    if batch % strategy.num_replicas_in_sync:
        raise ConfigError(f"data.batch_size ({batch}) is the global batch and must be divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas")
    if sizes["train"] < batch:
        raise ConfigError(f"data.batch_size ({batch}) is larger than the training split "
                          f"({sizes['train']} examples)")
    train_steps = loop.steps_for(sizes["train"], batch, True, tcfg.steps_per_epoch)

    def epochs_of(split_key, training):
        epochs = make_epochs(data.name, splits[split_key], num_points=data.num_points, batch_size=batch,
                             training=training, augment=data.augment if training else None, seed=cfg.seed,
                             data_dir=data.data_dir, manual_dir=data.manual_dir,
                             allow_partial=data.allow_partial, strategy=strategy, cache=data.cache,
                             params=data.builder_params())
        return lambda epoch: loop.prepare(epochs(epoch), batch_size=batch, training=training,
                                          buckets=list(data.buckets), steps=train_steps if training else None,
                                          strategy=strategy)

    train_epoch = epochs_of("train", True)
    val_ds, test_ds = epochs_of("val", False)(0), epochs_of("test", False)(0)

    with strategy.scope():
        model = build_model(cfg, info)
        optimizer = make_optimizer(tcfg, train_steps)
        optimizer.build(model.trainable_variables)

    run_dir, resuming = resolve_run_dir(cfg)
    if task.chief:
        run_dir.mkdir(parents=True, exist_ok=True)
    ckpt_dir = checkpoint_folder(cfg, run_dir)
    job = checkpointing.JobCheckpoint({"model": model, "optimizer": optimizer}, ckpt_dir, task)
    position = job.restore()
    job.agree(strategy, position, [v.numpy() for v in model.trainable_variables])
    history_doc = {"epochs": [], "completed": False, "config_digest": config_digest(cfg)}
    initial_epoch = initial_step = 0
    initial_totals = None
    if position is not None:
        initial_epoch, initial_step, initial_totals = position.epoch, position.step, position.totals
        previous = _history(run_dir) or {}
        history_doc["epochs"] = list(previous.get("epochs", []))[:initial_epoch]
        where = (f"after epoch {initial_epoch}/{tcfg.epochs}" if not initial_step else
                 f"in epoch {initial_epoch + 1}/{tcfg.epochs} after step {initial_step}/{train_steps}")
        say(f"Resuming {run_dir} {where} (step {position.global_step}; {job.latest})")
    elif resuming:
        say(f"{run_dir} has no checkpoint yet; starting it from scratch")
    if tcfg.resume == "never":
        _note_unfinished_siblings(cfg, run_dir, say)
    if task.chief:
        (run_dir / "config.yaml").write_text(config_lib.dump(cfg))

    say(f"setnet: {describe_data(info)} {data.name} (v{info['version']}): "
        f"{sizes['train']} train / {sizes['val']} val / {sizes['test']} test sets of {data.num_points} points; "
        f"{model.name} with {model.count_params():,} parameters; {distribute.describe(strategy)}; "
        f"XLA {'on' if tcfg.xla else 'off'}{'; deterministic' if tcfg.deterministic else ''}; "
        f"run folder {run_dir}")

    tracker, checkout = None, None
    if cfg.mlflow.enabled and task.chief:
        from pipelines import tracking

        uri = tracking.resolve_tracking_uri(cfg.mlflow.tracking_uri, cfg.runs_dir)
        tracker = tracking.Tracker(uri, cfg.experiment, run_dir.name, run_dir,
                                   artifact_root=tracking.local_artifact_root(uri, cfg.runs_dir), printer=say)
        # Read once: the registered version must name the commit its run names, even if HEAD moves.
        checkout = commit, dirty = git_commit()
        tracker.log_params({**config_lib.flatten(cfg), "model.parameters": model.count_params()})
        tracker.set_tags({"mlflow.source.git.commit": commit, "git.dirty": dirty,
                          "dataset.name": data.name, "dataset.version": info["version"],
                          "dataset.train_examples": sizes["train"], "model.name": model.name,
                          "strategy": distribute.describe(strategy), "hardware": hardware(),
                          "tensorflow": tf.__version__, "keras": keras.__version__})
        if initial_epoch:
            tracker.reconcile(history_doc["epochs"])
        tracker.log_artifact(run_dir / "config.yaml", "config")
        tracker.flush()
        if tracker.run_id:
            say(f"MLflow: run {tracker.run_id} in experiment {cfg.experiment!r} at {uri}")

    objective = make_objective(cfg, info)
    trainer = loop.Trainer(model, optimizer, strategy, xla=tcfg.xla, label_smoothing=tcfg.label_smoothing,
                           steps_per_execution=tcfg.steps_per_execution, objective=objective)
    optional, teleport = _optional_callbacks(cfg, train_epoch, val_ds, optimizer, run_dir, tracker, task.chief,
                                             say, position, objective)
    signals = checkpointing.StopSignals(task, isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy))
    cbs = (_callbacks(run_dir, job, signals, trainer, train_steps, tcfg.checkpoint_every_steps,
                      position.global_step if position else 0, history_doc, tracker,
                      lambda: len(teleport.history) if teleport else 0, task.chief)
           + optional + list(callbacks))
    status = "FAILED"
    signals.install()
    try:
        try:
            trainer.fit(train_epoch, val_ds, epochs=tcfg.epochs, initial_epoch=initial_epoch,
                        train_steps=train_steps, callbacks=cbs, log_every=tcfg.log_every,
                        initial_step=initial_step, initial_totals=initial_totals)
            if signals.received and not signals.multi_worker:
                # Every epoch is checkpointed; the test and the export run when it is resumed.
                raise checkpointing.Stopped(signals.received, job.position())
            result = _finish(cfg, info, model, trainer, test_ds, history_doc, run_dir, tracker, checkout,
                             task, say, t_start, resumed=position is not None)
        except tf.errors.OpError as e:
            if task.num_workers > 1 and checkpointing.worker_lost(e):
                latest = tf.train.latest_checkpoint(ckpt_dir)
                raise checkpointing.WorkerLostError(
                    f"lost contact with {checkpointing.lost_peer(e, task)}; the job checkpoint is "
                    f"{latest or 'not written yet'}: restart every worker with the same command to resume "
                    f"from it") from None
            raise
        status = "FINISHED"
    except BaseException as e:
        e.run_dir = run_dir  # for the resume advice of main()
        if isinstance(e, KeyboardInterrupt):
            status = "KILLED"
        raise
    finally:
        signals.close()
        job.close()
        if tracker is not None:
            # Not FINISHED: the run can be resumed, and the same MLflow run then ends FINISHED.
            tracker.finish(status)
    return result


def _finish(cfg, info, model, trainer, test_ds, history_doc, run_dir, tracker, checkout, task, say, t_start,
            resumed) -> dict:
    """Test, plots, export and the final record, once every epoch is trained."""
    from pipelines import plots

    data = cfg.data
    history = history_doc["epochs"]
    test = trainer.evaluate(trainer.distribute(test_ds), collect=True)
    minutes = (time.time() - t_start) / 60
    regression = info["task"] == "regression"
    # The test figures by name: loss and accuracy, or loss, mae and rmse.
    scores = {k: v for k, v in test.items() if k not in ("examples", "predictions", "labels")}
    result = {**{f"test_{k}": v for k, v in scores.items()}, "run_dir": str(run_dir),
              "history": history, "compilations": dict(trainer.compilations), "resumed": resumed,
              "mlflow_run_id": tracker.run_id if tracker else None, "export_path": None}
    result.setdefault("test_accuracy", None)  # a regression has none (sweeps read the key)
    if task.chief:
        final = {**{f"test_{k}": v for k, v in scores.items()},
                 "xla_compilations": float(sum(trainer.compilations.values())),
                 "wall_minutes": minutes}
        if regression:
            final["best_val_mae"] = min((h.get("val_mae", math.inf) for h in history), default=math.inf)
        else:
            final["best_val_accuracy"] = max((h.get("val_accuracy", 0.0) for h in history), default=0.0)
        curves = plots.learning_curves(history, run_dir / "learning_curves.png", title=run_dir.name)
        if regression:
            outcome = plots.predicted_vs_true(test["labels"], test["predictions"], info["target_names"],
                                              run_dir / "predicted_vs_true.png", title=f"{data.test_split}:")
        else:
            outcome = plots.confusion_matrix(test["labels"], test["predictions"], info["class_names"],
                                             run_dir / "confusion_matrix.png", title=f"{data.test_split}:")
        (run_dir / "model_summary.txt").write_text(_summary(model))
        if tracker:
            tracker.log_metrics({k: v for k, v in final.items() if math.isfinite(v)}, step=len(history))
            for path in (curves, outcome, run_dir / "model_summary.txt", run_dir / "history.json"):
                tracker.log_artifact(path, "plots" if path.suffix == ".png" else None)
        if cfg.export.enabled:
            result["export_path"] = str(_export(cfg, model, info, test_ds, tracker, say, test=scores,
                                                checkout=checkout))
    history_doc["completed"] = True
    history_doc["test"] = scores
    if task.chief:
        write_json(run_dir / "history.json", history_doc)
    if regression:
        say(f"test MAE: {scores['mae']:.4g}, RMSE {scores['rmse']:.4g} (loss {scores['loss']:.4g}) on "
            f"{test['examples']} {data.name} {data.test_split} sets; {(time.time() - t_start) / 60:.1f} min")
    else:
        say(f"test accuracy: {result['test_accuracy']:.4f} (loss {result['test_loss']:.4f}) on "
            f"{test['examples']} {data.name} {data.test_split} sets; chance {1 / info['num_classes']:.3f}; "
            f"{(time.time() - t_start) / 60:.1f} min")
    return result


def _summary(model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda s, **_: lines.append(s), line_length=110)
    return "\n".join(lines) + "\n"


def _export(cfg, model, info, test_ds, tracker, say, test, checkout):
    """Export a one-device copy of the trained model (no distributed variables in the SavedModel),
    checked for permutation invariance on real test clouds by pipelines.export."""
    import numpy as np

    from pipelines.export import export_model, read_export_summary

    clone = build_model(cfg, info)
    clone.set_weights(model.get_weights())
    clouds = []
    for features, _, weights in test_ds:
        pts, mask, w = features["points"].numpy(), features["mask"].numpy(), weights.numpy()
        clouds += [p[m] for p, m, keep in zip(pts, mask, w) if keep > 0]
        if len(clouds) >= cfg.export.invariance_clouds:
            break
    clouds = [np.asarray(c, np.float32) for c in clouds[: cfg.export.invariance_clouds]]
    name = cfg.export.model_name or cfg.experiment
    names = info["target_names"] if info["task"] == "regression" else info["class_names"]
    path = export_model(clone, cfg.export.root, name, names, check_invariance=True,
                        check_clouds=clouds, permutations=cfg.export.invariance_permutations, seed=cfg.seed,
                        task=info["task"])
    summary = read_export_summary(path)
    inv, pad = summary.get("invariance", {}), summary.get("masked_padding", {})
    say(f"exported {path}: permutation invariance {'passed' if inv.get('passed') else 'FAILED'} "
        f"(max |Δp| {inv.get('max_abs_deviation', float('nan')):.2e} over {inv.get('clouds')} clouds × "
        f"{inv.get('permutations')} permutations); padded+masked {'passed' if pad.get('passed') else 'FAILED'}")
    if tracker is not None:
        run_dir = tracker.run_dir
        write_json(run_dir / "invariance.json", {"export": str(path), "invariance": inv, "masked_padding": pad})
        tracker.log_metrics({"export_invariance_max_abs_deviation": inv.get("max_abs_deviation", float("nan")),
                             "export_padding_max_abs_deviation": pad.get("max_abs_deviation", float("nan"))},
                            step=cfg.train.epochs)
        tracker.set_tags({"export.path": str(path), "export.version": path.name,
                          "export.invariance_passed": inv.get("passed")})
        tracker.log_artifact(run_dir / "invariance.json")
        tracker.log_artifact(path, f"export/{path.name}")
        if cfg.mlflow.registered_model:
            from pipelines.registry import version_tags

            commit, dirty = checkout
            tracker.register_model(cfg.mlflow.registered_model, f"export/{path.name}", version_tags(
                commit=commit, dirty=dirty, dataset=cfg.data.name, dataset_version=info["version"],
                test=test, invariance=inv, padding=pad, export_path=str(path), experiment=cfg.experiment))
    return path


# --------------------------------------------------------------------------- CLI


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m pipelines.train", description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default=None,
                   help="YAML config (default: configs/default.yaml); see docs/training.md")
    p.add_argument("--set", dest="overrides", action="append", nargs="+", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 data.batch_size=16")
    p.add_argument("--fresh", action="store_true", help="start a new run even if an unfinished one exists")
    p.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    p.add_argument("--sync", metavar="RUN_DIR", help="send a run's pending MLflow records and exit")
    return p


def _resume_command(argv: list[str], run_dir: pathlib.Path | None, cfg: Config) -> str:
    """The command that resumes the run in ``run_dir``: the same one without --fresh, pinned to the
    run's folder when the plain command could pick another unfinished run of that name."""
    import shlex

    args = [a for a in argv if a != "--fresh"]
    if cfg.train.resume == "never" and len(args) == len(argv):
        args += ["--set", "train.resume=auto"]  # --set train.resume=never: a later --set wins
    if run_dir is not None and (cfg.train.resume == "never" or run_dir.name != (cfg.run_name or
                                                                                default_run_name(cfg))):
        args += ["--set", f"run_name={run_dir.name}"]
    return "python -m pipelines.train" + ("" if not args else " " + shlex.join(args))


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = _parser().parse_args(argv)
    if args.sync:
        from pipelines.tracking import sync

        return 0 if sync(args.sync) else 1
    overrides = [o for group in args.overrides for o in group]
    if args.fresh:
        overrides.append("train.resume=never")
    try:
        cfg = config_lib.load_config(args.config, overrides)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.print_config:
        print(config_lib.dump(cfg), end="")
        return 0
    from pipelines.checkpointing import (EXIT_INTERRUPTED, EXIT_WORKER_LOST, CheckpointMismatchError, Stopped,
                                         WorkerLostError)
    from pipelines.datasets import DataFormatError, DataNotFoundError
    from pipelines.distribute import StrategyError

    try:
        train(cfg)
    except (DataNotFoundError, DataFormatError, StrategyError, ConfigError, CheckpointMismatchError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except WorkerLostError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.stdout.flush()
        sys.stderr.flush()
        # TensorFlow's collective runtime does not shut down cleanly with a peer gone (its teardown
        # can wait on the dead worker); the run's records are already flushed.
        os._exit(EXIT_WORKER_LOST)
    except Stopped as e:
        where = e.position.describe() if e.position is not None else "at the last checkpoint"
        print(f"\n{e.signal_name}: stopped {where}, checkpoint written; resume with: "
              f"{_resume_command(argv, getattr(e, 'run_dir', None), cfg)}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt as e:
        print(f"\ninterrupted; resume from the last checkpoint with: "
              f"{_resume_command(argv, getattr(e, 'run_dir', None), cfg)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    return 0


if __name__ == "__main__":
    sys.exit(main())
