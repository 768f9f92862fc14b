"""`make bench-symmetry`: orbit colors by graph components vs the null-space method.

Prints a table; the ratio column is null-space time / orbit time measured in the
same run. The null-space method is dense linear algebra on |tuples|^2 entries,
so it is only run where that fits (<= 4096 tuples).
"""

from __future__ import annotations

import time

from setnet.symmetry import colors, dimension, parse, resolve_map
from setnet.symmetry.nullspace import MAX_TUPLES


def _time(fn, repeat=3):
    best = float("inf")
    for _ in range(repeat):
        t = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t)
    return best, result


CASES = [
    ("S6", "quadratic"), ("D8", "quadratic-sym"), ("Hyp6", "folded-quadratic"), ("C16", "quadratic"),
    ("S16", "quadratic"), ("S64", "quadratic"), ("S64", "quadratic-sym"), ("C32*C32", "linear"),
    ("D16*D16", "linear"), ("S128", "quadratic"),
]


def main():
    print(f"{'group':<10} {'map':<22} {'tuples':>10} {'colors':>7} {'orbit s':>9} {'nullspace s':>12} {'ratio':>8}")
    for spec, map_name in CASES:
        group = parse(spec)
        out, kind = resolve_map(group, map_name)
        ny = (out or group).degree
        tuples = {"linear": ny * group.degree, "bias": ny}.get(kind, ny * group.degree ** 2)
        t_orbit, c = _time(lambda: colors(group, out, kind))
        n_colors = int(c.max()) + 1
        if tuples <= MAX_TUPLES:
            t_null, dim = _time(lambda: dimension(group, out, kind), repeat=1)
            assert dim == n_colors, (spec, map_name, dim, n_colors)
            null_s, ratio = f"{t_null:12.4f}", f"{t_null / t_orbit:7.0f}x"
        else:
            null_s, ratio = f"{'infeasible':>12}", f"{'-':>8}"
        print(f"{spec:<10} {map_name:<22} {tuples:>10} {n_colors:>7} {t_orbit:9.4f} {null_s} {ratio}")


if __name__ == "__main__":
    main()
