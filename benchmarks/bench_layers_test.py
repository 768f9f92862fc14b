"""`make bench-layers` stays runnable: a tiny grid prints every row and the goal lines (no timing asserts)."""

import pytest

from benchmarks import bench_layers as bench


def test_tiny_grid_prints_a_row_per_layer_and_the_goals(capsys):
    kinds = ["linear", "tied-linear", "quadratic-r16", "tied-quadratic", "folded-quadratic"]  # every code path
    bench.main(["--sizes", "4", "--channels", "2", "--repeats", "1", "--goal-repeats", "1", "--tied-cap", "1e4",
                "--norm-shape", "2", "8", "4", "--kinds", *kinds])
    out = capsys.readouterr().out
    rows = [line.split() for line in out.splitlines() if line[:4].strip() == "2" and line.split()[1] == "4"]
    assert [row[2] for row in rows] == ["dense", *kinds], "Dense, the floor of every ratio, is always run"
    assert all(row[3] not in ("OOM", ">cap", "skip>mem") for row in rows), "nothing is that big at N=4, C=2"
    assert all(row[4].endswith("x") for row in rows)
    # The goal steps (N = 1024 and 4096) are measured whatever the grid.
    for goal in ("linear / Dense at N=1024", "quadratic t(4096) / t(1024)"):
        assert any(goal in line and (line.endswith(": met") or line.endswith("NOT met")) for line in out.splitlines())
    assert "tied linear at N=1024: not run" in out  # 1024^2 * 4 entries > --tied-cap
    norm = [line for line in out.splitlines() if "SetNormalization / BatchNormalization" in line]
    assert len(norm) == 3 and all(line.endswith(("met", "NOT met")) for line in norm)
    assert "(2, 8, 4), unmasked" in norm[0] and "masked" in norm[1] and "PointNet" in norm[2]


def test_bad_arguments_are_refused_with_the_reason(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "0"])
    assert "--sizes must be positive" in capsys.readouterr().err
