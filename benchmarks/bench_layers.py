"""`make bench-layers`: forward+backward time and peak memory of the equivariant layers.

For every N and C (units = C) it times one training-style step (forward, a
scalar loss, gradients for the input and every weight) of each closed-form
layer, of TiedEquivariantDense on the same map (the engine's colors, gathered
into a dense kernel) and of a plain per-point Dense (the cost floor), all in
the same run, and prints ratios to the Dense time measured there.

Time is the best of ``--repeats`` runs after one warm-up (the best, not the
mean, because the machine may be shared; steps under 0.25 s run proportionally
more often, up to 50 times as many). The goal ratios at the end are measured
again with the steps they compare run in turn, round after round, so that a
busy spell on a shared machine slows both sides alike. Peak memory is the allocator's own
peak during those runs minus what was allocated before them (inputs and
weights), i.e. the step's transient working set: on CPU this needs
TensorFlow's BFC allocator, switched on here through
``TF_CPU_ALLOCATOR_USE_BFC`` at the start of ``main`` (TensorFlow reads it when it
creates its CPU device, at the first operation, not at import; the default CPU
allocator keeps no statistics; if it is switched off, or TensorFlow already ran
in this process, the rise of the resident set sampled every millisecond is
reported instead, which undercounts reused memory).

After the issue 3 goals, the issue 16 goals compare SetNormalization with
keras BatchNormalization: fwd+bwd (training mode, the gradients of input,
gamma and beta) on a ``--norm-shape`` activation (default (32, 1024, 1024)),
unmasked and masked (BatchNormalization then runs on the same padded tensor),
and a PointNet training step (`build_pointnet`, batch B of N points) with
either normalisation; each pair runs interleaved and the time ratio is printed
against the goal of 1.1.

TiedEquivariantDense is not run where its gathered kernel would exceed
``--tied-cap`` entries (default 2**28, 1 GiB of float32; the step also holds
the kernel's gradient and a transposed copy, about 3x that). Such rows say
``OOM`` when even one copy of the kernel exceeds the machine's memory, and
``>cap`` otherwise (raise ``--tied-cap`` to measure them). Other layers are
skipped (``skip>mem``) when a rough estimate of their working set exceeds
``--mem-cap-gib``.

The default grid (N = 16, 64, 256, 1024, 4096; C = 32, 128; batch 4) takes
about 5 to 10 minutes on 2 busy CPU cores.

    python -m benchmarks.bench_layers                       # N = 16..4096, C = 32, 128
    python -m benchmarks.bench_layers --sizes 16 256 1024 --channels 32 --batch 2
    make bench-layers ARGS="--sizes 16 32 64 128 256 512 1024 2048 4096 --repeats 5"   # a finer grid
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import sys
import threading
import time

import keras
import numpy as np
import tensorflow as tf

from setnet.layers import (
    FoldedEquivariant,
    PermEquivariantLinear,
    PermEquivariantQuadratic,
    SetNormalization,
    TiedEquivariantDense,
)
from setnet.models import build_pointnet
from setnet.symmetry import colors, symmetric

GIB = 2**30


def _rss_bytes():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _machine_memory_bytes():
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024
    return None


def _cpu_name():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _allocator_device():
    """The device whose allocator reports statistics, or None (then RSS is sampled)."""
    device = "GPU:0" if tf.config.list_logical_devices("GPU") else "CPU:0"
    try:
        tf.config.experimental.reset_memory_stats(device)
        tf.config.experimental.get_memory_info(device)
        return device
    except (ValueError, tf.errors.InvalidArgumentError, tf.errors.UnimplementedError):
        return None


class PeakMemory:
    """Largest rise of memory use during a block: the allocator's peak, else sampled RSS."""

    device = None  # set once in main()

    def __init__(self, interval=1e-3):
        self.interval = interval
        self.peak = 0

    def __enter__(self):
        if self.device:
            tf.config.experimental.reset_memory_stats(self.device)
            self.base = tf.config.experimental.get_memory_info(self.device)["current"]
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
        if self.device:
            self.peak = tf.config.experimental.get_memory_info(self.device)["peak"] - self.base
            return
        self.running = False
        self.thread.join()
        self.peak = max(self.peak_rss, _rss_bytes()) - self.base


def _make(kind, n, c, batch):
    """(layer factory, rough working-set bytes of one step, dense-kernel entries or None)."""
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
    return factory, 4 * f32 * batch * n * per_point, None


