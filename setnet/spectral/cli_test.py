"""The command line: `python -m setnet.spectral graph --group C<n> --activation ... --json`."""

import json
import subprocess
import sys

import pytest

from setnet.spectral.__main__ import main
from setnet.spectral.interaction import cyclic_rule


@pytest.mark.parametrize("n, activation", [(8, "relu"), (8, "abs"), (12, "relu"), (7, "abs")])
def test_graph_json(capsys, n, activation):
    assert main(["graph", "--group", f"C{n}", "--activation", activation, "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"group", "activation", "edges"}
    assert out["group"] == f"C{n}" and out["activation"] == activation
    assert out["edges"] == [list(e) for e in cyclic_rule(n, activation).edges]
    assert all(0 <= k <= n // 2 and 0 <= j <= n // 2 for k, j in out["edges"])
    # every frequency 0 .. n/2 is a node: each one reaches the constants (even part of relu and abs)
    assert {k for k, _ in out["edges"]} == set(range(n // 2 + 1))
    assert all([k, 0] in out["edges"] for k in range(n // 2 + 1))


def test_graph_text_and_predicted(capsys):
    assert main(["graph", "--group", "C6", "--activation", "abs"]) == 0
    out = capsys.readouterr().out
    assert "measured == predicted (harmonic rule)" in out and "k=1 -> k=0, k=2" in out
    assert main(["graph", "--group", "D5", "--activation", "relu", "--predicted", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["edges"]


def test_graph_png_subprocess(tmp_path):
    png = tmp_path / "c8.png"
    proc = subprocess.run([sys.executable, "-m", "setnet.spectral", "graph", "--group", "C8", "--activation",
                           "relu", "--json", "--png", str(png)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["edges"][:3] == [[0, 0], [1, 0], [1, 1]]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_decompose_and_pl_maps(capsys):
    assert main(["decompose", "--group", "C4*C4"]) == 0
    assert "k=(1,-1)" in capsys.readouterr().out
    assert main(["pl-maps", "--group", "C4"]) == 0
    out = capsys.readouterr().out
    assert "*2.00[2.00]" in out  # trivial -> k=1: ker = C_4, no map, the bound is 2|C_4|/|C_4|


@pytest.mark.parametrize("argv, message", [
    (["graph", "--group", "Q9"], "unknown group Q9"),
    (["graph", "--group", "Z8"], "unknown group 'Z8'"),
    (["decompose", "--group", "rot8"], "matrix group for setnet.gsnn"),
    (["graph", "--group", "C8", "--activation", "swish"], "unknown activation"),
    (["graph", "--group", "C8", "--tol", "2"], "--tol"),
    (["pl-maps", "--group", "S9"], "more than"),
])
def test_bad_input(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err
