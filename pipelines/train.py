"""Train, evaluate, track and export a set classifier or regressor: ``make train [CONFIG=configs/x.yaml]``.

    python -m pipelines.train --config configs/modelnet.yaml --set train.epochs=5 data.batch_size=16
    python -m pipelines.train --sync runs/<experiment>/<run>     # upload what MLflow missed

A run lives in ``<runs_dir>/<experiment>/<run_name>/``: ``checkpoints/`` (the job checkpoint, at
every epoch end and every ``train.checkpoint_every_steps`` steps; `pipelines.checkpointing`),
``history.json`` (every epoch's metrics), ``config.yaml``, the plots, and ``mlflow.json`` (the
MLflow run id). Started again with the same command, an unfinished run resumes at its last
checkpoint, on the batches an uninterrupted run would have trained on, and continues the same
MLflow run; a finished one is left alone and a new run (``-2``, ``-3``...) starts.

`train` wires the pieces, each in a module of its own: the run folder and its name
(`pipelines.runs`), the model, optimizer and objective (`pipelines.build`), the loop
(`pipelines.loop`), its callbacks (`pipelines.callbacks`), MLflow (`pipelines.tracking`) and the
test, plots and export at the end (`pipelines.finish`).

Exit codes: 0 done; 2 bad config (a folder it writes to that cannot be written included), missing
data, impossible strategy, an MLflow store that cannot be used at start-up, or workers that
restored different checkpoints; 75 a worker of a multi-worker job was lost (restart them all to resume);
130 Ctrl-C and 143 SIGTERM, each after writing a checkpoint. See docs/training.md.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import pathlib
import sys
import time
from typing import Callable

from pipelines import config as config_lib
from pipelines.build import build_model, describe_data, make_objective, make_optimizer, with_precision_policy
from pipelines.callbacks import job_callbacks, optional_callbacks
from pipelines.config import Config, ConfigError
from pipelines.finish import finish
from pipelines.runs import (check_folders, checkpoint_folder, config_digest, default_run_name, git_commit,
                            hardware, note_unfinished_siblings, read_history, resolve_run_dir)


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


@with_precision_policy
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
        pipelines.config.ConfigError: among others, a folder the run writes to (``runs_dir``,
            ``data.data_dir``, ``export.root``, ``train.checkpoint_dir``) cannot be written (raised
            before anything is created).
        pipelines.tracking_store.TrackingStoreError: with ``mlflow.enabled``, the tracking store cannot
            be used at start-up (raised before any data is prepared or anything written).
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
    # First of all: opening the embedded store below creates its database, which a folder that cannot
    # be written must not leave behind.
    check_folders(cfg, chief=task.chief)
    uri = None
    if cfg.mlflow.enabled and task.chief:
        from pipelines import tracking, tracking_store

        uri = tracking_store.resolve_tracking_uri(cfg.mlflow.tracking_uri, cfg.runs_dir)
        # Before any data is prepared or anything written: a store that cannot work stops the job in
        # one line now rather than leaving a whole run's records to --sync later.
        tracking_store.check_store(uri, cfg.experiment, origin=tracking_store.uri_origin(cfg.mlflow.tracking_uri))

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
        previous = read_history(run_dir) or {}
        history_doc["epochs"] = list(previous.get("epochs", []))[:initial_epoch]
        where = (f"after epoch {initial_epoch}/{tcfg.epochs}" if not initial_step else
                 f"in epoch {initial_epoch + 1}/{tcfg.epochs} after step {initial_step}/{train_steps}")
        say(f"Resuming {run_dir} {where} (step {position.global_step}; {job.latest})")
    elif resuming:
        say(f"{run_dir} has no checkpoint yet; starting it from scratch")
    if tcfg.resume == "never":
        note_unfinished_siblings(cfg, run_dir, say)
    if task.chief:
        (run_dir / "config.yaml").write_text(config_lib.dump(cfg))

    say(f"setnet: {describe_data(info)} {data.name} (v{info['version']}): "
        f"{sizes['train']} train / {sizes['val']} val / {sizes['test']} test sets of {data.num_points} points; "
        f"{model.name} with {model.count_params():,} parameters; {distribute.describe(strategy)}; "
        f"XLA {'on' if tcfg.xla else 'off'}{'; deterministic' if tcfg.deterministic else ''}; "
        f"run folder {run_dir}")

    tracker, checkout = None, None
    if uri is not None:
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
            say(f"MLflow: run {tracker.run_id} in experiment {cfg.experiment!r} at {tracking_store.safe_uri(uri)}")

    objective = make_objective(cfg, info)
    trainer = loop.Trainer(model, optimizer, strategy, xla=tcfg.xla, label_smoothing=tcfg.label_smoothing,
                           steps_per_execution=tcfg.steps_per_execution, objective=objective)
    optional, teleport = optional_callbacks(cfg, train_epoch, val_ds, optimizer, run_dir, tracker, task.chief,
                                            say, position, objective)
    signals = checkpointing.StopSignals(task, isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy))
    cbs = (job_callbacks(run_dir, job, signals, trainer, train_steps, tcfg.checkpoint_every_steps,
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
            result = finish(cfg, info, model, trainer, test_ds, history_doc, run_dir, tracker, checkout,
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
        from pipelines.tracking import RunFolderError, sync
        from pipelines.tracking_store import TrackingStoreError

        try:
            return 0 if sync(args.sync) else 1
        except (RunFolderError, TrackingStoreError) as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
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
    from pipelines.tracking_store import TrackingStoreError

    try:
        train(cfg)
    except (DataNotFoundError, DataFormatError, StrategyError, ConfigError, CheckpointMismatchError,
            TrackingStoreError) as e:
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
