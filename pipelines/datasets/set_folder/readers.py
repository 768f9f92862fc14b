"""Reading one set per file, and finding the sets of a `set_folder` dataset.

Formats (by suffix): `.npy` (a 2-D array, one row per point), `.npz` (the array `points`, or its only
array), `.txt` / `.csv` (one point a line, values separated by commas or whitespace; an optional
header line of names; `#` starts a comment), `.h5` / `.hdf5` (the dataset `points`, or the only
dataset), `.ply` (ASCII or binary: the vertex properties as features, or, when it has faces, points
sampled on the mesh) and `.off` (a mesh: points sampled on its surface, area-weighted, as for
ModelNet's meshes). Every error is a `DataFormatError` naming the file. No TensorFlow here.

Example:

    import pathlib, numpy as np
    from pipelines.datasets.set_folder import readers
    pathlib.Path("/tmp/sets/a").mkdir(parents=True, exist_ok=True)
    np.save("/tmp/sets/a/s1.npy", np.zeros((4, 3), np.float32))
    points, names = readers.read_set(pathlib.Path("/tmp/sets/a/s1.npy"), seed=0)
    assert points.shape == (4, 3) and names is None
"""

from __future__ import annotations

import dataclasses
import io
import pathlib
import re
import zipfile
import zlib

import numpy as np

from pipelines.datasets import DataFormatError, DataNotFoundError
from pipelines.datasets.modelnet.sources import parse_off, sample_surface

SUFFIXES = (".npy", ".npz", ".txt", ".csv", ".h5", ".hdf5", ".ply", ".off")
MESH_NAMES = ("x", "y", "z")
_SPLIT_NAME = re.compile(r"^[A-Za-z0-9_]+$")


# --- one file ------------------------------------------------------------------------------------

def read_set(path: pathlib.Path, *, seed: int, points_per_mesh: int = 2048) -> tuple[np.ndarray, list | None]:
    """(points (N, F), feature names or None) of one set file; meshes give `points_per_mesh`
    surface points (x, y, z) drawn with `seed`."""
    suffix = path.suffix.lower()
    reader = {".npy": _npy, ".npz": _npz, ".txt": _text, ".csv": _text, ".h5": _h5, ".hdf5": _h5,
              ".ply": _ply, ".off": _off}.get(suffix)
    if reader is None:
        raise DataFormatError(f"{path}: unsupported file type {suffix or '(none)'!r}; sets are "
                              f"{', '.join(SUFFIXES)} files: convert it or move it out of the folder")
    try:
        data = path.read_bytes()
    except OSError as e:
        raise DataFormatError(f"{path}: cannot be read ({e.strerror or e}); check its permissions") from e
    points, names = reader(data, str(path), seed=seed, points_per_mesh=points_per_mesh)
    if points.dtype.kind not in "biuf":
        raise DataFormatError(f"{path}: the values are {points.dtype} (non-numeric); every feature "
                              "must be a number")
    return points, names


def _corrupt(where, e, kind):
    return DataFormatError(f"{where}: not a readable {kind} file ({type(e).__name__}: {e}); it is "
                           "truncated or corrupt: write it again")


def _npy(data, where, **_):
    try:
        return np.load(io.BytesIO(data), allow_pickle=False), None
    except (ValueError, OSError, EOFError) as e:
        raise _corrupt(where, e, ".npy") from e


