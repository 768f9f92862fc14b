"""Test accuracy with epochs, wall time, training throughput and hardware, setnet against PointNet on the same data.

    make bench-accuracy [ARGS="--set train.epochs=3"]       # the default list (ModelNet only with its data)
    python -m benchmarks.bench_accuracy --configs configs/digits.yaml --pointnet --patience 10
    python -m benchmarks.bench_accuracy --configs configs/default.yaml configs/modelnet.yaml --pointnet \\
        --set data.name=synthetic_shapes data.num_points=1024 "data.val_split=train[90%:]" data.test_split=test \\
        train.epochs=100 --patience 10                    # synthetic_shapes at 1024 points, to convergence

Each config trains as ``make train`` would (same loop, checkpoints, MLflow, export off), in the
experiment ``bench-accuracy`` under ``runs/`` with a fresh run every time. ``--pointnet`` adds
the PointNet baseline trained on the same data with the same settings (augmentation, optimizer,
schedule, epoch budget) after each config: by default the published network with Keras'
BatchNormalization (``model.type=pointnet_bn``), the fair baseline on fixed-size sets. The epoch
rule is the same for every row: ``train.epochs`` is the budget, and with ``--patience P`` a run
stops once validation accuracy has not improved for P epochs and is tested with the weights of
its best validation epoch (Keras' EarlyStopping with restore_best_weights). ModelNet configs
validate on the test split (ModelNet has no validation split), so there ``--patience`` selects on
the test set: such rows are marked. ModelNet configs run when the full dataset is prepared or in
the manual folder; without it their row says so (the partial copy in a checkout is not a
benchmark: ``--allow-partial`` runs it anyway, labelled PARTIAL). This is a long job (ModelNet40
at 1024 points takes hours on a CPU), not a test. Published ModelNet40 anchors at ~1024 points:
DeepSets 0.87, PointNet 0.892, Set Transformer 0.8915.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

DEFAULT_CONFIGS = ("configs/default.yaml", "configs/digits.yaml", "configs/modelnet.yaml",
                   "configs/modelnet_quadratic.yaml", "configs/modelnet_recipe.yaml")
ANCHORS = {"modelnet40": "DeepSets 0.87 (1000 pts), PointNet 0.892, Set Transformer 0.8915"}
BASELINES = {"pointnet_bn": "PointNet (Keras BatchNormalization)", "pointnet": "PointNet (SetNormalization)"}


def _arch(model) -> str:
    if model.type.startswith("pointnet"):
        return "PointNet (BN)" if model.type == "pointnet_bn" else "PointNet (SN)"
    return "setnet " + "-".join(b.kind for b in model.blocks)


def _row(path: str, cfg, result: dict | None, minutes: float, note: str, best_epoch: int | None) -> dict:
    history = result["history"] if result else []
    rates = [h["examples_per_second"] for h in history if "examples_per_second" in h]
    return {"config": path, "dataset": cfg.data.name, "points": cfg.data.num_points, "model": _arch(cfg.model),
            "epoch_budget": cfg.train.epochs, "epochs": len(history) if result else None,
            "best_epoch": best_epoch,
            "test_accuracy": result["test_accuracy"] if result else None,
            "best_val_accuracy": max((h["val_accuracy"] for h in history), default=None) if result else None,
            # The median epoch: the first epoch includes XLA compilation.
            "train_clouds_per_s": sorted(rates)[len(rates) // 2] if rates else None,
            "minutes": minutes, "note": note}


def table(rows: list[dict], hardware: str) -> str:
    lines = [f"accuracy benchmark on {hardware}",
             "| config | dataset | points | model | epochs run / budget (best) | test acc | best val acc | "
             "train clouds/s | minutes | note |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---|"]
    for r in rows:
        done = r["test_accuracy"] is not None
        acc = f"{r['test_accuracy']:.4f}" if done else "-"
        val = f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-"
        rate = f"{r['train_clouds_per_s']:.1f}" if r["train_clouds_per_s"] else "-"
        mins = f"{r['minutes']:.1f}" if done else "-"
        epochs = f"{r['epochs']} / {r['epoch_budget']}" if done else f"- / {r['epoch_budget']}"
        if done and r["best_epoch"] is not None:
            epochs += f" ({r['best_epoch']})"
        lines.append(f"| {r['config']} | {r['dataset']} | {r['points']} | {r['model']} | {epochs} | {acc} | {val} | "
                     f"{rate} | {mins} | {r['note']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides for every config (e.g. train.epochs=3 for a quick look)")
    p.add_argument("--pointnet", nargs="?", const="pointnet_bn", choices=list(BASELINES), default=None,
                   help="after each config, train PointNet on the same data and settings: pointnet_bn (default, "
                        "Keras BatchNormalization, the published network) or pointnet (SetNormalization)")
    p.add_argument("--patience", type=int, default=None, metavar="P",
                   help="stop a run after P epochs without a better validation accuracy and test its best "
                        "epoch's weights (the same rule for every row; train.epochs stays the budget)")
    p.add_argument("--allow-partial", action="store_true",
                   help="run ModelNet configs on a partial copy too (labelled PARTIAL; not comparable)")
    p.add_argument("--json", metavar="PATH", help="also write the rows as JSON")
    args = p.parse_args(argv)
    if args.patience is not None and args.patience < 1:
        p.error(f"--patience must be >= 1, got {args.patience}")

    import keras

    from pipelines.config import ConfigError, load_config
    from pipelines.datasets import DataNotFoundError
    from pipelines.runs import hardware
    from pipelines.train import train

    rows = []
    hw = None
    runs = [(path, []) for path in args.configs]
    if args.pointnet:
        runs = [run for path in args.configs for run in ((path, []), (path, [f"model.type={args.pointnet}"]))]
    for path, extra in runs:
        overrides = ["experiment=bench-accuracy", "train.resume=never", "export.enabled=false", *args.overrides,
                     *extra]
        if args.allow_partial:
            overrides.append("data.allow_partial=true")
        try:
            cfg = load_config(path, overrides)
        except ConfigError as e:
            print(f"error: {e}", file=sys.stderr)
            return 2
        notes = [ANCHORS.get(cfg.data.name, "")]
        if args.allow_partial and cfg.data.name.startswith("modelnet"):
            notes = ["PARTIAL data: not comparable"]
        callbacks = []
        if args.patience:
            stopper = keras.callbacks.EarlyStopping(monitor="val_accuracy", mode="max", patience=args.patience,
                                                    restore_best_weights=True)
            callbacks.append(stopper)
            if cfg.data.val_split == cfg.data.test_split:
                notes.append("best epoch chosen on the test split (val = test): optimistic")
        t0 = time.time()
        try:
            result = train(cfg, callbacks=callbacks)
        except DataNotFoundError as e:
            first = str(e).splitlines()[0]
            print(f"{path}: skipped: {first}", file=sys.stderr)
            rows.append(_row(path, cfg, None, 0.0, f"data not present ({first[:80]}...)", None))
            continue
        hw = hw or hardware()
        best = callbacks[0].best_epoch + 1 if callbacks else None
        rows.append(_row(path, cfg, result, (time.time() - t0) / 60, "; ".join(n for n in notes if n), best))
        print(table(rows, hw), flush=True)  # partial table after each run: this job is long
    print()
    print(table(rows, hw or hardware()))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            json.dump(rows, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
