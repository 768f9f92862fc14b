"""Writers of the dataset builders' fixtures: the committed `dummy_data/` folders and bigger copies in tmp.

Every fixture is a small file in the format the builder reads in real use, written deterministically
(fixed zip timestamps, gzip mtime 0, HDF5 without object times), so regenerating gives the same bytes
and a test can check that the committed files are still what these writers produce.

- synthetic_shapes: `expected_dummy.npz`, the examples of `SYNTHETIC_DUMMY` (a generated dataset has
  no source files; the committed examples pin the generator, whose output TFDS's version promises);
- digits: `digits.csv.gz`, five images of each digit from scikit-learn's bundled file, same format;
- modelnet: the three published forms, zipped as they are published, a few shapes with `MODELNET_POINTS`
  points each: `text/modelnet40_normal_resampled.zip`, `hdf5/modelnet40_ply_hdf5_2048.zip`,
  `off/ModelNet40.zip`.

Regenerate the committed folders (after a deliberate change to a generator or format) with:

    python -m tests.support.dummy_data
"""

from __future__ import annotations

import gzip
import io
import json
import pathlib
import sys
import zipfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
DATASETS_DIR = ROOT / "pipelines" / "datasets"
# A fixed timestamp keeps zip bytes independent of when they were written.
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)

# (shape id, split): two ModelNet10 classes and one class only in ModelNet40.
SHAPES = [("chair_0001", "train"), ("chair_0002", "train"), ("sofa_0001", "train"),
          ("airplane_0001", "train"), ("chair_0900", "test"), ("airplane_0700", "test")]
MODELNET_POINTS = 32          # points per shape in the committed fixtures (real releases: 2048+)
DIGITS_PER_CLASS = 5


def _synthetic():
    from pipelines.datasets.synthetic_shapes import synthetic_shapes_dataset_builder as ss

    return ss


def synthetic_dummy_config():
    """The small synthetic_shapes config whose examples `expected_dummy.npz` holds."""
    ss = _synthetic()
    return ss.SyntheticShapesConfig(name="dummy", train_size=10, test_size=5, points_per_shape=64,
                                    seed=0, description="10 train / 5 test shapes (dummy_data)")


def write_synthetic(folder) -> pathlib.Path:
    ss, cfg = _synthetic(), synthetic_dummy_config()
    arrays = {}
    for split, size in (("train", cfg.train_size), ("test", cfg.test_size)):
        rows = list(ss.generate_split(split, size, cfg.points_per_shape, cfg.seed))
        arrays[f"{split}_points"] = np.stack([points for _, _, points in rows])
        arrays[f"{split}_labels"] = np.array([label for _, label, _ in rows], np.int64)
    path = pathlib.Path(folder) / "expected_dummy.npz"
    path.parent.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    # np.savez writes a zip with the current time; rewrite it with a fixed one.
    with zipfile.ZipFile(buf) as z:
        members = {n: z.read(n) for n in z.namelist()}
    return _write_zip(path, members)


def write_digits(folder, per_class: int = DIGITS_PER_CLASS) -> pathlib.Path:
    """The first `per_class` images of each digit from scikit-learn's `digits.csv.gz`, same format."""
    from pipelines.datasets.digits import digits_dataset_builder as db

    lines = gzip.decompress(db.bundled_csv().read_bytes()).decode().splitlines()
    kept, count = [], {}
    for line in lines:
        label = line.rsplit(",", 1)[1]
        if count.get(label, 0) < per_class:
            count[label] = count.get(label, 0) + 1
            kept.append(line)
    path = pathlib.Path(folder) / "digits.csv.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(("\n".join(kept) + "\n").encode(), mtime=0))
    return path


# --- ModelNet -------------------------------------------------------------------------------------

def _modelnet_classes():
    from pipelines.datasets.modelnet import sources

    return sources.MODELNET40_CLASSES, sources.MODELNET10_CLASSES


def shape_class(shape_id: str) -> str:
    return shape_id.rsplit("_", 1)[0]


def cloud(shape_id: str, n: int):
    """Raw, deliberately off-centre points and unit normals of a shape (seeded by its id)."""
    from pipelines.datasets.modelnet import sources

    rng = np.random.default_rng(sources.stable_seed(shape_id))
    points = rng.normal(size=(n, 3)) * [1.0, 2.0, 0.5] + [3.0, -1.0, 0.5]
    normals = rng.normal(size=(n, 3))
    return points, normals / np.linalg.norm(normals, axis=1, keepdims=True)


def _text_lines(points, normals) -> str:
    return "".join(",".join(f"{v:.6f}" for v in row) + "\n" for row in np.hstack([points, normals]))


def text_release(n_points: int, shapes=SHAPES, listed=SHAPES) -> dict[str, bytes]:
    """The PointNet++ text release `modelnet40_normal_resampled` as {relative name: bytes}."""
    m40, m10 = _modelnet_classes()
    files = {"modelnet40_shape_names.txt": "\n".join(m40) + "\n",
             "modelnet10_shape_names.txt": "\n".join(m10) + "\n"}
    for variant, classes in (("modelnet40", m40), ("modelnet10", m10)):
        for split in ("train", "test"):
            ids = [s for s, sp in listed if sp == split and shape_class(s) in classes]
            files[f"{variant}_{split}.txt"] = "\n".join(ids) + "\n"
    for shape_id, _ in shapes:
        files[f"{shape_class(shape_id)}/{shape_id}.txt"] = _text_lines(*cloud(shape_id, n_points))
    return {k: v.encode() for k, v in files.items()}


