"""Train, evaluate, track and export a set classifier: ``make train [CONFIG=configs/x.yaml]``.

    python -m pipelines.train --config configs/modelnet.yaml --set train.epochs=5 data.batch_size=16
    python -m pipelines.train --sync runs/<experiment>/<run>     # upload what MLflow missed

A run lives in ``<runs_dir>/<experiment>/<run_name>/``: checkpoints (one per
epoch), ``history.json`` (every epoch's metrics), ``config.yaml``, the plots,
and ``mlflow.json`` (the MLflow run id). Started again with the same command,
an unfinished run resumes after its last completed epoch and continues the
same MLflow run; a finished one is left alone and a new run (``-2``, ``-3``...)
starts. See docs/training.md.
"""

from __future__ import annotations

import argparse
import hashlib
import json
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
_NOT_IN_NAME = ("run_name", "runs_dir", "train.resume", "train.log_every", "mlflow.", "export.", "experiment")


# --------------------------------------------------------------------------- run folder


def config_digest(cfg: Config) -> str:
    flat = {k: v for k, v in config_lib.flatten(cfg).items()
            if not any(k == p or (p.endswith(".") and k.startswith(p)) for p in _NOT_IN_NAME)}
    return hashlib.sha1(json.dumps(flat, sort_keys=True, default=str).encode()).hexdigest()[:8]


def default_run_name(cfg: Config) -> str:
    if cfg.model.type == "pointnet":
        arch = "pointnet"
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
        return keras.optimizers.Adam(schedule)
    if name == "adamw":
        return keras.optimizers.AdamW(schedule, weight_decay=train_cfg.weight_decay)
    return keras.optimizers.SGD(schedule, momentum=train_cfg.momentum, nesterov=True)


