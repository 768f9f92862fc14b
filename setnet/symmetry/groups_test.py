import subprocess
import sys

import numpy as np
import pytest

from setnet.symmetry import PermGroup, parse
from setnet.symmetry.__main__ import main


@pytest.mark.parametrize("spec, degree", [
    ("S4", 4), ("C6", 6), ("D5", 5), ("C4*C4", 16), ("S3+C4", 7), ("Fold3", 6), ("Hyp3", 6),
    ("(S2+C3)*D3", 15), ("C2*C3+S2", 8),
])
def test_parse(spec, degree):
    assert parse(spec).degree == degree


@pytest.mark.parametrize("spec", ["", "X4", "S", "S0", "D2", "C4**C4", "(S3", "S3)", "S3 C4", "3"])
def test_parse_errors_are_clear(spec):
    with pytest.raises(ValueError, match="spec|S<n>|integer|D<n>"):
        parse(spec)


def test_not_a_permutation():
    with pytest.raises(ValueError, match="not a permutation"):
        PermGroup(np.array([[0, 0, 1]]), "bad")


@pytest.mark.parametrize("spec, map_name, expected", [
    ("S5", "linear", 2), ("S5", "quadratic", 5), ("S5", "quadratic-sym", 4), ("S5", "bias", 1),
    ("C4*C4", "linear", 16), ("S3+C4", "linear", 2 + 4 + 2), ("D6", "linear", 4),
    ("Fold3", "folded-linear", 4), ("Hyp3", "folded-linear", 2), ("Fold3", "folded-quadratic", 20),
    ("Hyp3", "folded-quadratic-sym", 6), ("Fold3", "folded-quadratic-sym", 13),
])
def test_cli_count(capsys, spec, map_name, expected):
    assert main(["count", "--group", spec, "--map", map_name]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == str(expected)


def test_cli_bad_input(capsys):
    assert main(["count", "--group", "Q7", "--map", "linear"]) == 2
    assert "unknown group" in capsys.readouterr().err
    assert main(["count", "--group", "C5", "--map", "folded-linear"]) == 2
    assert main(["count", "--group", "C6", "--map", "folded-linear"]) == 0  # C6 respects i -> i mod 3
    assert main(["count", "--group", "S6", "--map", "folded-linear"]) == 2  # S6 does not
    assert main(["count", "--group", "S3", "--map", "cubic"]) == 2


def test_cli_show_png(tmp_path):
    out = tmp_path / "fold.png"
    proc = subprocess.run([sys.executable, "-m", "setnet.symmetry", "show", "--group", "Fold3",
                           "--map", "folded-linear", "--png", str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert proc.stdout.strip().splitlines()[-1] == "4"
