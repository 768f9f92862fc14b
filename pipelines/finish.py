"""The end of a training run, once every epoch is trained: the test, the plots, the export and the
final record (``history.json`` marked completed, the final metrics and artifacts to MLflow, the
export registered in the Model Registry).

`pipelines.train.train` calls `finish`; a run stopped before its last epoch reaches it when resumed.
"""

from __future__ import annotations

import math
import pathlib
import time

from pipelines.build import build_model
from pipelines.tracking import write_json


def finish(cfg, info, model, trainer, test_ds, history_doc, run_dir: pathlib.Path, tracker, checkout, task, say,
           t_start: float, resumed: bool) -> dict:
    """Test, plots, export and the final record; returns what `pipelines.train.train` returns.

    Args:
        cfg: the run's config.
        info: the dataset's `pipelines.input.dataset_info`.
        model: the trained model (under the strategy's scope).
        trainer: the `pipelines.loop.Trainer` that trained it.
        test_ds: the test batches (undistributed).
        history_doc: the run's history; marked completed, with the test figures, and written.
        run_dir: the run folder (plots, model summary, history).
        tracker: the `pipelines.tracking.Tracker`, or None.
        checkout: (commit, dirty) read when the run started, for the registered version's tags.
        task: this process's `pipelines.distribute.Task` (only the chief writes and exports).
        say: where the summary lines go.
        t_start: ``time.time()`` when the job started.
        resumed: whether this process resumed the run from a checkpoint.
    """
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
        (run_dir / "model_summary.txt").write_text(model_summary(model))
        if tracker:
            tracker.log_metrics({k: v for k, v in final.items() if math.isfinite(v)}, step=len(history))
            for path in (curves, outcome, run_dir / "model_summary.txt", run_dir / "history.json"):
                tracker.log_artifact(path, "plots" if path.suffix == ".png" else None)
        if cfg.export.enabled:
            result["export_path"] = str(export_trained(cfg, model, info, test_ds, tracker, say, test=scores,
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


def model_summary(model) -> str:
    """Keras' summary table of ``model`` as text (``model_summary.txt`` of a run).

    Example:

        import keras
        inputs = keras.Input((3,))
        print(model_summary(keras.Model(inputs, keras.layers.Dense(2)(inputs))))
    """
    lines: list[str] = []
    model.summary(print_fn=lambda s, **_: lines.append(s), line_length=110)
    return "\n".join(lines) + "\n"


def export_trained(cfg, model, info, test_ds, tracker, say, test, checkout) -> pathlib.Path:
    """Export a one-device copy of the trained model (no distributed variables in the SavedModel),
    checked for permutation invariance on real test clouds by `pipelines.export`; with a tracker, the
    checks' figures, the export as artifacts and its registration go to MLflow.

    Args:
        cfg: the run's config (``export.*``, ``mlflow.registered_model``).
        model: the trained model.
        info: the dataset's `pipelines.input.dataset_info`.
        test_ds: the test batches; the invariance check runs on ``export.invariance_clouds`` of them.
        tracker: the `pipelines.tracking.Tracker`, or None.
        say: where the check's one-line summary goes.
        test: the test figures (tags of the registered version).
        checkout: (commit, dirty) of the training checkout.

    Returns:
        The export's version folder, ``<export.root>/<model>/<version>``.
    """
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
