"""set_table tests: TFDS's builder harness on `dummy_data/points/` (two Parquet shards, sets spanning
both), sets spanning batches and buckets, regression, CSV, the task rule, every kind of bad data
through `python -m pipelines.prepare` (one line naming the file and row or set, exit 2, nothing
left in the data dir), and the same dataset from Apache Beam's DirectRunner."""

import pathlib

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets import testing as tfds_testing

from pipelines.datasets import DataFormatError
from pipelines.datasets.set_table import set_table_dataset_builder as st, tables
from pipelines.prepare import main as prepare_main
from tests.support import set_data as sd

DUMMY = pathlib.Path(st.Builder.code_path).parent / "dummy_data"


class SetTableTfdsTest(tfds_testing.DatasetBuilderTestCase):
    DATASET_CLASS = st.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [st.make_config(DUMMY / "points", set_column="sid", target_column="label",
                                                   test_fraction=0.5)]
    SPLITS = {"train": 7, "test": 5}


def test_dummy_data_is_what_the_writer_produces(tmp_path):
    sd.write_table_dummy(tmp_path)
    for written in sorted((tmp_path / "points").iterdir()):
        committed = DUMMY / "points" / written.name
        # Parquet footers name the writing library's version, so compare contents, not bytes.
        assert pq.read_table(written).equals(pq.read_table(committed)), written.name
    assert len(list((DUMMY / "points").iterdir())) == 2


def _expected_sets(table):
    """{set id: (points in row order, label)} straight from an in-memory table."""
    sid = np.array(table.column("sid").to_pylist())
    values = np.stack([table.column(c).to_numpy() for c in ("x", "y", "z")], axis=1).astype(np.float32)
    labels = table.column("label").to_pylist()
    return {s: (values[sid == s], labels[int(np.flatnonzero(sid == s)[0])]) for s in np.unique(sid)}


def _prepared(builder):
    out = {}
    for split in builder.info.splits:
        for ex in tfds.as_numpy(builder.as_dataset(split=split)):
            out[ex["set_id"].decode()] = (ex["points"], builder.info.features["label"].int2str(ex["label"]), split)
    return out


def test_sets_spanning_shards_batches_and_buckets_come_back_whole(tmp_path, monkeypatch):
    table = sd.point_table(sets=40, max_points=30)
    root = sd.write_parquet_shards(tmp_path / "t", table, shards=3, row_group_size=50)
    monkeypatch.setattr(tables, "BATCH_ROWS", 37)  # many batches, each set split over several
    builder = st.Builder(data_dir=str(tmp_path / "tfds"), path=root, set_column="sid", target_column="label",
                         bucket_points=100)
    builder.download_and_prepare()
    got, expected = _prepared(builder), _expected_sets(table)
    assert sorted(got) == sorted(expected)
    for sid, (points, label) in expected.items():
        np.testing.assert_array_equal(got[sid][0], points)
        assert got[sid][1] == label
    meta = builder.info.metadata
    assert meta["task"] == "classification" and meta["num_features"] == 3
    assert meta["feature_names"] == ["x", "y", "z"] and meta["spatial_axes"] == [0, 1, 2]
    assert meta["up_axis"] == 1 and meta["class_names"] == ["a", "b", "c"]
    assert sum(sum(c.values()) for c in meta["class_counts"].values()) == 40
    sizes = [len(p) for p, _ in expected.values()]
    all_sizes = {k: v for s in meta["set_sizes"].values() for k, v in s.items()}
    assert min(s["min"] for s in meta["set_sizes"].values()) == min(sizes)
    assert max(s["max"] for s in meta["set_sizes"].values()) == max(sizes) and all_sizes
    # No spill files are left behind.
    assert [p.name for p in (tmp_path / "tfds" / "set_table").iterdir()] == [builder.builder_config.name]


def test_reloaded_builder_reads_labels_and_metadata_from_disk(tmp_path):
    kwargs = dict(path=DUMMY / "points", set_column="sid", target_column="label", test_fraction=0.5)
    st.Builder(data_dir=str(tmp_path), **kwargs).download_and_prepare()
    again = st.Builder(data_dir=str(tmp_path), **kwargs)
    assert again.is_prepared()
    assert again.info.features["label"].names == ["a", "b", "c"]
    assert again.info.metadata["class_counts"]["test"] == {"a": 2, "b": 1, "c": 2}


