import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.layers import SetNormalization


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 7), training=st.booleans(), masked=st.booleans(), seed=st.integers(0, 2**31 - 1),
       data=st.data())
def test_equivariant_and_statistics_over_real_points_only(n, training, masked, seed, data):
    rng = np.random.default_rng(seed)
    layer = SetNormalization(momentum=0.5, gamma_initializer="random_normal", beta_initializer="random_normal")
    x = rng.normal(loc=3.0, size=(3, n, 2)).astype("float32")
    mask = rng.random((3, n)) < 0.7 if masked else np.ones((3, n), bool)
    mask[0, 0] = True
    perm = np.array(data.draw(st.permutations(range(n))))
    y = np.asarray(layer(x, mask=mask, training=training))
    y_perm = np.asarray(layer(x[:, perm], mask=mask[:, perm], training=training))
    np.testing.assert_allclose(y_perm, y[:, perm], atol=1e-4)
    assert np.all(y[~mask] == 0)
    real = x[mask]  # (points, channels)
    if training:
        mean, var = real.mean(0), real.var(0)
    else:
        mean, var = np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)
    expected = (real - mean) / np.sqrt(var + layer.epsilon) * np.asarray(layer.gamma) + np.asarray(layer.beta)
    np.testing.assert_allclose(y[mask], expected, atol=1e-4, rtol=1e-4)


def test_moving_statistics_follow_the_real_points():
    x = np.array([[[1.0, 10.0], [3.0, 30.0], [500.0, 500.0]]], "float32")
    mask = np.array([[True, True, False]])
    layer = SetNormalization(momentum=0.75)
    layer(x, mask=mask, training=True)
    np.testing.assert_allclose(layer.moving_mean, 0.25 * np.array([2.0, 20.0]), rtol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, 0.75 + 0.25 * np.array([1.0, 100.0]), rtol=1e-6)
    frozen = np.asarray(layer(x, mask=mask, training=False))  # inference leaves them alone
    np.testing.assert_allclose(layer.moving_mean, 0.25 * np.array([2.0, 20.0]), rtol=1e-6)
    np.testing.assert_allclose(frozen[0, 0], (x[0, 0] - [0.5, 5.0]) / np.sqrt([1.0, 25.75] + np.float32(1e-3)),
                               rtol=1e-5)


def test_config_round_trip_and_errors():
    layer = SetNormalization(momentum=0.9, epsilon=1e-5, center=False, name="norm")
    assert SetNormalization.from_config(layer.get_config()).get_config() == layer.get_config()
    layer.build((None, None, 4))
    assert [w.name for w in layer.weights] == ["gamma", "moving_mean", "moving_variance"]
    with pytest.raises(ValueError, match="momentum"):
        SetNormalization(momentum=2.0)


def _reference(x, mask, gamma, beta, dy, epsilon):
    """Batch norm over the real points in float64, two-pass, and its gradients by autodiff."""
    x, dy = tf.constant(x, tf.float64), tf.constant(dy, tf.float64)
    gamma, beta = tf.constant(gamma, tf.float64), tf.constant(beta, tf.float64)
    w = tf.constant(mask, tf.float64)
    with tf.GradientTape() as tape:
        tape.watch([x, gamma, beta])
        count = tf.reduce_sum(w)
        mean = tf.einsum("bn,bnc->c", w, x) / count
        variance = tf.einsum("bn,bnc->c", w, (x - mean) ** 2) / count
        y = ((x - mean) / tf.sqrt(variance + epsilon) * gamma + beta) * w[:, :, None]
    grads = tape.gradient(y, [x, gamma, beta], output_gradients=dy)
    return [t.numpy() for t in (y, *grads, mean, variance)]


def _train_step(layer, xla):
    @tf.function(jit_compile=xla)
    def step(x, mask, dy):
        with tf.GradientTape() as tape:
            tape.watch(x)
            y = layer(x, mask=mask, training=True)
        return (y, *tape.gradient(y, [x, layer.gamma, layer.beta], output_gradients=dy))
    return step


