"""The isotypic projectors: a partition of the identity into G-invariant, pairwise non-isomorphic pieces.

Every closed form is checked against the numerical decomposition, and every
decomposition against checks that do not use how it was built: equivariant
matrices from the orbit colors are block-diagonal (Schur), each simple copy
is irreducible (its G-endomorphisms, from a null space, have only scalar
symmetric elements), and the dimensions add up to the number of colors.
"""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.spectral import cyclic_fourier, decompose, torus_fourier
from setnet.symmetry import PermGroup, colors, count, cyclic, parse, permutation_matrix, symmetric

NAMED = ["C1", "C2", "C5", "C8", "C12", "C3*C4", "C4*C4", "C2*C2*C3", "S1", "S2", "S4", "S7", "D5", "D6",
         "S3+C4", "Hyp3", "Fold3", "D4*C3", "C3+C3", "Q8", "C3xC4", "C2^3"]


@st.composite
def random_groups(draw, max_degree=9):
    n = draw(st.integers(1, max_degree))
    k = draw(st.integers(0, 3))
    gens = [np.array(draw(st.permutations(list(range(n))))) for _ in range(k)]
    return PermGroup(np.array(gens, dtype=np.int64).reshape(k, n), "random")


def check_partition(d):
    """Projectors: symmetric, idempotent, mutually orthogonal, summing to I, commuting with the generators."""
    n = d.degree
    projs = d.projectors()
    np.testing.assert_allclose(projs.sum(axis=0), np.eye(n), atol=1e-9)
    for i, p in enumerate(projs):
        np.testing.assert_allclose(p, p.T, atol=1e-9)
        np.testing.assert_allclose(p @ p, p, atol=1e-9)
        for j, q in enumerate(projs):
            if i != j:
                np.testing.assert_allclose(p @ q, 0, atol=1e-9)
        for g in d.group.generators:
            pg = permutation_matrix(g)
            np.testing.assert_allclose(pg @ p, p @ pg, atol=1e-9)
    np.testing.assert_allclose(d.basis().T @ d.basis(), np.eye(n), atol=1e-9)


def check_schur_and_irreducible(d, rng):
    """Equivariant matrices (constant on the orbit colors) never connect two components, and each
    simple copy is irreducible: every symmetric G-endomorphism of it is a multiple of the identity."""
    c = colors(d.group)
    projs = d.projectors()
    for _ in range(2):
        w = rng.standard_normal(int(c.max()) + 1)[c]
        for i, p in enumerate(projs):
            for j, q in enumerate(projs):
                if i != j:
                    np.testing.assert_allclose(q @ w @ p, 0, atol=1e-8)
    # sum over components of m^2 * dim End(rho) = dim of the commutant = number of colors
    assert sum(comp.multiplicity ** 2 * comp.endo_dim for comp in d.components) == count(d.group)
    for comp in d.components:
        for u in comp.copies:
            rho = [u.T @ permutation_matrix(g) @ u for g in d.group.generators]
            endo = _endomorphisms(rho, u.shape[1])
            assert len(endo) == comp.endo_dim
            for e in endo:
                s = e + e.T
                np.testing.assert_allclose(s, np.trace(s) / s.shape[0] * np.eye(s.shape[0]), atol=1e-8)


def _endomorphisms(rho, d):
    """A basis of {E : E rho(g) = rho(g) E for every generator}, by the null space of the constraints."""
    if not rho:
        return [m.reshape(d, d) for m in np.eye(d * d)]
    a = np.concatenate([np.kron(r, np.eye(d)) - np.kron(np.eye(d), r.T) for r in rho])
    _, s, vt = np.linalg.svd(a)
    rank = int((s > 1e-9).sum())
    return [v.reshape(d, d) for v in vt[rank:]]


@pytest.mark.parametrize("spec", NAMED)
def test_named_groups(spec):
    d = decompose(spec)
    check_partition(d)
    check_schur_and_irreducible(d, np.random.default_rng(0))


