"""`make bench-layers`: forward+backward time and peak memory of the equivariant layers.

For every N and C (units = C) it times one training-style step (forward, a
scalar loss, gradients for the input and every weight) of each closed-form
layer, of TiedEquivariantDense on the same map (the engine's colors, gathered
into a dense kernel) and of a plain per-point Dense (the cost floor), all in
the same run, and prints ratios to the Dense time measured there.

Time is the best of ``--repeats`` runs after one warm-up (the best, not the
mean, because the machine may be shared). Peak memory is the largest rise of
the process's resident set over its level before the step, sampled every
millisecond by a background thread (TensorFlow keeps no allocator statistics
on CPU; on GPU the allocator's own peak is used instead). TiedEquivariantDense
is not run where its gathered kernel would exceed ``--tied-cap`` entries
(default 2**28, 1 GiB of float32, plus as much again for its gradient): that
is reported as ``OOM>cap``. Other layers are skipped (``skip>mem``) when a
rough estimate of their working set exceeds ``--mem-cap-gib``.

    python -m setnet.layers.bench                       # N = 16..4096, C = 32, 128
    python -m setnet.layers.bench --sizes 16 256 1024 --channels 32 --batch 2
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402

from setnet.layers import (  # noqa: E402
    FoldedEquivariant,
    PermEquivariantLinear,
    PermEquivariantQuadratic,
    TiedEquivariantDense,
)
from setnet.symmetry import colors, symmetric  # noqa: E402

GIB = 2**30


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakMemory:
    """Largest rise of memory use during a block: GPU allocator peak, else sampled RSS."""

    def __init__(self, interval=1e-3):
        self.interval = interval
        self.gpu = bool(tf.config.list_logical_devices("GPU"))
        self.peak = 0

    def __enter__(self):
        if self.gpu:
            tf.config.experimental.reset_memory_stats("GPU:0")
            self.base = tf.config.experimental.get_memory_info("GPU:0")["current"]
            return self
        self.base = self.peak_rss = _rss_bytes()
        self.running = True

        def sample():
            while self.running:
                self.peak_rss = max(self.peak_rss, _rss_bytes())
                time.sleep(self.interval)

        self.thread = threading.Thread(target=sample, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc):
        if self.gpu:
            self.peak = tf.config.experimental.get_memory_info("GPU:0")["peak"] - self.base
            return
        self.running = False
        self.thread.join()
        self.peak = max(self.peak_rss, _rss_bytes()) - self.base


def _make(kind, n, c):
    """(layer factory, rough working-set bytes per set, dense-kernel entries or None)."""
    f32 = 4
    if kind == "tied-linear":
        entries = n * n * c * c
        return lambda: TiedEquivariantDense(c, colors=colors(symmetric(n)), max_kernel_entries=entries), \
            3 * f32 * entries, entries
    if kind == "tied-quadratic":
        entries = n**3 * c**3
        return lambda: TiedEquivariantDense(c, colors=colors(symmetric(n), kind="quadratic"),
                                            max_kernel_entries=entries), 3 * f32 * entries, entries
    factories = {
        "dense": (lambda: keras.layers.Dense(c), c),
        "linear": (lambda: PermEquivariantLinear(c), c),
        "quadratic": (lambda: PermEquivariantQuadratic(c), c * c),
        "quadratic-sym": (lambda: PermEquivariantQuadratic(c, symmetric=True), c * c),
        "quadratic-r16": (lambda: PermEquivariantQuadratic(c, rank=16), c + 5 * 16),
        "folded-linear": (lambda: FoldedEquivariant(c, group="pairs"), c),
        "folded-quadratic": (lambda: FoldedEquivariant(c, group="pairs", order="quadratic"), 2 * c * c),
    }
    factory, per_point = factories[kind]
    # the per-point features, their gradient and a few same-sized temporaries
    return factory, 4 * f32 * n * per_point, None


KINDS = ["dense", "linear", "tied-linear", "quadratic", "quadratic-sym", "quadratic-r16", "tied-quadratic",
         "folded-linear", "folded-quadratic"]


def measure(kind, n, c, batch, repeats, xla, tied_cap, mem_cap):
    """(best seconds or None, peak bytes or None, note)."""
    factory, working_set, entries = _make(kind, n, c)
    if entries is not None and entries > tied_cap:
        return None, None, "OOM>cap"
    if working_set * batch > mem_cap:
        return None, None, "skip>mem"
    layer = factory()
    x = tf.constant(np.random.default_rng(0).normal(size=(batch, n, c)).astype("float32"))
    layer.build(x.shape)

    @tf.function(jit_compile=xla)
    def step(x):
        with tf.GradientTape() as tape:
            tape.watch(x)
            loss = tf.reduce_sum(tf.square(layer(x)))
        grads = tape.gradient(loss, [x, *layer.trainable_weights])
        return loss, [tf.convert_to_tensor(g) for g in grads]

    try:
        step(x)[0].numpy()  # trace, compile and warm up
        best = float("inf")
        with PeakMemory() as mem:
            for _ in range(repeats):
                t = time.perf_counter()
                step(x)[0].numpy()
                best = min(best, time.perf_counter() - t)
        return best, mem.peak, ""
    except (tf.errors.ResourceExhaustedError, MemoryError):
        return None, None, "OOM"


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 64, 256, 1024, 4096])
    parser.add_argument("--channels", type=int, nargs="+", default=[32, 128])
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--kinds", nargs="+", default=KINDS, choices=KINDS)
    parser.add_argument("--xla", action="store_true", help="compile the step with XLA (jit_compile=True)")
    parser.add_argument("--tied-cap", type=float, default=2**28,
                        help="largest TiedEquivariantDense kernel run, in entries (default 2**28 = 1 GiB f32)")
    parser.add_argument("--mem-cap-gib", type=float, default=4.0,
                        help="skip other layers whose estimated working set exceeds this")
    args = parser.parse_args(argv)
    device = "GPU" if tf.config.list_logical_devices("GPU") else f"CPU ({os.cpu_count()} cores visible)"
    print(f"setnet layer benchmark: batch {args.batch}, units = C, best of {args.repeats}, "
          f"{'XLA' if args.xla else 'graph mode'}, {device}; memory = peak rise during the step")
    print(f"{'C':>4} {'N':>5} {'layer':<17} {'fwd+bwd ms':>11} {'x Dense':>9} {'peak MiB':>9}")
    results = {}
    for c in args.channels:
        for n in args.sizes:
            for kind in args.kinds:
                if kind.startswith("folded") and n % 2:
                    continue
                seconds, peak, note = measure(kind, n, c, args.batch, args.repeats, args.xla, args.tied_cap,
                                              args.mem_cap_gib * GIB)
                results[c, n, kind] = seconds
                floor = results.get((c, n, "dense"))
                if seconds is None:
                    print(f"{c:>4} {n:>5} {kind:<17} {note:>11} {'-':>9} {'-':>9}")
                else:
                    ratio = f"{seconds / floor:8.1f}x" if floor else "-"
                    print(f"{c:>4} {n:>5} {kind:<17} {seconds * 1e3:11.2f} {ratio:>9} {peak / 2**20:9.1f}")
                sys.stdout.flush()
    _summary(results, args)


def _summary(results, args):
    print("\nIssue 3 goals, ratios from this run:")
    for c in args.channels:
        def ratio(a, b):
            ta, tb = results.get((c, *a)), results.get((c, *b))
            return "not measured" if ta is None or tb is None else f"{ta / tb:.2f}"

        if (c, 1024, "tied-linear") not in results:
            tied = "not measured"
        elif results[c, 1024, "tied-linear"] is None:
            tied = "OOM>cap"
        else:
            tied = ratio((1024, "tied-linear"), (1024, "linear")) + "x"
        print(f"  C={c}: linear/Dense at N=1024 = {ratio((1024, 'linear'), (1024, 'dense'))} (goal <= 1.5); "
              f"quadratic t(4096)/t(1024) = {ratio((4096, 'quadratic'), (1024, 'quadratic'))} (goal <= 4.5); "
              f"tied/closed-form linear at N=1024 = {tied} (goal >= 100x or out of memory)")


if __name__ == "__main__":
    main()