@pytest.mark.parametrize("xla", [False, True], ids=["graph", "xla"])
@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
@pytest.mark.parametrize("offset", [0.0, 1e3])
def test_training_matches_the_float64_two_pass_reference(offset, masked, xla):
    # Data at 1e3 +- 1 is where a one-pass variance (E[x²] - E[x]², as XLA computes the fused kernel's) loses
    # about 30% in float32; the layer must stay at float32 rounding, like a two-pass float64 computation.
    rng = np.random.default_rng(7)
    x = rng.normal(offset, 1.0, (6, 40, 5)).astype("float32")
    mask = rng.random((6, 40)) < 0.6 if masked else np.ones((6, 40), bool)
    mask[0, 0] = True
    x[~mask] = rng.normal(0.0, 500.0, ((~mask).sum(), 5))  # loud padding, which must not count
    dy = rng.normal(size=x.shape).astype("float32")
    layer = SetNormalization(momentum=0.0, gamma_initializer="random_normal", beta_initializer="random_normal")
    layer.build(x.shape)
    y, dx, dgamma, dbeta = (np.asarray(t) for t in _train_step(layer, xla)(x, mask if masked else None, dy))
    ref_y, ref_dx, ref_dgamma, ref_dbeta, mean, variance = _reference(
        x, mask, np.asarray(layer.gamma), np.asarray(layer.beta), dy, layer.epsilon)
    np.testing.assert_allclose(layer.moving_mean, mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(layer.moving_variance, variance, rtol=1e-5)
    np.testing.assert_allclose(y, ref_y, atol=2e-5)
    np.testing.assert_allclose(dx, ref_dx, atol=2e-5 * np.abs(ref_dx).max())
    np.testing.assert_allclose(dgamma, ref_dgamma, atol=2e-5 * np.abs(ref_dgamma).max())
    np.testing.assert_allclose(dbeta, ref_dbeta, atol=2e-5 * np.abs(ref_dbeta).max())
    # Padding is inert: zero outputs, zero gradients.
    assert np.all(y[~mask] == 0) and np.all(dx[~mask] == 0)


def test_unmasked_and_all_real_mask_take_different_paths_to_the_same_result():
    rng = np.random.default_rng(3)
    x = rng.normal(2.0, 3.0, (4, 9, 3)).astype("float32")
    dy = rng.normal(size=x.shape).astype("float32")
    outputs = []
    for mask in (None, np.ones((4, 9), bool)):
        layer = SetNormalization(momentum=0.5, gamma_initializer="random_normal")
        layer.build(x.shape)
        layer.gamma.assign(np.array([0.5, -1.5, 2.0], "float32"))
        outputs.append([np.asarray(t) for t in _train_step(layer, False)(x, mask, dy)]
                       + [np.asarray(layer.moving_mean), np.asarray(layer.moving_variance)])
    for fused, general in zip(*outputs):
        np.testing.assert_allclose(fused, general, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("masked", [False, True], ids=["unmasked", "masked"])
def test_float64_layer_trains_in_float64(masked):
    # float64 has no fused kernel: the general path, unmasked or not, must keep float64 throughout.
    rng = np.random.default_rng(5)
    x = rng.normal(1e3, 1.0, (3, 7, 2))
    mask = rng.random((3, 7)) < 0.7 if masked else np.ones((3, 7), bool)
    mask[0, 0] = True
    dy = rng.normal(size=x.shape)
    layer = SetNormalization(momentum=0.0, epsilon=1e-3, dtype="float64")
    layer.build(x.shape)
    y, dx, dgamma, dbeta = (np.asarray(t) for t in _train_step(layer, False)(x, mask if masked else None, dy))
    ref = _reference(x, mask, np.ones(2), np.zeros(2), dy, 1e-3)
    assert y.dtype == np.float64
    for got, want in zip((y, dx, dgamma, dbeta, layer.moving_mean, layer.moving_variance), ref):
        np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-10)


def test_a_batch_without_real_points_leaves_the_moving_statistics_alone():
    layer = SetNormalization(momentum=0.5)
    x = np.full((2, 3, 2), 7.0, "float32")
    y = np.asarray(layer(x, mask=np.zeros((2, 3), bool), training=True))
    assert np.all(y == 0)
    np.testing.assert_array_equal(layer.moving_mean, [0.0, 0.0])
    np.testing.assert_array_equal(layer.moving_variance, [1.0, 1.0])
