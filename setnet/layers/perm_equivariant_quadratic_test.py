import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.layers import PermEquivariantQuadratic, TiedEquivariantDense, set_ops
from setnet.layers.perm_equivariant_quadratic import SYMMETRIC_SLOTS
from setnet.symmetry import colors, count, symmetric


def _layer(units, channels, dtype="float32", **kw):
    layer = PermEquivariantQuadratic(units, dtype=dtype, bias_initializer="random_normal", **kw)
    layer.build((None, None, channels))
    return layer


@settings(max_examples=14, deadline=None)
@given(
    n=st.integers(1, 7), channels=st.integers(1, 3), sym=st.booleans(), pooling=st.sampled_from(["sum", "mean"]),
    rank=st.sampled_from([None, 2]), masked=st.booleans(), seed=st.integers(0, 2**31 - 1), data=st.data(),
)
def test_equivariant_and_padding_inert(n, channels, sym, pooling, rank, masked, seed, data):
    rng = np.random.default_rng(seed)
    layer = _layer(3, channels, symmetric=sym, pooling=pooling, rank=rank, activation="sigmoid")
    x = rng.normal(size=(2, n, channels)).astype("float32")
    mask = rng.random((2, n)) < 0.7 if masked else None
    perm = np.array(data.draw(st.permutations(range(n))))
    y = np.asarray(layer(x, mask=mask))
    y_perm = np.asarray(layer(x[:, perm], mask=None if mask is None else mask[:, perm]))
    np.testing.assert_allclose(y_perm, y[:, perm], atol=1e-4, rtol=1e-4)
    if mask is not None:
        assert np.all(y[~mask] == 0.0), "padded outputs must be zero (even after a sigmoid)"
        for b in range(2):
            real = np.asarray(layer(x[b : b + 1, mask[b]]))
            np.testing.assert_allclose(y[b : b + 1, mask[b]], real, atol=1e-4, rtol=1e-4)


def _reference(n, c_in, units, quad, lam, gam, bias, kind, orbit_sizes=None):
    """TiedEquivariantDense (quadratic colors) + TiedEquivariantDense (linear colors), float64."""
    group = symmetric(n)
    q_colors = count(group, kind=kind)
    quad = quad[:q_colors]  # the engine has fewer orbits for n < 3; the layer's extra weights do nothing
    linear = np.stack([lam + gam, gam])[: count(group)]
    if orbit_sizes is not None:  # mean pooling at a fixed n is the sum form with weights / orbit size
        quad = quad / orbit_sizes[:q_colors, None, None, None]
        linear = np.stack([lam + gam / n, gam / n])[: count(group)]
    tq = TiedEquivariantDense(units, colors=colors(group, kind=kind), use_bias=False, dtype="float64")
    tl = TiedEquivariantDense(units, colors=colors(group), dtype="float64")
    tq.build((None, n, c_in))
    tl.build((None, n, c_in))
    tq.set_weights([quad])
    tl.set_weights([linear, bias[None]])
    return lambda x, mask=None: np.asarray(tq(x, mask=mask)) + np.asarray(tl(x, mask=mask))


@pytest.mark.parametrize("n", [1, 2, 3, 5])
@pytest.mark.parametrize("sym", [False, True])
def test_closed_form_equals_tied_reference(n, sym):
    rng = np.random.default_rng(10 * n + sym)
    c_in, units = 2, 3
    layer = _layer(units, c_in, dtype="float64", symmetric=sym)
    quad = rng.normal(size=layer.quadratic_kernel.shape)
    lam, gam = rng.normal(size=(2, c_in, units))
    bias = rng.normal(size=units)
    layer.set_weights([quad, lam, gam, bias])
    ref = _reference(n, c_in, units, quad, lam, gam, bias, "quadratic-sym" if sym else "quadratic")
    x = rng.normal(size=(4, n, c_in))
    np.testing.assert_allclose(layer(x), ref(x), rtol=0, atol=1e-10)
    mask = rng.random((4, n)) < 0.6  # sum pooling: a padded point is a zero point to the tied map
    np.testing.assert_allclose(layer(x, mask=mask), ref(x, mask=mask), rtol=0, atol=1e-10)


