"""Tied gradients of the closed forms: weights linked by parameter sharing update together.

Each closed-form layer is a fast way of computing a map whose dense kernel is
gathered from the engine's colors. Its gradients must therefore be the sums,
over every dense entry of a color, of the gradients that a free (untied) dense
kernel would get, pulled back through the layer's parameterisation: for the
quadratic and folded layers each variable slice *is* one color (divided by the
orbit size for mean pooling); for PermEquivariantLinear the colors are
w0 = Λ + Γ and w1 = Γ (Γ/n each for mean pooling), so dΛ = G0 and dΓ = G0 + G1.
Float64, tolerance 1e-10, with masks.
"""

import numpy as np
import pytest
import tensorflow as tf

from setnet.layers import FoldedEquivariant, PermEquivariantLinear, PermEquivariantQuadratic, TiedEquivariantDense
from setnet.layers.folded_equivariant_test import _slot_of_color
from setnet.symmetry import colors, symmetric


def _tied(units, col, n_in, c_in):
    layer = TiedEquivariantDense(units, colors=col, use_bias=False, dtype="float64")
    layer.build((None, n_in, c_in))
    return layer


def _dense_color_gradients(parts, bias, x, target, mask, out_mask=None):
    """Loss and, per tied part, the gradient of every dense entry summed over its color.

    The dense kernels are free variables here (copies of the gathered kernels),
    so autodiff sees no tying at all. Padded points are zeroed on the way in
    and padded outputs (``out_mask``, default ``mask``) on the way out.
    """
    out_mask = mask if out_mask is None else out_mask
    x = tf.constant(x * mask[..., None])
    kernels = [tf.Variable(part.dense_kernel()) for part in parts]
    with tf.GradientTape() as tape:
        y = sum(part.apply_kernel(x, k) for part, k in zip(parts, kernels)) + bias
        loss = tf.reduce_sum((y * out_mask[..., None] - target) ** 2)
    sums = []
    for part, grad in zip(parts, tape.gradient(loss, kernels)):
        grad = grad.numpy()
        flat = grad.reshape(part.colors.size, *grad.shape[part.colors.ndim:])
        summed = np.zeros((part.n_colors, *flat.shape[1:]))
        np.add.at(summed, part.colors.reshape(-1), flat)
        sums.append(summed)
    return float(loss), sums


def _closed_form_gradients(layer, x, target, mask):
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((layer(tf.constant(x), mask=tf.constant(mask)) - target) ** 2)
    grads = tape.gradient(loss, layer.trainable_weights)
    return float(loss), {w.name: tf.convert_to_tensor(g).numpy() for w, g in zip(layer.trainable_weights, grads)}


