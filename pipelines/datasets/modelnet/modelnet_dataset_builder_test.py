"""ModelNet builder tests: TFDS's builder harness on the committed `dummy_data/` (one class per
published form), and pytest tests on bigger copies written into tmp dirs, for every path that can go wrong.

The tmp copies hold a handful of shapes with the real 2048+ points; `sources.EXPECTED` is patched so
that they count as complete where a test needs a complete copy.
"""

import hashlib
import http.server
import io
import pathlib
import socket
import threading
import time
import zipfile

import h5py
import numpy as np
import pytest
import tensorflow_datasets as tfds
from tensorflow_datasets import testing as tfds_testing

from pipelines import datasets
from pipelines.datasets import DataFormatError, DataNotFoundError, IncompleteDataError
from pipelines.datasets.modelnet import modelnet_dataset_builder as mb, sources
from pipelines.prepare import main as prepare_main
from tests.support import dummy_data as dd
from tests.support.dummy_data import SHAPES

P = mb.POINTS_PER_SHAPE
M40, M10 = sources.MODELNET40_CLASSES, sources.MODELNET10_CLASSES
DUMMY = pathlib.Path(mb.Builder.code_path).parent / "dummy_data"
_cls, _box_off = dd.shape_class, dd.box_off


def _cloud(shape_id, n=P + 100):
    return dd.cloud(shape_id, n)


def _dummy_config(variant):
    """A partial config with as few points per shape as the committed fixtures have."""
    return mb.ModelNetConfig(name=f"{variant}_dummy", variant=variant, partial=True,
                             points_per_shape=dd.MODELNET_POINTS,
                             description=f"{variant}, {dd.MODELNET_POINTS} points (dummy_data)")


# --- TFDS's harness: dummy_data as the manual dir, one published form at a time -----------------

class _Form:
    DATASET_CLASS = mb.Builder
    BUILDER_CONFIG_NAMES_TO_TEST = [_dummy_config("modelnet40")]
    SPLITS = {"train": 4, "test": 2}
    FORM = ""

    def test_download_config_manual_dir_is_read(self):
        """The same fixture through TFDS's own `DownloadConfig(manual_dir=...)`, not the harness's mock."""
        config = self.BUILDER_CONFIG_NAMES_TO_TEST[0]
        builder = mb.Builder(data_dir=self.tmp_dir, config=config)
        builder.download_and_prepare(download_config=tfds.download.DownloadConfig(manual_dir=self.EXAMPLE_DIR))
        assert builder.info.metadata["source"] == self.FORM
        assert builder.info.metadata["found"] == self.SPLITS
        names = builder.info.features["label"].names
        for ex in builder.as_dataset(split="train").as_numpy_iterator():
            shape_id = ex["shape_id"].decode()
            assert names[ex["label"]] == _cls(shape_id)
            assert ex["points"].shape == (dd.MODELNET_POINTS, 3)
            assert np.linalg.norm(ex["points"], axis=1).max() == pytest.approx(1.0, abs=1e-6)


class TextReleaseTfdsTest(_Form, tfds_testing.DatasetBuilderTestCase):
    EXAMPLE_DIR = str(DUMMY / "text")
    FORM = "text"


class ModelNet10FromTextTfdsTest(_Form, tfds_testing.DatasetBuilderTestCase):
    EXAMPLE_DIR = str(DUMMY / "text")
    BUILDER_CONFIG_NAMES_TO_TEST = [_dummy_config("modelnet10")]
    SPLITS = {"train": 3, "test": 1}  # chairs and the sofa; airplanes are not ModelNet10
    FORM = "text"


class Hdf5ReleaseTfdsTest(_Form, tfds_testing.DatasetBuilderTestCase):
    EXAMPLE_DIR = str(DUMMY / "hdf5")
    FORM = "hdf5"


class PrincetonMeshesTfdsTest(_Form, tfds_testing.DatasetBuilderTestCase):
    EXAMPLE_DIR = str(DUMMY / "off")
    FORM = "off"