@pytest.mark.parametrize("n", [2, 5])
def test_mean_pooling_divides_each_orbit_by_its_size(n):
    rng = np.random.default_rng(n)
    c_in, units = 2, 2
    layer = _layer(units, c_in, dtype="float64", pooling="mean")
    weights = [rng.normal(size=w.shape) for w in layer.weights]
    layer.set_weights(weights)
    sizes = np.array([1, n - 1, n - 1, n - 1, (n - 1) * (n - 2)], dtype=float)
    ref = _reference(n, c_in, units, *weights, "quadratic", orbit_sizes=np.maximum(sizes, 1))
    x = rng.normal(size=(3, n, c_in))
    np.testing.assert_allclose(layer(x), ref(x), rtol=0, atol=1e-10)


@pytest.mark.parametrize("sym", [False, True])
@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_factorised_form_equals_full_form_with_the_product_weights(sym, pooling):
    rng = np.random.default_rng(3)
    low = _layer(3, 4, dtype="float64", symmetric=sym, pooling=pooling, rank=2)
    low.set_weights([rng.normal(size=w.shape) for w in low.weights])
    full = _layer(3, 4, dtype="float64", symmetric=sym, pooling=pooling)
    expanded = np.asarray(low.orbit_weights())
    kernel = expanded[[0, 1, 3, 4]] if sym else expanded
    full.set_weights([kernel] + [w.numpy() for w in low.weights[3:]])
    x = rng.normal(size=(2, 6, 4))
    mask = rng.random((2, 6)) < 0.7
    np.testing.assert_allclose(low(x, mask=mask), full(x, mask=mask), rtol=0, atol=1e-10)


@pytest.mark.parametrize("c", [1, 2, 3])
def test_symmetric_form_spans_a_smaller_family_when_channels_exceed_one(c):
    # The dimension of the space of maps each form spans (one output channel) is the
    # rank of its orbit features over many random sets. Docs/layers.md states:
    # general form 4C + 5C(C-1)/2 (the minimal exact parameterisation), symmetric 2C(C+1).
    rng = np.random.default_rng(c)
    x = rng.normal(size=(40, 5, c))
    eye = np.eye(5 * c * c).reshape(5, c, c, 5 * c * c)  # weight basis: one output per (orbit, c1, c2)
    general = np.asarray(set_ops.orbit_quadratic(x, eye)).reshape(-1, 5 * c * c)
    eye_sym = np.eye(4 * c * c).reshape(4, c, c, 4 * c * c)[list(SYMMETRIC_SLOTS)]
    sym = np.asarray(set_ops.orbit_quadratic(x, eye_sym)).reshape(-1, 4 * c * c)
    assert np.linalg.matrix_rank(general) == 4 * c + 5 * c * (c - 1) // 2
    assert np.linalg.matrix_rank(sym) == 2 * c * (c + 1)
    assert (np.linalg.matrix_rank(sym) < np.linalg.matrix_rank(general)) == (c > 1)


def test_parameter_count_formula():
    # quadratic colors x C_in^2 x units + linear colors x C_in x units + bias colors x units
    c_in, units, group = 3, 4, symmetric(9)
    for sym, kind in [(False, "quadratic"), (True, "quadratic-sym")]:
        layer = _layer(units, c_in, symmetric=sym)
        expected = (count(group, kind=kind) * c_in * c_in * units + count(group) * c_in * units
                    + count(group, kind="bias") * units)
        assert layer.count_params() == expected
    low = _layer(units, c_in, rank=2)  # 2 C_in r + 5 r units, then the same linear part and bias
    assert low.count_params() == 2 * c_in * 2 + 5 * 2 * units + 2 * c_in * units + units


def test_config_round_trip_and_errors():
    layer = PermEquivariantQuadratic(4, symmetric=True, pooling="mean", rank=3, activation="relu", name="q")
    clone = PermEquivariantQuadratic.from_config(layer.get_config())
    assert clone.get_config() == layer.get_config()
    with pytest.raises(ValueError, match="pooling"):
        PermEquivariantQuadratic(4, pooling="max")
    with pytest.raises(ValueError, match="rank"):
        PermEquivariantQuadratic(4, rank=0)
