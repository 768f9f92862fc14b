"""ModelNet builder tests on small fixtures in all three published forms, written here into tmp dirs.

The fixtures hold a handful of shapes; `sources.EXPECTED` is patched so that they count as complete
where a test needs a complete copy.
"""

import http.server
import io
import json
import pathlib
import socket
import threading
import time
import zipfile

import h5py
import numpy as np
import pytest

from pipelines import datasets
from pipelines.datasets import DataFormatError, DataNotFoundError, DownloadError, IncompleteDataError
from pipelines.datasets.modelnet import download, modelnet_dataset_builder as mb, sources
from pipelines.prepare import main as prepare_main

P = mb.POINTS_PER_SHAPE
M40, M10 = sources.MODELNET40_CLASSES, sources.MODELNET10_CLASSES
# (shape id, split): two ModelNet10 classes and one class only in ModelNet40.
SHAPES = [("chair_0001", "train"), ("chair_0002", "train"), ("sofa_0001", "train"),
          ("airplane_0001", "train"), ("chair_0900", "test"), ("airplane_0700", "test")]


def _cls(shape_id):
    return shape_id.rsplit("_", 1)[0]


def _cloud(shape_id, n=P + 100):
    """Raw, deliberately off-centre points and unit normals for a shape."""
    rng = np.random.default_rng(sources.stable_seed(shape_id))
    points = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 0.5]
    normals = rng.normal(size=(n, 3))
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _text_lines(points, normals):
    return "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in np.hstack([points, normals]))


def write_text_release(root, shapes=SHAPES, listed=SHAPES):
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "modelnet40_shape_names.txt").write_text("\n".join(M40) + "\n")
    (root / "modelnet10_shape_names.txt").write_text("\n".join(M10) + "\n")
    for variant, classes in (("modelnet40", M40), ("modelnet10", M10)):
        for split in ("train", "test"):
            ids = [s for s, sp in listed if sp == split and _cls(s) in classes]
            (root / f"{variant}_{split}.txt").write_text("\n".join(ids) + "\n")
    for shape_id, _ in shapes:
        (root / _cls(shape_id)).mkdir(exist_ok=True)
        (root / _cls(shape_id) / f"{shape_id}.txt").write_text(_text_lines(*_cloud(shape_id)))
    return root


def write_hdf5_release(root, shapes=SHAPES, with_ids=True):
    """ply_data_train0..4 / test0..1, shapes spread over the files (some files get none)."""
    root = pathlib.Path(root)
    root.mkdir(parents=True, exist_ok=True)
    (root / "shape_names.txt").write_text("\n".join(M40) + "\n")
    for split, count in sources.HDF5_FILES.items():
        ids = [s for s, sp in shapes if sp == split]
        for i in range(count):
            part = ids[i::count]
            clouds = [_cloud(s, P) for s in part]
            with h5py.File(root / f"ply_data_{split}{i}.h5", "w") as f:
                f["data"] = np.array([c[0] for c in clouds], np.float32).reshape(-1, P, 3)
                f["normal"] = np.array([c[1] for c in clouds], np.float32).reshape(-1, P, 3)
                f["label"] = np.array([[M40.index(_cls(s))] for s in part], np.uint8).reshape(-1, 1)
            if with_ids:
                (root / f"ply_data_{split}_{i}_id2file.json").write_text(
                    json.dumps([f"{_cls(s)}/{s}.ply" for s in part]))
    return root


def _box_off(shape_id, quads=False, glued_header=True):
    """A random box as an OFF mesh (z up), as triangles or as quads."""
    rng = np.random.default_rng(sources.stable_seed(shape_id))
    size = rng.uniform(0.5, 2.0, size=3)
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) * size
    quad = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    faces = quad if quads else [t for q in quad for t in ([q[0], q[1], q[2]], [q[0], q[2], q[3]])]
    head = f"OFF{len(v)} {len(faces)} 0" if glued_header else f"OFF\n{len(v)} {len(faces)} 0"
    body = [" ".join(f"{c:.6f}" for c in p) for p in v] + [f"{len(f)} " + " ".join(map(str, f)) for f in faces]
    return "\n".join([head] + body) + "\n"


