import doctest
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.gsnn.groups import (
    FiniteGroup,
    direct_sum,
    hyperoctahedral_signed,
    parse_group,
    quaternion_regular,
    rotation,
)
from setnet.symmetry import cyclic, dihedral, permutation_matrix, symmetric


def brute_subgroups(g: FiniteGroup) -> set:
    """Every subset containing the identity and closed under the Cayley table (slow reference)."""
    n = g.order
    out = set()
    for bits in itertools.product([0, 1], repeat=n - 1):
        s = [0] + [i + 1 for i, b in enumerate(bits) if b]
        if n % len(s):
            continue  # Lagrange
        if set(g.table[np.ix_(s, s)].ravel().tolist()) <= set(s):
            out.add(tuple(s))
    return out


def brute_pair_classes(g: FiniteGroup) -> set:
    subs = brute_subgroups(g)
    pairs = {(h, k) for h in subs for k in subs if set(k) <= set(h) and len(h) // len(k) in (1, 2)}
    classes = set()
    for h, k in pairs:
        classes.add(frozenset((g.conjugate(c, h), g.conjugate(c, k)) for c in range(g.order)))
    return classes


SMALL = ["C2", "C4", "C6", "D3", "D4", "Q8", "C2+C2", "C2+C4", "C2+C2+C2", "rot4", "B2", "D6"]


@pytest.mark.parametrize("spec, order, degree", [
    ("C5", 5, 5), ("D5", 10, 5), ("D6", 12, 6), ("Q8", 8, 8), ("C2+C2", 4, 4), ("C2+C4", 8, 6),
    ("C2+C2+C2", 8, 6), ("rot7", 7, 2), ("B3", 48, 3), ("S4", 24, 4), ("D4+rot3", 24, 6), ("C1", 1, 1),
    ("C2xC4", 8, 8), ("C2^3", 8, 8), ("rot3xD4", 24, 8), ("rot2xrot2", 2, 4), ("Hyp2", 8, 4), ("Fold3", 6, 6),
])
def test_orders_and_degrees(spec, order, degree):
    g = parse_group(spec)
    assert (g.order, g.degree) == (order, degree)


@pytest.mark.parametrize("perm", [cyclic(6), dihedral(5), symmetric(4)])
def test_closure_matches_symmetry_engine(perm):
    g = FiniteGroup.from_perm_group(perm)
    engine = {tuple(p) for p in perm.elements()}
    ours = {tuple(np.argmax(m, axis=0)) for m in g.elements}  # column i has its 1 in row p[i]
    assert ours == engine


@pytest.mark.parametrize("spec", SMALL + ["S4", "B3"])
def test_cayley_table_and_inverses(spec):
    g = parse_group(spec)
    e = g.elements
    for i in range(g.order):
        assert np.allclose(e[g.table[i]], e[i] @ e)
    assert np.allclose(e[g.inverse] @ e, np.eye(g.degree))
    assert len({g._key(m) for m in e}) == g.order


@pytest.mark.parametrize("spec", SMALL)
def test_subgroups_against_brute_force(spec):
    g = parse_group(spec)
    assert set(g.subgroups()) == brute_subgroups(g)
    for cls in g.subgroup_classes():
        assert set(cls) == g.conjugacy_class(cls[0])
        assert cls[0] == min(cls)


@pytest.mark.parametrize("spec, n_subgroups, n_classes", [
    ("D4", 10, 8), ("D6", 16, 10), ("Q8", 6, 6), ("S4", 30, 11), ("C2+C2+C2", 16, 16), ("B3", 98, 33),
])
def test_known_subgroup_numbers(spec, n_subgroups, n_classes):
    g = parse_group(spec)
    assert (len(g.subgroups()), len(g.subgroup_classes())) == (n_subgroups, n_classes)


@pytest.mark.parametrize("spec", SMALL)
def test_index2_subgroups_against_brute_force(spec):
    g = parse_group(spec)
    subs = g.subgroups()
    for h in subs:
        expected = {k for k in subs if set(k) <= set(h) and 2 * len(k) == len(h)}
        assert set(g.index2_subgroups(h)) == expected


@pytest.mark.parametrize("spec", SMALL)
def test_pairs_are_one_per_simultaneous_conjugacy_class(spec):
    g = parse_group(spec)
    classes = brute_pair_classes(g)
    reps = g.pairs()
    assert len(reps) == len(classes)
    assert {next(c for c in classes if p in c) for p in reps} == classes
    for h, k in reps:
        assert g.canonical_pair(h, k) == (h, k)
        c = g.order - 1
        assert g.canonical_pair(g.conjugate(c, h), g.conjugate(c, k)) == (h, k)


def test_normaliser_and_cosets():
    g = parse_group("D4")
    for h in g.subgroups():
        norm = g.normaliser(h)
        assert all(g.conjugate(n, h) == h for n in norm)
        assert len(g.conjugacy_class(h)) * len(norm) == g.order
        reps = g.left_cosets(h)
        assert reps[0] == 0 and len(reps) * len(h) == g.order
        cosets = [frozenset(g.table[t, list(h)].tolist()) for t in reps]
        assert len(set(cosets)) == len(reps)


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(["D4", "Q8", "C2+C4", "B2", "D6"]), st.integers(0, 10**6))
def test_random_conjugates_are_subgroups(spec, seed):
    g = parse_group(spec)
    rng = np.random.default_rng(seed)
    h = g.subgroups()[rng.integers(len(g.subgroups()))]
    c = int(rng.integers(g.order))
    conj = g.conjugate(c, h)
    assert g.is_subgroup(conj) and len(conj) == len(h)
    assert g.generate(list(h)) == tuple(h)
    for x in h:  # the matrices agree with the indices
        assert np.allclose(g.elements[c] @ g.elements[x] @ g.elements[c].T, g.elements[g.table[g.table[c, x],
                                                                                           g.inverse[c]]])


