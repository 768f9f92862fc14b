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

Mixed precision: per-point products run in x's dtype (the policy's compute
dtype), but per-set sums (S, Q, S ⊗ S, set sizes) and everything computed
from them stay in ``accumulation_dtype`` (float32 for float16/bfloat16) until
they meet the points. S ⊗ S grows like n²: in float16 it overflows at a few
hundred points, and T4's differences of such terms cancel in bfloat16.
"""

from __future__ import annotations

import functools

import keras
import numpy as np
from keras import ops

POOLINGS = ("sum", "mean")


def is_ragged(x) -> bool:
    """Whether x is a ``tf.RaggedTensor`` (checked by name: no TensorFlow import for other backends)."""
    return type(x).__name__ == "RaggedTensor"


def ragged_to_masked(x):
    """A ``tf.RaggedTensor`` of sets ``(batch, None, C)`` as ``(points (batch, N_max, C), mask
    (batch, N_max))``: zero-padded to the largest set, the mask true at the real points.

    Example:

    >>> import tensorflow as tf
    >>> points, mask = ragged_to_masked(tf.ragged.constant([[[1.0]], [[2.0], [3.0]]], ragged_rank=1))
    >>> points.numpy()[:, :, 0].tolist(), mask.numpy().tolist()
    ([[1.0, 0.0], [2.0, 3.0]], [[True, False], [True, True]])
    """
    import tensorflow as tf

    points = x.to_tensor()
    return points, tf.sequence_mask(x.row_lengths(), maxlen=tf.shape(points)[1])


def accepts_ragged(call):
    """Lets a set layer's ``call(inputs, ..., mask=None)`` take a ``tf.RaggedTensor`` of sets: it
    runs on the zero-padded sets with their mask (`ragged_to_masked`), so the answers are those of
    the padded-and-masked form, and per-point outputs come back ragged (a pooled output is dense)."""
    @functools.wraps(call)
    def wrapper(self, inputs, *args, mask=None, **kwargs):
        if not is_ragged(inputs):
            return call(self, inputs, *args, mask=mask, **kwargs)
        if mask is not None:
            raise ValueError(f"{type(self).__name__} '{self.name}': a RaggedTensor carries its own set sizes; "
                             "pass it without a mask")
        import tensorflow as tf

        points, dense_mask = ragged_to_masked(inputs)
        out = call(self, points, *args, mask=dense_mask, **kwargs)
        if len(out.shape) == 3:
            return tf.RaggedTensor.from_tensor(out, lengths=inputs.row_lengths())
        return out
    return wrapper


def accumulation_dtype(dtype):
    """The dtype for sums over points: float32 for float16/bfloat16 inputs, else the input's own.

    A float16 sum over a few thousand points overflows, and bfloat16 keeps 8 bits: per-set sums, set sizes
    and everything computed from them stay in float32 under a mixed-precision policy.
    """
    return keras.backend.result_type(keras.backend.standardize_dtype(dtype), "float32")


def float_mask(mask, x):
    """The Keras boolean mask ``(batch, n)`` as ``(batch, n, 1)`` in x's dtype, or None."""
    if mask is None:
        return None
    return ops.expand_dims(ops.cast(mask, x.dtype), -1)


def mask_points(x, m):
    """Zero the padded points, so that their values (even NaN-free garbage) never reach a sum."""
    return x if m is None else x * m


def set_size(x, m):
    """Number of real points per set, shape ``(batch,)``, in x's accumulation dtype (bfloat16 counts
    exactly only up to 256)."""
    dtype = accumulation_dtype(x.dtype)
    if m is None:
        return ops.cast(ops.shape(x)[1], dtype) * ops.ones((ops.shape(x)[0],), dtype)
    return ops.sum(ops.cast(m[:, :, 0], dtype), axis=1)


def set_sum(x):
    """Per-set channel sums S, ``(batch, n, c) -> (batch, c)``, in x's accumulation dtype."""
    return ops.sum(ops.cast(x, accumulation_dtype(x.dtype)), axis=1)


