"""Command line for the symmetry engine.

  python -m setnet.symmetry count --group S5 --map quadratic
  python -m setnet.symmetry show --group Fold3 --map folded-linear --png fold3.png
  python -m setnet.symmetry count --group S200 --map quadratic --max-memory 16GiB

Groups: S<n>, C<n>, D<n>, Q8, Fold<m>, Hyp<m>; A*B or AxB (direct product on the
product set), A+B (on the disjoint union), A^k, parentheses.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from setnet.symmetry import DEFAULT_MAX_MEMORY, FOLDED_MAPS, GRAMMAR, MAPS, colors, parse, resolve_map
from setnet.symmetry.colors import format_bytes, parse_bytes


def _colors_for(args):
    group = parse(args.group)
    group_out, kind = resolve_map(group, args.map)
    return group, colors(group, group_out, kind, max_memory=parse_bytes(args.max_memory))


def render_png(c: np.ndarray, path: str, title: str) -> None:
    """Draw a color pattern as a grid: one cell per weight, one hue per color."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    blocks = [c] if c.ndim <= 2 else [c[k] for k in range(c.shape[0])]
    blocks = [b.reshape(1, -1) if b.ndim == 1 else b for b in blocks]
    n_colors = int(c.max()) + 1
    cmap = plt.get_cmap("tab20", max(n_colors, 2))
    fig, axes = plt.subplots(1, len(blocks), figsize=(2.2 * len(blocks) + 1, 2.6), squeeze=False)
    for k, (ax, b) in enumerate(zip(axes[0], blocks)):
        ax.imshow(b, cmap=cmap, vmin=-0.5, vmax=max(n_colors, 2) - 0.5)
        if b.size <= 400:
            for (i, j), v in np.ndenumerate(b):
                ax.text(j, i, str(v), ha="center", va="center", fontsize=8)
        ax.set_xticks([])
        ax.set_yticks([])
        if len(blocks) > 1:
            ax.set_title(f"output {k}", fontsize=8)
    fig.suptitle(f"{title}: {n_colors} colors")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m setnet.symmetry", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("count", "show"):
        p = sub.add_parser(name)
        p.add_argument("--group", required=True,
                       help=GRAMMAR.replace("%", "%%"))
        p.add_argument("--map", default="linear", help=", ".join(MAPS + FOLDED_MAPS))
        p.add_argument("--max-memory", default=format_bytes(DEFAULT_MAX_MEMORY).replace(" ", ""),
                       help="refuse maps whose colors need more memory than this (e.g. 8GiB, 512MiB; default %(default)s)")
        if name == "show":
            p.add_argument("--png", help="write the pattern as a picture")
    args = parser.parse_args(argv)
    try:
        group, c = _colors_for(args)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    n_colors = int(c.max()) + 1 if c.size else 0
    if args.command == "show":
        if c.size <= 4096:
            print(c)
        if args.png:
            render_png(c, args.png, f"{args.group} {args.map}")
            print(f"wrote {args.png}")
    print(n_colors)
    return 0


if __name__ == "__main__":
    sys.exit(main())
