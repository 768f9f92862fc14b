"""`make bench-prepare` stays runnable: tiny tables print a row each and the memory line (no timing asserts)."""

import pyarrow.parquet as pq
import pytest

from benchmarks import bench_prepare as bench


def test_table_has_the_points_asked_for_and_sets_span_shards(tmp_path):
    folder, sets = bench.write_table(tmp_path / "t", 1000)
    shards = [pq.read_table(p) for p in sorted(folder.iterdir())]
    assert len(shards) == bench.SHARDS and sum(t.num_rows for t in shards) == 1000
    ids = [set(t.column("sid").to_pylist()) for t in shards]
    assert len(set().union(*ids)) == sets
    assert any(a & b for a, b in zip(ids, ids[1:])), "a set spans two shards"


@pytest.mark.slow
def test_tiny_sizes_print_a_row_each(capsys):
    rows = bench.main(["--sizes", "300", "600"])
    out = capsys.readouterr().out
    assert [r["points"] for r in rows] == [300, 600]
    assert all(r["sets"] >= 2 and r["peak_mb"] > 0 for r in rows)
    assert "peak memory above the warm-up:" in out


def test_bad_sizes_are_refused(capsys):
    with pytest.raises(SystemExit):
        bench.main(["--sizes", "10"])
    assert "--sizes must be at least 200 points" in capsys.readouterr().err
