import json
import subprocess
import sys

import pytest

from setnet.gsnn.__main__ import main


@pytest.mark.parametrize("spec, expected", [
    ("C6", {"type1": 4, "type2": 2, "total": 6}),
    ("D4", {"type1": 5, "type2": 5, "total": 10}),
    ("Q8", {"type1": 6, "type2": 7, "total": 13}),
    ("rot4", {"type1": 0, "type2": 1, "total": 1}),
])
def test_count_json_is_exact(capsys, spec, expected):
    assert main(["count", "--group", spec, "--json"]) == 0
    out = capsys.readouterr().out
    assert out == json.dumps(expected) + "\n"
    assert list(json.loads(out)) == ["type1", "type2", "total"]


def test_count_options(capsys):
    assert main(["count", "--group", "rot4", "--json", "--paper-condition"]) == 0
    assert json.loads(capsys.readouterr().out) == {"type1": 1, "type2": 1, "total": 2}
    assert main(["count", "--group", "D4", "--json", "--no-normaliser"]) == 0
    assert json.loads(capsys.readouterr().out)["total"] == 12
    assert main(["count", "--group", "D4"]) == 0
    assert "5 type 1 + 5 type 2 = 10" in capsys.readouterr().out


def test_cli_process_is_light_and_writes_png(tmp_path):
    png, hasse = tmp_path / "c6.png", tmp_path / "c6_maps.png"
    code = ("import sys, runpy; sys.argv = ['gsnn', 'list', '--group', 'C6', '--png', %r, '--morphisms',"
            " '--morphisms-png', %r]"
            "\ntry: runpy.run_module('setnet.gsnn', run_name='__main__')\nexcept SystemExit as e: rc = e.code"
            "\nprint('KERAS' if 'keras' in sys.modules else 'NO-KERAS'); sys.exit(rc)") % (str(png), str(hasse))
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("NO-KERAS")
    assert "4 type 1 + 2 type 2 = 6 architectures" in proc.stdout
    assert "#1 -> #4" in proc.stdout  # (C6, C3) grows into (<r^3>, 1)
    assert png.read_bytes()[:8] == hasse.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_list_all_gives_reasons(capsys):
    assert main(["list", "--group", "rot4", "--all"]) == 0
    out = capsys.readouterr().out
    assert "weight space is zero" in out and "negates every admissible weight" in out
    assert main(["list", "--group", "D4", "--all"]) == 0
    assert "stabiliser condition fails" in capsys.readouterr().out


def test_table(capsys):
    assert main(["table", "--groups", "C2,D4"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[2].startswith("| C2 | 2 | R^2 | 2 | 1 | 3 |") and "5 + 7 = 12" in lines[3]


@pytest.mark.parametrize("argv, message", [
    (["count", "--group", "Z5", "--json"], "unknown group 'Z5'"),
    (["count", "--group", "C2x", "--json"], "expected a group at the end"),
    (["list", "--group", "S2000"], "stops at R^1024"),
    (["list", "--group", "D2"], "needs n >= 3"),
    (["table", "--groups", "C2,,D4"], "empty group spec"),
])
def test_bad_input(capsys, argv, message):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


def test_unwritable_png(capsys, tmp_path):
    assert main(["list", "--group", "C3", "--png", str(tmp_path / "missing" / "x.png")]) == 2
    assert "cannot write" in capsys.readouterr().err
