"""Closed-form orbit sums of S_n on sets, shared by the equivariant layers.

Everything here works on batches of sets ``x`` of shape ``(batch, n, channels)``
with an optional float mask ``m`` of shape ``(batch, n, 1)`` (1 = real point).
Padded points are treated as absent: callers zero them first (``mask_points``)
so that every per-set sum below runs over real points only, and set sizes come
from the mask. Nothing materialises an n x n (or n x n x n) array.

Orbit numbering follows the symmetry engine's canonical colors for S_n
(``setnet.symmetry.colors(symmetric(n), kind=...)``), with indices
(out k, in i, in j):

    linear:     0: k = i          1: k != i
    quadratic:  0: k = i = j      1: k = i != j    2: k = j != i
                3: i = j != k     4: all distinct

For one output point k and a channel pair (c1, c2), with S_c = sum_i x_ic and
Q_c1c2 = sum_i x_ic1 x_ic2, the five quadratic orbit sums are

    T0 = x_k1 x_k2
    T1 = x_k1 (S_2 - x_k2)
    T2 = (S_1 - x_k1) x_k2
    T3 = Q_12 - x_k1 x_k2
    T4 = S_1 S_2 - Q_12 - T1 - T2

(T4: all (i, j) pairs, minus i = j, minus i = k != j, minus j = k != i.)
"""

from __future__ import annotations

import keras
from keras import ops

POOLINGS = ("sum", "mean")


def float_mask(mask, x):
    """The Keras boolean mask ``(batch, n)`` as ``(batch, n, 1)`` in x's dtype, or None."""
    if mask is None:
        return None
    return ops.expand_dims(ops.cast(mask, x.dtype), -1)


def mask_points(x, m):
    """Zero the padded points, so that their values (even NaN-free garbage) never reach a sum."""
    return x if m is None else x * m


def set_size(x, m):
    """Number of real points per set, shape ``(batch,)``, in x's dtype."""
    if m is None:
        return ops.cast(ops.shape(x)[1], x.dtype) * ops.ones((ops.shape(x)[0],), x.dtype)
    return ops.sum(m[:, :, 0], axis=1)


def safe_reciprocal(count):
    """1 / count, and 0 where the orbit is empty (its sum is 0 anyway)."""
    return ops.where(count > 0, 1.0 / ops.maximum(count, 1.0), ops.zeros_like(count))


def orbit_scales(x, m, pooling, order):
    """Per-set factors that turn orbit sums into orbit means, or None for ``pooling="sum"``.

    Returns ``(a1, a2)``, each of shape ``(batch,)``: a1 = 1/(n-1) for the orbits
    with one free index (k != i; and k = i != j, k = j != i, i = j != k), a2 =
    1/((n-1)(n-2)) for the all-distinct quadratic orbit. The diagonal orbits have
    one element per output point.
    """
    if pooling == "sum":
        return None
    n = set_size(x, m)
    a1 = safe_reciprocal(n - 1.0)
    a2 = safe_reciprocal((n - 1.0) * (n - 2.0)) if order == "quadratic" else None
    return a1, a2


def orbit_linear(x, w, m=None, pooling="sum"):
    """sum_r w_r (orbit sum r) for the 2 linear orbits of S_n.

    Args:
        x: ``(batch, n, c)``, padded points already zero.
        w: ``(2, c, units)``: diagonal and off-diagonal weights.
        m: float mask or None (only used for set sizes).
        pooling: ``"sum"`` or ``"mean"`` (orbit sums divided by orbit sizes).
    Returns:
        ``(batch, n, units)``; rows of padded points are not zeroed here.
    """
    s = ops.sum(x, axis=1)  # (b, c)
    if pooling == "sum":
        return ops.matmul(x, w[0] - w[1]) + ops.expand_dims(ops.matmul(s, w[1]), 1)
    a1, _ = orbit_scales(x, m, pooling, "linear")
    a1 = a1[:, None, None]
    # w0 x_k + a1 w1 (S - x_k)
    return ops.matmul(x, w[0]) + a1 * (ops.expand_dims(ops.matmul(s, w[1]), 1) - ops.matmul(x, w[1]))