def test_regression_vector_targets_from_csv(tmp_path, capsys):
    rng = np.random.default_rng(0)
    sid = np.repeat([f"s{i}" for i in range(10)], 4)
    t1, t2 = np.repeat(rng.normal(size=10), 4), np.repeat(np.arange(10.0), 4)
    xyz = rng.normal(size=(40, 2))
    lines = ["sid,u,v,t1,t2"] + [f"{s},{a},{b},{c},{d}" for s, (a, b), c, d in zip(sid, xyz, t1, t2)]
    path = tmp_path / "reg.csv"
    path.write_text("\n".join(lines) + "\n")
    argv = ["set_table", "--path", str(path), "--set-column", "sid", "--target-column", "t1", "t2",
            "--data-dir", str(tmp_path / "tfds"), "--test-fraction", "0"]
    assert prepare_main(argv) == 0
    out = capsys.readouterr().out
    assert "task: regression; target range:" in out and "t2: 0 .. 9" in out
    assert "features per point (F): 2 (u, v); xyz: none" in out
    builder = st.Builder(data_dir=str(tmp_path / "tfds"), path=path, set_column="sid", target_column=["t1", "t2"],
                         test_fraction=0.0)
    assert builder.info.features["target"].shape == (2,)
    for ex in tfds.as_numpy(builder.as_dataset(split="train")):
        i = int(ex["set_id"].decode()[1:])
        np.testing.assert_allclose(ex["target"], [t1[4 * i], t2[4 * i]], rtol=1e-6)
        assert ex["points"].shape == (4, 2)


@pytest.mark.parametrize("column,task,expected", [
    (pa.array([1.5, 1.5, 2.5]), "auto", "regression"),
    (pa.array(["u", "u", "v"]), "auto", "classification"),
    (pa.array([3, 3, 10]), "auto", "classification"),
    (pa.array([3, 3, 10]), "regression", "regression"),
])
def test_task_rule(tmp_path, column, task, expected):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"sid": ["a", "a", "b"], "y": column, "x": [1.0, 2.0, 3.0]}), path)
    spec = tables.TableSpec.open(path, set_column="sid", target_columns=["y"], task=task)
    assert spec.task == expected


def test_float_target_as_classes_is_refused(tmp_path):
    path = tmp_path / "t.parquet"
    pq.write_table(pa.table({"sid": ["a"], "y": [1.5], "x": [1.0]}), path)
    with pytest.raises(DataFormatError, match="target column 'y' is double; a class column holds strings"):
        tables.TableSpec.open(path, set_column="sid", target_columns=["y"], task="classification")


def test_integer_classes_sort_numerically():
    assert st.class_order(["10", "2", "1"]) == ["1", "2", "10"]
    assert st.class_order(["b", "10", "a"]) == ["10", "a", "b"]


def test_split_column_and_subsample(tmp_path):
    big = 30
    table = pa.table({"sid": ["a"] * big + ["b"] * 3 + ["c"] * 2,
                      "label": ["u"] * big + ["v"] * 3 + ["u"] * 2,
                      "part": ["train"] * (big + 3) + ["test"] * 2,
                      "x": np.arange(big + 5, dtype=np.float64)})
    pq.write_table(table, tmp_path / "t.parquet")
    builds = []
    for run in range(2):
        b = st.Builder(data_dir=str(tmp_path / f"tfds{run}"), path=tmp_path / "t.parquet", set_column="sid",
                       target_column="label", split_column="part", max_points=10)
        b.download_and_prepare()
        assert {s: v.num_examples for s, v in b.info.splits.items()} == {"train": 2, "test": 1}
        assert b.info.metadata["subsampled"] == 1
        builds.append(_prepared(b))
    points = builds[0]["a"][0][:, 0]
    assert len(points) == 10 and np.all(np.diff(points) > 0)  # a subset, in row order
    np.testing.assert_array_equal(points, builds[1]["a"][0][:, 0])


# --- bad data -------------------------------------------------------------------------------------

def _table(**changes):
    cols = {"sid": ["a", "a", "b", "b", "c", "c"], "label": ["u", "u", "v", "v", "u", "u"],
            "x": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0], "y": [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]}
    cols.update(changes)
    return pa.table(cols)


def _with(values, row, value):
    out = list(values)
    out[row] = value
    return out


def _two_shards(root, second):
    root.mkdir()
    pq.write_table(_table(), root / "part-0.parquet")
    pq.write_table(second, root / "part-1.parquet")
    return root


