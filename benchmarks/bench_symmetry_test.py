"""`make bench-symmetry` stays runnable: tiny cases print their rows; bad cases are refused in one line."""

import pytest

from benchmarks import bench_symmetry


def test_tiny_cases_print_a_row_each_checked_against_the_null_space(capsys):
    assert bench_symmetry.main(["--cases", "S4:quadratic", "C6:linear", "Hyp4:folded-linear", "--repeat", "1"]) == 0
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    assert [(r[0], r[1]) for r in rows] == [("S4", "quadratic"), ("C6", "linear"), ("Hyp4", "folded-linear")]
    assert [int(r[2]) for r in rows] == [64, 36, 32]  # |Y| x |X| (x |X|): 4*4*4, 6*6, 4*8
    # S_4 on (out, in1, in2): the 5 set partitions of three labels; C_6: one color per shift.
    assert [int(r[3]) for r in rows[:2]] == [5, 6]
    assert all(r[6].endswith("x") for r in rows), "every tiny case also runs the null-space method"


@pytest.mark.parametrize("argv, message", [
    (["--cases", "S4"], "is not GROUP:MAP"),
    (["--cases", "S4:cubic"], "unknown map 'cubic'"),
    (["--repeat", "0"], "--repeat must be at least 1"),
])
def test_bad_arguments_are_refused_in_one_line(capsys, argv, message):
    with pytest.raises(SystemExit) as stop:
        bench_symmetry.main(argv)
    assert stop.value.code == 2
    assert message in capsys.readouterr().err


def test_a_bad_group_is_one_line_and_exit_2(capsys):
    assert bench_symmetry.main(["--cases", "Q9:linear"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: Q9:linear:") and "\n" not in err
