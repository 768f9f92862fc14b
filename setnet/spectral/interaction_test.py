"""Interaction graphs: measured against the harmonic rule and the kernel rule; the PL kernel condition."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.spectral import decompose
from setnet.spectral.interaction import (
    ACTIVATIONS, cyclic_rule, kernel_bound, kernel_rule, measure_graph, pl_map_fit,
)
from setnet.symmetry import PermGroup, symmetric


@pytest.mark.parametrize("activation", ["relu", "abs"])
@pytest.mark.parametrize("n", range(1, 17))
def test_measured_equals_predicted_for_cyclic_groups(n, activation):
    measured = measure_graph(f"C{n}", activation)
    assert measured.edges == cyclic_rule(n, activation).edges
    # The closed forms of the rule (docs/spectral.md): abs: gcd(n, 2k) | j; relu: that, or j = k.
    expected = {(k, j) for k in range(n // 2 + 1) for j in range(n // 2 + 1)
                if j % math.gcd(n, 2 * k) == 0 or (activation == "relu" and j == k)}
    assert set(measured.edges) == expected
    # The tolerance (1e-9) sits far from both sides: real edges carry >= 1e-6 of the energy, others ~1e-30.
    on, off = measured.gap()
    assert on > 1e-6 and off < 1e-20


@pytest.mark.parametrize("activation", ["leaky_relu", "hard_tanh", "relu6", "elu", "tanh", "sigmoid", "softplus",
                                        "gelu", "square", "identity"])
@pytest.mark.parametrize("n", [5, 8, 12, 16])
def test_other_activations_follow_their_harmonics(n, activation):
    assert measure_graph(f"C{n}", activation).edges == cyclic_rule(n, activation).edges


@pytest.mark.parametrize("n", range(1, 13))
def test_harmonic_rule_agrees_with_kernel_rule(n):
    # Two derivations: harmonics of sigma(a cos s), and kernels of C_n x {+-1} computed from group elements.
    for activation in ["relu", "abs", "tanh", "elu", "sigmoid"]:
        assert cyclic_rule(n, activation).edges == kernel_rule(f"C{n}", activation).edges
    # An activation with every harmonic reaches exactly what the kernel condition allows.
    assert cyclic_rule(n, "elu").edges == kernel_bound(n)
    assert set(cyclic_rule(n, "relu").edges) <= set(kernel_bound(n))


def test_linear_maps_do_not_interact():
    for spec in ["C8", "D5", "S4"]:
        d = decompose(spec)
        assert measure_graph(d, "identity").edges == [(i, i) for i in range(len(d))]


@pytest.mark.parametrize("spec", ["D5", "D6", "S4", "C3*C4", "C4*C4", "S3+C4", "Hyp3"])
@pytest.mark.parametrize("activation", ["relu", "abs", "tanh"])
def test_kernel_rule_for_other_groups(spec, activation):
    # For these groups the bound from kernels is attained by pointwise activations.
    assert measure_graph(spec, activation).edges == kernel_rule(spec, activation).edges


@st.composite
def random_groups(draw, max_degree=6):
    n = draw(st.integers(1, max_degree))
    k = draw(st.integers(0, 2))
    gens = [np.array(draw(st.permutations(list(range(n))))) for _ in range(k)]
    return PermGroup(np.array(gens, dtype=np.int64).reshape(k, n), "random")


@settings(max_examples=25, deadline=None)
@given(random_groups(), st.sampled_from(["relu", "abs", "tanh"]))
def test_measured_graph_respects_the_kernel_bound(group, activation):
    measured = measure_graph(group, activation, samples=12)
    assert set(measured.edges) <= set(kernel_rule(measured.decomposition, activation).edges)


def test_paper_c8_graph():
    # The C_8 picture of Gibson, Tubbenhauer & Williamson (arXiv:2408.00949): information flows from
    # the faithful representations (k = 1, 3) to larger kernels and never back;
    # with ReLU, k=1 reaches 0, 1, 2, 4 and nothing reaches k = 1 or 3 from elsewhere.
    g = measure_graph("C8", "relu").to_json()
    assert g["group"] == "C8" and g["activation"] == "relu"
    assert [j for k, j in g["edges"] if k == 1] == [0, 1, 2, 4]
    assert {k for k, j in g["edges"] if j in (1, 3)} == {1, 3}


def pairs_action_of_s4():
    """S_4 on its 6 unordered pairs: R^6 = trivial + standard (faithful) + 2-dim (kernel: the Klein group)."""
    pairs = [(a, b) for a in range(4) for b in range(a + 1, 4)]
    index = {p: i for i, p in enumerate(pairs)}
    gens = [[index[tuple(sorted((g[a], g[b])))] for a, b in pairs] for g in symmetric(4).generators]
    return PermGroup(np.array(gens), "S4-on-pairs")


def check_fit(fit):
    if fit.kernel_condition:
        # a nonzero PL map with no equivariance defect, also on points it was not fitted on
        assert fit.defect < 1e-9 and fit.holdout_defect < 1e-9
    else:
        # no map at all comes closer than the bound, and the best PL map stays away from zero
        assert fit.bound > 0 and fit.defect >= fit.bound - 1e-9


@pytest.mark.parametrize("spec", ["C6", "C8", "D4"])
def test_pl_kernel_condition_both_directions(spec):
    d = decompose(spec)
    fits = [pl_map_fit(d, i, j) for i in range(len(d)) for j in range(len(d))]
    for fit in fits:
        check_fit(fit)
    assert {f.kernel_condition for f in fits} == {True, False}
    if spec.startswith("C"):
        assert sorted((f.source, f.target) for f in fits if f.kernel_condition) == kernel_bound(int(spec[1:]))


def test_s4_pairs_kernels():
    d = decompose(pairs_action_of_s4())
    assert sorted(c.dim for c in d.components) == [1, 2, 3]
    two = next(i for i, c in enumerate(d.components) if c.dim == 2)
    three = next(i for i, c in enumerate(d.components) if c.dim == 3)
    forth = pl_map_fit(d, three, two)  # faithful -> a representation of S_4 / Klein = S_3: a PL map exists
    back = pl_map_fit(d, two, three)  # the Klein group acts trivially on the source only: none exists
    assert forth.kernel_condition and not back.kernel_condition
    assert back.bound == pytest.approx(2 * 4 / 24)
    check_fit(forth)
    check_fit(back)


def test_bad_activation():
    with pytest.raises(ValueError, match="unknown activation 'swish'"):
        measure_graph("C4", "swish")
    assert set(ACTIVATIONS) >= {"relu", "abs"}
