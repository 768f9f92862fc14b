import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.gsnn.classify import classify, enumerate_architectures
from setnet.gsnn.groups import parse_group
from setnet.gsnn.morphisms import find_conjugator, grow, morphisms


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(["C6", "C8", "D4", "D6", "Q8", "C2+C4", "C2+C2+C2", "B2", "D4+rot3"]),
       st.integers(0, 10**6))
def test_every_morphism_preserves_the_function(spec, seed):
    g = parse_group(spec)
    pairs = classify(g)
    ms = morphisms(enumerate_architectures(g))
    rng = np.random.default_rng(seed)
    m = ms[rng.integers(len(ms))]
    src, tgt = pairs[m.source], pairs[m.target]
    c, a, b = rng.normal(size=src.dim), rng.normal(), rng.normal()
    c2, a2, b2 = grow(src, tgt, c, a, b, m)
    assert tgt.width > src.width
    x = rng.normal(size=(16, g.degree))
    assert np.allclose(tgt(x, c2, a2, b2), src(x, c, a, b))
    # The grown weight lies in the target's weight space, with the target's sign character.
    w = tgt.weight(c2)
    for h in tgt.H:
        assert np.allclose(g.elements[h] @ w, tgt.chi(h) * w)


def test_morphism_conditions_are_necessary():
    # Wherever no map is found, no conjugate of the source weight space sits inside the target's.
    for spec in ["C6", "D4", "Q8"]:
        g = parse_group(spec)
        archs = enumerate_architectures(g)
        for s in archs:
            for t in archs:
                if s is t or find_conjugator(s, t) is not None:
                    continue
                rng = np.random.default_rng(0)
                w = s.weight(rng.normal(size=s.dim))
                for c in range(g.order):
                    w2 = g.elements[c].T @ w
                    inside = np.allclose(t.basis.T @ (t.basis @ w2), w2)
                    assert not inside, f"{spec}: #{s.index} -> #{t.index} missed via element {c}"


def test_hasse_diagrams_match_the_authors_figures():
    # plot_morphism.py in dagrawa2/gsnn_classification_code draws 7 covering maps for C_6 and 23 for D_6.
    for spec, n in [("C6", 7), ("D6", 23)]:
        ms = morphisms(enumerate_architectures(parse_group(spec)))
        assert sum(m.covering for m in ms) == n
    # C_6 edge by edge: (H, |K|) of source -> target, labelled by |H| and type.
    g = parse_group("C6")
    pairs = classify(g)
    edges = {((len(pairs[m.source].H), pairs[m.source].kind), (len(pairs[m.target].H), pairs[m.target].kind))
             for m in morphisms(enumerate_architectures(g)) if m.covering}
    assert edges == {((6, 1), (3, 1)), ((6, 1), (2, 1)), ((6, 2), (3, 1)), ((6, 2), (2, 2)),
                     ((3, 1), (1, 1)), ((2, 1), (1, 1)), ((2, 2), (1, 1))}


def test_composition_equals_the_direct_map():
    g = parse_group("D6")
    pairs = classify(g)
    ms = morphisms(enumerate_architectures(g))
    by_edge = {(m.source, m.target): m for m in ms}
    rng = np.random.default_rng(1)
    x = rng.normal(size=(10, 6))
    checked = 0
    for (s, m1), (m2, t) in [(e1, e2) for e1 in by_edge for e2 in by_edge if e1[1] == e2[0]]:
        c, a, b = rng.normal(size=pairs[s].dim), rng.normal(), rng.normal()
        c1, a1, b1 = grow(pairs[s], pairs[m1], c, a, b)
        c2, a2, b2 = grow(pairs[m1], pairs[t], c1, a1, b1)
        c3, a3, b3 = grow(pairs[s], pairs[t], c, a, b)
        assert np.isclose(a2, a3) and np.allclose(pairs[t](x, c2, a2, b2), pairs[t](x, c3, a3, b3))
        checked += 1
    assert checked > 10


def test_grow_refuses_impossible_maps():
    g = parse_group("C6")
    pairs = enumerate_architectures(g)
    regular = next(p for p in pairs if len(p.H) == 1)
    top = next(p for p in pairs if len(p.H) == 6 and p.kind == 1)
    with pytest.raises(ValueError, match="no inclusion map"):
        grow(regular, top, np.ones(regular.dim))
    with pytest.raises(ValueError, match="different groups"):
        find_conjugator(top, enumerate_architectures(parse_group("C3"))[0])