KINDS = ["dense", "linear", "tied-linear", "quadratic", "quadratic-sym", "quadratic-r16", "tied-quadratic",
         "folded-linear", "folded-quadratic"]


def prepare(kind, n, c, batch, xla, tied_cap, mem_cap):
    """A warmed-up training-style step ``() -> loss`` for one layer, or the note saying why not."""
    factory, working_set, entries = _make(kind, n, c, batch)
    if entries is not None and entries > tied_cap:
        machine = _machine_memory_bytes()
        return "OOM" if machine and 4 * entries > machine else ">cap"
    if working_set > mem_cap:
        return "skip>mem"
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

    def run():
        return step(x)[0].numpy()

    try:
        run()  # trace, compile and warm up
        # Steps of a few ms are repeated more, so that their best time is as steady as a long one's.
        run.calls = int(min(MAX_CALLS, max(1, MIN_SECONDS / _timed(run))))
    except (tf.errors.ResourceExhaustedError, MemoryError):
        return "OOM"
    return run


MIN_SECONDS, MAX_CALLS = 0.25, 50


def _timed(run):
    t = time.perf_counter()
    run()
    return time.perf_counter() - t


def _best(run, repeats):
    return min(_timed(run) for _ in range(repeats * getattr(run, "calls", 1)))


def measure(kind, n, c, batch, repeats, xla, tied_cap, mem_cap):
    """(best seconds or None, peak bytes or None, note)."""
    run = prepare(kind, n, c, batch, xla, tied_cap, mem_cap)
    if isinstance(run, str):
        return None, None, run
    try:
        with PeakMemory() as mem:
            best = _best(run, repeats)
        return best, mem.peak, ""
    except (tf.errors.ResourceExhaustedError, MemoryError):
        return None, None, "OOM"


def interleaved(runs, repeats):
    """Best time of each step, running them in turn ``repeats`` times.

    Other work on a shared machine comes and goes over minutes; steps whose
    ratio is a goal run alternately, so a busy spell slows all of them alike.
    """
    best = {key: float("inf") for key in runs}
    for _ in range(repeats):
        for key, run in runs.items():
            best[key] = min(best[key], _best(run, 1))
    return best


# Each tied row is compared with the closed form of the same map.
CLOSED_FORM_OF = {"tied-linear": "linear", "tied-quadratic": "quadratic"}


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_layers", description=__doc__.split("\n\n")[0])
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
    parser.add_argument("--goal-repeats", type=int, default=5,
                        help="rounds of the interleaved goal measurements (after the table)")
    parser.add_argument("--no-goals", action="store_true", help="print the table only")
    parser.add_argument("--norm-shape", type=int, nargs=3, default=[32, 1024, 1024], metavar=("B", "N", "C"),
                        help="activation for the SetNormalization / BatchNormalization goal, and batch B of N "
                             "points for the PointNet one (default 32 1024 1024)")
    args = parser.parse_args(argv)
    # Allocator statistics (peak memory) on CPU exist only for the BFC allocator; it also keeps
    # freed memory pooled, so timings do not include the kernel zeroing fresh pages every step.
    os.environ.setdefault("TF_CPU_ALLOCATOR_USE_BFC", "true")
    for name in ("sizes", "channels", "norm_shape"):
        if any(v < 1 for v in getattr(args, name)):
            parser.error(f"--{name.replace('_', '-')} must be positive integers, got {getattr(args, name)}")
    if "dense" not in args.kinds:
        args.kinds = ["dense", *args.kinds]  # every ratio is to the Dense floor of the same run
    tf.get_logger().setLevel("ERROR")  # one tf.function per layer and shape: retracing warnings are expected
    PeakMemory.device = _allocator_device()
    gpu = tf.config.list_logical_devices("GPU")
    device = "GPU" if gpu else f"CPU {_cpu_name()} ({os.cpu_count()} cores visible)"
    machine = _machine_memory_bytes()
    start = time.perf_counter()
    print(f"setnet layer benchmark, {datetime.datetime.now().isoformat(timespec='minutes')}, "
          f"TensorFlow {tf.__version__}, {device}, {machine / GIB:.0f} GiB memory" if machine else "")
    print(f"batch {args.batch}, units = C, fwd+bwd = forward, sum of squares, gradients of input and weights; "
          f"best of {args.repeats} (x up to {MAX_CALLS} for short steps); {'XLA' if args.xla else 'graph mode'}")
    print(f"peak = {'allocator peak on ' + PeakMemory.device if PeakMemory.device else 'sampled RSS rise'} "
          "during the step, above inputs and weights")
    print(f"x Dense: time over the per-point Dense of the same N and C; x closed: tied time over its closed form\n")
    header = f"{'C':>4} {'N':>5} {'layer':<17} {'fwd+bwd ms':>11} {'x Dense':>9} {'x closed':>9} {'peak MiB':>9}"
    print(header)
    print("-" * len(header))
    results = {}
    for c in args.channels:
        for n in args.sizes:
            for kind in args.kinds:
                if kind.startswith("folded") and n % 2:
                    continue
                seconds, peak, note = measure(kind, n, c, args.batch, args.repeats, args.xla, args.tied_cap,
                                              args.mem_cap_gib * GIB)
                results[c, n, kind] = seconds if seconds is not None else note
                floor = results.get((c, n, "dense"))
                closed = results.get((c, n, CLOSED_FORM_OF.get(kind)))
                if seconds is None:
                    print(f"{c:>4} {n:>5} {kind:<17} {note:>11} {'-':>9} {'-':>9} {'-':>9}")
                else:
                    ratio = f"{seconds / floor:8.1f}x" if isinstance(floor, float) else "-"
                    vs_closed = f"{_fmt_ratio(seconds / closed)}x" if isinstance(closed, float) else "-"
                    print(f"{c:>4} {n:>5} {kind:<17} {seconds * 1e3:11.2f} {ratio:>9} {vs_closed:>9} "
                          f"{peak / 2**20:9.1f}")
                sys.stdout.flush()
    if not args.no_goals:
        _goals(results, args)
    print(f"\n(benchmark wall time {time.perf_counter() - start:.0f} s)")


