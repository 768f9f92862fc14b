"""One group grammar everywhere: every spelling of a spec gives the same group in setnet.symmetry,
setnet.spectral and setnet.gsnn, and their command lines answer alike."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.gsnn import parse_group
from setnet.gsnn.__main__ import main as gsnn_main
from setnet.spectral import decompose
from setnet.spectral.__main__ import main as spectral_main
from setnet.symmetry import GroupSpecError, build, parse, parse_spec
from setnet.symmetry.__main__ import main as symmetry_main
from setnet.symmetry.groups import degree

# Small enough that any product of three stays within gsnn's element list (order <= 512).
ATOMS = ["S1", "S2", "S3", "C1", "C2", "C3", "C4", "D3", "D4", "Q8", "Fold1", "Fold2", "Hyp1", "Hyp2"]

trees = st.recursive(
    st.sampled_from(ATOMS).map(parse_spec),
    lambda inner: st.tuples(st.sampled_from("*+"), inner, inner),
    max_leaves=3,
).filter(lambda t: degree(t) <= 16)


@st.composite
def spell(draw, tree):
    """Some way of writing ``tree``: * or x, A^2 for A*A, optional parentheses and spaces."""
    def pad(text):
        return draw(st.sampled_from(["", " "])) + text + draw(st.sampled_from(["", " "]))

    if tree[0] not in ("*", "+"):
        text = f"{tree[0]}{tree[1]}"
        return f"({pad(text)})" if draw(st.booleans()) else text
    left, right = (f"({pad(draw(spell(t)))})" if t[0] in ("*", "+") else draw(spell(t)) for t in tree[1:])
    if tree[0] == "*" and tree[1] == tree[2] and draw(st.booleans()):
        return f"{left}^2"
    return left + pad(draw(st.sampled_from(["*", "x"])) if tree[0] == "*" else "+") + right


def plain(tree):
    if tree[0] not in ("*", "+"):
        return f"{tree[0]}{tree[1]}"
    return f"({plain(tree[1])}){tree[0]}({plain(tree[2])})"


def as_permutations(finite_group):
    # Column i of a permutation matrix has its 1 in row g[i].
    return {tuple(np.argmax(m, axis=0).tolist()) for m in finite_group.elements}


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_every_spelling_is_the_same_group_in_every_package(data):
    tree = data.draw(trees)
    text = data.draw(spell(tree))
    reference = build(tree)
    group = parse(text)
    np.testing.assert_array_equal(group.generators, reference.generators)
    elements = {tuple(p) for p in reference.elements().tolist()}
    gsnn_group = parse_group(text)
    assert gsnn_group.degree == reference.degree and gsnn_group.order == len(elements)
    assert as_permutations(gsnn_group) == elements
    decomp, canonical = decompose(text), decompose(plain(tree))
    np.testing.assert_array_equal(decomp.group.generators, reference.generators)
    assert (decomp.method, decomp.labels) == (canonical.method, canonical.labels)
    assert sum(c.dim for c in decomp.components) == reference.degree


@pytest.mark.parametrize("spellings, order, points", [
    (["C2xC4", "C2*C4", "(C2)x(C4)", "C2 x C4"], 8, 8),
    (["C2^3", "C2xC2xC2", "C2*(C2*C2)", "(C2^2)xC2"], 8, 8),
    (["S3+C4", "(S3)+(C4)", "S3 + C4"], 24, 7),
    (["C2+C3xC2", "C2+(C3*C2)"], 12, 8),
])
def test_known_spellings(spellings, order, points):
    groups = [parse(s) for s in spellings]
    assert {g.degree for g in groups} == {points}
    assert len({frozenset(map(tuple, g.elements().tolist())) for g in groups}) == 1
    assert groups[0].order() == order
    assert {parse_group(s).order for s in spellings} == {order}


def test_product_and_sum_differ_where_they_should():
    # The same abstract group C2 x C2 acting on 4 points in two ways: the regular action and two swaps.
    regular, swaps = parse("C2xC2"), parse("C2+C2")
    assert regular.order() == swaps.order() == 4
    assert {tuple(p) for p in regular.elements().tolist()} != {tuple(p) for p in swaps.elements().tolist()}
    assert parse_group("C2+C4").degree == 6 and parse_group("C2xC4").degree == 8


@pytest.mark.parametrize("spec", ["Q8", "D4", "S5", "C6", "Fold3", "Hyp3", "C2xC4", "S3+C4", "C2^3"])
def test_permutation_specs_parse_everywhere(spec):
    group = parse(spec)
    assert sum(c.dim for c in decompose(spec).components) == group.degree
    if group.order() <= 2000:
        assert as_permutations(parse_group(spec)) == {tuple(p) for p in group.elements().tolist()}


@pytest.mark.parametrize("spec, message", [
    ("X4", "unknown group 'X4'"), ("C2x", "expected a group at the end"), ("C2^0", "power"), ("(S3", "missing ')'"),
    ("D2", "D<n> needs n >= 3"), ("Q6", "quaternion group is Q8"), ("C4**C4", "expected a group at"),
    ("S3 C4", "unexpected"), ("", "empty group spec"), ("C2^30", "more than the 1048576"),
])
def test_one_error_for_a_bad_spec_in_every_entry_point(spec, message, capsys):
    for entry in (parse_spec, parse, parse_group, decompose):
        with pytest.raises(GroupSpecError, match=message.replace("(", r"\(").replace(")", r"\)")):
            entry(spec)
    argvs = [(symmetry_main, ["count", "--group", spec]), (gsnn_main, ["count", "--group", spec]),
             (spectral_main, ["decompose", "--group", spec])]
    for main, argv in argvs:
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and err.count("\n") == 1 and message in err
        if message.startswith(("unknown", "expected", "power", "missing")):
            assert "A*B or AxB" in err  # the grammar is listed


def test_matrix_groups_are_gsnn_only(capsys):
    assert parse_group("rot3xD4").degree == 8 and parse_group("B2+rot4").degree == 4
    for entry in (parse, decompose):
        with pytest.raises(GroupSpecError, match="rot3 rotates R\\^2 and permutes no points"):
            entry("rot3xD4")
    assert symmetry_main(["count", "--group", "B3"]) == 2
    assert "matrix group for setnet.gsnn" in capsys.readouterr().err


def test_command_lines_agree_across_spellings(capsys):
    outs = []
    for spec in ("C2xC4", "C2*C4", "(C2)x(C4)"):
        assert symmetry_main(["count", "--group", spec, "--map", "quadratic"]) == 0
        assert gsnn_main(["count", "--group", spec, "--json"]) == 0
        assert spectral_main(["decompose", "--group", spec]) == 0
        out = capsys.readouterr().out.splitlines()
        outs.append((out[0], json.loads(out[1]), out[3:]))
    assert outs[0] == outs[1] == outs[2]
    assert outs[0][0] == str(8 * 8 * 8 // 8)  # C2 x C4 acts freely on 8 points: |X|^3 / |G| triples


def test_too_much_memory_is_refused_at_once(capsys):
    assert symmetry_main(["count", "--group", "S2000", "--map", "quadratic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "GiB" in err and "more than the limit of 8.0 GiB" in err
    assert symmetry_main(["count", "--group", "S5", "--map", "quadratic", "--max-memory", "1KiB"]) == 2
    assert "limit of 1.0 KiB" in capsys.readouterr().err
    assert symmetry_main(["count", "--group", "S5", "--map", "quadratic", "--max-memory", "lots"]) == 2
    assert "cannot read the memory size 'lots'" in capsys.readouterr().err
    assert symmetry_main(["count", "--group", "S5", "--map", "quadratic", "--max-memory", "1MiB"]) == 0
    assert capsys.readouterr().out.strip() == "5"
