import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.layers import TiedEquivariantDense
from setnet.symmetry import colors, count, fold, halves_fold, parse

# (spec, kind, folded): groups with no closed form, and the folds.
CASES = [
    ("C5", "linear", False), ("D4", "linear", False), ("C2*C3", "linear", False), ("S3+C2", "linear", False),
    ("C4", "quadratic", False), ("D3", "quadratic-sym", False), ("S3", "quadratic", False),
    ("Fold3", "linear", True), ("Hyp3", "quadratic", True), ("Fold2", "quadratic-sym", True),
]


def _act(x, g):
    """The group element g (i -> g[i]) acting on the point axis: point i moves to position g[i]."""
    out = np.empty_like(x)
    out[:, g] = x
    return out


def _output_action(g, pi):
    """The element g induces on the outputs of a fold pi: pi(i) -> pi(g[i])."""
    gy = np.empty(pi.max() + 1, dtype=np.int64)
    gy[pi] = pi[g]
    return gy


def _setup(spec, kind, folded):
    group = parse(spec)
    pi = halves_fold(group.degree // 2) if folded else None
    group_out = fold(group, pi) if folded else None
    return group, pi, colors(group, group_out, kind), colors(group, group_out, "bias")


@settings(max_examples=10, deadline=None)
@given(case=st.sampled_from(CASES), seed=st.integers(0, 2**31 - 1))
def test_equivariant_under_random_group_elements(case, seed):
    rng = np.random.default_rng(seed)
    group, pi, col, bias_col = _setup(*case)
    layer = TiedEquivariantDense(2, colors=col, bias_colors=bias_col, bias_initializer="random_normal")
    x = rng.normal(size=(2, group.degree, 2)).astype("float32")
    g = group.random_element(rng)
    gy = g if pi is None else _output_action(g, pi)
    y = np.asarray(layer(x))
    np.testing.assert_allclose(layer(_act(x, g)), _act(y, gy), atol=1e-4)


@pytest.mark.parametrize("spec,kind", [("D4", "linear"), ("S3", "quadratic"), ("C3", "quadratic-sym")])
def test_tied_gradient_is_sum_of_dense_entry_gradients(spec, kind):
    # Parameter sharing: linked weights update together. The gradient of one
    # tied variable must be the sum of the gradients of the dense kernel entries
    # of its color, computed here on a free (untied) copy of the kernel.
    rng = np.random.default_rng(0)
    group = parse(spec)
    col = colors(group, kind=kind)
    layer = TiedEquivariantDense(3, colors=col, use_bias=False, dtype="float64")
    x = tf.constant(rng.normal(size=(4, group.degree, 2)))
    target = tf.constant(rng.normal(size=(4, group.degree, 3)))
    layer.build(x.shape)
    layer.kernel.assign(rng.normal(size=layer.kernel.shape))
    with tf.GradientTape() as tape:
        loss = tf.reduce_sum((layer(x) - target) ** 2)
    tied_grad = tf.convert_to_tensor(tape.gradient(loss, layer.kernel)).numpy()  # gather gives IndexedSlices
    dense = tf.Variable(layer.dense_kernel())
    with tf.GradientTape() as tape:
        loss_dense = tf.reduce_sum((layer.apply_kernel(x, dense) - target) ** 2)
    dense_grad = tape.gradient(loss_dense, dense).numpy()
    np.testing.assert_allclose(loss_dense, loss, rtol=1e-12)
    flat = dense_grad.reshape(col.size, *dense_grad.shape[col.ndim:])
    summed = np.zeros_like(tied_grad)
    np.add.at(summed, col.reshape(-1), flat)
    np.testing.assert_allclose(tied_grad, summed, rtol=1e-10, atol=1e-10)
    # The gathered kernel is constant on each color.
    gathered = np.asarray(layer.dense_kernel())
    for color in range(int(col.max()) + 1):
        entries = gathered.reshape(col.size, -1)[col.reshape(-1) == color]
        assert np.all(entries == entries[0])


@pytest.mark.parametrize("spec,kind", [("C6", "linear"), ("S4", "quadratic"), ("D5", "quadratic-sym")])
def test_parameter_count_is_colors_times_channel_products(spec, kind):
    # linear: n_colors * C_in * units; quadratic: n_colors * C_in^2 * units; bias: n_bias_colors * units.
    group, c_in, units = parse(spec), 3, 4
    layer = TiedEquivariantDense(units, colors=colors(group, kind=kind), bias_colors=colors(group, kind="bias"))
    layer.build((None, group.degree, c_in))
    channel_product = c_in * units if kind == "linear" else c_in * c_in * units
    expected = count(group, kind=kind) * channel_product + count(group, kind="bias") * units
    assert layer.count_params() == expected


def test_padded_points_are_zeroed_and_outputs_masked():
    col = colors(parse("S4"))
    layer = TiedEquivariantDense(2, colors=col, bias_initializer="ones")
    x = np.random.default_rng(0).normal(size=(1, 4, 3)).astype("float32")
    mask = np.array([[True, False, True, True]])
    noisy = x.copy()
    noisy[0, 1] = 1e3
    y = np.asarray(layer(noisy, mask=mask))
    np.testing.assert_allclose(y, layer(x, mask=mask), atol=1e-5)
    assert np.all(y[0, 1] == 0)


def test_config_round_trip_and_errors():
    layer = TiedEquivariantDense(2, colors=colors(parse("D4"), kind="quadratic"), activation="relu", name="t")
    clone = TiedEquivariantDense.from_config(layer.get_config())
    assert np.array_equal(clone.colors, layer.colors) and clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_name(TiedEquivariantDense) == "setnet>TiedEquivariantDense"
    with pytest.raises(ValueError, match="4 input points"):
        TiedEquivariantDense(2, colors=colors(parse("C4")))(np.zeros((1, 5, 2), "float32"))
    with pytest.raises(ValueError, match="max_kernel_entries"):
        TiedEquivariantDense(8, colors=colors(parse("S16"), kind="quadratic"), max_kernel_entries=10**5).build(
            (None, 16, 8))
    with pytest.raises(ValueError, match="integer array"):
        TiedEquivariantDense(2, colors=np.ones((3, 3)))
    with pytest.raises(ValueError, match="every color id"):
        TiedEquivariantDense(2, colors=np.array([[0, 2], [2, 0]]))