def hdf5_release(n_points: int, shapes=SHAPES, with_ids: bool = True) -> dict[str, bytes]:
    """The PointNet HDF5 release: ply_data_train0..4 / test0..1 (shapes spread over the files)."""
    import h5py

    from pipelines.datasets.modelnet import sources

    m40, _ = _modelnet_classes()
    files = {"shape_names.txt": ("\n".join(m40) + "\n").encode()}
    for split, count in sources.HDF5_FILES.items():
        ids = [s for s, sp in shapes if sp == split]
        for i in range(count):
            part = ids[i::count]
            clouds = [cloud(s, n_points) for s in part]
            buf = io.BytesIO()
            with h5py.File(buf, "w") as f:
                # Object times would make every regeneration differ.
                for key, value in (
                        ("data", np.array([c[0] for c in clouds], np.float32).reshape(-1, n_points, 3)),
                        ("normal", np.array([c[1] for c in clouds], np.float32).reshape(-1, n_points, 3)),
                        ("label", np.array([[m40.index(shape_class(s))] for s in part], np.uint8).reshape(-1, 1))):
                    f.create_dataset(key, data=value, track_times=False)
            files[f"ply_data_{split}{i}.h5"] = buf.getvalue()
            if with_ids:
                files[f"ply_data_{split}_{i}_id2file.json"] = json.dumps(
                    [f"{shape_class(s)}/{s}.ply" for s in part]).encode()
    return files


def box_off(shape_id: str, quads: bool = False, glued_header: bool = True) -> str:
    """A random box as an OFF mesh (z up), as triangles or as quads."""
    from pipelines.datasets.modelnet import sources

    rng = np.random.default_rng(sources.stable_seed(shape_id))
    size = rng.uniform(0.5, 2.0, size=3)
    v = np.array([[x, y, z] for x in (0, 1) for y in (0, 1) for z in (0, 1)], float) * size
    quad = [[0, 1, 3, 2], [4, 6, 7, 5], [0, 4, 5, 1], [2, 3, 7, 6], [0, 2, 6, 4], [1, 5, 7, 3]]
    faces = quad if quads else [t for q in quad for t in ([q[0], q[1], q[2]], [q[0], q[2], q[3]])]
    head = f"OFF{len(v)} {len(faces)} 0" if glued_header else f"OFF\n{len(v)} {len(faces)} 0"
    body = [" ".join(f"{c:.6f}" for c in p) for p in v] + [f"{len(f)} " + " ".join(map(str, f)) for f in faces]
    return "\n".join([head] + body) + "\n"


def off_release(shapes=SHAPES, top: str = "ModelNet40") -> dict[str, bytes]:
    """The Princeton meshes `<top>/<class>/<split>/<id>.off` (every other shape as quads)."""
    return {f"{top}/{shape_class(s)}/{split}/{s}.off": box_off(s, quads=k % 2 == 1).encode()
            for k, (s, split) in enumerate(shapes)}


def write_tree(root, files: dict[str, bytes]) -> pathlib.Path:
    """Writes {relative name: bytes} below `root` (an extracted copy)."""
    root = pathlib.Path(root)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def _write_zip(path, files: dict[str, bytes]) -> pathlib.Path:
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for name in sorted(files):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            z.writestr(info, files[name])
    return path


def write_zip(path, files: dict[str, bytes], top: str = "") -> pathlib.Path:
    """Writes {relative name: bytes} into the zip `path`, below the folder `top` if given."""
    return _write_zip(path, {f"{top}/{n}" if top else n: d for n, d in files.items()})


def write_modelnet(folder, n_points: int = MODELNET_POINTS) -> list[pathlib.Path]:
    """The three published forms, zipped as published, one per subfolder of `folder`."""
    folder = pathlib.Path(folder)
    return [
        write_zip(folder / "text" / "modelnet40_normal_resampled.zip", text_release(n_points),
                  top="modelnet40_normal_resampled"),
        write_zip(folder / "hdf5" / "modelnet40_ply_hdf5_2048.zip", hdf5_release(n_points),
                  top="modelnet40_ply_hdf5_2048"),
        write_zip(folder / "off" / "ModelNet40.zip", off_release()),
    ]


WRITERS = {"synthetic_shapes": write_synthetic, "digits": write_digits, "modelnet": write_modelnet}


def write_all(base=DATASETS_DIR) -> list[pathlib.Path]:
    """Writes every builder's `dummy_data/` below `base` (default: the builders' own folders)."""
    out = []
    for name, writer in WRITERS.items():
        written = writer(pathlib.Path(base) / name / "dummy_data")
        out += written if isinstance(written, list) else [written]
    return out


if __name__ == "__main__":
    for p in write_all(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else DATASETS_DIR):
        print(f"{p} ({p.stat().st_size:,} bytes)")
