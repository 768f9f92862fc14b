"""Test accuracy with training time and hardware: the embedded default, digits, and ModelNet40 where present.

    make bench-accuracy [ARGS="--set train.epochs=3"]       # all of them (ModelNet only with its data)
    python -m benchmarks.bench_accuracy --configs configs/digits.yaml
    python -m benchmarks.bench_accuracy --configs configs/default.yaml --set data.num_points=1024 --pointnet

Each config trains as ``make train`` would (same loop, checkpoints, MLflow, export off), in the
experiment ``bench-accuracy`` under ``runs/`` with a fresh run every time. ModelNet configs run
when the full dataset is prepared or in the manual folder; without it their row says so (the
partial copy in a checkout is not a benchmark: ``--allow-partial`` runs it anyway, labelled
PARTIAL). This is a long job (ModelNet40 at 1024 points takes hours on a CPU), not a test.
Published ModelNet40 anchors at ~1024 points: DeepSets 0.87, PointNet 0.892, Set Transformer 0.8915.
"""

from __future__ import annotations

import argparse
import sys
import time

DEFAULT_CONFIGS = ("configs/default.yaml", "configs/digits.yaml", "configs/modelnet.yaml",
                   "configs/modelnet_quadratic.yaml")
ANCHORS = {"modelnet40": "DeepSets 0.87 (1000 pts), PointNet 0.892, Set Transformer 0.8915"}


def _row(path: str, cfg, result: dict | None, minutes: float, note: str) -> dict:
    model = cfg.model
    arch = "pointnet" if model.type == "pointnet" else "setnet " + "-".join(b.kind for b in model.blocks)
    return {"config": path, "dataset": cfg.data.name, "points": cfg.data.num_points, "model": arch,
            "epochs": cfg.train.epochs,
            "test_accuracy": result["test_accuracy"] if result else None,
            "best_val_accuracy": max((h["val_accuracy"] for h in result["history"]), default=None) if result else None,
            "minutes": minutes, "note": note}


def table(rows: list[dict], hardware: str) -> str:
    lines = [f"accuracy benchmark on {hardware}",
             "| config | dataset | points | model | epochs | test acc | best val acc | minutes | note |",
             "|---|---|---:|---|---:|---:|---:|---:|---|"]
    for r in rows:
        acc = f"{r['test_accuracy']:.4f}" if r["test_accuracy"] is not None else "-"
        val = f"{r['best_val_accuracy']:.4f}" if r["best_val_accuracy"] is not None else "-"
        mins = f"{r['minutes']:.1f}" if r["test_accuracy"] is not None else "-"
        lines.append(f"| {r['config']} | {r['dataset']} | {r['points']} | {r['model']} | {r['epochs']} | {acc} | "
                     f"{val} | {mins} | {r['note']} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_accuracy", description=__doc__.split("\n\n")[0])
    p.add_argument("--configs", nargs="+", default=list(DEFAULT_CONFIGS))
    p.add_argument("--set", dest="overrides", nargs="+", default=[], metavar="KEY=VALUE",
                   help="overrides for every config (e.g. train.epochs=3 for a quick look)")
    p.add_argument("--pointnet", action="store_true",
                   help="after each config, train the PointNet baseline on the same data and settings "
                        "(model.type=pointnet): the same-data accuracy comparison of make bench-train")
    p.add_argument("--allow-partial", action="store_true",
                   help="run ModelNet configs on a partial copy too (labelled PARTIAL; not comparable)")
    args = p.parse_args(argv)

    from pipelines.config import ConfigError, load_config
    from pipelines.datasets import DataNotFoundError
    from pipelines.train import hardware, train

    rows = []
    hw = None
    runs = [(path, []) for path in args.configs]
    if args.pointnet:
        runs = [run for path in args.configs for run in ((path, []), (path, ["model.type=pointnet"]))]
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
        note = ANCHORS.get(cfg.data.name, "")
        if args.allow_partial and cfg.data.name.startswith("modelnet"):
            note = "PARTIAL data: not comparable"
        t0 = time.time()
        try:
            result = train(cfg)
        except DataNotFoundError as e:
            first = str(e).splitlines()[0]
            print(f"{path}: skipped: {first}", file=sys.stderr)
            rows.append(_row(path, cfg, None, 0.0, f"data not present ({first[:80]}...)"))
            continue
        hw = hw or hardware()
        rows.append(_row(path, cfg, result, (time.time() - t0) / 60, note))
        print(table(rows, hw), flush=True)  # partial table after each run: this job is long
    print()
    print(table(rows, hw or hardware()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