def _npz(data, where, **_):
    try:
        with np.load(io.BytesIO(data), allow_pickle=False) as z:
            keys = list(z.keys())
            if "points" in keys:
                key = "points"
            elif len(keys) == 1:
                key = keys[0]
            else:
                raise DataFormatError(f"{where}: holds arrays {', '.join(keys) or '(none)'}; name the "
                                      "set's array 'points' (or keep only one array in the file)")
            return np.asarray(z[key]), None
    except (ValueError, OSError, EOFError, zipfile.BadZipFile, zlib.error, KeyError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise _corrupt(where, e, ".npz") from e


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def _text(data, where, **_):
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{where}: not UTF-8 text ({e}); save it as UTF-8 CSV or text") from e
    rows = [(i, ln.split("#", 1)[0].strip()) for i, ln in enumerate(text.splitlines(), 1)]
    rows = [(i, ln) for i, ln in rows if ln]
    if not rows:
        return np.zeros((0, 0)), None
    sep = "," if "," in rows[0][1] else None
    split = [(i, [t.strip() for t in ln.split(sep)]) for i, ln in rows]
    names = None
    if not any(_is_number(t) for t in split[0][1]):
        names, split = split[0][1], split[1:]
    width = len(names) if names else len(split[0][1]) if split else 0
    for line, tokens in split:
        if len(tokens) != width:
            raise DataFormatError(f"{where}: line {line} has {len(tokens)} values, expected {width} "
                                  "(every point needs the same features); the file is truncated or "
                                  "a row is malformed: fix that line")
    try:
        values = np.array([t for _, tokens in split for t in tokens], dtype=np.float64)
    except ValueError:
        for line, tokens in split:
            for col, t in enumerate(tokens, 1):
                if not _is_number(t):
                    raise DataFormatError(f"{where}: line {line} column {col} is {t!r}, not a number; "
                                          "every feature must be numeric") from None
        raise
    return values.reshape(len(split), width), names


def _h5(data, where, **_):
    import h5py

    try:
        with h5py.File(io.BytesIO(data), "r") as f:
            arrays = [k for k in f.keys() if isinstance(f[k], h5py.Dataset)]
            if "points" in arrays:
                key = "points"
            elif len(arrays) == 1:
                key = arrays[0]
            else:
                raise DataFormatError(f"{where}: holds datasets {', '.join(arrays) or '(none)'}; name "
                                      "the set's dataset 'points' (or keep only one in the file)")
            return np.asarray(f[key][()]), None
    except (OSError, KeyError, ValueError) as e:
        if isinstance(e, DataFormatError):
            raise
        raise _corrupt(where, e, "HDF5") from e


def _retold(e: DataFormatError) -> DataFormatError:
    # ModelNet's mesh reader ends its messages with ModelNet's remedies; a user's own file needs its own.
    text = str(e).split("; replace", 1)[0]
    return DataFormatError(f"{text}; fix the file or remove it")


def _mesh_points(vertices, triangles, where, seed, points_per_mesh):
    try:
        points, _ = sample_surface(np.asarray(vertices, np.float64), triangles, points_per_mesh, seed, where)
    except DataFormatError as e:
        raise _retold(e) from e
    return points, list(MESH_NAMES)


def _off(data, where, *, seed, points_per_mesh):
    try:
        vertices, triangles = parse_off(data, where)
    except DataFormatError as e:
        raise _retold(e) from e
    return _mesh_points(vertices, triangles, where, seed, points_per_mesh)


# --- PLY ----------------------------------------------------------------------------------------

_PLY_TYPES = {"char": "i1", "int8": "i1", "uchar": "u1", "uint8": "u1", "short": "i2", "int16": "i2",
              "ushort": "u2", "uint16": "u2", "int": "i4", "int32": "i4", "uint": "u4", "uint32": "u4",
              "float": "f4", "float32": "f4", "double": "f8", "float64": "f8"}


@dataclasses.dataclass
class _Element:
    name: str
    count: int
    props: list  # (name, dtype) or (name, (count dtype, item dtype)) for lists


def _ply_header(data: bytes, where: str):
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise DataFormatError(f"{where}: not a PLY file (no 'ply' ... 'end_header' header); it is "
                              "truncated or not PLY: write it again")
    nl = data.find(b"\n", end)
    body = data[nl + 1:] if nl >= 0 else b""
    fmt, elements = None, []
    try:
        for line in data[:end].decode("ascii").splitlines()[1:]:
            words = line.split()
            if not words or words[0] in ("comment", "obj_info"):
                continue
            if words[0] == "format":
                fmt = words[1]
            elif words[0] == "element":
                elements.append(_Element(words[1], int(words[2]), []))
            elif words[0] == "property" and words[1] == "list":
                elements[-1].props.append((words[4], (_PLY_TYPES[words[2]], _PLY_TYPES[words[3]])))
            elif words[0] == "property":
                elements[-1].props.append((words[2], _PLY_TYPES[words[1]]))
    except (UnicodeDecodeError, IndexError, KeyError, ValueError) as e:
        raise DataFormatError(f"{where}: malformed PLY header ({type(e).__name__}: {e}); write the "
                              "file again") from e
    if fmt not in ("ascii", "binary_little_endian", "binary_big_endian"):
        raise DataFormatError(f"{where}: PLY format {fmt!r} is not ascii, binary_little_endian or "
                              "binary_big_endian")
    return fmt, elements, body


def _ply_binary(element, body, offset, order, where):
    """(columns {name: array}, new offset) of one element in binary PLY."""
    scalar = [(n, order + t) for n, t in element.props if isinstance(t, str)]
    lists = [p for p in element.props if not isinstance(p[1], str)]
    truncated = DataFormatError(f"{where}: ends inside the '{element.name}' element: the file is "
                                "truncated; write it again")
    if not lists:
        dtype = np.dtype(scalar)
        size = dtype.itemsize * element.count
        if offset + size > len(body):
            raise truncated
        arr = np.frombuffer(body, dtype=dtype, count=element.count, offset=offset)
        return {n: arr[n] for n, _ in scalar}, offset + size
    # Lists: faces are almost always all triangles (or all of one size); try that layout first.
    if len(element.props) == 1 and element.count:
        name, (ct, it) = element.props[0]
        if offset + np.dtype(ct).itemsize > len(body):
            raise truncated
        k = int(np.frombuffer(body, dtype=order + ct, count=1, offset=offset)[0])
        dtype = np.dtype([("n", order + ct), ("v", order + it, (k,))])
        size = dtype.itemsize * element.count
        if offset + size <= len(body):
            arr = np.frombuffer(body, dtype=dtype, count=element.count, offset=offset)
            if np.all(arr["n"] == k):
                return {name: [row for row in arr["v"]]}, offset + size
    cols = {n: [] for n, _ in element.props}
    for _ in range(element.count):
        for n, t in element.props:
            if isinstance(t, str):
                size = np.dtype(t).itemsize
                if offset + size > len(body):
                    raise truncated
                cols[n].append(np.frombuffer(body, order + t, 1, offset)[0])
                offset += size
            else:
                ct, it = t
                if offset + np.dtype(ct).itemsize > len(body):
                    raise truncated
                k = int(np.frombuffer(body, order + ct, 1, offset)[0])
                offset += np.dtype(ct).itemsize
                if offset + k * np.dtype(it).itemsize > len(body):
                    raise truncated
                cols[n].append(np.frombuffer(body, order + it, k, offset))
                offset += k * np.dtype(it).itemsize
    return {n: (np.array(v) if not isinstance(dict(element.props)[n], tuple) else v)
            for n, v in cols.items()}, offset


def _ply_ascii(elements, body, where):
    tokens = body.decode("ascii", "replace").split()
    pos, out = 0, {}
    for el in elements:
        cols = {n: [] for n, _ in el.props}
        for row in range(el.count):
            for n, t in el.props:
                try:
                    if isinstance(t, str):
                        cols[n].append(float(tokens[pos]))
                        pos += 1
                    else:
                        k = int(tokens[pos])
                        cols[n].append(np.array(tokens[pos + 1:pos + 1 + k], dtype=np.int64))
                        if len(cols[n][-1]) != k:
                            raise IndexError
                        pos += 1 + k
                except IndexError:
                    raise DataFormatError(f"{where}: ends at '{el.name}' {row + 1} of {el.count}: the file "
                                          "is truncated; write it again") from None
                except ValueError:
                    raise DataFormatError(f"{where}: '{el.name}' {row + 1} property {n!r} is "
                                          f"{tokens[pos]!r}, not a number") from None
        out[el.name] = {n: (np.array(v) if isinstance(t, str) else v)
                        for (n, t), v in zip(el.props, cols.values())}
    return out


def _ply(data, where, *, seed, points_per_mesh):
    fmt, elements, body = _ply_header(data, where)
    if fmt == "ascii":
        columns = _ply_ascii(elements, body, where)
    else:
        order, offset, columns = ("<" if fmt == "binary_little_endian" else ">"), 0, {}
        for el in elements:
            columns[el.name], offset = _ply_binary(el, body, offset, order, where)
    vertex = next((el for el in elements if el.name == "vertex"), None)
    if vertex is None:
        raise DataFormatError(f"{where}: has no 'vertex' element; a set is stored as PLY vertices")
    props = [n for n, t in vertex.props if isinstance(t, str)]
    vcols = columns["vertex"]
    face = next((el for el in elements if el.name == "face" and el.count), None)
    if face is not None:
        if not {"x", "y", "z"} <= set(props):
            raise DataFormatError(f"{where}: a mesh needs vertex properties x, y, z; it has "
                                  f"{', '.join(props)}")
        vertices = np.stack([vcols[c].astype(np.float64) for c in MESH_NAMES], axis=1)
        lists = [n for n, t in face.props if not isinstance(t, str)]
        polys = columns["face"][lists[0]] if lists else []
        if polys and len({len(p) for p in polys}) == 1:
            arr = np.stack(polys).astype(np.int64)
            triangles = np.concatenate([arr[:, [0, j, j + 1]] for j in range(1, arr.shape[1] - 1)]
                                       or [np.zeros((0, 3), np.int64)])
        else:
            tris = [(p[0], p[j], p[j + 1]) for p in polys for j in range(1, len(p) - 1)]
            triangles = np.array(tris, dtype=np.int64).reshape(-1, 3)
        if triangles.size and (triangles.min() < 0 or triangles.max() >= len(vertices)):
            raise DataFormatError(f"{where}: a face refers to a vertex outside 0..{len(vertices) - 1}; "
                                  "fix the file or remove it")
        return _mesh_points(vertices, triangles, where, seed, points_per_mesh)
    points = (np.stack([vcols[n].astype(np.float64) for n in props], axis=1) if props
              else np.zeros((vertex.count, 0)))
    return points, props


# --- the folder ----------------------------------------------------------------------------------

@dataclasses.dataclass
class Layout:
    """The sets of a folder: {split: [(class, relative path)]}, sorted; `given` when the folder
    names its splits (`train/`, `test/`, ...), else every set is under "all" for the seeded split."""

    root: pathlib.Path
    sets: dict
    given: bool

    @property
    def classes(self) -> list:
        return sorted({c for items in self.sets.values() for c, _ in items})

    def files(self) -> list:
        return [self.root / rel for items in self.sets.values() for _, rel in items]


def _visible(folder: pathlib.Path):
    return sorted(p for p in folder.iterdir() if not p.name.startswith("."))


def _class_files(class_dir: pathlib.Path, root: pathlib.Path) -> list:
    files = sorted(p for p in class_dir.rglob("*") if p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(class_dir).parts))
    for p in files:
        if p.suffix.lower() not in SUFFIXES:
            raise DataFormatError(f"{p}: unsupported file type {p.suffix or '(none)'!r}; sets are "
                                  f"{', '.join(SUFFIXES)} files: convert it or move it out of {root}")
    return [p.relative_to(root).as_posix() for p in files]


