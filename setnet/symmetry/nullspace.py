"""The slow, independent count: the dimension of the space of equivariant maps.

A map W (a vector on the index tuples) is equivariant iff g.W = W for every
generator g, i.e. W lies in the common null space of the matrices (P_g - I)
stacked over the generators, P_g being the permutation that g induces on the
tuples. The symmetric quadratic form adds the constraint W[y,i,j] = W[y,j,i].
Its dimension must equal the number of orbit colors; this is computed by
rank, with no reference to orbits, so it checks the engine rather than
repeating it. Dense linear algebra: only for a few thousand tuples.
"""

from __future__ import annotations

import numpy as np

from setnet.symmetry.colors import output_action, tuple_moves
from setnet.symmetry.groups import PermGroup

MAX_TUPLES = 4096


def constraint_matrix(group_in: PermGroup, group_out: PermGroup | None = None, kind: str = "linear") -> np.ndarray:
    """Stacked (P_g - I) over generators (and the symmetry constraint), as a dense float matrix."""
    group_out = output_action(group_in, group_out)
    nx, ny = group_in.degree, group_out.degree
    shape = {"bias": (ny,), "linear": (ny, nx)}.get(kind, (ny, nx, nx))
    size = int(np.prod(shape))
    if size > MAX_TUPLES:
        raise ValueError(f"{size} index tuples is too many for the dense null-space check (max {MAX_TUPLES})")
    blocks = []
    for gy, gx in zip(group_out.generators, group_in.generators):
        axes = {"bias": [gy], "linear": [gy, gx]}.get(kind, [gy, gx, gx])
        move = tuple_moves(axes, shape)
        p = np.zeros((size, size))
        p[move, np.arange(size)] = 1.0
        blocks.append(p - np.eye(size))
    if kind == "quadratic-sym":
        swap = np.arange(size).reshape(shape).transpose(0, 2, 1).reshape(-1)
        p = np.zeros((size, size))
        p[swap, np.arange(size)] = 1.0
        blocks.append(p - np.eye(size))
    if not blocks:
        return np.zeros((0, size))
    return np.concatenate(blocks, axis=0)


def dimension(group_in: PermGroup, group_out: PermGroup | None = None, kind: str = "linear") -> int:
    """Dimension of the space of equivariant maps, by the rank of the constraints."""
    a = constraint_matrix(group_in, group_out, kind)
    if a.shape[0] == 0:
        return a.shape[1]
    return a.shape[1] - int(np.linalg.matrix_rank(a))


def basis(group_in: PermGroup, group_out: PermGroup | None = None, kind: str = "linear") -> np.ndarray:
    """An orthonormal basis (rows) of the equivariant maps, from the SVD."""
    a = constraint_matrix(group_in, group_out, kind)
    if a.shape[0] == 0:
        return np.eye(a.shape[1])
    _, s, vt = np.linalg.svd(a)
    rank = int((s > 1e-9 * max(1.0, s.max(initial=0.0))).sum())
    return vt[rank:]
