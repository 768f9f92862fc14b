import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.gsnn.classify import classify, count, enumerate_architectures
from setnet.gsnn.groups import FiniteGroup, parse_group
from setnet.gsnn.groups_test import brute_pair_classes

GROUPS = ["C2", "C3", "C4", "C6", "C8", "C2+C2", "C2+C4", "C2+C2+C2", "C2xC2", "C2xC4", "D3", "D4", "Q8", "D5",
          "D6", "rot4", "rot5", "B2"]


def orbit_function(group: FiniteGroup, K, w, a, b):
    """a * sum over t in G/K of ReLU(<t w, x> + b): every G-SNN, written from the definitions alone."""
    reps, seen = [], set()
    for g in range(group.order):
        if g not in seen:
            reps.append(g)
            seen |= set(group.table[g, list(K)].tolist())
    rows = group.elements[reps] @ w
    return lambda x: a * np.maximum(x @ rows.T + b, 0.0).sum(axis=-1)


def slow_count(group: FiniteGroup, paper_condition=False) -> dict:
    """Counts from every pair (H, K) (not class representatives) and explicit element tests."""
    out = {1: 0, 2: 0}
    for cls in brute_pair_classes(group):
        h, k = min(cls)
        hs, ks = set(h), set(k)
        # V from the character: chi(h) = +1 on K, -1 on H \ K; projector = mean of chi(h) h.
        proj = sum((1 if x in ks else -1) * group.elements[x] for x in h) / len(h)
        vals, vecs = np.linalg.eigh(proj)
        basis = vecs[:, vals > 0.5].T
        if basis.shape[0] == 0:
            continue
        m = group.projection(k) - (len(h) // len(k) - 1) * group.projection(h)
        stab = {g for g in range(group.order) if np.allclose(group.elements[g] @ m, m)}
        ok = stab == ks
        if not paper_condition:
            w = np.random.default_rng(1).normal(size=basis.shape[0]) @ basis  # a generic weight
            line = {g for g in range(group.order)
                    if np.allclose(group.elements[g] @ w, w) or np.allclose(group.elements[g] @ w, -w)}
            ok = ok and line == hs
        out[1 if hs == ks else 2] += ok
    return {"type1": out[1], "type2": out[2], "total": out[1] + out[2]}


@pytest.mark.parametrize("spec", GROUPS)
def test_counts_against_slow_reference(spec):
    g = parse_group(spec)
    assert count(g) == slow_count(g)
    assert count(g, paper_condition=True) == slow_count(g, paper_condition=True)


def test_counts_the_authors_script_implies():
    # dagrawa2/gsnn_classification_code, plot_morphism.py draws 6 architectures for C_6 and 14 for D_6.
    assert count(parse_group("C6"))["total"] == 6
    assert count(parse_group("D6"))["total"] == 14


@pytest.mark.parametrize("spec", GROUPS)
def test_weight_space_definition(spec):
    g = parse_group(spec)
    for p in classify(g):
        # dim V is the multiplicity of chi in the restriction to H: <chi, tr>_H.
        expected = round(sum(p.chi(h) * np.trace(g.elements[h]) for h in p.H) / len(p.H))
        assert p.dim == expected
        for h in p.H:
            assert np.allclose(g.elements[h] @ p.basis.T, p.chi(h) * p.basis.T)
        assert np.allclose(p.basis @ p.basis.T, np.eye(p.dim))
        assert p.width == g.order // len(p.H) == len(p.cosets)


@pytest.mark.parametrize("spec", ["C6", "D4", "Q8", "C2+C4", "rot4", "B2"])
def test_signed_rep_is_a_homomorphism(spec):
    g = parse_group(spec)
    for p in classify(g):
        reps = [p.signed_rep(x) for x in range(g.order)]
        for r in reps:
            assert set(np.abs(r).sum(axis=0).tolist()) == {1.0} and set(np.unique(r)) <= {-1.0, 0.0, 1.0}
        for x in range(g.order):
            for y in range(g.order):
                assert np.array_equal(reps[g.table[x, y]], reps[x] @ reps[y])
        chi_on_h = [reps[h][0, 0] for h in p.H]  # the neuron of the coset H itself carries chi
        assert chi_on_h == [p.chi(h) for h in p.H]


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["C6", "D4", "D6", "Q8", "C2+C2+C2", "rot6", "B2"]), st.integers(0, 10**6))
def test_preactivations_transform_by_the_signed_rep(spec, seed):
    g = parse_group(spec)
    rng = np.random.default_rng(seed)
    p = classify(g)[rng.integers(len(classify(g)))]
    if p.dim == 0:
        return
    x = rng.normal(size=(5, g.degree))
    el = int(rng.integers(g.order))
    w = p.weight_matrix(rng.normal(size=p.dim))
    z, z_moved = x @ w.T, (x @ g.elements[el].T) @ w.T
    assert np.allclose(z_moved, z @ p.signed_rep(el).T)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(GROUPS + ["D4+rot3", "S4"]), st.integers(0, 10**6))