def _fmt_ratio(r):
    return f"{r:.1f}" if r < 10 else f"{r:.0f}"


GOAL_STEPS = (("dense", 1024), ("linear", 1024), ("quadratic", 1024), ("quadratic", 4096))


def _goals(results, args):
    """The issue's three goals. The first two re-measure the steps they compare, interleaved."""
    print(f"\nIssue 3 goals. Each time ratio below comes from steps re-run in turn here (best of "
          f"{args.goal_repeats} rounds), so that load from other processes hits both sides alike.")

    def verdict(ok):
        return "met" if ok else "NOT met"

    for c in args.channels:
        runs, notes = {}, {}
        for kind, n in GOAL_STEPS:
            run = prepare(kind, n, c, args.batch, args.xla, args.tied_cap, args.mem_cap_gib * GIB)
            (notes if isinstance(run, str) else runs)[kind, n] = run
        best = interleaved(runs, args.goal_repeats)
        del runs  # free the compiled steps and their buffers before the next C
        t = {key: best.get(key, notes.get(key)) for key in GOAL_STEPS}
        lin, dense = t["linear", 1024], t["dense", 1024]
        if isinstance(lin, float) and isinstance(dense, float):
            r = lin / dense
            print(f"  C={c:<4} linear / Dense at N=1024           = {r:6.2f}  ({lin * 1e3:.2f} / {dense * 1e3:.2f} ms; "
                  f"goal <= 1.5): {verdict(r <= 1.5)}")
        else:
            print(f"  C={c:<4} linear / Dense at N=1024: not measured ({lin}, {dense})")
        q1, q4 = t["quadratic", 1024], t["quadratic", 4096]
        if isinstance(q1, float) and isinstance(q4, float):
            r = q4 / q1
            print(f"  C={c:<4} quadratic t(4096) / t(1024)         = {r:6.2f}  ({q4 * 1e3:.0f} / {q1 * 1e3:.0f} ms; "
                  f"goal <= 4.5): {verdict(r <= 4.5)}")
        else:
            print(f"  C={c:<4} quadratic t(4096) / t(1024): not measured ({q4}, {q1}; see --mem-cap-gib)")
        _tied_goal(results, args, c)
    _normalization_goals(args)


