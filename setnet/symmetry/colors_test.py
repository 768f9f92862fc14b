"""Tests of the orbit colors against the null-space dimension and the corrected hand derivations."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.symmetry import (
    FoldError, PermGroup, colors, count, cyclic, dihedral, dimension, fold, fold_pairs, halves_fold,
    hyperoctahedral, parse, restrict, seed_fold_group, symmetric,
)
from setnet.symmetry.colors import tuple_moves


@st.composite
def random_groups(draw, max_degree=6):
    n = draw(st.integers(1, max_degree))
    k = draw(st.integers(0, 3))
    gens = [np.array(draw(st.permutations(list(range(n))))) for _ in range(k)]
    return PermGroup(np.array(gens, dtype=np.int64).reshape(k, n), "random")


def _invariant_under_generators(group_in, group_out, kind, c):
    group_out = group_out or group_in
    for gy, gx in zip(group_out.generators, group_in.generators):
        axes = {"bias": [gy], "linear": [gy, gx]}.get(kind, [gy, gx, gx])
        move = tuple_moves(axes, c.shape)
        np.testing.assert_array_equal(c.reshape(-1)[move], c.reshape(-1))
    if kind == "quadratic-sym":
        np.testing.assert_array_equal(c, c.transpose(0, 2, 1))


@settings(max_examples=60, deadline=None)
@given(random_groups(), st.sampled_from(["linear", "quadratic", "quadratic-sym", "bias"]))
def test_colors_are_invariant_and_count_matches_null_space(group, kind):
    c = colors(group, kind=kind)
    _invariant_under_generators(group, None, kind, c)
    assert count(group, kind=kind) == dimension(group, kind=kind)


@settings(max_examples=30, deadline=None)
@given(random_groups(max_degree=4), st.sampled_from(["linear", "quadratic", "quadratic-sym"]))
def test_product_and_union_actions_match_null_space(group, kind):
    for g in (parse("C2") if kind != "linear" else parse("S3"),):
        for combined in (__import__("setnet.symmetry", fromlist=["product"]).product(group, g),
                         __import__("setnet.symmetry", fromlist=["disjoint_union"]).disjoint_union(group, g)):
            if combined.degree ** (3 if kind != "linear" else 2) > 4096:
                continue
            c = colors(combined, kind=kind)
            _invariant_under_generators(combined, None, kind, c)
            assert int(c.max()) + 1 == dimension(combined, kind=kind)


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 5), st.sampled_from(["Fold", "Hyp"]), st.sampled_from(["linear", "quadratic", "quadratic-sym", "bias"]))
def test_fold_actions_match_null_space(m, name, kind):
    g = fold_pairs(m) if name == "Fold" else hyperoctahedral(m)
    gy = fold(g, halves_fold(m))
    c = colors(g, gy, kind)
    _invariant_under_generators(g, gy, kind, c)
    assert int(c.max()) + 1 == dimension(g, gy, kind)


def test_colors_are_constant_on_random_group_elements():
    rng = np.random.default_rng(0)
    g = parse("D5*C3")
    c = colors(g, kind="linear")
    for _ in range(10):
        p = g.random_element(rng)
        np.testing.assert_array_equal(c[np.ix_(p, p)], c)


@pytest.mark.parametrize("n", range(2, 9))
def test_symmetric_linear_is_alpha_identity_plus_beta_ones(n):
    c = colors(symmetric(n))
    np.testing.assert_array_equal(c, 1 - np.eye(n, dtype=int))


@pytest.mark.parametrize("n, quad, sym", [(1, 1, 1), (2, 4, 3), (3, 5, 4), (4, 5, 4), (5, 5, 4), (6, 5, 4), (12, 5, 4)])
def test_symmetric_quadratic_counts_are_bell_numbers_not_the_hand_derived_table(n, quad, sym):
    # An earlier hand derivation gave 6, 9, 11, 13, 15 for N = 2..6; the orbit count is the
    # number of set partitions of {out, in1, in2} into at most N blocks.
    assert count(symmetric(n), kind="quadratic") == quad
    assert count(symmetric(n), kind="quadratic-sym") == sym
    if n <= 6:
        assert dimension(symmetric(n), kind="quadratic") == quad
        assert dimension(symmetric(n), kind="quadratic-sym") == sym


def test_symmetric_quadratic_orbit_order_is_canonical():
    c = colors(symmetric(4), kind="quadratic")
    assert [c[0, 0, 0], c[0, 0, 1], c[0, 1, 0], c[0, 1, 1], c[0, 1, 2]] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("n", range(3, 10))
def test_cyclic_and_dihedral_formulas(n):
    assert count(cyclic(n)) == n
    assert count(cyclic(n), kind="quadratic") == n * n
    assert count(cyclic(n), kind="quadratic-sym") == n * (n + 1) // 2
    assert count(dihedral(n)) == n // 2 + 1
    assert count(dihedral(n), kind="quadratic") == ((n * n + 1) // 2 if n % 2 else (n * n + 4) // 2)
    assert count(dihedral(n), kind="quadratic-sym") == ((n + 1) ** 2 // 4 if n % 2 else (n * n + 2 * n + 4) // 4)


def test_hand_derived_folded_pattern_comes_from_s3_on_the_first_half():
    g = seed_fold_group(3)
    c = colors(g, restrict(g, range(3)))
    seed = np.array([[5, 1, 1, 2, 3, 4], [1, 5, 1, 2, 3, 4], [1, 1, 5, 2, 3, 4]])
    # Same partition of the entries, whatever the color names.
    assert len({(a, b) for a, b in zip(c.ravel(), seed.ravel())}) == len(np.unique(seed)) == len(np.unique(c))
    with pytest.raises(FoldError, match="does not respect the fold"):
        fold(g, halves_fold(3))


@pytest.mark.parametrize("m", range(2, 7))
def test_principled_fold_groups(m):
    pairs, hyp = fold_pairs(m), hyperoctahedral(m)
    cp = colors(pairs, fold(pairs, halves_fold(m)))
    ch = colors(hyp, fold(hyp, halves_fold(m)))
    block = 1 - np.eye(m, dtype=int)
    np.testing.assert_array_equal(cp, np.concatenate([block, block + 2], axis=1))
    np.testing.assert_array_equal(ch, np.concatenate([block, block], axis=1))
    if m >= 3:
        assert count(pairs, fold(pairs, halves_fold(m)), "quadratic") == 20
        assert count(pairs, fold(pairs, halves_fold(m)), "quadratic-sym") == 13
        assert count(hyp, fold(hyp, halves_fold(m)), "quadratic") == 7
        assert count(hyp, fold(hyp, halves_fold(m)), "quadratic-sym") == 6


def test_group_orders():
    assert symmetric(5).order() == 120
    assert dihedral(6).order() == 12
    assert hyperoctahedral(3).order() == 48
    assert parse("C4*C4").order() == 16
    assert parse("S3+C4").order() == 24


def test_output_action_must_pair_generators():
    with pytest.raises(ValueError, match="generators"):
        colors(symmetric(3), cyclic(3))