def test_every_architecture_is_invariant(spec, seed):
    g = parse_group(spec)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(8, g.degree))
    for p in enumerate_architectures(g):
        c, a, b = rng.normal(size=p.dim), rng.normal(), rng.normal()
        f = p(x, c, a, b)
        for gen in g.generators:
            assert np.allclose(p(x @ g.elements[gen].T, c, a, b), f)
        el = int(rng.integers(g.order))
        assert np.allclose(p(x @ g.elements[el].T, c, a, b), f)
        # The signed-neuron form equals the ReLU orbit sum over G/K.
        assert np.allclose(orbit_function(g, p.K, p.weight(c), a, b)(x), f)


def test_stabiliser_is_the_papers_matrix_condition():
    for spec in ["D4", "D6", "Q8", "rot4"]:
        g = parse_group(spec)
        for p in classify(g):
            tau = len(p.H) // len(p.K) - 1
            m = g.projection(p.K) - tau * g.projection(p.H)
            assert set(p.stabiliser) == {x for x in range(g.order) if np.allclose(g.elements[x] @ m, m)}
            assert p.paper_condition == (p.dim > 0 and len(p.stabiliser) == len(p.K))


def test_rejected_pairs_duplicate_the_pair_they_name():
    rng = np.random.default_rng(0)
    for spec in ["D4", "D6", "rot4", "B2", "C2+C4"]:
        g = parse_group(spec)
        pairs = classify(g)
        for p in pairs:
            if p.ok or p.dim == 0:
                continue
            assert p.duplicates is not None and pairs[p.duplicates].ok, p.reason
            q = pairs[p.duplicates]
            c, a, b = rng.normal(size=p.dim), rng.normal(), rng.normal()
            # Find the conjugate of p.weight(c) that lies in q's weight space and compare the functions.
            xs = rng.normal(size=(20, g.degree))
            f = orbit_function(g, p.K, p.weight(c), a, b)(xs)
            for el in range(g.order):
                w = g.elements[el] @ p.weight(c)
                if np.allclose(q.basis.T @ (q.basis @ w), w):
                    n = len(q.K) / len(p.K)  # each ReLU of q appears [K':K] times in p's orbit sum
                    assert np.allclose(q(xs, q.basis @ w, a * n, b), f)
                    break
            else:
                raise AssertionError(f"{spec} pair #{p.index} has no weight in pair #{q.index}")


def test_minus_identity_makes_type1_pairs_duplicates():
    for n in (2, 4, 6):
        g = parse_group(f"rot{n}")
        assert count(g) == {"type1": 0, "type2": 1, "total": 1}
        assert count(g, paper_condition=True) == {"type1": 1, "type2": 1, "total": 2}
    for n in (1, 3, 5, 7):
        assert count(parse_group(f"rot{n}")) == {"type1": 1, "type2": 0, "total": 1}
    # Permutation groups never negate Fix(H) (it contains the all-ones vector): both tests agree.
    for spec in ["C8", "D6", "Q8", "C2+C2+C2", "S4"]:
        g = parse_group(spec)
        assert count(g) == count(g, paper_condition=True)


