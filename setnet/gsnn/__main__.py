"""Command line for the G-SNN classification (Agrawal & Ostrowski, arXiv:2205.09219).

  python -m setnet.gsnn count --group D4 --json
  python -m setnet.gsnn list --group C6 --png c6.png
  python -m setnet.gsnn list --group D6 --morphisms
  python -m setnet.gsnn table --groups C2,C3,D4,rot4     (the markdown table in docs/gsnn.md)

Groups, in the grammar every setnet command shares: C<n>, D<n>, S<n> permute
the coordinates of R^n; Q8 permutes R^8 (its regular representation); Fold<m>,
Hyp<m> permute R^2m; rot<n> rotates R^2; B<n> is all signed permutations of
R^n. A+B acts blockwise (C2+C4 on R^6); A*B = AxB acts on the tensor product
(the product set for permutation groups: C2xC4 on R^8); A^k = A*...*A.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from setnet.gsnn.classify import classify, count
from setnet.gsnn.groups import SPEC_HELP, parse_group
from setnet.gsnn.morphisms import morphisms


def _table(pairs, show_all: bool) -> str:
    rows = [("#", "type", "|H|", "|K|", "width", "dim V", "H", "K", "status")]
    for p in pairs:
        if not (p.ok or show_all):
            continue
        h, k = p.label.split(" K=")
        rows.append((str(p.index), str(p.kind), str(len(p.H)), str(len(p.K)), str(p.width), str(p.dim),
                     h[2:], k, "architecture" if p.ok else p.reason))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r[:-1], widths)) + "  " + r[-1] for r in rows]
    return "\n".join(lines)


def _markdown_table(specs) -> int:
    try:
        groups = [parse_group(s.strip()) for s in specs]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("| G | order | acts on | type 1 | type 2 | total | paper's test alone | N_G(H)-conjugates apart |")
    print("|---|---|---|---|---|---|---|---|")
    for g in groups:
        c = count(g)
        paper = count(g, paper_condition=True)
        apart = count(g, up_to_normaliser=False)
        print(f"| {g.name} | {g.order} | R^{g.degree} | {c['type1']} | {c['type2']} | {c['total']} "
              f"| {paper['type1']} + {paper['type2']} = {paper['total']} "
              f"| {apart['type1']} + {apart['type2']} = {apart['total']} |")
    return 0


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m setnet.gsnn", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("count", "list"):
        p = sub.add_parser(name)
        p.add_argument("--group", required=True, help=SPEC_HELP)
        p.add_argument("--paper-condition", action="store_true",
                       help="accept pairs by the paper's test st_G(P_K - tau P_H) = K alone "
                            "(admits +- duplicates when an element acts as -1 on Fix(H))")
        p.add_argument("--no-normaliser", action="store_true",
                       help="count (H, K) and (H, nKn^-1), n in N_G(H), separately")
    sub.choices["count"].add_argument("--json", action="store_true",
                                      help='print {"type1": a, "type2": b, "total": a+b}')
    lst = sub.choices["list"]
    lst.add_argument("--all", action="store_true", help="also list the pairs that are not architectures, with why")
    lst.add_argument("--png", help="draw the weight pattern of every architecture into this PNG")
    lst.add_argument("--morphisms", action="store_true", help="list the covering inclusion maps")
    lst.add_argument("--morphisms-png", help="draw the covering inclusion maps into this PNG")
    tab = sub.add_parser("table", help="markdown table of the counts for several groups")
    tab.add_argument("--groups", required=True, help="comma-separated SPECs")
    args = parser.parse_args(argv)
    if args.command == "table":
        return _markdown_table(args.groups.split(","))
    for out in (getattr(args, "png", None), getattr(args, "morphisms_png", None)):
        folder = os.path.dirname(os.path.abspath(out)) if out else None
        if folder and not os.path.isdir(folder):
            print(f"error: cannot write {out}: folder {folder} does not exist", file=sys.stderr)
            return 2
    try:
        group = parse_group(args.group)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    counts = count(group, paper_condition=args.paper_condition, up_to_normaliser=not args.no_normaliser)
    if args.command == "count":
        if args.json:
            print(json.dumps(counts))
        else:
            print(f"{group.name}: order {group.order} on R^{group.degree}: "
                  f"{counts['type1']} type 1 + {counts['type2']} type 2 = {counts['total']} architectures")
        return 0
    pairs = classify(group)
    print(f"{group.name}: order {group.order} acting on R^{group.degree}; {len(pairs)} classes of pairs (H, K)")
    print(_table(pairs, args.all))
    print(f"{counts['type1']} type 1 + {counts['type2']} type 2 = {counts['total']} architectures")
    archs = [p for p in pairs if p.ok]
    if args.morphisms:
        print("covering inclusion maps (source -> target, output weight scale):")
        for m in morphisms(archs):
            if m.covering:
                print(f"  #{m.source} -> #{m.target}  a' = {m.scale:g} a")
    pictures = [(args.png, "draw_patterns", ()), (args.morphisms_png, "draw_morphisms", (morphisms(archs),))]
    for path, fn, extra in pictures:
        if not path:
            continue
        if not archs:
            print(f"error: {group.name} has no architectures to draw", file=sys.stderr)
            return 2
        from setnet.gsnn import plot

        try:
            getattr(plot, fn)(archs, *extra, path)
        except OSError as err:
            print(f"error: cannot write {path}: {err}", file=sys.stderr)
            return 2
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