def orbit_quadratic(x, w, m=None, pooling="sum"):
    """sum_r sum_{c1,c2} w[r, c1, c2, :] T_r[k, c1, c2] for the 5 quadratic orbits of S_n.

    Only the T0-like term x_k1 x_k2 costs O(n c^2 units): the weights of the
    five orbits are first combined into one c x c x units tensor (the
    coefficient of x_k1 x_k2 after expanding T1..T4), and everything else is a
    per-set sum contracted with the weights before it meets the points.

    Args:
        x: ``(batch, n, c)``, padded points already zero.
        w: ``(5, c, c, units)`` in the canonical orbit order.
        m: float mask or None (only used for set sizes).
        pooling: ``"sum"`` or ``"mean"``.
    Returns:
        ``(batch, n, units)``; rows of padded points are not zeroed here.
    """
    c = ops.shape(w)[1]
    units = ops.shape(w)[3]
    s = ops.sum(x, axis=1)  # (b, c)
    q = ops.einsum("bnc,bnd->bcd", x, x)  # (b, c, c)
    outer = ops.reshape(ops.expand_dims(x, -1) * ops.expand_dims(x, -2), (ops.shape(x)[0], ops.shape(x)[1], c * c))
    scales = orbit_scales(x, m, pooling, "quadratic")
    if scales is None:
        # Coefficients of x_k1 x_k2, x_k1 S_2, S_1 x_k2, Q_12 and S_1 S_2 after expanding T0..T4.
        a = w[0] - w[1] - w[2] - w[3] + 2.0 * w[4]
        point = ops.matmul(outer, ops.reshape(a, (c * c, units)))
        mix = ops.einsum("bd,cdo->bco", s, w[1] - w[4]) + ops.einsum("bc,cdo->bdo", s, w[2] - w[4])
        pooled = ops.einsum("bcd,cdo->bo", q, w[3] - w[4]) + ops.einsum("bc,bd,cdo->bo", s, s, w[4])
        return point + ops.einsum("bnc,bco->bno", x, mix) + ops.expand_dims(pooled, 1)
    a1, a2 = scales  # (b,)
    # The same expansion with w_r scaled by 1/|orbit r|, which depends on the set size:
    # one (c, c, units) coefficient tensor per set.
    basis = ops.stack([w[0], -(w[1] + w[2] + w[3]), 2.0 * w[4]])  # (3, c, c, units)
    coef = ops.stack([ops.ones_like(a1), a1, a2], axis=1)  # (b, 3)
    a = ops.reshape(ops.einsum("bt,tcdo->bcdo", coef, basis), (-1, c * c, units))
    point = ops.matmul(outer, a)
    b1, b2 = a1[:, None, None], a2[:, None, None]
    mix1 = ops.einsum("bd,cdo->bco", s, w[1]) + ops.einsum("bc,cdo->bdo", s, w[2])
    mix2 = ops.einsum("bd,cdo->bco", s, w[4]) + ops.einsum("bc,cdo->bdo", s, w[4])
    mix = b1 * mix1 - b2 * mix2
    pooled = (
        a1[:, None] * ops.einsum("bcd,cdo->bo", q, w[3])
        - a2[:, None] * ops.einsum("bcd,cdo->bo", q, w[4])
        + a2[:, None] * ops.einsum("bc,bd,cdo->bo", s, s, w[4])
    )
    return point + ops.einsum("bnc,bco->bno", x, mix) + ops.expand_dims(pooled, 1)


def orbit_quadratic_features(a, b, m=None, pooling="sum"):
    """The 5 orbit sums T_r for elementwise channel pairs (a_s, b_s): ``(batch, n, 5, r)``.

    Used by the factorised quadratic layer, where channel mixing happens before
    (a = x U, b = x V) and after (a rank x units map per orbit), so the orbit
    sums are only needed for matching channels. O(n r) time and memory.
    """
    sa = ops.sum(a, axis=1, keepdims=True)
    sb = ops.sum(b, axis=1, keepdims=True)
    ab = a * b
    qab = ops.sum(ab, axis=1, keepdims=True)
    t1 = a * (sb - b)
    t2 = (sa - a) * b
    t3 = qab - ab
    t4 = sa * sb - qab - t1 - t2
    scales = orbit_scales(a, m, pooling, "quadratic")
    if scales is not None:
        a1, a2 = scales[0][:, None, None], scales[1][:, None, None]
        t1, t2, t3, t4 = a1 * t1, a1 * t2, a1 * t3, a2 * t4
    return ops.stack([ab, t1, t2, t3, t4], axis=2)


def masked_pool(x, m, mode):
    """Invariant pooling over the real points: ``(batch, n, c) -> (batch, c)``.

    An empty set (every point padded) pools to zeros in every mode, rather than
    to -inf (max) or NaN (mean).
    """
    if mode == "sum":
        return ops.sum(mask_points(x, m), axis=1)
    if mode == "mean":
        n = ops.expand_dims(set_size(x, m), -1)
        return ops.sum(mask_points(x, m), axis=1) / ops.maximum(n, 1.0)
    if mode == "max":
        # A finite "minus infinity", so that empty sets and their gradients stay finite.
        lowest = -6.0e4 if keras.backend.standardize_dtype(x.dtype) == "float16" else -3.0e38
        if m is not None:
            x = ops.where(m > 0, x, ops.cast(lowest, x.dtype))
        pooled = ops.max(x, axis=1, initial=lowest)
        nonempty = ops.expand_dims(set_size(x, m) > 0, -1)
        return ops.where(nonempty, pooled, ops.zeros_like(pooled))
    raise ValueError(f"unknown pooling mode {mode!r}; expected 'sum', 'mean' or 'max'")


def input_channels(layer, input_shape):
    """C_in from a ``(batch, N, C_in)`` shape, with an error that says what was wrong."""
    if len(input_shape) != 3 or input_shape[-1] is None:
        raise ValueError(
            f"{type(layer).__name__} '{layer.name}' expects sets shaped (batch, N, channels) with a known "
            f"number of channels; got input shape {tuple(input_shape)}"
        )
    return int(input_shape[-1])