def test_normaliser_conjugate_pairs_are_one_architecture():
    g = parse_group("D4")
    assert count(g) == {"type1": 5, "type2": 5, "total": 10}
    assert count(g, up_to_normaliser=False) == {"type1": 5, "type2": 7, "total": 12}
    rng = np.random.default_rng(3)
    x = rng.normal(size=(30, 4))
    for p in enumerate_architectures(g):
        for n in g.normaliser(p.H):
            k2 = g.conjugate(n, p.K)
            if k2 == p.K:
                continue
            # (H, nKn^-1) with weight n.w computes exactly what (H, K) computes with w.
            c, a, b = rng.normal(size=p.dim), rng.normal(), rng.normal()
            w2 = g.elements[n] @ p.weight(c)
            assert np.allclose(orbit_function(g, k2, w2, a, b)(x), p(x, c, a, b))


def kink_pair(group, f, rng, pairs):
    """Read the pair (H, K) back from a G-SNN function alone, through one of its kinks.

    Bisect a random segment to a point where the gradient jumps; the jump is a
    multiple of one neuron's weight v; H and K are the stabilisers of the line
    R v and of v.
    """
    d = group.degree

    def grad(x, h=1e-6):
        e = np.eye(d) * h
        return (f(x + e) - f(x - e)) / (2 * h)

    for _ in range(20):
        p0, p1 = rng.normal(size=d) * 2, rng.normal(size=d) * 2
        g0, g1 = grad(p0[None]), grad(p1[None])
        if np.allclose(g0, g1):
            continue
        lo, hi = 0.0, 1.0
        for _ in range(45):
            mid = (lo + hi) / 2
            if np.allclose(grad((p0 + mid * (p1 - p0))[None]), g0, atol=1e-7):
                lo = mid
            else:
                hi = mid
        t = (lo + hi) / 2
        step = 1e-4 / np.linalg.norm(p1 - p0)
        jump = grad((p0 + (t + step) * (p1 - p0))[None]) - grad((p0 + (t - step) * (p1 - p0))[None])
        v = jump / np.linalg.norm(jump)
        moved = group.elements @ v
        s = tuple(np.flatnonzero(np.abs(moved - v).max(axis=1) < 1e-5).tolist())
        line = tuple(np.flatnonzero(np.minimum(np.abs(moved - v).max(axis=1), np.abs(moved + v).max(axis=1)) < 1e-5)
                     .tolist())
        h, k = group.canonical_pair(line, s)
        return next(p.index for p in pairs if (p.H, p.K) == (h, k))
    raise AssertionError("no kink found")


@pytest.mark.parametrize("spec", ["C4", "C6", "D4", "D6", "Q8", "C2+C4", "rot4", "B2"])
def test_inequivalent_pairs_compute_different_functions(spec):
    # The paper's last claim, on random weights: the function alone determines its pair,
    # so architectures of inequivalent pairs cannot compute the same nonzero function.
    g = parse_group(spec)
    pairs = classify(g)
    rng = np.random.default_rng(7)
    for p in enumerate_architectures(g):
        c = rng.normal(size=p.dim)
        c, a, b = c / np.linalg.norm(c), rng.uniform(0.5, 2.0) * rng.choice([-1, 1]), rng.uniform(-0.5, 0.5)
        assert kink_pair(g, lambda x, p=p, c=c, a=a, b=b: p(x, c, a, b), rng, pairs) == p.index
    # Zero weights: every architecture computes the same (constant) function.
    x = rng.normal(size=(5, g.degree))
    vals = {float(np.round(p(x, np.zeros(p.dim), 1.0, 0.0).max(), 12)) for p in enumerate_architectures(g)}
    assert vals == {0.0}


def test_the_claim_needs_generic_weights():
    # A type 1 network of K whose weight happens to lie in V(H, chi) equals the type 2 network of (H, K):
    # the claim is about generic (e.g. random) weights; it fails on this measure-zero set.
    g = parse_group("C6")
    pairs = classify(g)
    t2 = next(p for p in pairs if p.ok and p.kind == 2 and len(p.K) == 1)  # (<r^3>, 1)
    t1 = next(p for p in pairs if p.ok and len(p.H) == 1)  # the regular architecture (1, 1)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 6))
    c = rng.normal(size=t2.dim)
    assert np.allclose(t1(x, t1.basis @ t2.weight(c), 1.0, 0.3), t2(x, c, 1.0, 0.3))
