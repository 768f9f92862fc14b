"""`make bench-input`: is the input pipeline ever the bottleneck?

Measures, in one run on this machine, examples per second of
  1. the tf.data pipeline (`pipelines.input.make_dataset`, training mode, all augmentations on) at
     1024 points, on synthetic_shapes and, when present, the real ModelNet40 subset;
  2. the training step of the default model (`setnet.models.build_classifier` with its defaults) on
     one batch held in memory: the rate at which training consumes examples;
  3. the same training step fed by the pipeline (Keras `fit`), which shows a bottleneck directly.
The goal is pipeline >= 5x the consumption rate. Timings start after a warm-up (cache filled, graphs
traced) and run for `--seconds` each.

    python -m benchmarks.bench_input [--num-points 1024] [--batch-size 32] [--seconds 5]
"""

from __future__ import annotations

import argparse
import os
import pathlib
import time

import numpy as np

AUGMENT = {"rotate": True, "scale": True, "jitter": True, "dropout": True}


def _rate(step, batch_size: int, seconds: float, warmup: int = 3) -> float:
    for _ in range(warmup):
        step()
    n, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        n += 1
    return n * batch_size / (time.perf_counter() - start)


def pipeline_rate(ds, batch_size, seconds) -> float:
    it = iter(ds.repeat())
    for _ in range(sum(1 for _ in ds)):  # one full epoch first: fills the cache
        next(it)
    return _rate(lambda: next(it), batch_size, seconds)


def build_model(num_classes: int):
    """The classifier of `setnet.models.ModelConfig`'s defaults, and its description."""
    from setnet.models import ModelConfig, build_classifier

    return build_classifier(ModelConfig(), num_classes=num_classes), "setnet.models.build_classifier defaults"


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-points", type=int, default=1024)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--data-dir", default=None)
    args = parser.parse_args(argv)

    import keras
    import tensorflow as tf

    from pipelines import datasets
    from pipelines.input import make_dataset

    bs, n = args.batch_size, args.num_points
    rows = []
    kw = dict(num_points=n, batch_size=bs, training=True, augment=AUGMENT, data_dir=args.data_dir)
    ds = make_dataset("synthetic_shapes", "train", **kw)
    rows.append((f"input pipeline: synthetic_shapes, {n} points, augmented", pipeline_rate(ds, bs, args.seconds)))
    shared = pathlib.Path(os.environ.get("SETNET_SHARED_DIR", datasets._project_dir().parent / "shared"))
    subset = shared / "data" / "modelnet40-subset"
    if subset.is_dir():
        real = make_dataset("modelnet40", "train", manual_dir=subset, allow_partial=True, **kw)
        rows.append((f"input pipeline: modelnet40 real subset, {n} of 2048 points, augmented",
                     pipeline_rate(real, bs, args.seconds)))

    model, model_name = build_model(10)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    try:
        model.compile(optimizer="adam", loss=loss, jit_compile=True)
        features, label = next(iter(ds))
        model.train_on_batch(features, label)
        xla = "XLA"
    except Exception:  # noqa: BLE001 - fall back to graph mode where XLA cannot compile
        model.compile(optimizer="adam", loss=loss, jit_compile=False)
        xla = "no XLA"
    features, label = next(iter(ds))
    consume = _rate(lambda: model.train_on_batch(features, label), bs, args.seconds)
    rows.append((f"train step, default model, batch in memory ({xla})", consume))
    steps = max(int(consume * args.seconds / bs), 5)
    model.fit(ds.repeat(), steps_per_epoch=3, epochs=1, verbose=0)
    start = time.perf_counter()
    model.fit(ds.repeat(), steps_per_epoch=steps, epochs=1, verbose=0)
    rows.append(("train step fed by the input pipeline (fit)", steps * bs / (time.perf_counter() - start)))

    cpus = os.cpu_count()
    gpus = len(tf.config.list_physical_devices("GPU"))
    print(f"\nbench-input: batch {bs}, {n} points, {cpus} CPU cores, {gpus} GPU(s); model: {model_name}")
    print(f"{'measurement':<70}{'examples/s':>12}")
    for name, rate in rows:
        print(f"{name:<70}{rate:>12.0f}")
    pipe = [r for name, r in rows if name.startswith("input pipeline")]
    print(f"{'ratio: slowest input pipeline / train step (goal >= 5)':<70}{min(pipe) / consume:>12.1f}")
    print(f"{'ratio: train fed by pipeline / train from memory (1.0 = no bottleneck)':<70}"
          f"{rows[-1][1] / consume:>12.2f}")
    return {name: rate for name, rate in rows}


if __name__ == "__main__":
    main()
