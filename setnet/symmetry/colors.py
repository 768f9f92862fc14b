"""Orbit colors: which weights of an equivariant map must be equal.

For G acting on inputs X and outputs Y, the G-equivariant linear maps
R^X -> R^Y are exactly the matrices constant on the G-orbits of Y x X
(Hom_G(Fun X, Fun Y) = Fun_G(X x Y)). Each orbit is one *color*, one free
weight. Quadratic maps are tensors on Y x X x X, constant on the orbits of
the diagonal action; for the symmetric form, (y, i, j) and (y, j, i) are
also identified, because x_i x_j = x_j x_i.

Orbits are the connected components of the graph t -- g(t) over all index
tuples t and generators g, so the cost is linear in the number of tuples
and in the number of generators, never in |G|.

Color ids are canonical: numbered by first appearance in C order of the
tuples, so color 0 is always the orbit of (0, 0, ...).
"""

from __future__ import annotations

import math
import re

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from setnet.symmetry.groups import PermGroup

MAPS = ("linear", "quadratic", "quadratic-sym", "bias")
DEFAULT_MAX_MEMORY = 8 << 30


class MemoryLimitError(ValueError):
    """The color computation would need more memory than allowed; raised before anything is allocated."""


def output_action(group_in: PermGroup, group_out: PermGroup | None) -> PermGroup:
    """The action on Y: ``group_out``, checked to pair its generators with ``group_in``'s; Y = X when None."""
    if group_out is None:
        return group_in
    if len(group_out.generators) != len(group_in.generators):
        raise ValueError(
            f"the output action {group_out.name} has {len(group_out.generators)} generators but the input "
            f"action {group_in.name} has {len(group_in.generators)}; the k-th of each must be the same element"
        )
    return group_out


def orbits(shape: tuple[int, ...], moves: list[np.ndarray]) -> np.ndarray:
    """Canonical orbit ids of ``range(prod(shape))`` under the given flat index permutations."""
    size = int(np.prod(shape))
    if not moves:
        return np.arange(size).reshape(shape)
    rows = np.tile(np.arange(size), len(moves))
    cols = np.concatenate(moves)
    graph = coo_matrix((np.ones(rows.size, dtype=np.int8), (rows, cols)), shape=(size, size))
    _, labels = connected_components(graph, directed=True, connection="weak")
    # Relabel by first appearance so that ids do not depend on scipy's numbering.
    # scipy's labels are 0..k-1; first[c] is where component c first appears.
    _, first = np.unique(labels, return_index=True)
    canon = np.empty(first.size, dtype=np.int64)
    canon[np.argsort(first)] = np.arange(first.size)
    return canon[labels].reshape(shape)