def test_dummy_data_is_what_the_writers_produce(tmp_path):
    written = dd.write_modelnet(tmp_path)
    for path in written:
        committed = DUMMY / path.relative_to(tmp_path)
        assert committed.read_bytes() == path.read_bytes(), (
            f"{committed} differs from what tests/support/dummy_data.py writes; regenerate it with "
            "python -m tests.support.dummy_data")
        assert committed.stat().st_size < 20_000


# --- bigger copies in tmp dirs -------------------------------------------------------------------

def write_text_release(root, shapes=SHAPES, listed=SHAPES):
    return dd.write_tree(root, dd.text_release(P + 100, shapes, listed))


def write_hdf5_release(root, shapes=SHAPES, with_ids=True):
    return dd.write_tree(root, dd.hdf5_release(P, shapes, with_ids))


def write_off_zip(path, shapes=SHAPES, top="ModelNet40"):
    return dd.write_zip(path, dd.off_release(shapes, top))


def _counts(shapes, classes=M40):
    return {sp: sum(1 for s, x in shapes if x == sp and _cls(s) in classes) for sp in ("train", "test")}


@pytest.fixture
def complete(monkeypatch):
    """Makes the fixtures count as complete copies."""
    expected = {(v, k): _counts(SHAPES, sources.CLASSES[v]) for v in ("modelnet40", "modelnet10")
                for k in ("text", "hdf5", "off")}
    monkeypatch.setattr(sources, "EXPECTED", expected)


def _url_infos(url, payload: bytes):
    return {url: tfds.download.checksums.UrlInfo(size=len(payload), checksum=hashlib.sha256(payload).hexdigest(),
                                                 filename=url.rsplit("/", 1)[1])}


@pytest.fixture(autouse=True)
def no_real_downloads(monkeypatch, tmp_path):
    """No test reaches the network or the developer's own ModelNet copy.

    The only registered archive is on a closed port of this machine (refused at once, like the dead
    official host), and the fallback $SETNET_MODELNET_DIR points at a folder that does not exist.
    """
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    url = f"http://127.0.0.1:{port}/modelnet40_ply_hdf5_2048.zip"
    monkeypatch.setattr(mb.Builder, "url_infos", _url_infos(url, b"0123456789"))
    monkeypatch.setenv("SETNET_MODELNET_DIR", str(tmp_path / "no-fallback"))
    return url


def _examples(builder, split):
    return {ex["shape_id"].decode(): ex for ex in builder.as_dataset(split=split).as_numpy_iterator()}


def _assert_clean(data_dir):
    """A failed prepare in a fresh data dir leaves no trace, not even empty folders."""
    left = sorted(str(p) for p in pathlib.Path(data_dir).rglob("*")) if pathlib.Path(data_dir).exists() else []
    assert not pathlib.Path(data_dir).exists(), left


def test_checksums_list_the_official_archives():
    # What the builder's url_infos reads (patched away in these tests: no real download).
    infos = tfds.download.checksums.load_url_infos(mb.Builder.code_path.parent / "checksums.tsv")
    by_name = {info.filename: (url, info) for url, info in infos.items()}
    url, info = by_name["modelnet40_ply_hdf5_2048.zip"]
    assert url == "https://shapenet.cs.stanford.edu/media/modelnet40_ply_hdf5_2048.zip"
    assert info.size == 435_212_151
    url, info = by_name["ModelNet40.zip"]
    assert info.checksum.startswith("42dc3e656932") and info.size == 2_039_180_837


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
    assert no_real_downloads in msg and "refused" in msg.lower()
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


def _hdf5_zip(tmp_path) -> bytes:
    release = write_hdf5_release(tmp_path / "src" / "modelnet40_ply_hdf5_2048")
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(release.iterdir()):
            zf.write(f, f"modelnet40_ply_hdf5_2048/{f.name}")
    return buf.getvalue()