def _callbacks(run_dir, ckpt, manager, history_doc, tracker, printer):
    import keras

    class EpochCheckpoint(keras.callbacks.Callback):
        """History first, then the checkpoint: a kill in between re-trains that epoch, and the
        history is cut back to the checkpoint on resume, so it never runs ahead of the weights."""

        def on_epoch_end(self, epoch, logs=None):
            history_doc["epochs"] = history_doc["epochs"][:epoch] + [dict(logs)]
            if manager.is_chief:
                write_json(run_dir / "history.json", history_doc)
            ckpt.epoch.assign(epoch + 1)
            manager.save(checkpoint_number=epoch + 1)

    class MlflowEpochLogger(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            tracker.log_metrics(logs, step=epoch + 1)
            tracker.flush()

    out = [EpochCheckpoint()]
    if tracker is not None:
        out.append(MlflowEpochLogger())
    return out


def _optional_callbacks(cfg, train_ds, val_ds, optimizer, run_dir, tracker, chief, say) -> list:
    """Teleportation (``train.teleport``) and the network spectrum (``spectrum``), when enabled."""
    import keras

    out = []
    tele_cfg = cfg.train.teleport
    if tele_cfg.enabled:
        from setnet.teleport import TeleportCallback

        # The loop's own loss (labels are class ids, the model returns logits) and optimizer, whose
        # state the teleport maps along; batches come from the plain (undistributed) training set.
        teleport = TeleportCallback.from_config_section(
            tele_cfg.to_dict(), train_ds, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            optimizer=optimizer, verbose=1 if chief else 0)
        out.append(teleport)

        class TeleportLogger(keras.callbacks.Callback):
            """Sends each teleport's figures through the Tracker (which survives a store outage)."""

            logged = 0

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
    return out


class _Checkpoints:
    """tf.train.CheckpointManager with the multi-worker rule: every worker saves (the save may use
    collectives), the chief into the run folder, the others into their own folder."""

    def __init__(self, run_dir: pathlib.Path, ckpt, chief: bool, worker: int):
        import tensorflow as tf

        self.is_chief = chief
        self.dir = run_dir / ("checkpoints" if chief else f"checkpoints-worker{worker}")
        self.manager = tf.train.CheckpointManager(ckpt, str(self.dir), max_to_keep=2)

    def save(self, checkpoint_number: int):
        return self.manager.save(checkpoint_number=checkpoint_number)

    @property
    def latest(self):
        return self.manager.latest_checkpoint


def _split_size(name: str, split: str, data: config_lib.DataConfig) -> int:
    from pipelines import datasets

    builder = datasets.load_prepared(name, data_dir=data.data_dir, manual_dir=data.manual_dir,
                                     allow_partial=data.allow_partial)
    try:
        return int(builder.info.splits[split].num_examples)
    except (KeyError, ValueError) as e:
        raise ConfigError(f"data split {split!r} does not exist in {name} (splits: "
                          f"{', '.join(builder.info.splits)}; slices like 'train[:90%]' work too): {e}") from None


# --------------------------------------------------------------------------- training


def train(cfg: Config, *, callbacks=(), printer: Callable[[str], None] = print) -> dict:
    """Run one training job from a resolved config (see `pipelines.config.load_config`).

    Returns:
        dict with ``test_accuracy``, ``test_loss``, ``run_dir``, ``mlflow_run_id``, ``export_path``,
        ``history`` (every epoch's logs), ``compilations`` and ``resumed``.
    """
    import keras
    import numpy as np
    import tensorflow as tf

    from pipelines import distribute, loop, plots
    from pipelines.input import dataset_info, make_dataset
    from setnet.models import build_classifier

    t_start = time.time()
    data, tcfg = cfg.data, cfg.train
    strategy = distribute.make_strategy(tcfg.strategy)
    task = distribute.task(strategy)
    say = printer if task.chief else (lambda *_: None)
    keras.utils.set_random_seed(cfg.seed)

    info = dataset_info(data.name, data_dir=data.data_dir, manual_dir=data.manual_dir,
                        allow_partial=data.allow_partial)
    splits = {"train": data.train_split, "val": data.val_split, "test": data.test_split}
    sizes = {s: _split_size(data.name, split, data) for s, split in splits.items()}
    batch = data.batch_size
    if batch % strategy.num_replicas_in_sync:
        raise ConfigError(f"data.batch_size ({batch}) is the global batch and must be divisible by the "
                          f"{strategy.num_replicas_in_sync} replicas")
    if sizes["train"] < batch:
        raise ConfigError(f"data.batch_size ({batch}) is larger than the training split "
                          f"({sizes['train']} examples)")
    train_steps = loop.steps_for(sizes["train"], batch, True, tcfg.steps_per_epoch)

    def dataset(split_key, training):
        ds = make_dataset(data.name, splits[split_key], num_points=data.num_points,
                          batch_size=batch, training=training, augment=data.augment if training else None,
                          seed=cfg.seed, data_dir=data.data_dir, manual_dir=data.manual_dir,
                          allow_partial=data.allow_partial, strategy=strategy, cache=data.cache)
        return loop.prepare(ds, batch_size=batch, training=training, buckets=list(data.buckets),
                            steps=train_steps if training else None, strategy=strategy)

    train_ds, val_ds, test_ds = dataset("train", True), dataset("val", False), dataset("test", False)

    with strategy.scope():
        model = build_classifier(cfg.model, num_classes=info["num_classes"])
        optimizer = make_optimizer(tcfg, train_steps)
        optimizer.build(model.trainable_variables)
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="epoch")
    ckpt = tf.train.Checkpoint(model=model, optimizer=optimizer, epoch=epoch_var)

    run_dir, resuming = resolve_run_dir(cfg)
    run_dir.mkdir(parents=True, exist_ok=True)
    manager = _Checkpoints(run_dir, ckpt, task.chief, task.index)
    history_doc = {"epochs": [], "completed": False, "config_digest": config_digest(cfg)}
    initial_epoch = 0
    if manager.latest:
        ckpt.restore(manager.latest).assert_existing_objects_matched()
        initial_epoch = int(epoch_var.numpy())
        previous = _history(run_dir) or {}
        history_doc["epochs"] = list(previous.get("epochs", []))[:initial_epoch]
        say(f"Resuming {run_dir} after epoch {initial_epoch}/{tcfg.epochs} ({manager.latest})")
    elif resuming:
        say(f"{run_dir} has no checkpoint yet; starting it from scratch")
    if task.chief:
        (run_dir / "config.yaml").write_text(config_lib.dump(cfg))

    say(f"setnet: {info['num_classes']}-class {data.name} (v{info['version']}): "
        f"{sizes['train']} train / {sizes['val']} val / {sizes['test']} test sets of {data.num_points} points; "
        f"{model.name} with {model.count_params():,} parameters; {distribute.describe(strategy)}; "
        f"XLA {'on' if tcfg.xla else 'off'}; run folder {run_dir}")

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

    trainer = loop.Trainer(model, optimizer, strategy, xla=tcfg.xla, label_smoothing=tcfg.label_smoothing)
    cbs = (_callbacks(run_dir, ckpt, manager, history_doc, tracker, say)
           + _optional_callbacks(cfg, train_ds, val_ds, optimizer, run_dir, tracker, task.chief, say)
           + list(callbacks))
    status = "FAILED"
    try:
        trainer.fit(train_ds, val_ds, epochs=tcfg.epochs, initial_epoch=initial_epoch, train_steps=train_steps,
                    callbacks=cbs, log_every=tcfg.log_every)
        history = history_doc["epochs"]

        test = trainer.evaluate(trainer.distribute(test_ds), collect=True)
        minutes = (time.time() - t_start) / 60
        result = {"test_accuracy": test["accuracy"], "test_loss": test["loss"], "run_dir": str(run_dir),
                  "history": history, "compilations": dict(trainer.compilations), "resumed": initial_epoch > 0,
                  "mlflow_run_id": tracker.run_id if tracker else None, "export_path": None}
        if task.chief:
            final = {"test_loss": test["loss"], "test_accuracy": test["accuracy"],
                     "best_val_accuracy": max((h.get("val_accuracy", 0.0) for h in history), default=0.0),
                     "xla_compilations": float(sum(trainer.compilations.values())),
                     "wall_minutes": minutes}
            curves = plots.learning_curves(history, run_dir / "learning_curves.png", title=run_dir.name)
            confusion = plots.confusion_matrix(test["labels"], test["predictions"], info["class_names"],
                                               run_dir / "confusion_matrix.png", title=f"{data.test_split}:")
            (run_dir / "model_summary.txt").write_text(_summary(model))
            if tracker:
                tracker.log_metrics(final, step=len(history))
                for path in (curves, confusion, run_dir / "model_summary.txt", run_dir / "history.json"):
                    tracker.log_artifact(path, "plots" if path.suffix == ".png" else None)
            if cfg.export.enabled:
                result["export_path"] = str(_export(cfg, model, info, test_ds, tracker, say,
                                                    test={"accuracy": test["accuracy"], "loss": test["loss"]},
                                                    checkout=checkout))
        history_doc["completed"] = True
        history_doc["test"] = {"accuracy": test["accuracy"], "loss": test["loss"]}
        if task.chief:
            write_json(run_dir / "history.json", history_doc)
        status = "FINISHED"
    finally:
        if tracker is not None:
            if status == "FINISHED":
                tracker.finish("FINISHED")
            else:
                # An exception: the run can be resumed, so the MLflow run is marked failed only for now.
                tracker.finish("FAILED")
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
    from setnet.models import build_classifier

    clone = build_classifier(cfg.model, num_classes=info["num_classes"])
    clone.set_weights(model.get_weights())
    clouds = []
    for features, _, weights in test_ds:
        pts, mask, w = features["points"].numpy(), features["mask"].numpy(), weights.numpy()
        clouds += [p[m] for p, m, keep in zip(pts, mask, w) if keep > 0]
        if len(clouds) >= cfg.export.invariance_clouds:
            break
    clouds = [np.asarray(c, np.float32) for c in clouds[: cfg.export.invariance_clouds]]
    name = cfg.export.model_name or cfg.experiment
    path = export_model(clone, cfg.export.root, name, info["class_names"], check_invariance=True,
                        check_clouds=clouds, permutations=cfg.export.invariance_permutations, seed=cfg.seed)
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


def main(argv=None) -> int:
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
    from pipelines.datasets import DataNotFoundError
    from pipelines.distribute import StrategyError

    try:
        train(cfg)
    except (DataNotFoundError, StrategyError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; the last completed epoch is checkpointed: run the same command to resume",
              file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