def tuple_moves(perms_per_axis: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The flat permutation of index tuples induced by one group element acting on each axis.

    Args:
        perms_per_axis: one permutation per axis of ``shape`` (e.g. ``[gy, gx, gx]`` for a quadratic map).
        shape: the shape of the tuple array, e.g. ``(|Y|, |X|, |X|)``.

    Example:
    >>> tuple_moves([np.array([1, 0]), np.array([1, 2, 0])], (2, 3)).tolist()
    [4, 5, 3, 1, 2, 0]
    """
    grids = np.meshgrid(*[p for p in perms_per_axis], indexing="ij")
    return np.ravel_multi_index(grids, shape).reshape(-1)


def _shape(nx: int, ny: int, kind: str) -> tuple[int, ...]:
    if kind not in MAPS:
        raise ValueError(f"unknown map kind {kind!r}; expected one of {', '.join(MAPS)}")
    return {"bias": (ny,), "linear": (ny, nx)}.get(kind, (ny, nx, nx))


def memory_estimate(group_in: PermGroup, group_out: PermGroup | None = None, kind: str = "linear") -> int:
    """Bytes that ``colors`` needs at its peak, estimated from the sizes alone (nothing is allocated).

    Per index tuple: for every generator (plus the transpose for ``quadratic-sym``)
    the int64 row and column of its edges, the int8 edge weight and scipy's
    compressed copy (about 40 bytes), the meshgrid of one move (8 bytes per
    axis) and the labels, relabelling and result (about 40 bytes); measured
    peaks (tracemalloc) stay within this estimate.

    Example:
    >>> from setnet.symmetry import symmetric
    >>> memory_estimate(symmetric(2000), kind="quadratic") > 500 * 2**30
    True
    """
    group_out = output_action(group_in, group_out)
    shape = _shape(group_in.degree, group_out.degree, kind)
    moves = len(group_in.generators) + (kind == "quadratic-sym")
    return math.prod(shape) * (40 * moves + 8 * len(shape) + 40)


def format_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


def parse_bytes(text: str) -> int:
    """``"8GiB"``, ``"512M"``, ``"2.5 GB"`` or a plain number of bytes -> bytes (K, M, G, T are powers of 1024).

    Example:
    >>> parse_bytes("8GiB") == 8 * 2**30, parse_bytes("1000")
    (True, 1000)
    """
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:i?B)?\s*", str(text), flags=re.IGNORECASE)
    if not m:
        raise ValueError(f"cannot read the memory size {text!r}; write e.g. 8GiB, 512MiB or a number of bytes")
    return int(float(m.group(1)) * 1024 ** " KMGT".index(m.group(2).upper() or " "))


def colors(group_in: PermGroup, group_out: PermGroup | None = None, kind: str = "linear",
           max_memory: int | None = DEFAULT_MAX_MEMORY) -> np.ndarray:
    """Orbit colors of an equivariant map from R^X to R^Y.

    Args:
        group_in: the group acting on the input points X.
        group_out: its action on the output points Y (same generators, in the
            same order); ``None`` means Y = X with the same action.
        kind: ``"linear"`` (shape |Y| x |X|), ``"quadratic"`` (|Y| x |X| x |X|),
            ``"quadratic-sym"`` (the same shape, (y, i, j) ~ (y, j, i)),
            or ``"bias"`` (shape |Y|).
        max_memory: refuse, before allocating anything, when ``memory_estimate``
            exceeds this many bytes (None: no limit). The arrays grow with
            |Y| |X|^2 for quadratic maps, so S_2000 quadratic would need
            several hundred GiB.

    Raises:
        MemoryLimitError: the estimate exceeds ``max_memory``.

    Returns:
        An int64 array of color ids 0 .. n_colors - 1.

    Example:
    >>> from setnet.symmetry import symmetric, colors
    >>> colors(symmetric(3))
    array([[0, 1, 1],
           [1, 0, 1],
           [1, 1, 0]])
    """
    group_out = output_action(group_in, group_out)
    nx, ny = group_in.degree, group_out.degree
    shape = _shape(nx, ny, kind)
    need = memory_estimate(group_in, group_out, kind)
    if max_memory is not None and need > max_memory:
        raise MemoryLimitError(
            f"the {kind} colors of {group_in.name} need about {format_bytes(need)} "
            f"({math.prod(shape):,} index tuples), more than the limit of {format_bytes(max_memory)}; "
            "use a smaller group or map, or raise the limit (max_memory=, --max-memory)"
        )
    pairs = list(zip(group_out.generators, group_in.generators))
    if kind == "bias":
        moves = [gy for gy, _ in pairs]
    elif kind == "linear":
        moves = [tuple_moves([gy, gx], shape) for gy, gx in pairs]
    else:
        moves = [tuple_moves([gy, gx, gx], shape) for gy, gx in pairs]
        if kind == "quadratic-sym":
            moves.append(np.arange(ny * nx * nx).reshape(shape).transpose(0, 2, 1).reshape(-1))
    return orbits(shape, moves)


def count(group_in: PermGroup, group_out: PermGroup | None = None, kind: str = "linear",
          max_memory: int | None = DEFAULT_MAX_MEMORY) -> int:
    """The number of colors (free weights) of the map; arguments as for ``colors``."""
    c = colors(group_in, group_out, kind, max_memory)
    return int(c.max()) + 1 if c.size else 0