def set_term(pooled, w, dtype):
    """``pooled @ w`` in the accumulation dtype of ``pooled``, as ``(batch, 1, units)`` in ``dtype``, to be
    added to every point."""
    return ops.expand_dims(ops.cast(ops.matmul(pooled, ops.cast(w, pooled.dtype)), dtype), 1)


def safe_reciprocal(count):
    """1 / count, and 0 where the orbit is empty (its sum is 0 anyway)."""
    return ops.where(count > 0, 1.0 / ops.maximum(count, 1.0), ops.zeros_like(count))


def orbit_scales(x, m, pooling, order):
    """Per-set factors that turn orbit sums into orbit means, or None for ``pooling="sum"``.

    Returns ``(a1, a2)``, each of shape ``(batch,)`` in the accumulation dtype: a1 = 1/(n-1) for the orbits
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
    s = set_sum(x)  # (b, c)
    wa = ops.cast(w, s.dtype)
    if pooling == "sum":
        return point_matmul(x, ops.cast(wa[0] - wa[1], x.dtype)) + set_term(s, wa[1], x.dtype)
    a1, _ = orbit_scales(x, m, pooling, "linear")
    # w0 x_k + a1 w1 (S - x_k), with a1 S w1 formed per set: S w1 alone overflows float16 for large n.
    return (point_matmul(x, w[0]) - ops.cast(a1, x.dtype)[:, None, None] * point_matmul(x, w[1])
            + set_term(a1[:, None] * s, wa[1], x.dtype))


def orbit_quadratic(x, w, m=None, pooling="sum"):
    """sum_r sum_{c1,c2} w[r, c1, c2, :] T_r[k, c1, c2] for the 5 quadratic orbits of S_n.

    Expanding T1..T4 in the point terms x_k1 x_k2, x_k1 S_2, S_1 x_k2 and the
    set terms Q_12, S_1 S_2, with a1 = a2 = 1 for orbit sums and a1 = 1/(n-1),
    a2 = 1/((n-1)(n-2)) for orbit means:

        y_k = x_k ⊗ x_k · [w0 - a1 (w1 + w2 + w3) + 2 a2 w4]
            + x_k · (S · [a1 (w1 + w2ᵀ) - a2 (w4 + w4ᵀ)])
            + a1 Q · w3 + a2 (S ⊗ S - Q) · w4

    (ᵀ swaps the two input channels). Only the first line costs
    O(n c² units), one matrix product of the per-point outer products with a
    c² x units matrix; everything else is a per-set sum contracted with the
    weights before it meets the points.

    Args:
        x: ``(batch, n, c)``, padded points already zero.
        w: ``(5, c, c, units)`` in the canonical orbit order.
        m: float mask or None (only used for set sizes).
        pooling: ``"sum"`` or ``"mean"``.
    Returns:
        ``(batch, n, units)``; rows of padded points are not zeroed here.
    """
    batch, n = ops.shape(x)[0], ops.shape(x)[1]
    c, units = w.shape[1], w.shape[3]
    xa = ops.cast(x, accumulation_dtype(x.dtype))
    w = ops.cast(w, xa.dtype)  # the weights are combined per set in the accumulation dtype too
    s = ops.sum(xa, axis=1)  # (b, c)
    q = ops.reshape(ops.einsum("bnc,bnd->bcd", xa, xa), (batch, c * c))
    ss = ops.reshape(ops.expand_dims(s, -1) * ops.expand_dims(s, -2), (batch, c * c))
    outer = ops.reshape(ops.expand_dims(x, -1) * ops.expand_dims(x, -2), (batch, n, c * c))
    flat = ops.reshape(w, (5, c * c * units))
    # "S ·" contracts the second input channel; as a matmul it needs that channel first.
    swapped = ops.reshape(ops.transpose(w, (0, 2, 1, 3)), (5, c * c * units))
    set_weights = ops.reshape(w[3:5], (2 * c * c, units))
    scales = orbit_scales(x, m, pooling, "quadratic")
    if scales is None:
        point_w = ops.matmul(ops.convert_to_tensor(_POINT_SUM, w.dtype), flat)
        mix_w = ops.matmul(ops.convert_to_tensor(_MIX_SUM, w.dtype), ops.concatenate([flat, swapped], 0))
        point = point_matmul(outer, ops.cast(ops.reshape(point_w, (c * c, units)), x.dtype))
        mix = ops.reshape(ops.matmul(s, ops.reshape(mix_w, (c, c * units))), (batch, c, units))
        pooled = ops.matmul(ops.concatenate([q, ss - q], axis=-1), set_weights)
    else:
        a1, a2 = scales  # (b,)
        # Orbit sizes depend on the set size: one c² x units point matrix per set.
        basis = ops.matmul(ops.convert_to_tensor(_POINT_BASIS, w.dtype), flat)  # (3, c² units)
        coef = ops.stack([ops.ones_like(a1), a1, a2], axis=1)  # (b, 3)
        point = ops.matmul(outer, ops.cast(ops.reshape(ops.matmul(coef, basis), (batch, c * c, units)), x.dtype))
        mix_w = ops.matmul(ops.convert_to_tensor(_MIX_BASIS, w.dtype), ops.concatenate([flat, swapped], 0))
        mix = ops.reshape(ops.matmul(s, ops.reshape(ops.transpose(ops.reshape(mix_w, (2, c, c * units)), (1, 0, 2)),
                                                    (c, 2 * c * units))), (batch, 2, c, units))
        mix = a1[:, None, None] * mix[:, 0] - a2[:, None, None] * mix[:, 1]
        pooled = ops.matmul(ops.concatenate([a1[:, None] * q, a2[:, None] * (ss - q)], axis=-1), set_weights)
    return point + ops.matmul(x, ops.cast(mix, x.dtype)) + ops.expand_dims(ops.cast(pooled, x.dtype), 1)


# Rows combine the 5 orbit weights (and, in the second half, their channel-swapped
# copies): the coefficient of x_k ⊗ x_k, and of x_k · S, from the expansion above.
_POINT_SUM = np.array([[1.0, -1.0, -1.0, -1.0, 2.0]])
_MIX_SUM = np.array([[0, 0, 1, 0, -1, 0, 1, 0, 0, -1]], dtype=float)  # w2 + w1ᵀ - w4 - w4ᵀ, swapped layout
_POINT_BASIS = np.array([[1.0, 0, 0, 0, 0], [0, -1.0, -1.0, -1.0, 0], [0, 0, 0, 0, 2.0]])
_MIX_BASIS = np.array([[0, 0, 1, 0, 0, 0, 1, 0, 0, 0], [0, 0, 0, 0, 1, 0, 0, 0, 0, 1]], dtype=float)


def point_matmul(x, w):
    """``(batch, n, k) @ (k, units)`` as one 2-D product: a broadcast batched matmul
    would form a per-set ``(k, units)`` weight gradient and then sum it."""
    return ops.reshape(ops.matmul(ops.reshape(x, (-1, ops.shape(x)[-1])), w),
                       (ops.shape(x)[0], ops.shape(x)[1], ops.shape(w)[-1]))


def orbit_quadratic_features(a, b, m=None, pooling="sum"):
    """The 5 orbit sums T_r for elementwise channel pairs (a_s, b_s): ``(batch, n, 5, r)``.

    Used by the factorised quadratic layer, where channel mixing happens before
    (a = x U, b = x V) and after (a rank x units map per orbit), so the orbit
    sums are only needed for matching channels. O(n r) time and memory, in the
    accumulation dtype (T4 is a difference of terms of order n²); returned in a's dtype.
    """
    dtype = a.dtype
    a, b = ops.cast(a, accumulation_dtype(dtype)), ops.cast(b, accumulation_dtype(dtype))
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
    return ops.cast(ops.stack([ab, t1, t2, t3, t4], axis=2), dtype)


def masked_pool(x, m, mode):
    """Invariant pooling over the real points: ``(batch, n, c) -> (batch, c)``.

    An empty set (every point padded) pools to zeros in every mode, rather than
    to -inf (max) or NaN (mean). Sums and means come in x's accumulation dtype,
    maxima in x's dtype.
    """
    if mode == "sum":
        return set_sum(mask_points(x, m))
    if mode == "mean":
        n = ops.expand_dims(set_size(x, m), -1)
        return set_sum(mask_points(x, m)) / ops.maximum(n, 1.0)
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
