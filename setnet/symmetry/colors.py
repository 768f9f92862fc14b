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

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components

from setnet.symmetry.groups import PermGroup

MAPS = ("linear", "quadratic", "quadratic-sym", "bias")


def _check_pair(group_in: PermGroup, group_out: PermGroup | None) -> PermGroup:
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


def _tuple_moves(perms_per_axis: list[np.ndarray], shape: tuple[int, ...]) -> np.ndarray:
    """The flat permutation of index tuples induced by one group element acting on each axis."""
    grids = np.meshgrid(*[p for p in perms_per_axis], indexing="ij")
    return np.ravel_multi_index(grids, shape).reshape(-1)


def colors(group_in: PermGroup, group_out: PermGroup | None = None, kind: str = "linear") -> np.ndarray:
    """Orbit colors of an equivariant map from R^X to R^Y.

    Args:
        group_in: the group acting on the input points X.
        group_out: its action on the output points Y (same generators, in the
            same order); ``None`` means Y = X with the same action.
        kind: ``"linear"`` (shape |Y| x |X|), ``"quadratic"`` (|Y| x |X| x |X|),
            ``"quadratic-sym"`` (the same shape, (y, i, j) ~ (y, j, i)),
            or ``"bias"`` (shape |Y|).

    Returns:
        An int64 array of color ids 0 .. n_colors - 1.

    Example:
    >>> from setnet.symmetry import symmetric, colors
    >>> colors(symmetric(3))
    array([[0, 1, 1],
           [1, 0, 1],
           [1, 1, 0]])
    """
    group_out = _check_pair(group_in, group_out)
    nx, ny = group_in.degree, group_out.degree
    pairs = list(zip(group_out.generators, group_in.generators))
    if kind == "bias":
        shape = (ny,)
        moves = [gy for gy, _ in pairs]
    elif kind == "linear":
        shape = (ny, nx)
        moves = [_tuple_moves([gy, gx], shape) for gy, gx in pairs]
    elif kind in ("quadratic", "quadratic-sym"):
        shape = (ny, nx, nx)
        moves = [_tuple_moves([gy, gx, gx], shape) for gy, gx in pairs]
        if kind == "quadratic-sym":
            moves.append(np.arange(ny * nx * nx).reshape(shape).transpose(0, 2, 1).reshape(-1))
    else:
        raise ValueError(f"unknown map kind {kind!r}; expected one of {', '.join(MAPS)}")
    return orbits(shape, moves)


def count(group_in: PermGroup, group_out: PermGroup | None = None, kind: str = "linear") -> int:
    """The number of colors (free weights) of the map."""
    c = colors(group_in, group_out, kind)
    return int(c.max()) + 1 if c.size else 0
