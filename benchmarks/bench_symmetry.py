"""`make bench-symmetry`: orbit colors by graph components vs the null-space method.

Prints a table; the ratio column is null-space time / orbit time measured in the
same run. The null-space method is dense linear algebra on |tuples|^2 entries,
so it is only run where that fits (<= 4096 tuples), and there its dimension must
equal the number of colors (the benchmark stops if it does not).

    python -m benchmarks.bench_symmetry                          # the default cases (about a minute)
    python -m benchmarks.bench_symmetry --cases S4:quadratic C8*C8:linear --repeat 1
"""

from __future__ import annotations

import argparse
import sys
import time

from setnet.symmetry import MAPS, FOLDED_MAPS, colors, dimension, parse, resolve_map
from setnet.symmetry.nullspace import MAX_TUPLES

CASES = [
    ("S6", "quadratic"), ("D8", "quadratic-sym"), ("Hyp6", "folded-quadratic"), ("C16", "quadratic"),
    ("S16", "quadratic"), ("S64", "quadratic"), ("S64", "quadratic-sym"), ("C32*C32", "linear"),
    ("D16*D16", "linear"), ("S128", "quadratic"),
]


def _time(fn, repeat):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


def _case(text):
    spec, sep, map_name = text.rpartition(":")
    if not sep or not spec:
        raise argparse.ArgumentTypeError(f"{text!r} is not GROUP:MAP, e.g. S6:quadratic")
    if map_name not in MAPS + FOLDED_MAPS:
        raise argparse.ArgumentTypeError(f"{text!r}: unknown map {map_name!r}; expected one of "
                                         f"{', '.join(MAPS + FOLDED_MAPS)}")
    return spec, map_name


def bench_case(spec, map_name, repeat=3):
    """One row: (tuples, colors, orbit seconds, null-space seconds or None where infeasible)."""
    group = parse(spec)
    out, kind = resolve_map(group, map_name)
    ny = (out or group).degree
    tuples = {"linear": ny * group.degree, "bias": ny}.get(kind, ny * group.degree ** 2)
    t_orbit, c = _time(lambda: colors(group, out, kind), repeat)
    n_colors = int(c.max()) + 1
    t_null = None
    if tuples <= MAX_TUPLES:
        t_null, dim = _time(lambda: dimension(group, out, kind), 1)
        if dim != n_colors:
            raise AssertionError(f"{spec} {map_name}: null-space dimension {dim} != {n_colors} orbit colors")
    return tuples, n_colors, t_orbit, t_null


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.bench_symmetry",
                                     description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=_case, nargs="+", default=CASES, metavar="GROUP:MAP",
                        help="group spec and map, e.g. S6:quadratic D8:quadratic-sym Hyp6:folded-quadratic "
                             "(default: the table in docs/symmetry.md)")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many orbit timings (default 3)")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error(f"--repeat must be at least 1, got {args.repeat}")
    print(f"{'group':<10} {'map':<22} {'tuples':>10} {'colors':>7} {'orbit s':>9} {'nullspace s':>12} {'ratio':>8}")
    for spec, map_name in args.cases:
        try:
            tuples, n_colors, t_orbit, t_null = bench_case(spec, map_name, args.repeat)
        except ValueError as err:  # a bad spec, a fold of an odd degree, or over the memory limit
            print(f"error: {spec}:{map_name}: {err}", file=sys.stderr)
            return 2
        if t_null is None:
            null_s, ratio = f"{'infeasible':>12}", f"{'-':>8}"
        else:
            null_s, ratio = f"{t_null:12.4f}", f"{t_null / t_orbit:7.0f}x"
        print(f"{spec:<10} {map_name:<22} {tuples:>10} {n_colors:>7} {t_orbit:9.4f} {null_s} {ratio}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
