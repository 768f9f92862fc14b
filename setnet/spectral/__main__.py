"""Command line for the spectral tools (after Gibson, Tubbenhauer & Williamson, arXiv:2408.00949).

  python -m setnet.spectral graph --group C8 --activation relu --json
  python -m setnet.spectral graph --group C8 --activation abs --png c8_abs.png
  python -m setnet.spectral decompose --group D6
  python -m setnet.spectral pl-maps --group C8

`graph` measures the interaction graph of a pointwise activation (nodes are
the frequencies 0 .. n/2 for C<n>, component indices for other groups) and
compares it with the rule derived in docs/spectral.md; `--predicted` prints
the rule's graph instead. `pl-maps` shows the kernel condition for PL maps
between simple representations: the best equivariance defect of a PL map
V_i -> V_j (0: an exact map exists) next to ker V_i ⊆ ker V_j. The spectrum
of a trained classifier on a dataset (a training run folder or a saved .keras
file) is `python -m pipelines.spectrum`, since it reads datasets and runs.
"""

from __future__ import annotations

import argparse
import json
import sys

from setnet.spectral.interaction import (
    ACTIVATIONS, DEFAULT_TOL, cyclic_rule, kernel_rule, measure_graph, pl_map_fit, render_png,
)
from setnet.spectral.isotypic import decompose


def _predicted(decomp, activation):
    if decomp.method == "cyclic-fourier":
        return cyclic_rule(decomp.degree, activation)
    return kernel_rule(decomp, activation)


def _graph(args) -> int:
    decomp = decompose(args.group)
    measured = measure_graph(decomp, args.activation, samples=args.samples, tol=args.tol, seed=args.seed)
    predicted = _predicted(decomp, args.activation)
    graph = predicted if args.predicted else measured
    if args.png:
        render_png(graph, args.png)
    if args.json:
        print(json.dumps(graph.to_json()))
        return 0
    print(f"{decomp.group.name}, {args.activation}: {len(graph.edges)} edges ({graph.source})")
    for i in range(len(decomp)):
        targets = [decomp.components[j].label for a, j in graph.edges if a == i]
        print(f"  {decomp.components[i].label:>10} -> {', '.join(targets) or '(none)'}")
    on, off = measured.gap()
    print(f"measured with tolerance {args.tol:g} on the energy fraction: smallest edge {on:.2e}, "
          f"largest non-edge {off:.2e}")
    same = measured.edges == predicted.edges
    print(f"measured {'==' if same else '!='} predicted ({predicted.source})")
    if args.png:
        print(f"wrote {args.png}")
    return 0


def _decompose(args) -> int:
    decomp = decompose(args.group)
    print(f"{decomp.group.name} on {decomp.degree} points: {len(decomp)} isotypic components ({decomp.method})")
    print(decomp.table())
    return 0


def _pl_maps(args) -> int:
    decomp = decompose(args.group)
    labels = [c.label for c in decomp.components]
    print(f"{decomp.group.name}: best relative equivariance defect of a PL map V_i -> V_j "
          f"(0 = exact map; * = kernel condition fails, lower bound 2|ker V_i|/|G| in brackets)")
    width = max(12, *(len(s) + 2 for s in labels))
    print(" " * width + "".join(f"{s:>{width}}" for s in labels))
    for i, src in enumerate(labels):
        cells = []
        for j in range(len(labels)):
            fit = pl_map_fit(decomp, i, j, seed=args.seed)
            cell = f"{fit.defect:.1e}" if fit.kernel_condition else f"*{fit.defect:.2f}[{fit.bound:.2f}]"
            cells.append(f"{cell:>{width}}")
        print(f"{src:>{width}}" + "".join(cells))
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m setnet.spectral", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("graph", help="interaction graph of a pointwise activation")
    g.add_argument("--group", required=True, help="C<n>, or any permutation group spec, e.g. D6, C4xC4, S3+C4, Q8")
    g.add_argument("--activation", default="relu", help=", ".join(ACTIVATIONS))
    g.add_argument("--json", action="store_true", help='print {"group", "activation", "edges"} as JSON')
    g.add_argument("--png", help="draw the graph to this PNG file")
    g.add_argument("--predicted", action="store_true", help="output the predicted graph instead of the measured one")
    g.add_argument("--tol", type=float, default=DEFAULT_TOL, help="energy fraction that makes an edge")
    g.add_argument("--samples", type=int, default=24, help="random signals per component")
    g.add_argument("--seed", type=int, default=0)
    d = sub.add_parser("decompose", help="isotypic components of R^X")
    d.add_argument("--group", required=True)
    p = sub.add_parser("pl-maps", help="the kernel condition for PL maps between simple representations")
    p.add_argument("--group", required=True)
    p.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "graph":
        if args.activation not in ACTIVATIONS:
            print(f"error: unknown activation {args.activation!r}; expected one of {', '.join(ACTIVATIONS)}",
                  file=sys.stderr)
            return 2
        if not (0 < args.tol < 1) or args.samples < 1:
            print("error: --tol must lie in (0, 1) and --samples be at least 1", file=sys.stderr)
            return 2
    try:
        return {"graph": _graph, "decompose": _decompose, "pl-maps": _pl_maps}[args.command](args)
    except (ValueError, RuntimeError, FileNotFoundError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