X = _table().column("x").to_pylist()
BAD = {
    "nan": (lambda d: _write(d, _table(x=_with(X, 3, float("nan")))), "t.parquet row 4 (set 'b'): feature 'x' is nan"),
    "inf": (lambda d: _write(d, _table(x=_with(X, 0, float("inf")))), "t.parquet row 1 (set 'a'): feature 'x' is inf"),
    "float32_overflow": (lambda d: _write(d, _table(x=_with(X, 5, 1e300))),
                         "t.parquet row 6 (set 'c'): feature 'x' is 1e+300"),
    "null": (lambda d: _write(d, _table(x=_with(X, 2, None))), "t.parquet row 3: column 'x' is empty (null)"),
    "other_f": (lambda d: _two_shards(d / "s", _table().append_column("w", pa.array([0.0] * 6))),
                "part-1.parquet: feature columns x, y, w differ from"),
    "non_numeric": (lambda d: _write(d, _table(y=["p"] * 6)), "t.parquet: feature column 'y' is string, not numeric"),
    "non_numeric_csv": (lambda d: _csv(d, "sid,label,x\na,u,1\na,u,oops\nb,v,2\n"), "t.csv row 2: column 'x' is 'oops', not a number"),
    "ragged_csv": (lambda d: _csv(d, "sid,label,x\na,u,1\na,u\nb,v,2\n"), "t.csv row 2: 2 values, expected 3"),
    "missing_column": (lambda d: _write(d, _table().drop(["label"])), "t.parquet: no target column 'label'"),
    "target_differs": (lambda d: _write(d, _table(label=["u", "w", "v", "v", "u", "u"])),
                       "t.parquet row 2: set 'a' has target 'w' here but 'u' at"),
    "test_only_class": (lambda d: _write(d, _table(part=["train"] * 4 + ["test"] * 2, label=["u", "u", "v", "v", "w", "w"])),
                        "class 'w' has sets in the test split but none in train"),
    "too_many": (lambda d: _write(d, _table()), "t.parquet row 1: set 'a' has 2 points, more than max_points=1"),
    "truncated": (lambda d: _truncated(d), "t.parquet: cannot be read"),
    "no_rows": (lambda d: _write(d, _table().slice(0, 0)), "the table has no rows"),
    "missing_file": (lambda d: d / "nope.parquet", "nope.parquet: no such file or folder"),
    "not_a_table": (lambda d: _text(d, "notes.txt", "hello"), "notes.txt: not a .parquet, .pq or .csv file"),
    "bad_split_name": (lambda d: _write(d, _table(part=["train"] * 4 + ["te st"] * 2)),
                       "split 'te st' of set 'c' is not a split name"),
}
ARGS = {"test_only_class": ["--split-column", "part"], "bad_split_name": ["--split-column", "part"],
        "too_many": ["--max-points", "1", "--on-too-many", "refuse"]}


def _write(folder, table):
    pq.write_table(table, folder / "t.parquet")
    return folder / "t.parquet"


def _csv(folder, text):
    (folder / "t.csv").write_text(text)
    return folder / "t.csv"


def _text(folder, name, text):
    (folder / name).write_text(text)
    return folder / name


def _truncated(folder):
    path = _write(folder, _table())
    path.write_bytes(path.read_bytes()[:-20])
    return path


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_one_line_naming_the_file(tmp_path, capsys, case):
    make, message = BAD[case]
    path = make(tmp_path)
    data_dir = tmp_path / "tfds"
    argv = ["set_table", "--path", str(path), "--set-column", "sid", "--target-column", "label",
            "--data-dir", str(data_dir), "--test-fraction", "0", *ARGS.get(case, [])]
    assert prepare_main(argv) == 2
    err = capsys.readouterr().err
    error = err[err.index("error: "):]
    assert error.count("\n") == 1 and message in error and str(path) in error, err
    assert "Traceback" not in err
    assert not data_dir.exists() or not any(data_dir.rglob("*")), list(data_dir.rglob("*"))


# --- Apache Beam ---------------------------------------------------------------------------------

@pytest.mark.slow
def test_beam_direct_runner_matches_one_machine(tmp_path, capsys):
    table = sd.point_table(sets=30, max_points=25, seed=3)
    root = sd.write_parquet_shards(tmp_path / "shards", table, shards=3, row_group_size=20)
    common = ["set_table", "--path", str(root), "--set-column", "sid", "--target-column", "label",
              "--max-points", "20"]
    assert prepare_main([*common, "--data-dir", str(tmp_path / "plain")]) == 0
    assert prepare_main([*common, "--data-dir", str(tmp_path / "beam"),
                         "--beam-options", "runner=DirectRunner,direct_num_workers=1"]) == 0
    capsys.readouterr()
    kwargs = dict(path=root, set_column="sid", target_column="label", max_points=20)
    plain = st.Builder(data_dir=str(tmp_path / "plain"), **kwargs)
    beam = st.Builder(data_dir=str(tmp_path / "beam"), **kwargs)
    got_plain, got_beam = _prepared(plain), _prepared(beam)
    assert sorted(got_beam) == sorted(got_plain) == sorted(_expected_sets(table))
    for sid, (points, label, split) in got_plain.items():
        np.testing.assert_array_equal(got_beam[sid][0], points)
        assert got_beam[sid][1:] == (label, split)
    assert dict(beam.info.metadata) == dict(plain.info.metadata)
    assert plain.info.metadata["subsampled"] > 0


def test_beam_bad_data_is_one_line(tmp_path, capsys):
    root = _two_shards(tmp_path / "s", _table(x=_with(X, 4, float("nan"))))
    data_dir = tmp_path / "tfds"
    argv = ["set_table", "--path", str(root), "--set-column", "sid", "--target-column", "label",
            "--data-dir", str(data_dir), "--test-fraction", "0", "--beam-options", "runner=DirectRunner"]
    assert prepare_main(argv) == 2
    err = capsys.readouterr().err
    error = err[err.index("error: "):]
    assert error.count("\n") == 1 and "part-1.parquet row 5 (set 'c'): feature 'x' is nan" in error, err
    assert "Traceback" not in err
    assert not data_dir.exists() or not any(data_dir.rglob("*")), list(data_dir.rglob("*"))
