"""Writers of the user-data builders' fixtures (`set_folder`, `set_table`): files in every format they
read, the committed `dummy_data/` folders, and bigger tables in tmp.

Written deterministically (fixed zip times, HDF5 without object times), so a test can check that
the committed fixtures are still what these writers produce. Regenerate them with:

    python -m tests.support.set_data
"""

from __future__ import annotations

import io
import pathlib
import sys
import zipfile

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[2]
FOLDER_DUMMY = ROOT / "pipelines" / "datasets" / "set_folder" / "dummy_data"
TABLE_DUMMY = ROOT / "pipelines" / "datasets" / "set_table" / "dummy_data"
_ZIP_TIME = (2020, 1, 1, 0, 0, 0)

# The unit square in z = 0 as two triangles: points sampled on it have z = 0 and x, y in [0, 1].
SQUARE_VERTICES = np.array([[0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]], np.float64)
SQUARE_FACES = [[0, 1, 2], [0, 2, 3]]


def cloud(seed: int, n: int, features: int = 3) -> np.ndarray:
    """A small deterministic point set (n, features), float32."""
    return np.random.default_rng(seed).normal(size=(n, features)).astype(np.float32)


def ply_bytes(points, faces=None, fmt: str = "ascii", names=("x", "y", "z")) -> bytes:
    """A PLY file: `points` as float vertex properties `names`, `faces` as uchar/int lists."""
    points = np.asarray(points, np.float32)
    faces = faces or []
    head = ["ply", f"format {fmt} 1.0", "comment setnet fixture", f"element vertex {len(points)}"]
    head += [f"property float {n}" for n in names]
    if faces:
        head += [f"element face {len(faces)}", "property list uchar int vertex_indices"]
    head.append("end_header")
    out = ("\n".join(head) + "\n").encode("ascii")
    if fmt == "ascii":
        rows = [" ".join(f"{v:.9g}" for v in p) for p in points]
        rows += [" ".join(str(v) for v in [len(f), *f]) for f in faces]
        return out + ("\n".join(rows) + "\n").encode("ascii")
    order = "<" if fmt == "binary_little_endian" else ">"
    out += points.astype(order + "f4").tobytes()
    for f in faces:
        out += np.array([len(f)], "u1").tobytes() + np.array(f, order + "i4").tobytes()
    return out


def off_bytes(vertices, faces) -> bytes:
    lines = ["OFF", f"{len(vertices)} {len(faces)} 0"]
    lines += [" ".join(f"{v:g}" for v in p) for p in vertices]
    lines += [" ".join(str(v) for v in [len(f), *f]) for f in faces]
    return ("\n".join(lines) + "\n").encode("ascii")


def _zip(members: dict) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name in sorted(members):
            info = zipfile.ZipInfo(name, date_time=_ZIP_TIME)
            info.external_attr = 0o644 << 16
            z.writestr(info, members[name])
    return buf.getvalue()


def set_bytes(points, suffix: str) -> bytes:
    """One set in the format of `suffix`: .npy, .npz, .csv (with an x,y,z header), .txt (spaces), .h5,
    .ply (binary little endian)."""
    points = np.asarray(points, np.float32)
    if suffix == ".npy":
        buf = io.BytesIO()
        np.save(buf, points)
        return buf.getvalue()
    if suffix == ".npz":
        return _zip({"points.npy": set_bytes(points, ".npy")})
    if suffix == ".csv":
        head = ",".join(["x", "y", "z", *[f"f{i}" for i in range(3, points.shape[1])]][:points.shape[1]])
        return (head + "\n" + "\n".join(",".join(f"{v:.9g}" for v in p) for p in points) + "\n").encode()
    if suffix == ".txt":
        return ("\n".join(" ".join(f"{v:.9g}" for v in p) for p in points) + "\n").encode()
    if suffix == ".h5":
        import h5py

        buf = io.BytesIO()
        with h5py.File(buf, "w") as f:
            f.create_dataset("points", data=points, track_times=False)  # object times vary per run
        return buf.getvalue()
    if suffix == ".ply":
        return ply_bytes(points, fmt="binary_little_endian")
    raise ValueError(suffix)


def folder_files() -> dict:
    """The `set_folder` dummy data: train/ and test/ of two classes, one set per format."""
    files = {}
    formats = {"train": (".npy", ".npz", ".csv", ".txt", ".h5", ".ply"), "test": (".npy", ".csv")}
    for split, suffixes in formats.items():
        for c, cls in enumerate(("cube", "sphere")):
            for i, suffix in enumerate(suffixes):
                seed = 100 * c + 10 * i + (split == "test")
                files[f"{split}/{cls}/{cls}_{i}{suffix}"] = set_bytes(cloud(seed, 5 + i), suffix)
    # Meshes: sampled to points.
    files["train/cube/cube_mesh.off"] = off_bytes(SQUARE_VERTICES, SQUARE_FACES)
    files["train/sphere/sphere_mesh.ply"] = ply_bytes(SQUARE_VERTICES, SQUARE_FACES, fmt="ascii")
    return files


def write_tree(root, files: dict) -> pathlib.Path:
    root = pathlib.Path(root)
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)
    return root


def point_table(sets: int = 12, classes=("a", "b", "c"), seed: int = 0, features: int = 3,
                min_points: int = 3, max_points: int = 9):
    """A long table (pyarrow) of `sets` sets: columns sid, label, x, y, z (f3, ... beyond three),
    rows of the sets interleaved (sorted by a random key), so a set spans batches and shards."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_points, max_points + 1, size=sets)
    sid = np.repeat([f"set{i:03d}" for i in range(sets)], sizes)
    label = np.repeat([classes[i % len(classes)] for i in range(sets)], sizes)
    order = rng.permutation(len(sid))
    values = rng.normal(size=(len(sid), features)).astype(np.float64)
    names = ["x", "y", "z", *[f"f{i}" for i in range(3, features)]][:features]
    return pa.table({"sid": sid[order], "label": label[order], **{n: values[:, i] for i, n in enumerate(names)}})


def table_shards(table, shards: int = 2):
    """`table` cut into `shards` consecutive pieces (sets then span shards)."""
    n = table.num_rows
    cuts = np.linspace(0, n, shards + 1).astype(int)
    return [table.slice(lo, hi - lo) for lo, hi in zip(cuts[:-1], cuts[1:])]


def write_parquet_shards(folder, table, shards: int = 2, row_group_size: int = 16) -> pathlib.Path:
    import pyarrow.parquet as pq

    folder = pathlib.Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for i, part in enumerate(table_shards(table, shards)):
        pq.write_table(part, folder / f"part-{i:05d}.parquet", row_group_size=row_group_size)
    return folder


def table_dummy():
    """The `set_table` dummy data: 12 sets of 3 classes in two Parquet shards (sets span both)."""
    return point_table()


def write_folder_dummy(folder=FOLDER_DUMMY) -> pathlib.Path:
    return write_tree(folder, folder_files())


def write_table_dummy(folder=TABLE_DUMMY) -> pathlib.Path:
    return write_parquet_shards(pathlib.Path(folder) / "points", table_dummy())


if __name__ == "__main__":
    base = pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else None
    for name, writer, default in (("set_folder", write_folder_dummy, FOLDER_DUMMY),
                                  ("set_table", write_table_dummy, TABLE_DUMMY)):
        print(writer(base / name / "dummy_data" if base else default))
