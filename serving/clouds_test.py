"""Tests of the point-cloud file readers: every format, sampling, normalising, the model's
width, and one clear line for each broken file (also through the CLI)."""

import doctest
import io
import re

import h5py
import numpy as np
import pytest

from serving import clouds
from serving.client import main as client_main
from serving.clouds import CloudFileError, features_of, load_clouds


def test_module_example_runs():
    result = doctest.testmod(clouds)
    assert result.attempted > 0 and result.failed == 0


def test_npy_txt_and_h5(tmp_path):
    rng = np.random.default_rng(0)
    one = rng.normal(size=(50, 6))
    np.save(tmp_path / "one.npy", one)
    np.save(tmp_path / "many.npy", rng.normal(size=(3, 20, 3)))
    np.savetxt(tmp_path / "comma.txt", one, delimiter=",")
    np.savetxt(tmp_path / "space.xyz", one[:, :3])
    with h5py.File(tmp_path / "pn.h5", "w") as f:
        f["data"] = rng.normal(size=(4, 30, 3)).astype(np.float32)
        f["label"] = np.zeros((4, 1), np.uint8)

    (label, cloud), = load_clouds(tmp_path / "one.npy")
    assert cloud.shape == (50, 3) and cloud.dtype == np.float32
    np.testing.assert_allclose(cloud, one[:, :3], rtol=1e-6)
    many = load_clouds(tmp_path / "many.npy", num_points=10)
    assert [c.shape for _, c in many] == [(10, 3)] * 3 and many[1][0].endswith("many.npy[1]")
    np.testing.assert_allclose(load_clouds(tmp_path / "comma.txt")[0][1], one[:, :3],
                               rtol=1e-6)
    np.testing.assert_allclose(load_clouds(tmp_path / "space.xyz")[0][1], one[:, :3],
                               rtol=1e-6)
    h5 = load_clouds(tmp_path / "pn.h5", num_points=16, sample="random")
    assert len(h5) == 4 and h5[0][1].shape == (16, 3)
    norm = load_clouds(tmp_path / "one.npy", normalize=True)[0][1]
    np.testing.assert_allclose(norm.mean(0), 0, atol=1e-6)
    assert np.isclose(np.linalg.norm(norm, axis=1).max(), 1, atol=1e-6)


CUBE_OFF = """OFF8 6 0
-1 -1 -1
1 -1 -1
1 1 -1
-1 1 -1
-1 -1 1
1 -1 1
1 1 1
-1 1 1
4 0 1 2 3
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 0 3 7 4
4 1 2 6 5
"""


def test_off_meshes_are_sampled_on_their_surface(tmp_path):
    (tmp_path / "cube.off").write_text(CUBE_OFF)
    (label, cloud), = load_clouds(tmp_path / "cube.off", num_points=500)
    assert cloud.shape == (500, 3)
    # Every sample lies on a face of the cube: one coordinate is +-1.
    assert np.all(np.isclose(np.abs(cloud).max(axis=1), 1, atol=1e-6))
    assert np.all(np.abs(cloud) <= 1 + 1e-6)
    # All six faces are hit (uniform over the surface).
    faces = {(int(np.argmax(np.abs(p))), bool(p[np.argmax(np.abs(p))] > 0)) for p in cloud}
    assert len(faces) == 6
    split = CUBE_OFF.replace("OFF8 6 0", "OFF\n8 6 0")
    (tmp_path / "split.off").write_text(split)
    assert load_clouds(tmp_path / "split.off", num_points=10)[0][1].shape == (10, 3)


@pytest.mark.parametrize("name,content,fragment", [
    ("a.ply", b"ply", "unknown file type '.ply'"),
    ("bad.off", b"PLY\n1 2 3", "not an OFF file"),
    ("short.off", b"OFF\n3 1 0\n0 0 0\n1 1 1\n", "malformed OFF file"),
    ("words.txt", b"x y z\n1 2 3\n", "cannot read numbers"),
    ("flat.txt", b"1 2\n3 4\n", "expected points of shape"),
    ("nan.txt", b"1 2 3\nnan 0 0\n", "NaN or Inf"),
])
def test_bad_files_have_clear_errors(tmp_path, name, content, fragment):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CloudFileError, match=fragment) as info:
        load_clouds(tmp_path / name)
    assert name in str(info.value)


def _npy_bytes(array) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=True)
    return buffer.getvalue()


GOOD_NPY = _npy_bytes(np.zeros((10, 3), np.float32))
BAD_NPY = [
    ("empty.npy", b"", "the file is empty (0 bytes)"),
    ("truncated.npy", GOOD_NPY[:-20], "truncated or corrupt .npy file"),
    ("header_only.npy", GOOD_NPY[:30], "truncated or corrupt .npy file"),
    ("garbage.npy", b"hello, this is not numpy", "not a .npy file"),
    ("objects.npy", _npy_bytes(np.array([{"a": 1}], dtype=object)), "holds Python objects"),
]


@pytest.mark.parametrize("name,content,fragment", BAD_NPY, ids=[b[0] for b in BAD_NPY])
def test_broken_npy_files_have_clear_errors(tmp_path, name, content, fragment):
    (tmp_path / name).write_bytes(content)
    with pytest.raises(CloudFileError, match=re.escape(fragment)) as info:
        load_clouds(tmp_path / name)
    assert str(info.value).startswith(str(tmp_path / name))


@pytest.mark.parametrize("name,content,fragment", BAD_NPY, ids=[b[0] for b in BAD_NPY])
def test_cli_reports_a_broken_npy_in_one_line_with_exit_2(tmp_path, capsys, name, content,
                                                           fragment):
    (tmp_path / name).write_bytes(content)
    assert client_main(["predict", "--url", "http://127.0.0.1:9", str(tmp_path / name)]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {tmp_path / name}: "), lines
    assert fragment in lines[0]


def test_missing_file_and_h5_key(tmp_path):
    with pytest.raises(CloudFileError, match="no such file"):
        load_clouds(tmp_path / "nope.npy")
    with h5py.File(tmp_path / "x.h5", "w") as f:
        f["a"] = np.zeros((2, 4, 3))
        f["b"] = np.zeros((2, 4, 3))
    with pytest.raises(CloudFileError, match="pick one with --h5-key"):
        load_clouds(tmp_path / "x.h5")
    assert len(load_clouds(tmp_path / "x.h5", h5_key="b")) == 2


def test_features_of_reads_the_models_width_and_load_clouds_keeps_that_many(tmp_path):
    dims = [{"size": "-1"}, {"size": "-1"}, {"size": "5"}]
    meta = {"metadata": {"signature_def": {"signature_def": {
        "serving_default": {"inputs": {"points": {"tensor_shape": {"dim": dims}}}}}}}}
    assert features_of(meta) == 5 and features_of(meta, "serving_masked") == 5
    assert features_of({"metadata": {}}) is None
    np.save(tmp_path / "c.npy", np.arange(24, dtype=np.float32).reshape(4, 6))
    [(_, cloud)] = load_clouds(tmp_path / "c.npy", num_features=5)
    assert cloud.shape == (4, 5) and cloud[1].tolist() == [6, 7, 8, 9, 10]
    with pytest.raises(CloudFileError, match=r"takes 7 values per point"):
        load_clouds(tmp_path / "c.npy", num_features=7)
