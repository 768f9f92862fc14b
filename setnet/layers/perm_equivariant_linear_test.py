import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.layers import PermEquivariantLinear, TiedEquivariantDense
from setnet.symmetry import colors, count, symmetric


def _layer(units, channels, dtype="float32", **kw):
    layer = PermEquivariantLinear(units, dtype=dtype, bias_initializer="random_normal", **kw)
    layer.build((None, None, channels))
    return layer


@settings(max_examples=12, deadline=None)
@given(
    n=st.integers(1, 7), channels=st.integers(1, 3), pooling=st.sampled_from(["sum", "mean", "max"]),
    masked=st.booleans(), seed=st.integers(0, 2**31 - 1), data=st.data(),
)
def test_equivariant_and_padding_inert(n, channels, pooling, masked, seed, data):
    rng = np.random.default_rng(seed)
    layer = _layer(3, channels, pooling=pooling, activation="tanh")
    x = rng.normal(size=(2, n, channels)).astype("float32")
    mask = rng.random((2, n)) < 0.7 if masked else None
    perm = np.array(data.draw(st.permutations(range(n))))
    y = np.asarray(layer(x, mask=mask))
    y_perm = np.asarray(layer(x[:, perm], mask=None if mask is None else mask[:, perm]))
    np.testing.assert_allclose(y_perm, y[:, perm], atol=1e-5)
    if mask is not None:
        assert np.all(y[~mask] == 0.0), "padded outputs must be zero"
        for b in range(2):
            real = np.asarray(layer(x[b : b + 1, mask[b]]))  # the same set without its padding
            np.testing.assert_allclose(y[b : b + 1, mask[b]], real, atol=1e-5)


@pytest.mark.parametrize("n", [1, 2, 3, 6])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_closed_form_equals_tied_reference(n, pooling):
    # The engine's colors for S_n: 0 on the diagonal, 1 elsewhere (only 0 when n = 1).
    rng = np.random.default_rng(n)
    c_in, units = 3, 2
    layer = _layer(units, c_in, dtype="float64", pooling=pooling)
    lam, gam = rng.normal(size=(2, c_in, units))
    bias = rng.normal(size=units)
    layer.set_weights([lam, gam, bias])
    scale = 1.0 if pooling == "sum" else 1.0 / n
    tied = TiedEquivariantDense(units, colors=colors(symmetric(n)), dtype="float64")
    tied.build((None, n, c_in))
    kernel = np.stack([lam + scale * gam, scale * gam])[: count(symmetric(n))]
    tied.set_weights([kernel, bias[None]])
    x = rng.normal(size=(4, n, c_in))
    np.testing.assert_allclose(layer(x), tied(x), rtol=0, atol=1e-10)
    if pooling == "sum":  # for sums, padding = zero points, which the tied map sees as zeros
        mask = rng.random((4, n)) < 0.6
        np.testing.assert_allclose(layer(x, mask=mask), tied(x, mask=mask), rtol=0, atol=1e-10)


def test_parameter_count_is_colors_times_channel_pairs():
    # 2 linear colors of S_N per (C_in, units) channel pair, 1 bias color per unit; never N x N.
    c_in, units = 5, 7
    layer = _layer(units, c_in)
    group = symmetric(11)
    assert layer.count_params() == count(group, kind="linear") * c_in * units + count(group, kind="bias") * units
    assert [tuple(w.shape) for w in layer.weights] == [(c_in, units), (c_in, units), (units,)]
    assert [w.name for w in layer.weights] == ["lambda_kernel", "gamma_kernel", "bias"]


def test_config_round_trip_and_errors():
    layer = PermEquivariantLinear(4, pooling="max", activation="relu", kernel_regularizer="l2", name="pel")
    clone = PermEquivariantLinear.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    assert keras.saving.get_registered_name(PermEquivariantLinear) == "setnet>PermEquivariantLinear"
    with pytest.raises(ValueError, match="pooling"):
        PermEquivariantLinear(4, pooling="median")
    with pytest.raises(ValueError, match="units"):
        PermEquivariantLinear(0)
    with pytest.raises(ValueError, match=r"\(batch, N, channels\)"):
        PermEquivariantLinear(4)(np.zeros((2, 3), "float32"))


def test_mask_is_passed_on_in_functional_models():
    # The pooling layer gets no explicit mask: it must receive the one passed on by the linear layers.
    from setnet.layers import MaskedGlobalPooling

    points = keras.Input((None, 3))
    mask = keras.Input((None,), dtype="bool")
    h = PermEquivariantLinear(4, activation="relu")(points, mask=mask)
    h = PermEquivariantLinear(4, pooling="max")(h)
    model = keras.Model([points, mask], MaskedGlobalPooling("sum")(h))
    assert tuple(h.shape) == (None, None, 4)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 6, 3)).astype("float32")
    m = np.array([[True] * 4 + [False] * 2] * 2)
    noisy = x.copy()
    noisy[:, 4:] = 50.0
    np.testing.assert_allclose(model([noisy, m]), model([x[:, :4], m[:, :4]]), atol=1e-4)