@settings(max_examples=60, deadline=None)
@given(random_groups())
def test_random_groups_numerical(group):
    d = decompose(group)
    check_partition(d)
    check_schur_and_irreducible(d, np.random.default_rng(1))
    # The trivial component comes first and has one copy per orbit of X.
    assert d.components[0].irrep_dim == 1
    assert d.components[0].multiplicity == count(group, kind="bias")


@pytest.mark.parametrize("spec", ["C1", "C2", "C3", "C6", "C9", "C16", "C3*C4", "C4*C4", "C2*C6", "C2*C2*C3",
                                  "S2", "S3", "S6"])
def test_closed_forms_match_numerical(spec):
    fast = decompose(spec)
    slow = decompose(spec, method="numerical")
    assert fast.method != "numerical"
    assert len(fast) == len(slow)
    for comp in fast.components:
        dist = [np.abs(comp.projector - other.projector).max() for other in slow.components]
        match = slow.components[int(np.argmin(dist))]
        assert min(dist) < 1e-8
        assert (match.irrep_dim, match.multiplicity, match.endo_dim) == (comp.irrep_dim, comp.multiplicity,
                                                                         comp.endo_dim)


def test_cyclic_labels_and_representation():
    d = cyclic_fourier(8)
    assert d.labels == ["k=0", "k=1", "k=2", "k=3", "k=4"]
    assert [c.dim for c in d.components] == [1, 2, 2, 2, 1]
    shift = np.roll(np.arange(8), -1)  # i -> i + 1
    for k in range(5):
        r = d.representation(k, shift)
        theta = 2 * np.pi * k / 8
        if r.shape == (2, 2):  # rotation by 2 pi k / n: the generator's eigenvalues are exp(+-2 pi i k / n)
            np.testing.assert_allclose(sorted(np.linalg.eigvals(r).imag), sorted([-np.sin(theta), np.sin(theta)]),
                                       atol=1e-12)
        np.testing.assert_allclose(np.trace(r), (2 if r.shape[0] == 2 else 1) * np.cos(theta), atol=1e-12)


def test_torus_components_are_frequency_pairs():
    d = torus_fourier((4, 4))
    assert len(d) == 10  # 16 frequencies: 4 self-conjugate + 12 in 6 pairs
    assert d.labels[0] == "k=(0,0)"
    assert {"k=(1,1)", "k=(1,-1)", "k=(2,2)"} <= set(d.labels)
    assert d.group.name == "C4*C4"


def test_decompose_detects_structure_not_names():
    # A group called C4*C4 whose generators are something else must not get the Fourier closed form.
    fake = PermGroup(symmetric(16).generators, "C4*C4")
    assert decompose(fake).method == "two-transitive"
    # Rotation by 3 generates C_8 too; rotation by 2 only a subgroup.
    assert decompose(PermGroup(np.roll(np.arange(8), 3)[None], "r3")).method == "cyclic-fourier"
    sub = decompose(PermGroup(np.roll(np.arange(8), 2)[None], "r2"))
    assert sub.method == "numerical"
    assert sub.components[0].multiplicity == 2
    assert decompose(parse("D7")).method == "numerical"
    assert decompose(cyclic(5)).method == "cyclic-fourier"


def test_energy_and_filter():
    rng = np.random.default_rng(0)
    d = decompose("C6")
    x = rng.standard_normal((3, 6, 2))
    e = d.energy(x, axis=1)
    assert e.shape == (4,)
    np.testing.assert_allclose(e.sum(), (x ** 2).sum())
    low = d.filter(x, ["k=0", 1], axis=1)
    np.testing.assert_allclose(d.energy(low, axis=1), [e[0], e[1], 0, 0], atol=1e-12)
    np.testing.assert_allclose(d.filter(x, range(4), axis=1), x, atol=1e-12)
    with pytest.raises(ValueError, match="acts on 6 points"):
        d.energy(x, axis=-1)
    with pytest.raises(KeyError, match="k=0, k=1"):
        d.index("k=9")


def test_bad_input():
    with pytest.raises(ValueError, match="unknown method"):
        decompose("C4", method="fast")
    with pytest.raises(ValueError, match="unknown group"):
        decompose("Q4")
