"""Pictures of G-SNN weight patterns, drawn like Figure 1 of Agrawal & Ostrowski (arXiv:2205.09219).

Each architecture's [G:H] x d first-layer weight matrix is evaluated at one
random point of its weight space; entries equal in absolute value share a
color, negated entries are hatched, and entries forced to zero are white.
"""

from __future__ import annotations

import numpy as np

from setnet.gsnn.classify import Pair


def tie_pattern(pair: Pair, rng: np.random.Generator | None = None) -> np.ndarray:
    """Integer pattern of the weight matrix: +-class id (from 1) for tied entries, 0 for forced zeros.

    Entries of one class are equal (+) or opposite (-) to the first entry of the class.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    w = pair.weight_matrix(rng.normal(size=pair.dim))
    scale = np.abs(w).max(initial=0.0) or 1.0
    key = np.round(np.abs(w) / scale * 1e6).astype(np.int64)
    out = np.zeros(w.shape, dtype=np.int64)
    first: dict = {}  # |value| -> (class id, sign of its first entry)
    for idx in np.ndindex(w.shape):
        if key[idx] == 0:
            continue
        cid, sign = first.setdefault(key[idx], (len(first) + 1, np.sign(w[idx])))
        # Hatched means constrained to be the negative of the class's first entry.
        out[idx] = cid * int(np.sign(w[idx]) * sign)
    return out


def draw_patterns(pairs: list[Pair], path: str, title: str | None = None, max_cells: int = 4096) -> None:
    """Draw the weight pattern of each pair into one PNG (rows: hidden neurons, columns: inputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    if not pairs:
        raise ValueError("nothing to draw: no architectures")
    cols = min(len(pairs), 5)
    rows = -(-len(pairs) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.3 * cols, 2.6 * rows), squeeze=False)
    for ax in axes.ravel():
        ax.axis("off")
    for ax, p in zip(axes.ravel(), pairs):
        pat = tie_pattern(p)
        n_colors = max(int(np.abs(pat).max(initial=0)), 1)
        cmap = plt.get_cmap("tab20" if n_colors > 10 else "tab10")
        m, d = pat.shape
        ax.set_xlim(0, d)
        ax.set_ylim(m, 0)
        ax.set_aspect("equal")
        if pat.size <= max_cells:
            for (i, j), v in np.ndenumerate(pat):
                face = "white" if v == 0 else cmap((abs(v) - 1) % cmap.N)
                ax.add_patch(Rectangle((j, i), 1, 1, facecolor=face, edgecolor="0.6", linewidth=0.4,
                                       hatch="////" if v < 0 else None))
        else:  # too many cells to hatch one by one: signs as shades
            ax.imshow(np.sign(pat) * (np.abs(pat) % 20), cmap="coolwarm", extent=(0, d, m, 0))
        ax.axis("on")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_title(f"#{p.index} type {p.kind}\nwidth {p.width}, dim {p.dim}", fontsize=8)
    fig.suptitle(title or f"{pairs[0].group.name}: G-SNN weight patterns (hatched = negated)", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def draw_morphisms(pairs: list[Pair], maps, path: str, title: str | None = None) -> None:
    """Draw the covering inclusion maps as a Hasse diagram: one row per hidden width, arrows grow the network."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not pairs:
        raise ValueError("nothing to draw: no architectures")
    widths = sorted({p.width for p in pairs})
    pos = {}
    for row, w in enumerate(widths):
        here = [p for p in pairs if p.width == w]
        for k, p in enumerate(here):
            pos[p.index] = ((k + 1) / (len(here) + 1), -row)
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * max(len([p for p in pairs if p.width == w]) for w in widths)),
                                    1.2 * len(widths) + 0.8))
    for m in maps:
        if m.covering and m.source in pos and m.target in pos:
            (x0, y0), (x1, y1) = pos[m.source], pos[m.target]
            ax.annotate("", xy=(x1, y1 + 0.12), xytext=(x0, y0 - 0.12),
                        arrowprops=dict(arrowstyle="-|>", color="0.3", lw=0.8))
    for p in pairs:
        x, y = pos[p.index]
        ax.text(x, y, f"#{p.index}", ha="center", va="center", fontsize=8,
                bbox=dict(boxstyle="round", facecolor="white" if p.kind == 1 else "#f3c9a8", edgecolor="0.3"))
    for row, w in enumerate(widths):
        ax.text(-0.02, -row, f"width {w}", ha="right", va="center", fontsize=8)
    ax.set_xlim(-0.2, 1.02)
    ax.set_ylim(-len(widths) + 0.5, 0.5)
    ax.axis("off")
    ax.set_title(title or f"{pairs[0].group.name}: inclusion maps (white = type 1, orange = type 2)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
