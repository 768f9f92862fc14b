import numpy as np
import pytest

from setnet.gsnn.classify import classify
from setnet.gsnn.groups import parse_group
from setnet.gsnn.plot import draw_morphisms, draw_patterns, tie_pattern


def test_tie_patterns_show_equal_opposite_and_zero_weights():
    c6 = classify(parse_group("C6"))
    assert tie_pattern(c6[0]).tolist() == [[1] * 6]  # sum of the inputs
    assert tie_pattern(c6[1]).tolist() == [[1, -1, 1, -1, 1, -1]]  # (C6, C3): alternating signs
    regular = tie_pattern(c6[5])
    assert (regular > 0).all() and len(np.unique(regular)) == 6  # a circulant, no sign constraints
    d4 = classify(parse_group("D4"))
    pat = tie_pattern(d4[7])  # (Klein group, one reflection): w = (a, 0, -a, 0) and its quarter turn
    assert sorted(np.unique(pat).tolist()) == [-1, 0, 1]
    assert (pat == 0).sum() == 4


def test_drawing_refuses_nothing_to_draw(tmp_path):
    with pytest.raises(ValueError, match="nothing to draw"):
        draw_patterns([], str(tmp_path / "x.png"))
    with pytest.raises(ValueError, match="nothing to draw"):
        draw_morphisms([], [], str(tmp_path / "x.png"))