@pytest.mark.slow
def test_download_through_tfds_interrupted_corrupted_then_completed(tmp_path, complete, monkeypatch):
    payload = _hdf5_zip(tmp_path)
    server = _Server(payload)
    data_dir = tmp_path / "tfds"

    def prepare():
        return datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=tmp_path / "none")

    try:
        monkeypatch.setattr(mb.Builder, "url_infos", _url_infos(server.url, payload))
        server.cut = len(payload) // 3
        with pytest.raises(DataNotFoundError, match=r"was interrupted"):
            prepare()
        _assert_clean(data_dir)
        # TFDS checks the download against the registered size and sha256.
        monkeypatch.setattr(mb.Builder, "url_infos", _url_infos(server.url, payload + b"x"))
        server.cut = None
        with pytest.raises(DataNotFoundError, match=r"does not match the size and sha256 in checksums.tsv"):
            prepare()
        _assert_clean(data_dir)
        monkeypatch.setattr(mb.Builder, "url_infos", _url_infos(server.url, payload))
        builder = prepare()
        assert builder.info.metadata["source"] == "hdf5"
        assert builder.info.splits["test"].num_examples == 2
        cached = [p for p in (data_dir / "downloads" / "modelnet").iterdir() if p.suffix == ".zip"]
        assert len(cached) == 1 and cached[0].read_bytes() == payload
    finally:
        server.httpd.shutdown()
    # TFDS's download cache is found again without the network (the host is gone now).
    again = datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=tmp_path / "none", force=True)
    assert again.info.metadata["source_location"].startswith(str(cached[0]))


@pytest.mark.slow
def test_failed_prepare_keeps_a_completed_download(tmp_path, complete, monkeypatch):
    """Undo removes what the run created, but a download TFDS verified is a cache, not debris."""
    release = write_hdf5_release(tmp_path / "src")
    with h5py.File(release / "ply_data_train1.h5", "r+") as f:
        f["label"][0, 0] = 57
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for f in sorted(release.iterdir()):
            zf.write(f, f.name)
    payload = buf.getvalue()
    server = _Server(payload)
    try:
        monkeypatch.setattr(mb.Builder, "url_infos", _url_infos(server.url, payload))
        with pytest.raises(DataFormatError, match="row 0 has label 57"):
            datasets.prepare("modelnet40", data_dir=tmp_path / "tfds", manual_dir=tmp_path / "none")
    finally:
        server.httpd.shutdown()
    left = sorted(p.relative_to(tmp_path / "tfds").as_posix() for p in (tmp_path / "tfds").rglob("*"))
    assert len(left) == 4 and left[:2] == ["downloads", "downloads/modelnet"], left
    assert left[2].endswith(".zip") and left[3] == left[2] + ".INFO"


def test_failed_prepare_removes_only_what_it_created(tmp_path, complete, caplog):
    """A failed run next to a prepared dataset removes its own folders and nothing else, and the
    next run does not warn about an empty variant folder."""
    manual = write_text_release(tmp_path / "manual", shapes=SHAPES[1:])  # chair_0001 missing
    data_dir = tmp_path / "tfds"
    datasets.prepare("modelnet40", data_dir=data_dir, manual_dir=manual, allow_partial=True)

    def contents():
        return {p: p.read_bytes() if p.is_file() else None for p in data_dir.rglob("*")}

    before = contents()
    argv = ["modelnet40", "--manual-dir", str(manual), "--data-dir", str(data_dir)]
    assert prepare_main(argv) == 2  # the full config refuses the incomplete copy
    assert contents() == before
    assert not (data_dir / "modelnet" / "modelnet40").exists()
    caplog.clear()
    assert prepare_main(argv) == 2
    assert "has no dataset_info.json" not in caplog.text
    # And in a data dir that did not exist, the command leaves none.
    assert prepare_main(["modelnet40", "--manual-dir", str(tmp_path / "nothing"),
                         "--data-dir", str(tmp_path / "fresh")]) == 2
    _assert_clean(tmp_path / "fresh")


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