def _tied_goal(results, args, c):
    tied = results.get((c, 1024, "tied-linear"))
    measured = [(n, results[c, n, "tied-linear"] / results[c, n, "linear"]) for n in args.sizes
                if isinstance(results.get((c, n, "tied-linear")), float)
                and isinstance(results.get((c, n, "linear")), float)]
    largest = f"; largest N run: {measured[-1][0]}, {measured[-1][1]:.0f}x the closed form" if measured else ""
    entries = 1024 * 1024 * c * c
    if tied is None and entries > args.tied_cap:  # N = 1024 not in the grid: the table's cap decision
        machine = _machine_memory_bytes()
        tied = "OOM" if machine and 4 * entries > machine else ">cap"
    gib = entries * 4 / GIB
    if isinstance(tied, float):
        r = tied / results[c, 1024, "linear"]
        print(f"  C={c:<4} tied / closed-form linear at N=1024  = {r:6.0f}x (goal >= 100x or OOM): "
              f"{'met' if r >= 100 else 'NOT met'}")
    elif tied == "OOM":
        print(f"  C={c:<4} tied linear at N=1024: out of memory, its gathered kernel alone is {gib:.0f} GiB "
              f"(goal >= 100x or OOM): met{largest}")
    elif tied == ">cap":
        print(f"  C={c:<4} tied linear at N=1024: not run, its kernel is {gib:.0f} GiB (about 3x that with its "
              f"gradient), above --tied-cap (goal >= 100x or OOM): not measured{largest}")
    else:
        print(f"  C={c:<4} tied linear at N=1024: not measured (add tied-linear and N=1024 to the grid){largest}")


NORM_GOAL = 1.1


def prepare_norm(kind, shape, masked, xla):
    """Warmed-up fwd+bwd of one normalisation layer in training mode on a ``(B, N, C)`` activation: the
    forward pass and the gradients of the input, gamma and beta for a fixed upstream gradient (no loss,
    whose own passes would dilute the difference). Masked: each set has between N/2 and N real points;
    BatchNormalization gets the same padded tensor without the mask."""
    b, n, c = shape
    rng = np.random.default_rng(0)
    x = tf.constant(rng.normal(1.0, 2.0, shape).astype("float32"))
    dy = tf.constant(rng.normal(size=shape).astype("float32"))
    mask = tf.constant(np.arange(n)[None] < rng.integers(n // 2, n + 1, (b, 1))) if masked else None
    layer = SetNormalization() if kind == "set" else keras.layers.BatchNormalization()
    layer.build(shape)

    # The mask is an argument, not a captured constant, which XLA would fold at compile time.
    @tf.function(jit_compile=xla)
    def step(x, dy, mask):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, mask=mask, training=True) if kind == "set" else layer(x, training=True)
        return tape.gradient(y, [x, *layer.trainable_weights], output_gradients=dy)

    def run():
        return step(x, dy, mask)[0].numpy()

    run()
    return run


def prepare_pointnet(normalization, batch, n, xla):
    """Warmed-up PointNet training step (Adam, 40 classes) on a fixed batch of ``batch`` clouds of ``n`` real
    points; the model is `build_pointnet` with SetNormalization or BatchNormalization after each shared layer."""
    rng = np.random.default_rng(0)
    model = build_pointnet(40, normalization=normalization)
    model.compile(keras.optimizers.Adam(1e-3), keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  jit_compile=xla)
    inputs = {"points": rng.normal(size=(batch, n, 3)).astype("float32"), "mask": np.ones((batch, n), bool)}
    labels = rng.integers(0, 40, batch)

    def run():
        return model.train_on_batch(inputs, labels)

    run()
    return run


def _normalization_goals(args):
    """Issue 16: SetNormalization within 1.1x of keras BatchNormalization, alone and inside PointNet."""
    b, n, c = args.norm_shape
    mode = "XLA" if args.xla else "graph mode"
    print(f"\nIssue 16 goals ({mode}; each pair re-run in turn, best of {args.goal_repeats} rounds):")
    for masked in (False, True):
        best = interleaved({kind: prepare_norm(kind, (b, n, c), masked, args.xla) for kind in ("set", "batch")},
                           args.goal_repeats)
        r = best["set"] / best["batch"]
        what = "masked, BN on the same padded tensor" if masked else "unmasked"
        print(f"  SetNormalization / BatchNormalization fwd+bwd on ({b}, {n}, {c}), {what:<36} = {r:6.2f}  "
              f"({best['set'] * 1e3:.0f} / {best['batch'] * 1e3:.0f} ms; goal <= {NORM_GOAL}): "
              f"{'met' if r <= NORM_GOAL else 'NOT met'}")
    best = interleaved({kind: prepare_pointnet(kind, b, n, args.xla) for kind in ("set", "batch")},
                       args.goal_repeats)
    r = best["set"] / best["batch"]
    print(f"  PointNet train step, SetNormalization / BatchNormalization, batch {b} of {n} points = {r:6.2f}  "
          f"({b / best['set']:.1f} / {b / best['batch']:.1f} clouds/s; goal <= {NORM_GOAL}): "
          f"{'met' if r <= NORM_GOAL else 'NOT met'}")


if __name__ == "__main__":
    main()