def test_special_groups():
    q = quaternion_regular()
    assert q.order == 8 and len([x for x in range(8) if q.element_order(x) == 4]) == 6  # +-i, +-j, +-k
    assert [q.element_order(x) for x in range(8)].count(2) == 1  # only -1, unlike D4
    assert (q.table != q.table.T).any()  # non-abelian
    r = rotation(6)
    assert r.order == 6 and any(np.allclose(m, -np.eye(2)) for m in r.elements)
    assert hyperoctahedral_signed(3).order == 48
    assert direct_sum(parse_group("C2"), parse_group("C3")).order == 6


@pytest.mark.parametrize("spec, message", [
    ("", "empty group spec"), ("X9", "unknown group 'X9'"), ("D2", "needs n >= 3"), ("Q6", "quaternion group is Q8"),
    ("C2x", "expected a group at the end"), ("rot0", "n >= 1"), ("C2^0", "power"), ("C0", "n >= 1"),
    ("C10^4", r"stops at R\^1024"),
])
def test_bad_specs_are_clear(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_group(spec)


def test_bad_generators_are_clear():
    with pytest.raises(ValueError, match="not orthogonal"):
        FiniteGroup([[[2.0, 0], [0, 1]]])
    with pytest.raises(ValueError, match="shape"):
        FiniteGroup(np.eye(3))
    with pytest.raises(ValueError, match="more than 10 elements"):
        FiniteGroup([permutation_matrix(np.roll(np.arange(11), 1))], limit=10)
    with pytest.raises(ValueError, match="GiB"):
        FiniteGroup([permutation_matrix(np.roll(np.arange(64), 1))], max_memory=10**6)
    with pytest.raises(ValueError, match="degree"):
        FiniteGroup([])


def test_docstring_examples_run():
    import setnet.gsnn
    from setnet.gsnn import groups

    for module in (groups, setnet.gsnn):
        result = doctest.testmod(module)
        assert result.attempted >= 1 and result.failed == 0
