import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.layers import FoldedEquivariant, TiedEquivariantDense
from setnet.layers.folded_equivariant import LINEAR_SLOTS, QUADRATIC_SLOTS
from setnet.symmetry import colors, count, fold, fold_pairs, halves_fold, hyperoctahedral

GROUPS = {"pairs": fold_pairs, "hyperoctahedral": hyperoctahedral}


def _layer(units, channels, dtype="float32", **kw):
    layer = FoldedEquivariant(units, dtype=dtype, bias_initializer="random_normal", **kw)
    layer.build((None, None, channels))
    return layer


def _act(x, g):
    out = np.empty_like(x)
    out[:, g] = x
    return out


def _orbit_type(k, i, j=None):
    if j is None:
        return 0 if i == k else 1
    return 0 if k == i == j else 1 if k == i else 2 if k == j else 3 if i == j else 4


def _slot_of_color(group, m, kind):
    """For each engine color, the layer's variable slice that serves it (from the layer's slot tables)."""
    g = GROUPS[group](m)
    col = colors(g, fold(g, halves_fold(m)), kind)
    slots = {}
    for index in np.ndindex(col.shape):
        k, ins = index[0], index[1:]
        halves = [i // m for i in ins]
        t = _orbit_type(k, *[i % m for i in ins])
        slot = (LINEAR_SLOTS[group][halves[0]][t] if kind == "linear"
                else QUADRATIC_SLOTS[group][halves[0]][halves[1]][t])
        assert slots.setdefault(col[index], slot) == slot, "an engine color spans two layer weights"
    out = np.array([slots[c] for c in range(len(slots))])
    assert len(set(out.tolist())) == len(out), "two engine colors share one layer weight"
    return col, out


@pytest.mark.parametrize("group", ["pairs", "hyperoctahedral"])
@pytest.mark.parametrize("m", [1, 2, 3, 4])
def test_slot_tables_match_the_engine_colors(group, m):
    for kind in ("linear", "quadratic"):
        col, slot = _slot_of_color(group, m, kind)
        if m >= 3:  # canonical color order is the layer's variable order
            assert slot.tolist() == list(range(count(GROUPS[group](m), fold(GROUPS[group](m), halves_fold(m)),
                                                     kind)))
    assert count(fold_pairs(5), fold(fold_pairs(5), halves_fold(5)), "quadratic") == 20


@settings(max_examples=14, deadline=None)
@given(
    m=st.integers(1, 4), channels=st.integers(1, 2), group=st.sampled_from(["pairs", "hyperoctahedral"]),
    order=st.sampled_from(["linear", "quadratic"]), pooling=st.sampled_from(["sum", "mean"]),
    masked=st.booleans(), seed=st.integers(0, 2**31 - 1),
)
def test_equivariant_under_fold_group_elements(m, channels, group, order, pooling, masked, seed):
    rng = np.random.default_rng(seed)
    layer = _layer(3, channels, group=group, order=order, pooling=pooling, activation="tanh")
    x = rng.normal(size=(2, 2 * m, channels)).astype("float32")
    mask = None
    if masked:
        pair_real = rng.random((2, m)) < 0.7
        mask = np.concatenate([pair_real, pair_real], axis=1)
    g = GROUPS[group](m).random_element(rng)
    pi = halves_fold(m)
    gy = np.empty(m, dtype=np.int64)
    gy[pi] = pi[g]
    y = np.asarray(layer(x, mask=mask))
    y_g = np.asarray(layer(_act(x, g), mask=None if mask is None else _act(mask, g)))
    np.testing.assert_allclose(y_g, _act(y, gy), atol=1e-4, rtol=1e-4)
    if mask is not None:
        assert np.all(y[~pair_real] == 0.0)
        for b in range(2):
            keep = np.flatnonzero(pair_real[b])
            real = np.asarray(layer(x[b : b + 1, np.concatenate([keep, keep + m])]))
            np.testing.assert_allclose(y[b : b + 1, keep], real, atol=1e-4, rtol=1e-4)


def test_a_point_whose_partner_is_padded_is_ignored():
    rng = np.random.default_rng(0)
    layer = _layer(2, 2, order="quadratic")
    x = rng.normal(size=(1, 8, 2)).astype("float32")
    mask = np.array([[True, True, True, False, True, True, False, False]])  # pairs 2 and 3 are not whole
    y = np.asarray(layer(x, mask=mask))
    assert np.all(y[0, 2:] == 0)
    np.testing.assert_allclose(y[:, :2], layer(x[:, [0, 1, 4, 5]]), atol=1e-5)
    assert np.asarray(layer.compute_mask(x, mask)).tolist() == [[True, True, False, False]]


def _orbit_sizes(col, m, pooling):
    """Per engine color, the size of its S_m orbit type (what mean pooling divides by); ones for sums."""
    if pooling == "sum":
        return np.ones(int(col.max()) + 1)
    sizes = {0: 1, 1: m - 1, 2: m - 1, 3: m - 1, 4: (m - 1) * (m - 2)}
    if col.ndim == 2:
        sizes = {0: 1, 1: m - 1}
    out = {}
    for index in np.ndindex(col.shape):
        out.setdefault(col[index], sizes[_orbit_type(index[0], *[i % m for i in index[1:]])])
    return np.maximum(np.array([out[c] for c in range(len(out))], float), 1.0)


@pytest.mark.parametrize("group", ["pairs", "hyperoctahedral"])
@pytest.mark.parametrize("order", ["linear", "quadratic"])
@pytest.mark.parametrize("m,pooling", [(2, "sum"), (3, "sum"), (4, "sum"), (2, "mean"), (4, "mean")])
def test_closed_form_equals_tied_reference(group, order, m, pooling):
    # Mean pooling at a fixed number of pairs is the sum form with each color's
    # weight divided by the size of its S_m orbit type.
    rng = np.random.default_rng(m)
    c_in, units = 2, 3
    layer = _layer(units, c_in, dtype="float64", group=group, order=order, pooling=pooling)
    weights = [rng.normal(size=w.shape) for w in layer.weights]
    layer.set_weights(weights)
    g = GROUPS[group](m)
    g_out = fold(g, halves_fold(m))
    lin_col, lin_slot = _slot_of_color(group, m, "linear")
    tl = TiedEquivariantDense(units, colors=lin_col, dtype="float64")
    tl.build((None, 2 * m, c_in))
    tl.set_weights([weights[0][lin_slot] / _orbit_sizes(lin_col, m, pooling)[:, None, None], weights[-1][None]])
    parts = [tl]
    if order == "quadratic":
        quad_col, quad_slot = _slot_of_color(group, m, "quadratic")
        tq = TiedEquivariantDense(units, colors=quad_col, use_bias=False, dtype="float64")
        tq.build((None, 2 * m, c_in))
        tq.set_weights([weights[1][quad_slot] / _orbit_sizes(quad_col, m, pooling)[:, None, None, None]])
        parts.append(tq)
    if m >= 3:  # no empty orbit: every weight of the layer is one engine color
        assert layer.count_params() == sum(t.count_params() for t in parts)
    assert tl.n_out == g_out.degree == m
    x = rng.normal(size=(3, 2 * m, c_in))
    ref = sum(np.asarray(t(x)) for t in parts)
    np.testing.assert_allclose(layer(x), ref, rtol=0, atol=1e-10)
    if pooling == "sum":  # for sums, padding = zero points, which the tied map sees as zeros
        pair_real = rng.random((3, m)) < 0.6
        mask = np.concatenate([pair_real, pair_real], axis=1)
        ref = sum(np.asarray(t(x, mask=mask)) for t in parts) * pair_real[..., None]
        np.testing.assert_allclose(layer(x, mask=mask), ref, rtol=0, atol=1e-10)


def test_parameter_count_formula():
    # folded colors x channel products (+ 1 bias color x units); m >= 3 so no orbit is empty
    c_in, units, m = 3, 2, 4
    for group, make in GROUPS.items():
        g = make(m)
        g_out = fold(g, halves_fold(m))
        n_lin, n_quad = count(g, g_out, "linear"), count(g, g_out, "quadratic")
        assert (n_lin, n_quad) == {"pairs": (4, 20), "hyperoctahedral": (2, 7)}[group]
        assert _layer(units, c_in, group=group).count_params() == n_lin * c_in * units + units
        assert _layer(units, c_in, group=group, order="quadratic").count_params() == (
            n_quad * c_in * c_in * units + n_lin * c_in * units + units)


def test_config_round_trip_and_errors():
    layer = FoldedEquivariant(4, group="hyperoctahedral", order="quadratic", pooling="mean", name="f")
    assert FoldedEquivariant.from_config(layer.get_config()).get_config() == layer.get_config()
    assert layer.compute_output_shape((None, 10, 3)) == (None, 5, 4)
    assert layer.compute_output_shape((None, None, 3)) == (None, None, 4)
    with pytest.raises(ValueError, match="even"):
        FoldedEquivariant(4)(np.zeros((1, 5, 2), "float32"))
    with pytest.raises(ValueError, match="group"):
        FoldedEquivariant(4, group="S3")
