"""set_folder tests: TFDS's builder harness on `dummy_data/` (train/ and test/ folders, one set in each
format, two meshes), the readers, the seeded split, and every kind of bad data through
`python -m pipelines.prepare` (one line naming the file, exit 2, nothing left in the data dir)."""

import pathlib

import numpy as np
import pytest
from tensorflow_datasets import testing as tfds_testing

from pipelines.datasets import DataFormatError
from pipelines.datasets.set_folder import readers, set_folder_dataset_builder as sf
from pipelines.prepare import main as prepare_main
from tests.support import set_data as sd

DUMMY = pathlib.Path(sf.Builder.code_path).parent / "dummy_data"
MESH_POINTS = 16


class SetFolderTfdsTest(tfds_testing.DatasetBuilderTestCase):
    DATASET_CLASS = sf.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [sf.make_config(DUMMY, points_per_mesh=MESH_POINTS)]
    SPLITS = {"train": 14, "test": 4}


def test_dummy_data_is_what_the_writer_produces(tmp_path):
    sd.write_folder_dummy(tmp_path)
    written = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if p.is_file())
    committed = sorted(p.relative_to(DUMMY) for p in DUMMY.rglob("*") if p.is_file())
    assert written == committed
    for rel in written:
        assert (tmp_path / rel).read_bytes() == (DUMMY / rel).read_bytes(), rel


@pytest.mark.parametrize("suffix", [".npy", ".npz", ".csv", ".txt", ".h5", ".ply"])
def test_every_format_reads_the_same_points(tmp_path, suffix):
    points = sd.cloud(7, 6)
    path = tmp_path / f"s{suffix}"
    path.write_bytes(sd.set_bytes(points, suffix))
    got, names = readers.read_set(path, seed=0)
    np.testing.assert_allclose(got, points, rtol=1e-6)
    assert names == ({".csv": ["x", "y", "z"], ".ply": ["x", "y", "z"]}.get(suffix))


@pytest.mark.parametrize("fmt", ["ascii", "binary_little_endian", "binary_big_endian"])
def test_ply_point_clouds_keep_every_vertex_property(tmp_path, fmt):
    points = sd.cloud(3, 5, features=4)
    path = tmp_path / "s.ply"
    path.write_bytes(sd.ply_bytes(points, fmt=fmt, names=("x", "y", "z", "intensity")))
    got, names = readers.read_set(path, seed=0)
    np.testing.assert_allclose(got, points, rtol=1e-6)
    assert names == ["x", "y", "z", "intensity"]


@pytest.mark.parametrize("name,data", [
    ("m.off", sd.off_bytes(sd.SQUARE_VERTICES, sd.SQUARE_FACES)),
    ("m.ply", sd.ply_bytes(sd.SQUARE_VERTICES, sd.SQUARE_FACES, fmt="binary_little_endian")),
    ("q.ply", sd.ply_bytes(sd.SQUARE_VERTICES, [[0, 1, 2, 3]], fmt="ascii")),   # a quad, fan-split
])
def test_meshes_are_sampled_on_their_surface(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data)
    points, names = readers.read_set(path, seed=5, points_per_mesh=200)
    assert points.shape == (200, 3) and names == ["x", "y", "z"]
    assert np.all(points[:, 2] == 0) and points[:, :2].min() >= 0 and points[:, :2].max() <= 1
    # Both triangles are hit (area-weighted): points above and below the diagonal.
    assert (points[:, 1] > points[:, 0]).any() and (points[:, 1] < points[:, 0]).any()
    np.testing.assert_array_equal(readers.read_set(path, seed=5, points_per_mesh=200)[0], points)
    assert not np.array_equal(readers.read_set(path, seed=6, points_per_mesh=200)[0], points)


def _unsplit(root, per_class):
    files = {}
    for cls, n in per_class.items():
        for i in range(n):
            files[f"{cls}/{cls}_{i}.npy"] = sd.set_bytes(sd.cloud(i, 4), ".npy")
    return sd.write_tree(root, files)