def write_off_zip(path, shapes=SHAPES, top="ModelNet40"):
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for k, (shape_id, split) in enumerate(shapes):
            z.writestr(f"{top}/{_cls(shape_id)}/{split}/{shape_id}.off", _box_off(shape_id, quads=k % 2 == 1))
    return path


def _counts(shapes, classes=M40):
    return {sp: sum(1 for s, x in shapes if x == sp and _cls(s) in classes) for sp in ("train", "test")}


@pytest.fixture
def complete(monkeypatch):
    """Makes the fixtures count as complete copies."""
    expected = {(v, k): _counts(SHAPES, sources.CLASSES[v]) for v in ("modelnet40", "modelnet10")
                for k in ("text", "hdf5", "off")}
    monkeypatch.setattr(sources, "EXPECTED", expected)


@pytest.fixture(autouse=True)
def no_real_downloads(monkeypatch):
    """Downloads go to a closed port on this machine: refused at once, like the dead official host."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    remote = download.Remote(f"http://127.0.0.1:{port}/modelnet40_ply_hdf5_2048.zip", 10, "0" * 64,
                             "modelnet40_ply_hdf5_2048.zip")
    monkeypatch.setattr(mb, "_download_candidates", lambda variant: [remote])
    return remote


def _examples(builder, split):
    return {ex["shape_id"].decode(): ex for ex in builder.as_dataset(split=split).as_numpy_iterator()}


def _assert_clean(data_dir):
    """Nothing half-written: no TFDS temp dirs, no partial downloads, no dataset files."""
    leftovers = [p for p in pathlib.Path(data_dir).rglob("*")
                 if p.is_file() and ".config" not in p.parts]
    assert leftovers == []
    assert not [p for p in pathlib.Path(data_dir).rglob("*incomplete*")]


def test_checksums_list_the_official_archives():
    remotes = {r.filename: r for r in download.read_checksums(mb._HERE / "checksums.tsv")}
    assert remotes["modelnet40_ply_hdf5_2048.zip"].size == 435_212_151
    assert remotes["modelnet40_ply_hdf5_2048.zip"].url == \
        "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip"
    assert remotes["ModelNet40.zip"].sha256.startswith("42dc3e656932")
    assert remotes["ModelNet40.zip"].size == 2_039_180_837


def test_text_release_is_centred_scaled_and_labelled(tmp_path, complete):
    manual = write_text_release(tmp_path / "manual" / "modelnet40_normal_resampled")
    builder = datasets.prepare("modelnet40", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual")
    assert builder.info.config_name == "modelnet40"
    assert builder.info.features["label"].names == list(M40)
    assert {k: v.num_examples for k, v in builder.info.splits.items()} == {"train": 4, "test": 2}
    assert builder.info.metadata["source"] == "text" and builder.info.metadata["partial"] is False
    for split in ("train", "test"):
        for shape_id, ex in _examples(builder, split).items():
            assert ex["label"] == M40.index(_cls(shape_id))
            raw, normals = _cloud(shape_id)
            first = raw[:P] - raw[:P].mean(axis=0)
            np.testing.assert_allclose(ex["points"], first / np.linalg.norm(first, axis=1).max(), atol=2e-6)
            np.testing.assert_allclose(ex["normals"], normals[:P], atol=1e-6)
            assert np.abs(ex["points"].mean(axis=0)).max() < 1e-5
            assert np.linalg.norm(ex["points"], axis=1).max() == pytest.approx(1.0, abs=1e-6)
    # ModelNet10 from the same copy: its own split lists, labels in its own class order.
    b10 = datasets.prepare("modelnet10", data_dir=tmp_path / "tfds", manual_dir=manual)
    ex10 = _examples(b10, "train")
    assert set(ex10) == {"chair_0001", "chair_0002", "sofa_0001"}
    assert ex10["sofa_0001"]["label"] == M10.index("sofa")
    assert b10.info.features["label"].names == list(M10)


def test_hdf5_release_and_partial_copies(tmp_path, complete):
    manual = write_hdf5_release(tmp_path / "manual" / "modelnet40_ply_hdf5_2048")
    builder = datasets.prepare("modelnet40", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual")
    assert builder.info.metadata["source"] == "hdf5"
    train = _examples(builder, "train")
    assert set(train) == {s for s, sp in SHAPES if sp == "train"}
    np.testing.assert_allclose(np.linalg.norm(train["sofa_0001"]["points"], axis=1).max(), 1.0, atol=1e-6)
    assert train["sofa_0001"]["label"] == M40.index("sofa")
    # A missing file makes the copy partial: refused with counts, accepted when asked for.
    (manual / "ply_data_test1.h5").unlink()
    data_dir = tmp_path / "tfds2"
    with pytest.raises(IncompleteDataError, match=r"found 4 of 4 train, 1 of 2 test shapes, 1 missing"):
        datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=tmp_path / "manual")
    _assert_clean(data_dir)
    partial = datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=tmp_path / "manual",
                               allow_partial=True)
    assert partial.info.config_name == "modelnet40_partial"
    assert partial.info.metadata["found"] == {"train": 4, "test": 1}
    assert partial.info.metadata["partial"] is True


def test_meshes_are_sampled_by_area_deterministically(tmp_path, complete):
    write_off_zip(tmp_path / "manual" / "ModelNet40.zip")
    a = datasets.prepare("modelnet40", data_dir=tmp_path / "a", manual_dir=tmp_path / "manual")
    b = datasets.prepare("modelnet40", data_dir=tmp_path / "b", manual_dir=tmp_path / "manual")
    assert a.info.metadata["source"] == "off"
    ea, eb = _examples(a, "train"), _examples(b, "train")
    assert set(ea) == {s for s, sp in SHAPES if sp == "train"}
    for shape_id in ea:
        np.testing.assert_array_equal(ea[shape_id]["points"], eb[shape_id]["points"])
        pts = ea[shape_id]["points"]
        assert np.abs(pts.mean(axis=0)).max() < 1e-5
        assert np.linalg.norm(pts, axis=1).max() == pytest.approx(1.0, abs=1e-6)
        # Every point is on a face of the (y-up) box: one coordinate sits at its min or max.
        lo, hi = pts.min(axis=0), pts.max(axis=0)
        on_face = np.isclose(pts, lo, atol=1e-5) | np.isclose(pts, hi, atol=1e-5)
        assert on_face.any(axis=1).all()


def test_surface_sampling_weights_faces_by_area():
    vertices = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 5], [3, 0, 5], [0, 1, 5]], float)
    triangles = np.array([[0, 1, 2], [3, 4, 5]])  # areas 0.5 and 1.5
    points, normals = sources.sample_surface(vertices, triangles, 20000, seed=3, where="t")
    upper = np.isclose(points[:, 2], 5)
    assert np.isclose(points[~upper, 2], 0).all()
    assert np.mean(upper) == pytest.approx(0.75, abs=0.02)
    np.testing.assert_allclose(np.abs(normals[:, 2]), 1.0)
    first = points[~upper]
    assert (first[:, 0] >= 0).all() and (first[:, 1] >= 0).all() and (first.sum(axis=1) <= 1 + 1e-12).all()
    again, _ = sources.sample_surface(vertices, triangles, 20000, seed=3, where="t")
    np.testing.assert_array_equal(points, again)


def test_off_parser_reads_quads_and_both_headers():
    v, t = sources.parse_off(_box_off("chair_0001", quads=True, glued_header=False).encode(), "x.off")
    assert v.shape == (8, 3) and t.shape == (12, 3)
    v2, t2 = sources.parse_off(_box_off("chair_0001", quads=False, glued_header=True).encode(), "x.off")
    np.testing.assert_array_equal(v, v2)
    assert t2.shape == (12, 3)


def test_text_is_preferred_and_source_can_be_chosen(tmp_path, complete):
    write_text_release(tmp_path / "manual" / "text")
    write_hdf5_release(tmp_path / "manual" / "h5", shapes=SHAPES[:2])
    found = sources.find_sources([tmp_path / "manual"])
    assert sources.choose(found, "modelnet40")[0].kind == "text"
    source, inv = sources.choose(found, "modelnet40", "hdf5")
    assert source.kind == "hdf5" and inv.found("train") == 2


# --- what goes wrong ------------------------------------------------------------------------------

@pytest.mark.parametrize("state", ["missing", "empty"])
def test_no_data_fails_fast_with_instructions(tmp_path, state, no_real_downloads):
    manual = tmp_path / "manual"
    if state == "empty":
        manual.mkdir()
    start = time.monotonic()
    with pytest.raises(DataNotFoundError) as err:
        datasets.prepare("modelnet40", data_dir=tmp_path / "tfds", manual_dir=manual)
    msg = str(err.value)
    assert f"{manual} {'does not exist' if state == 'missing' else 'is empty'}" in msg
    assert no_real_downloads.url in msg and "refused" in msg.lower()
    assert "modelnet40_ply_hdf5_2048.zip" in msg and "ModelNet40.zip" in msg and "--manual-dir" in msg
    assert time.monotonic() - start < 60  # refused, not hung (generous: a loaded CI machine)
    _assert_clean(tmp_path / "tfds")


def _corrupt_text_truncated(manual):
    f = manual / "chair" / "chair_0002.txt"
    f.write_bytes(f.read_bytes()[:-7])
    return f, "truncated"


def _corrupt_text_too_few(manual):
    f = manual / "sofa" / "sofa_0001.txt"
    f.write_text("".join(f.read_text().splitlines(keepends=True)[:10]))
    return f, "only 10 points"


def _corrupt_text_not_a_number(manual):
    f = manual / "chair" / "chair_0900.txt"
    lines = f.read_text().splitlines(keepends=True)
    lines[5] = "0.1,abc,0.3,0,0,1\n"
    f.write_text("".join(lines))
    return f, "not a number"


def _corrupt_list_label(manual):
    f = manual / "modelnet40_train.txt"
    f.write_text(f.read_text() + "spaceship_0001\n")
    return f, "'spaceship'"


@pytest.mark.parametrize("corrupt", [_corrupt_text_truncated, _corrupt_text_too_few,
                                     _corrupt_text_not_a_number, _corrupt_list_label])
def test_bad_text_files_are_named_and_leave_nothing(tmp_path, complete, corrupt):
    manual = write_text_release(tmp_path / "manual")
    path, what = corrupt(manual)
    data_dir = tmp_path / "tfds"
    with pytest.raises(DataFormatError) as err:
        datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=manual)
    assert str(path) in str(err.value) and what in str(err.value)
    assert "replace" in str(err.value) or "restore" in str(err.value)
    _assert_clean(data_dir)
    write_text_release(manual)  # fixed: the next run succeeds
    builder = datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=manual)
    assert builder.info.splits["train"].num_examples == 4


def test_bad_hdf5_files_are_named(tmp_path, complete):
    manual = write_hdf5_release(tmp_path / "manual")
    with h5py.File(manual / "ply_data_train1.h5", "r+") as f:
        f["label"][0, 0] = 57
    with pytest.raises(DataFormatError, match=r"ply_data_train1.h5: row 0 has label 57, outside"):
        datasets.prepare("modelnet40", data_dir=tmp_path / "tfds", manual_dir=manual)
    f = manual / "ply_data_train1.h5"
    f.write_bytes(f.read_bytes()[:3000])
    with pytest.raises(DataFormatError, match=r"ply_data_train1.h5: not a readable HDF5 file"):
        datasets.prepare("modelnet40", data_dir=tmp_path / "tfds", manual_dir=manual)
    _assert_clean(tmp_path / "tfds")


def test_bad_meshes_and_archives_are_named(tmp_path, complete):
    z = write_off_zip(tmp_path / "manual" / "ModelNet40.zip")
    with zipfile.ZipFile(z, "a") as zf:  # an extra shape whose mesh has no faces
        zf.writestr("ModelNet40/chair/test/chair_0950.off", "OFF\n3 0 0\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(DataFormatError, match=r"ModelNet40.zip:ModelNet40/chair/test/chair_0950.off: the mesh has no faces"):
        datasets.prepare("modelnet40", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual")
    _assert_clean(tmp_path / "tfds")
    z.write_bytes(z.read_bytes()[: len(z.read_bytes()) // 2])
    with pytest.raises(DataFormatError, match=r"ModelNet40.zip: not a readable zip archive"):
        datasets.prepare("modelnet40", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "manual")
    _assert_clean(tmp_path / "tfds")


class _Server:
    """A local HTTP server whose one file can be served whole or cut off mid-way."""

    def __init__(self, payload: bytes):
        self.payload, self.cut = payload, None
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(server.payload)))
                self.end_headers()
                self.wfile.write(server.payload[: server.cut] if server.cut else server.payload)

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/modelnet40_ply_hdf5_2048.zip"


def test_download_interrupted_then_completed(tmp_path, complete, monkeypatch):
    release = write_hdf5_release(tmp_path / "src" / "modelnet40_ply_hdf5_2048")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(release.iterdir()):
            zf.write(f, f"modelnet40_ply_hdf5_2048/{f.name}")
    payload = buf.getvalue()
    server = _Server(payload)
    try:
        import hashlib

        remote = download.Remote(server.url, len(payload), hashlib.sha256(payload).hexdigest(),
                                 "modelnet40_ply_hdf5_2048.zip")
        monkeypatch.setattr(mb, "_download_candidates", lambda variant: [remote])
        server.cut = len(payload) // 3
        data_dir = tmp_path / "tfds"
        with pytest.raises(DataNotFoundError, match=r"interrupted"):
            datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=tmp_path / "none")
        _assert_clean(data_dir)
        server.cut = None
        builder = datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=tmp_path / "none")
        assert builder.info.metadata["source"] == "hdf5"
        assert builder.info.splits["test"].num_examples == 2
        with pytest.raises(DownloadError, match="sha256"):
            download.fetch(download.Remote(server.url, len(payload), "0" * 64, "other.zip"), tmp_path / "d")
        assert list((tmp_path / "d").iterdir()) == []
    finally:
        server.httpd.shutdown()


def test_prepare_command_prints_a_summary(tmp_path, capsys, monkeypatch):
    expected = {"train": 5, "test": 2}  # as if the official lists had one more train shape
    monkeypatch.setitem(sources.EXPECTED, ("modelnet40", "text"), expected)
    write_text_release(tmp_path / "manual", listed=SHAPES + [("chair_0003", "train")])
    argv = ["modelnet40", "--manual-dir", str(tmp_path / "manual"), "--data-dir", str(tmp_path / "tfds")]
    assert prepare_main(argv) == 2
    err = capsys.readouterr().err
    assert "found 4 of 5 train, 2 of 2 test shapes, 1 missing (e.g. chair_0003)" in err
    assert "--allow-partial" in err
    assert prepare_main(argv + ["--allow-partial"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "PARTIAL copy: only the shapes found were prepared" in out
    rows = {line.split()[0]: line.split()[1:] for line in out if line.split()[:1] in (["train"], ["test"])}
    assert rows == {"train": ["4", "5"], "test": ["2", "2"]}
    assert out[-1].startswith("classes (40): airplane, bathtub, bed")
    assert prepare_main(["modelnet40", "--manual-dir", str(tmp_path / "nothing"),
                         "--data-dir", str(tmp_path / "tfds3")]) == 2
    assert "does not exist" in capsys.readouterr().err
