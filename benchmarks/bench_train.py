"""Training throughput (clouds/s): linear and quadratic setnet against PointNet, each with and without XLA.

    make bench-train [ARGS="--steps 20 --points 1024 --batch 32"]

Every model trains through the same loop (`pipelines.loop.Trainer`, one device), on the same
input pipeline (one tf.data pipeline of ModelNet-sized clouds, the same batches for every model)
and batch. The models are those of configs/modelnet.yaml (linear), configs/modelnet_quadratic.yaml
(quadratic), configs/default.yaml (the embedded default: linear, rank-16 quadratic, linear) and
`setnet.models.build_pointnet` (the published PointNet: shared MLP
64-64-64-128-1024, max pool, 512-256-k head). XLA on compiles the whole step with
``jit_compile=True``; off runs the same step as a plain TensorFlow graph. Compilation is left out
of the timing (warm-up steps first), and the timed rounds interleave the models so that load
elsewhere on the machine hits them alike; each figure is the best round. All ratios in the table come from this one run; the figures
depend on the machine and on whatever else it is running.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

MODELS = {
    "setnet linear": "configs/modelnet.yaml",
    "setnet quadratic": "configs/modelnet_quadratic.yaml",
    "setnet default": "configs/default.yaml",
    "PointNet": None,
}


def _model_config(path):
    from pipelines.config import CONFIG_DIR, load_config
    from setnet.models import ModelConfig

    if path is None:
        return ModelConfig(type="pointnet", head_dropout=0.3)
    return load_config(CONFIG_DIR / path.split("/", 1)[1]).model


def _dataset(points: int, batch: int, classes: int, distinct_batches: int, seed: int = 0):
    """Clouds of `points` points (noisy spheres, ellipsoids and planes), cached in memory and repeated."""
    import numpy as np
    import tensorflow as tf

    from pipelines import loop

    rng = np.random.default_rng(seed)
    n = batch * distinct_batches
    labels = rng.integers(0, classes, n)
    x = rng.normal(size=(n, points, 3)).astype("float32")
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    x *= (1.0 + (labels % 4)[:, None, None] * np.array([0.3, 0.0, -0.2], "float32"))
    x += rng.normal(scale=0.01, size=x.shape).astype("float32")
    mask = np.ones((n, points), bool)
    ds = tf.data.Dataset.from_tensor_slices(({"points": x, "mask": mask}, labels.astype("int64")))
    ds = ds.batch(batch).cache().repeat()
    return loop.prepare(ds, batch_size=batch, training=True)


def setup(name: str, model_cfg, xla: bool, ds, warmup: int, classes: int) -> dict:
    """A model, optimizer and trainer, traced and (with XLA) compiled by `warmup` untimed steps."""
    import keras
    import tensorflow as tf

    from pipelines import loop
    from setnet.models import build_classifier

    keras.utils.set_random_seed(0)
    strategy = tf.distribute.get_strategy()
    model = build_classifier(model_cfg, num_classes=classes)
    optimizer = keras.optimizers.Adam(1e-3)
    optimizer.build(model.trainable_variables)
    trainer = loop.Trainer(model, optimizer, strategy, xla=xla, verbose=0)
    t0 = time.perf_counter()
    trainer.train_epoch(ds.take(warmup), warmup)
    return {"model": name, "xla": xla, "params": model.count_params(), "trainer": trainer,
            "warmup_s": time.perf_counter() - t0, "rounds": []}


def time_round(entry: dict, ds, steps: int) -> None:
    logs = entry["trainer"].train_epoch(ds.take(steps), steps)
    entry["rounds"].append(logs["examples_per_second"])


def table(rows: list[dict], points: int, batch: int) -> str:
    by = {(r["model"], r["xla"]): r for r in rows}
    ref = {x: by.get(("PointNet", x)) for x in (False, True)}
    lines = [f"training throughput, {points} points, batch {batch}, one device: "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
             "| model | params | XLA off clouds/s | XLA on clouds/s | XLA speed-up | vs PointNet (off) | "
             "vs PointNet (on) |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        off, on = by.get((name, False)), by.get((name, True))

        def fmt(r):
            return f"{r['clouds_per_s']:.1f}" if r else "-"

        def ratio(a, b):
            return f"{a['clouds_per_s'] / b['clouds_per_s']:.2f}x" if a and b else "-"

        params = (off or on)["params"]
        lines.append(f"| {name} | {params:,} | {fmt(off)} | {fmt(on)} | {ratio(on, off)} | "
                     f"{ratio(off, ref[False])} | {ratio(on, ref[True])} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_train", description=__doc__.split("\n\n")[0])
    p.add_argument("--points", type=int, default=1024)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--classes", type=int, default=40)
    p.add_argument("--steps", type=int, default=10, help="timed training steps per round")
    p.add_argument("--rounds", type=int, default=3, help="interleaved timed rounds (the best one counts)")
    p.add_argument("--warmup", type=int, default=2, help="untimed steps first (tracing, XLA compilation)")
    p.add_argument("--models", nargs="+", default=list(MODELS), choices=list(MODELS), metavar="MODEL",
                   help=f"subset of: {', '.join(repr(m) for m in MODELS)}")
    p.add_argument("--no-xla-off", action="store_true", help="measure with XLA only")
    args = p.parse_args(argv)

    ds = _dataset(args.points, args.batch, args.classes, distinct_batches=4)
    settings = (True,) if args.no_xla_off else (False, True)
    from tqdm.auto import tqdm

    entries = []
    for name in tqdm(args.models, desc="build and compile", unit="model", file=sys.stderr):
        for xla in settings:
            entries.append(setup(name, _model_config(MODELS[name]), xla, ds, args.warmup, args.classes))
    # Rounds interleave the configurations, so a burst of load elsewhere on the machine hits all of
    # them alike; each configuration's figure is its best round (the least disturbed one).
    with tqdm(total=args.rounds * len(entries), desc="timed rounds", unit="run", file=sys.stderr) as bar:
        for _ in range(args.rounds):
            for entry in entries:
                time_round(entry, ds, args.steps)
                bar.update()
    rows = [{**e, "clouds_per_s": max(e["rounds"])} for e in entries]
    print(table(rows, args.points, args.batch))
    print(f"best of {args.rounds} interleaved rounds of {args.steps} steps; every round (clouds/s):")
    for r in rows:
        print(f"  {r['model']:<17} XLA {'on ' if r['xla'] else 'off'}: "
              f"{' '.join(f'{v:7.1f}' for v in r['rounds'])}   (warm-up incl. compilation {r['warmup_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