def test_seeded_split_is_stratified_and_stable(tmp_path):
    layout = readers.find_sets(_unsplit(tmp_path / "d", {"a": 10, "b": 5, "c": 1}))
    split = sf.split_layout(layout, test_fraction=0.2, seed=0)
    test = [c for c, _ in split["test"]]
    assert sorted(test) == ["a", "a", "b"]          # 20 % of each class, none of a one-set class
    assert len(split["train"]) == 13
    assert sf.split_layout(layout, 0.2, 0) == split
    assert sf.split_layout(layout, 0.2, 1) != split


def test_prepare_prints_the_summary(tmp_path, capsys):
    root = _unsplit(tmp_path / "d", {"a": 5, "b": 5})
    assert prepare_main(["set_folder", "--path", str(root), "--data-dir", str(tmp_path / "tfds")]) == 0
    out = capsys.readouterr().out
    assert "features per point (F): 3 (x, y, z)" in out
    assert "train            8       4       4       4" in out
    assert "test             2       4       4       4" in out
    assert "task: classification, 2 classes" in out
    assert "  a                            4         1" in out


def test_subsample_is_seeded_and_counted(tmp_path, caplog):
    root = sd.write_tree(tmp_path / "d", {"a/big.npy": sd.set_bytes(sd.cloud(0, 50), ".npy"),
                                          "a/small.npy": sd.set_bytes(sd.cloud(1, 3), ".npy")})
    builds = []
    for run in range(2):
        b = sf.Builder(data_dir=str(tmp_path / f"tfds{run}"), path=root, max_points=10, test_fraction=0.0)
        b.download_and_prepare()
        builds.append({e["set_id"]: e["points"] for e in b.as_dataset(split="train").as_numpy_iterator()})
        assert b.info.metadata["subsampled"] == 1 and b.info.metadata["set_sizes"]["train"]["max"] == 10
    big = builds[0][b"a/big.npy"]
    np.testing.assert_array_equal(big, builds[1][b"a/big.npy"])
    rows = [int(np.flatnonzero((sd.cloud(0, 50) == p).all(axis=1))[0]) for p in big]
    assert rows == sorted(rows)  # a subset, in the file's order
    assert "1 set(s) had more than max_points=10" in caplog.text


# --- bad data: one line naming the file, exit 2, nothing written ----------------------------------

def _good(root):
    return sd.write_tree(root, {f"{c}/{c}_{i}.npy": sd.set_bytes(sd.cloud(i, 4), ".npy")
                                for c in ("a", "b") for i in range(3)})


def _truncated_npy():
    return sd.set_bytes(sd.cloud(0, 40), ".npy")[:-7]


def _nan():
    pts = sd.cloud(0, 4)
    pts[2, 1] = np.nan
    return sd.set_bytes(pts, ".npy")


