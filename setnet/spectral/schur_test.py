"""Schur's lemma on setnet's actual layers: an equivariant layer's matrix, obtained by probing the layer
with basis inputs, is block-diagonal in the isotypic basis (one block per component, channels free)."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.layers import PermEquivariantLinear, TiedEquivariantDense
from setnet.spectral import decompose
from setnet.symmetry import colors, parse, symmetric


def probe_matrix(layer, n, c_in):
    """M with rows (out point k, out channel o) and columns (in point i, in channel c), from f(e_ic) - f(0)."""
    basis = np.eye(n * c_in, dtype="float32").reshape(n * c_in, n, c_in)
    out = np.asarray(layer(basis), dtype=np.float64)
    zero = np.asarray(layer(np.zeros((1, n, c_in), "float32")), dtype=np.float64)
    return (out - zero).reshape(n * c_in, -1).T, zero[0]


def off_block_norm(decomp, m, c_in, c_out):
    """Largest ||(P_a (x) I) M (P_b (x) I)|| over pairs of different components, relative to ||M||."""
    projs = decomp.projectors()
    worst = 0.0
    for a, pa in enumerate(projs):
        for b, pb in enumerate(projs):
            if a != b:
                block = np.kron(pa, np.eye(c_out)) @ m @ np.kron(pb, np.eye(c_in))
                worst = max(worst, np.linalg.norm(block))
    return worst / np.linalg.norm(m)


@pytest.mark.parametrize("spec", ["C8", "C7", "D5", "C3*C4", "S3+C4", "Hyp3", "S5"])
def test_tied_dense_is_block_diagonal(spec):
    group = parse(spec)
    d = decompose(group)
    keras.utils.set_random_seed(0)
    layer = TiedEquivariantDense(3, colors=colors(group), bias_colors=colors(group, kind="bias"),
                                 bias_initializer="random_normal")
    m, f0 = probe_matrix(layer, group.degree, 2)
    assert np.linalg.norm(m) > 0.1
    assert off_block_norm(d, m, 2, 3) < 1e-6
    # the bias is invariant: it lives in the trivial component only
    trivial = d.components[0].projector
    np.testing.assert_allclose(trivial @ f0, f0, atol=1e-6)
    assert np.abs(f0).max() > 1e-3


def test_the_check_has_teeth():
    # The same probe on a layer whose weights ignore C_8 (every entry its own color) is far from block-diagonal.
    d = decompose("C8")
    keras.utils.set_random_seed(0)
    layer = TiedEquivariantDense(3, colors=np.arange(64).reshape(8, 8))
    m, _ = probe_matrix(layer, 8, 2)
    assert off_block_norm(d, m, 2, 3) > 0.1  # vs < 1e-6 for the equivariant layers


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_perm_equivariant_linear_is_trivial_plus_standard(pooling):
    keras.utils.set_random_seed(1)
    layer = PermEquivariantLinear(3, pooling=pooling, bias_initializer="random_normal")
    for n in (3, 6):  # the same layer on sets of different sizes
        d = decompose(symmetric(n))
        assert d.labels == ["trivial", "standard"]
        m, f0 = probe_matrix(layer, n, 2)
        assert off_block_norm(d, m, 2, 3) < 1e-6
        # On the standard component the layer is Λ (the pooled term vanishes there): check one vector.
        lam = np.asarray(layer.lambda_kernel)
        v = np.kron(d.components[1].copies[0][:, 0], np.eye(2)[0])  # standard vector in channel 0
        np.testing.assert_allclose((m @ v).reshape(n, 3), np.outer(d.components[1].copies[0][:, 0], lam[0]),
                                   atol=1e-5)


@settings(max_examples=10, deadline=None)
@given(st.sampled_from(["C6", "D4", "C2*C3", "S4"]), st.integers(0, 2**16))
def test_probe_matrix_commutes_with_random_group_elements(spec, seed):
    # Block-diagonality rests on the probed matrix being equivariant: check it under random elements.
    group = parse(spec)
    keras.utils.set_random_seed(seed % 1000)
    layer = TiedEquivariantDense(2, colors=colors(group))
    m, _ = probe_matrix(layer, group.degree, 2)
    g = group.random_element(np.random.default_rng(seed))
    p = np.zeros((group.degree, group.degree))
    p[g, np.arange(group.degree)] = 1
    np.testing.assert_allclose(np.kron(p, np.eye(2)) @ m, m @ np.kron(p, np.eye(2)), atol=1e-6)


def jacobian_at(layer, x0):
    """d layer(x) / d x at x0 (one set), as a matrix with rows (k, o) and columns (i, c), float64."""
    import tensorflow as tf

    x = tf.constant(x0[None], tf.float32)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x)
    # One gradient per output row, not pfor's vectorised Jacobian: with oneDNN on (TensorFlow's
    # default on x86) pfor returns wrong entries for the quadratic layers on CPUs with AMX (off by
    # ~2 against central differences, or a crash), while the row-by-row loop agrees with central
    # differences to 2e-5 with or without oneDNN.
    jac = tape.jacobian(y, x, experimental_use_pfor=False)  # (1, n_out, c_out, 1, n_in, c_in)
    n_out, c_out, n_in, c_in = jac.shape[1], jac.shape[2], jac.shape[4], jac.shape[5]
    return np.asarray(jac, np.float64).reshape(n_out * c_out, n_in * c_in)


@pytest.mark.parametrize("kwargs", [{}, {"symmetric": True}, {"pooling": "mean"}, {"rank": 2}])
def test_quadratic_layer_linearised_at_a_fixed_point_is_block_diagonal(kwargs):
    # A quadratic map is not linear, but its Jacobian at an input fixed by S_N (every point the same)
    # commutes with S_N, so Schur applies to it: trivial and standard components stay apart.
    from setnet.layers import PermEquivariantQuadratic

    keras.utils.set_random_seed(2)
    n, c_in, c_out = 5, 3, 4
    layer = PermEquivariantQuadratic(c_out, **kwargs)
    point = np.random.default_rng(0).normal(size=c_in)
    fixed = np.tile(point, (n, 1)).astype("float32")
    jac = jacobian_at(layer, fixed)
    d = decompose(symmetric(n))
    assert np.linalg.norm(jac) > 0.1
    assert off_block_norm(d, jac, c_in, c_out) < 1e-5
    # Negative control: at a generic input (not fixed by S_N) the Jacobian mixes the components.
    generic = np.random.default_rng(1).normal(size=(n, c_in)).astype("float32")
    assert off_block_norm(d, jacobian_at(layer, generic), c_in, c_out) > 1e-2


@pytest.mark.parametrize("group", ["pairs", "hyperoctahedral"])
@pytest.mark.parametrize("order", ["linear", "quadratic"])
def test_folded_layer_is_block_diagonal_over_the_pairs(group, order):
    # The fold is S_m-equivariant on the pairs z_k = [x_k, x_{k+m}] (2·C_in channels): written in
    # that layout, its Jacobian at a pair-constant input must be block-diagonal for S_m.
    from setnet.layers import FoldedEquivariant

    keras.utils.set_random_seed(3)
    m, c_in, c_out = 4, 2, 3
    layer = FoldedEquivariant(c_out, group=group, order=order, bias_initializer="random_normal")
    rng = np.random.default_rng(0)
    first, second = rng.normal(size=c_in), rng.normal(size=c_in)
    x0 = np.concatenate([np.tile(first, (m, 1)), np.tile(second, (m, 1))]).astype("float32")
    jac = jacobian_at(layer, x0)  # columns (i in 0..2m-1, c)
    # columns (i, c) -> (pair k = i mod m, channel h·C_in + c with h = i // m)
    order_cols = [(i % m, (i // m) * c_in + c) for i in range(2 * m) for c in range(c_in)]
    perm = np.argsort([k * 2 * c_in + ch for k, ch in order_cols])
    jac_pairs = jac[:, perm]
    d = decompose(symmetric(m))
    assert np.linalg.norm(jac_pairs) > 0.1
    assert off_block_norm(d, jac_pairs, 2 * c_in, c_out) < 1e-5
    if order == "quadratic":  # negative control, as above
        generic = rng.normal(size=(2 * m, c_in)).astype("float32")
        assert off_block_norm(d, jacobian_at(layer, generic)[:, perm], 2 * c_in, c_out) > 1e-2