def _data(rng, n, c_in, units, full=False):
    x = rng.normal(size=(3, n, c_in))
    target = rng.normal(size=(3, n, units))
    mask = np.ones((3, n), bool) if full else rng.random((3, n)) < 0.7
    mask[:, 0] = True
    return x, target, mask


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_linear(pooling):
    rng = np.random.default_rng(1)
    n, c_in, units = 5, 3, 2
    layer = PermEquivariantLinear(units, pooling=pooling, dtype="float64")
    layer.build((None, None, c_in))
    lam, gam, bias = (rng.normal(size=w.shape) for w in layer.weights)
    layer.set_weights([lam, gam, bias])
    # Mean pooling divides by the number of real points: no padding, so it is n for every set.
    x, target, mask = _data(rng, n, c_in, units, full=pooling == "mean")
    scale = 1.0 if pooling == "sum" else 1.0 / n
    tied = _tied(units, colors(symmetric(n)), n, c_in)
    tied.set_weights([np.stack([lam + scale * gam, scale * gam])])
    loss, (g,) = _dense_color_gradients([tied], bias, x, target, mask)
    loss_cf, grads = _closed_form_gradients(layer, x, target, mask)
    np.testing.assert_allclose(loss_cf, loss, rtol=1e-12)
    np.testing.assert_allclose(grads["lambda_kernel"], g[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(grads["gamma_kernel"], scale * (g[0] + g[1]), rtol=0, atol=1e-10)


@pytest.mark.parametrize("sym,pooling", [(False, "sum"), (True, "sum"), (False, "mean")])
def test_quadratic(sym, pooling):
    rng = np.random.default_rng(2)
    n, c_in, units = 4, 2, 2
    layer = PermEquivariantQuadratic(units, symmetric=sym, pooling=pooling, dtype="float64")
    layer.build((None, None, c_in))
    quad, lam, gam, bias = (rng.normal(size=w.shape) for w in layer.weights)
    layer.set_weights([quad, lam, gam, bias])
    x, target, mask = _data(rng, n, c_in, units, full=pooling == "mean")
    if pooling == "sum":
        sizes, scale = np.ones(5), 1.0
    else:
        sizes, scale = np.array([1, n - 1, n - 1, n - 1, (n - 1) * (n - 2)], float), 1.0 / n
    sizes = sizes[[0, 1, 3, 4]] if sym else sizes
    tq = _tied(units, colors(symmetric(n), kind="quadratic-sym" if sym else "quadratic"), n, c_in)
    tq.set_weights([quad / sizes[:, None, None, None]])
    tl = _tied(units, colors(symmetric(n)), n, c_in)
    tl.set_weights([np.stack([lam + scale * gam, scale * gam])])
    loss, (gq, gl) = _dense_color_gradients([tq, tl], bias, x, target, mask)
    loss_cf, grads = _closed_form_gradients(layer, x, target, mask)
    np.testing.assert_allclose(loss_cf, loss, rtol=1e-12)
    np.testing.assert_allclose(grads["quadratic_kernel"], gq / sizes[:, None, None, None], rtol=0, atol=1e-10)
    np.testing.assert_allclose(grads["lambda_kernel"], gl[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(grads["gamma_kernel"], scale * (gl[0] + gl[1]), rtol=0, atol=1e-10)


@pytest.mark.parametrize("group", ["pairs", "hyperoctahedral"])
@pytest.mark.parametrize("order", ["linear", "quadratic"])
def test_folded(group, order):
    rng = np.random.default_rng(3)
    m, c_in, units = 3, 2, 2  # m >= 3: every variable slice is exactly one engine color
    layer = FoldedEquivariant(units, group=group, order=order, dtype="float64")
    layer.build((None, None, c_in))
    weights = [rng.normal(size=w.shape) for w in layer.weights]
    layer.set_weights(weights)
    x, target, _ = _data(rng, 2 * m, c_in, units)
    pair_real = rng.random((3, m)) < 0.7
    pair_real[:, 0] = True
    mask = np.concatenate([pair_real, pair_real], axis=1)
    lin_col, lin_slot = _slot_of_color(group, m, "linear")
    parts = [_tied(units, lin_col, 2 * m, c_in)]
    parts[0].set_weights([weights[0][lin_slot]])
    slots = [lin_slot]
    if order == "quadratic":
        quad_col, quad_slot = _slot_of_color(group, m, "quadratic")
        parts.append(_tied(units, quad_col, 2 * m, c_in))
        parts[1].set_weights([weights[1][quad_slot]])
        slots.append(quad_slot)
    assert all(sorted(s.tolist()) == list(range(len(s))) for s in slots)
    target = target[:, :m]
    loss, sums = _dense_color_gradients(parts, weights[-1], x, target, mask, out_mask=pair_real)
    loss_cf, grads = _closed_form_gradients(layer, x, target, mask)
    np.testing.assert_allclose(loss_cf, loss, rtol=1e-12)
    for name, summed, slot in zip(["linear_kernel", "quadratic_kernel"], sums, slots):
        expected = np.zeros_like(summed)
        expected[slot] = summed  # color c is served by variable slice slot[c]
        np.testing.assert_allclose(grads[name], expected, rtol=0, atol=1e-10)