BAD = {
    "nan": ({"a/bad.npy": _nan()}, "bad.npy: row 3 feature 2 is nan"),
    "inf_in_text": ({"a/bad.txt": b"1 2 3\n4 inf 6\n"}, "bad.txt: row 2 feature 2 is inf"),
    "other_f": ({"a/bad.npy": sd.set_bytes(sd.cloud(0, 4, features=4), ".npy")},
                "bad.npy: 4 features per point, but the first set has 3"),
    "ragged_rows": ({"a/bad.csv": b"x,y,z\n1,2,3\n4,5\n"}, "bad.csv: line 3 has 2 values, expected 3"),
    "empty": ({"a/bad.csv": b"x,y,z\n"}, "bad.csv: the set is empty"),
    "empty_npy": ({"a/bad.npy": sd.set_bytes(np.zeros((0, 3)), ".npy")}, "bad.npy: the set is empty"),
    "non_numeric": ({"a/bad.csv": b"x,y,z\n1,2,3\n4,five,6\n"}, "bad.csv: line 3 column 2 is 'five'"),
    "strings_npy": ({"a/bad.npy": None}, "bad.npy: the values are <U1 (non-numeric)"),
    "truncated_npy": ({"a/bad.npy": _truncated_npy()}, "bad.npy: not a readable .npy file"),
    "truncated_ply": ({"a/bad.ply": sd.ply_bytes(sd.cloud(0, 9), fmt="binary_little_endian")[:-5]},
                      "bad.ply: ends inside the 'vertex' element: the file is truncated"),
    "truncated_h5": ({"a/bad.h5": sd.set_bytes(sd.cloud(0, 9), ".h5")[:300]}, "bad.h5: not a readable HDF5"),
    "bad_off": ({"a/bad.off": b"OFF\n4 2 0\n0 0 0\n1 0 0\n"}, "bad.off: declares 4 vertices and 2 faces"),
    "unsupported": ({"a/notes.md": b"hello"}, "notes.md: unsupported file type '.md'"),
    "too_many": ({"a/big.npy": sd.set_bytes(sd.cloud(0, 50), ".npy")},
                 "big.npy: set 'a/big.npy' has 50 points, more than max_points=10"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_data_is_one_line_naming_the_file(tmp_path, capsys, case):
    files, message = BAD[case]
    if case == "strings_npy":
        import io
        buf = io.BytesIO()
        np.save(buf, np.array([["a", "b", "c"]]))
        files = {"a/bad.npy": buf.getvalue()}
    root = _good(tmp_path / "d")
    sd.write_tree(root, files)
    data_dir = tmp_path / "tfds"
    argv = ["set_folder", "--path", str(root), "--data-dir", str(data_dir)]
    if case == "too_many":
        argv += ["--max-points", "10", "--on-too-many", "refuse"]
    assert prepare_main(argv) == 2
    err = capsys.readouterr().err
    # TFDS's progress bars may come first (on stderr); the error is the last line, and only one.
    error = err[err.index("error: "):]
    assert error.count("\n") == 1 and message in error and str(root) in error, err
    assert "Traceback" not in err
    assert not data_dir.exists() or not any(data_dir.rglob("*")), list(data_dir.rglob("*"))


def test_class_only_in_test_is_refused(tmp_path, capsys):
    files = {f"train/a/{i}.npy": sd.set_bytes(sd.cloud(i, 4), ".npy") for i in range(2)}
    files["test/a/t.npy"] = files["test/b/t.npy"] = sd.set_bytes(sd.cloud(9, 4), ".npy")
    root = sd.write_tree(tmp_path / "d", files)
    assert prepare_main(["set_folder", "--path", str(root), "--data-dir", str(tmp_path / "tfds")]) == 2
    err = capsys.readouterr().err
    assert f"{root}: class 'b' has sets in the test split but none in train" in err


def test_files_outside_class_folders_and_missing_folders_are_refused(tmp_path):
    root = _good(tmp_path / "d")
    (root / "loose.npy").write_bytes(sd.set_bytes(sd.cloud(0, 3), ".npy"))
    with pytest.raises(DataFormatError, match="loose.npy: a file outside any class folder"):
        readers.find_sets(root)
    with pytest.raises(FileNotFoundError, match="nothere: no such folder"):
        readers.find_sets(tmp_path / "nothere")


def test_flags_of_other_datasets_are_refused(tmp_path, capsys):
    assert prepare_main(["set_folder", "--path", str(tmp_path), "--set-column", "sid"]) == 2
    assert "--set-column do(es) not apply to set_folder" in capsys.readouterr().err
    assert prepare_main(["digits", "--path", str(tmp_path)]) == 2
    assert prepare_main(["set_folder"]) == 2
    assert "set_folder needs --path" in capsys.readouterr().err
    assert prepare_main(["set_folder", "--path", str(tmp_path), "--beam-options", "runner=DirectRunner"]) == 2
    assert "--beam-options: set_folder prepares on one machine" in capsys.readouterr().err