def _classes_in(folder: pathlib.Path, root: pathlib.Path) -> list:
    out = []
    for p in _visible(folder):
        if not p.is_dir():
            raise DataFormatError(f"{p}: a file outside any class folder; put each set in "
                                  f"{folder}/<class>/ (the folder's name is the set's class)")
        out += [(p.name, rel) for rel in _class_files(p, root)]
    return out


def find_sets(root) -> Layout:
    """The sets under `root`: `root/<class>/<file>`, or `root/<split>/<class>/<file>` when `root`
    has a `train` folder (then every folder in `root` is a split)."""
    root = pathlib.Path(root).expanduser()
    if not root.exists():
        raise DataNotFoundError(f"{root}: no such folder; pass the folder that holds one folder per "
                                "class (or train/ and test/ folders of them)")
    if not root.is_dir():
        raise DataFormatError(f"{root}: not a folder; set_folder reads DIR/<class>/<one file per set> "
                              "(for a table of points use set_table)")
    top = _visible(root)
    given = any(p.name == "train" and p.is_dir() for p in top)
    if given:
        sets = {}
        for p in top:
            if not p.is_dir() or not _SPLIT_NAME.match(p.name):
                raise DataFormatError(f"{p}: with a train/ folder, every entry of {root} must be a split "
                                      "folder (train, test, validation, ...: letters, digits, _)")
            sets[p.name] = _classes_in(p, root)
    else:
        sets = {"all": _classes_in(root, root)}
    if not any(sets.values()):
        raise DataFormatError(f"{root}: no set files found; expected {root}/<class>/<set file> "
                              f"({', '.join(SUFFIXES)})")
    return Layout(root, sets, given)
