"""Training throughput (clouds/s): setnet models against PointNet, XLA on and off, the project loop and Keras' fit.

    make bench-train [ARGS="--steps 20 --points 1024 --batch 32"]
    python -m benchmarks.bench_train --models "setnet default" "PointNet (BN)" --runners loop --no-xla-off

Every model trains on the same input pipeline (one tf.data pipeline of ModelNet-sized clouds,
fixed-size sets as ModelNet's are, the same batches for every model) and batch, through two
runners: the project loop (`pipelines.loop.Trainer`, one device, what ``make train`` runs) and
Keras' ``model.fit`` with the same optimizer and loss. The models are those of
configs/modelnet.yaml (linear), configs/modelnet_quadratic.yaml (quadratic), configs/default.yaml
(the embedded default: linear, rank-16 quadratic, linear) and two PointNets (Qi et al., CVPR 2017;
shared MLP 64-64-64-128-1024, max pool, 512-256-k head): "PointNet (BN)" with Keras'
``BatchNormalization`` after every layer, the published network and the fair baseline on
fixed-size sets, and "PointNet (SN)" with `SetNormalization`, which keeps padding inert for
sets of different sizes. XLA on compiles the step with ``jit_compile=True``; off runs the same
step as a plain TensorFlow graph. Compilation is left out of the timing (warm-up steps first), and
the timed rounds interleave every configuration, so that load elsewhere on the machine hits them
alike; each figure is the best round. All ratios in the tables come from this one run; the figures
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
    "PointNet (BN)": "pointnet_bn",
    "PointNet (SN)": "pointnet",
}
BASELINES = ("PointNet (BN)", "PointNet (SN)")
RUNNERS = ("loop", "fit")


def _model_config(source: str):
    from pipelines.config import CONFIG_DIR, load_config
    from setnet.models import ModelConfig

    if source.startswith("pointnet"):
        return ModelConfig(type=source, head_dropout=0.3)
    return load_config(CONFIG_DIR / source.split("/", 1)[1]).model


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
    ds = tf.data.Dataset.from_tensor_slices(({"points": x, "mask": mask}, labels.astype("int64"))).batch(batch)
    ds = loop.prepare(ds, batch_size=batch, training=True).cache()
    for _ in ds:  # fill the cache now: a first pass cut short by take() would discard it
        pass
    return ds.repeat()


class _EpochTimer:
    """Seconds of fit's one epoch, from its first batch to the end of its last (setup left out,
    as the loop's figure leaves out building its dataset)."""

    def __init__(self):
        import keras

        timer = self

        class Callback(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                timer.start = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                timer.seconds = time.perf_counter() - timer.start

        self.callback = Callback()


def setup(name: str, runner: str, xla: bool, ds, args) -> dict:
    """A model and its runner, traced and (with XLA) compiled by `args.warmup` untimed steps."""
    import keras
    import tensorflow as tf

    from pipelines import loop
    from setnet.models import build_classifier

    keras.utils.set_random_seed(0)
    model = build_classifier(_model_config(MODELS[name]), num_classes=args.classes)
    optimizer = keras.optimizers.Adam(1e-3)
    if args.mixed_precision == "float16":
        optimizer = keras.optimizers.LossScaleOptimizer(optimizer)
    entry = {"model": name, "runner": runner, "xla": xla, "params": model.count_params(), "rounds": []}
    t0 = time.perf_counter()
    if runner == "loop":
        optimizer.build(model.trainable_variables)
        trainer = loop.Trainer(model, optimizer, tf.distribute.get_strategy(), xla=xla, verbose=0,
                               steps_per_execution=args.steps_per_execution)
        trainer.train_epoch(ds.take(args.warmup), args.warmup)

        def run(steps):
            return trainer.train_epoch(ds.take(steps), steps)["examples_per_second"]
    else:
        model.compile(optimizer=optimizer, loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                      metrics=["accuracy"], jit_compile=xla, steps_per_execution=args.steps_per_execution)
        timer = _EpochTimer()
        model.fit(ds, epochs=1, steps_per_epoch=args.warmup, verbose=0)

        def run(steps):
            model.fit(ds, epochs=1, steps_per_epoch=steps, verbose=0, callbacks=[timer.callback])
            return steps * args.batch / timer.seconds
    entry["run"] = run
    entry["warmup_s"] = time.perf_counter() - t0
    return entry


def table(rows: list[dict], args) -> str:
    by = {(r["model"], r["runner"], r["xla"]): r for r in rows}

    def fmt(r):
        return f"{r['clouds_per_s']:.1f}" if r else "-"

    def ratio(a, b):
        return f"{a['clouds_per_s'] / b['clouds_per_s']:.2f}x" if a and b else "-"

    lines = [f"training throughput, {args.points} points, batch {args.batch}, one device, "
             f"steps_per_execution {args.steps_per_execution}, mixed precision {args.mixed_precision}: "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
             "| model | params | runner | XLA off clouds/s | XLA on clouds/s | XLA speed-up | "
             "vs PointNet (BN) off / on | vs PointNet (SN) off / on |",
             "|---|---:|---|---:|---:|---:|---:|---:|"]
    names = list(dict.fromkeys(r["model"] for r in rows))
    runners = list(dict.fromkeys(r["runner"] for r in rows))
    for name in names:
        for runner in runners:
            off, on = by.get((name, runner, False)), by.get((name, runner, True))
            if not (off or on):
                continue
            vs = [f"{ratio(off, by.get((base, runner, False)))} / {ratio(on, by.get((base, runner, True)))}"
                  for base in BASELINES]
            lines.append(f"| {name} | {(off or on)['params']:,} | {runner} | {fmt(off)} | {fmt(on)} | "
                         f"{ratio(on, off)} | {vs[0]} | {vs[1]} |")
    if set(runners) == set(RUNNERS):
        lines += ["", "project loop against Keras' fit, same model, optimizer and batches:", "",
                  "| model | XLA off loop / fit | XLA on loop / fit |", "|---|---:|---:|"]
        for name in names:
            cells = [ratio(by.get((name, "loop", x)), by.get((name, "fit", x))) for x in (False, True)]
            lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
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
    p.add_argument("--runners", nargs="+", default=list(RUNNERS), choices=RUNNERS,
                   help="the project loop (pipelines.loop.Trainer) and/or keras model.fit")
    xla = p.add_mutually_exclusive_group()
    xla.add_argument("--no-xla-off", action="store_true", help="measure with XLA only")
    xla.add_argument("--no-xla-on", action="store_true",
                     help="measure without XLA only (XLA's compilation of each model takes minutes on a loaded CPU)")
    p.add_argument("--steps-per-execution", type=int, default=1, help="steps per compiled call, both runners")
    p.add_argument("--mixed-precision", choices=("none", "bfloat16", "float16"), default="none",
                   help="Keras mixed-precision policy for every model (float16 with loss scaling)")
    args = p.parse_args(argv)
    for flag in ("points", "batch", "classes", "steps", "rounds", "warmup", "steps_per_execution"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")

    import keras
    from tqdm.auto import tqdm

    if args.mixed_precision != "none":
        keras.config.set_dtype_policy(f"mixed_{args.mixed_precision}")
    ds = _dataset(args.points, args.batch, args.classes, distinct_batches=4)
    settings = (True,) if args.no_xla_off else (False,) if args.no_xla_on else (False, True)
    entries = []
    for name in tqdm(args.models, desc="build and compile", unit="model", file=sys.stderr):
        for runner in args.runners:
            for xla in settings:
                entries.append(setup(name, runner, xla, ds, args))
    # Rounds interleave the configurations, so a burst of load elsewhere on the machine hits all of
    # them alike; each configuration's figure is its best round (the least disturbed one).
    with tqdm(total=args.rounds * len(entries), desc="timed rounds", unit="run", file=sys.stderr) as bar:
        for _ in range(args.rounds):
            for entry in entries:
                entry["rounds"].append(entry["run"](args.steps))
                bar.update()
    rows = [{**e, "clouds_per_s": max(e["rounds"])} for e in entries]
    print(table(rows, args))
    print(f"\nbest of {args.rounds} interleaved rounds of {args.steps} steps; every round (clouds/s):")
    for r in rows:
        print(f"  {r['model']:<16} {r['runner']:<4} XLA {'on ' if r['xla'] else 'off'}: "
              f"{' '.join(f'{v:7.1f}' for v in r['rounds'])}   (warm-up incl. compilation {r['warmup_s']:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
