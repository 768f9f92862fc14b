import numpy as np
import pytest
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
