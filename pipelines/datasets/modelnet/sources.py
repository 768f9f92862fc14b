"""Readers for the three published forms of ModelNet, found in a directory or inside zip files.

- "text": PointNet++ `modelnet40_normal_resampled` (`<class>/<class>_<nnnn>.txt`, lines `x,y,z,nx,ny,nz`,
  split lists `modelnet40_{train,test}.txt` and `modelnet10_{train,test}.txt`);
- "hdf5": PointNet `modelnet40_ply_hdf5_2048` (`ply_data_{train,test}<i>.h5` with `data` (n, 2048, 3),
  `label` (n, 1), usually `normal`; `ply_data_<split>_<i>_id2file.json` name the shapes);
- "off": Princeton meshes `ModelNet40.zip` / `ModelNet10.zip` (`<class>/<split>/<class>_<nnnn>.off`),
  sampled here: `points_per_shape` points uniformly on the surface (area-weighted), deterministic per shape.

Every reader returns the first `points_per_shape` points of a shape centred on their mean and scaled to
the unit sphere (max radius 1), with y up, as the PointNet/PointNet++ loaders use them. Errors name the
file (`archive.zip:member` inside zips) and say what to do. No TensorFlow here.

Example:

    from pipelines.datasets.modelnet import sources
    found = sources.find_sources(["/data/modelnet"])          # every recognised copy
    inv = found[0].inventory("modelnet40")                    # what is there, what is missing
    for shape_id, label, points, normals in found[0].examples(inv.items["test"], 2048): ...
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import pathlib
import re
import zipfile
import zlib
from collections.abc import Iterator

import numpy as np

from pipelines.datasets import DataFormatError

MODELNET40_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup",
    "curtain", "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp",
    "laptop", "mantel", "monitor", "night_stand", "person", "piano", "plant", "radio", "range_hood",
    "sink", "sofa", "stairs", "stool", "table", "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox")
MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa",
                      "table", "toilet")
CLASSES = {"modelnet40": MODELNET40_CLASSES, "modelnet10": MODELNET10_CLASSES}

# Official split sizes. The HDF5 release lacks 3 ModelNet40 train shapes (airplane_0050,
# curtain_0130, plant_0014; counted from its id2file lists), none of them in ModelNet10.
EXPECTED = {
    ("modelnet40", "text"): {"train": 9843, "test": 2468},
    ("modelnet40", "off"): {"train": 9843, "test": 2468},
    ("modelnet40", "hdf5"): {"train": 9840, "test": 2468},
    ("modelnet10", "text"): {"train": 3991, "test": 908},
    ("modelnet10", "off"): {"train": 3991, "test": 908},
    ("modelnet10", "hdf5"): {"train": 3991, "test": 908},
}
HDF5_FILES = {"train": 5, "test": 2}
SPLITS = ("train", "test")
TITLES = {"text": "PointNet++ text release (modelnet40_normal_resampled)",
          "hdf5": "PointNet HDF5 release (modelnet40_ply_hdf5_2048)",
          "off": "Princeton meshes (ModelNet40/ModelNet10 .off)"}


def normalize(points: np.ndarray, where: str) -> np.ndarray:
    """Centres `points` on their mean and scales them to max radius 1 (float32)."""
    points = np.asarray(points, dtype=np.float64)
    if not np.isfinite(points).all():
        raise DataFormatError(f"{where}: non-finite coordinates (NaN or inf); the file is corrupt, "
                              "replace it with a fresh copy from the release")
    centred = points - points.mean(axis=0)
    radius = np.linalg.norm(centred, axis=1).max()
    if not radius > 0:
        raise DataFormatError(f"{where}: all points coincide; the file is corrupt, replace it")
    return (centred / radius).astype(np.float32)


def stable_seed(shape_id: str) -> int:
    """Seed derived from the shape id alone, so a mesh is sampled the same way everywhere."""
    return int.from_bytes(hashlib.sha256(shape_id.encode()).digest()[:8], "little")


# --- where files are: directories and zip archives behave the same -------------------------------

class Tree:
    """Files under a directory or inside a zip archive, addressed by '/'-separated relative names."""

    def __init__(self, root: pathlib.Path):
        self.root = root
        self._zip = None
        if root.is_dir():
            names = []
            for dirpath, dirnames, filenames in os.walk(root):
                dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
                rel = pathlib.Path(dirpath).relative_to(root).as_posix()
                names += [f if rel == "." else f"{rel}/{f}" for f in filenames if not f.startswith(".")]
            self.names = names
        else:
            try:
                self._zip = zipfile.ZipFile(root)
                self.names = [n for n in self._zip.namelist() if not n.endswith("/")]
            except (zipfile.BadZipFile, OSError) as e:
                raise DataFormatError(f"{root}: not a readable zip archive ({e}); it is truncated or "
                                      "corrupt: delete it and download it again") from e
        self.name_set = set(self.names)

    def where(self, name: str) -> str:
        return f"{self.root}:{name}" if self._zip else str(self.root / name)

    def read(self, name: str) -> bytes:
        try:
            if self._zip:
                return self._zip.read(name)
            return (self.root / name).read_bytes()
        except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:
            raise DataFormatError(f"{self.where(name)}: cannot be read ({e}); the file or its archive "
                                  "is truncated or corrupt: replace it with a fresh copy") from e

    def open_h5(self, name: str):
        import h5py

        try:
            if self._zip:
                return h5py.File(io.BytesIO(self.read(name)), "r")
            return h5py.File(self.root / name, "r")
        except OSError as e:
            raise DataFormatError(f"{self.where(name)}: not a readable HDF5 file ({e}); it is truncated "
                                  "or corrupt: replace it with a fresh copy of the release") from e


# --- the three forms ----------------------------------------------------------------------------

@dataclasses.dataclass
class Inventory:
    """What a source holds for one variant: items per split, expected and missing counts."""

    variant: str
    items: dict            # split -> list of items (reader-specific)
    expected: dict         # split -> official count for this form
    missing_examples: list  # a few missing shape ids or files, for messages

    def found(self, split: str) -> int:
        return len(self.items[split])

    def missing(self, split: str) -> int:
        return max(self.expected[split] - self.found(split), 0)

    @property
    def complete(self) -> bool:
        return all(self.missing(s) == 0 for s in SPLITS)


class Source:
    kind = ""

    def __init__(self, tree: Tree, prefix: str):
        self.tree, self.prefix = tree, prefix

    @property
    def location(self) -> str:
        return self.tree.where(self.prefix.rstrip("/")) if self.prefix else str(self.tree.root)

    @property
    def title(self) -> str:
        return TITLES[self.kind]

    def classes_present(self) -> set:
        raise NotImplementedError

    def inventory(self, variant: str) -> Inventory:
        raise NotImplementedError

    def examples(self, items, points_per_shape: int) -> Iterator[tuple[str, int, np.ndarray, np.ndarray]]:
        """Yields (shape_id, label, points (P, 3) normalised, normals (P, 3)) for `items`."""
        raise NotImplementedError


def _label_of(shape_id: str, classes, where: str, strict: bool):
    name = shape_id.rsplit("_", 1)[0]
    if name in classes:
        return classes.index(name)
    if strict:
        raise DataFormatError(f"{where}: class {name!r} of shape {shape_id!r} is not one of the "
                              f"{len(classes)} ModelNet classes; the list is corrupt or from another "
                              "dataset: restore the release's original file")
    return None


class TextSource(Source):
    kind = "text"

    def classes_present(self):
        return {n.split("/")[0] for n in self._shape_files()}

    def _shape_files(self):
        p = len(self.prefix)
        return [n[p:] for n in self.tree.names if n.startswith(self.prefix) and n.endswith(".txt")
                and n[p:].count("/") == 1]

    def _split_list(self, variant, split):
        """(ids, where, strict): the variant's own list, else ModelNet40's filtered to its classes."""
        for list_variant in dict.fromkeys((variant, "modelnet40")):
            name = f"{self.prefix}{list_variant}_{split}.txt"
            if name in self.tree.name_set:
                ids = self.tree.read(name).decode("utf-8", "replace").split()
                return ids, self.tree.where(name), list_variant == variant
        raise DataFormatError(f"{self.location}: the split list {variant}_{split}.txt is missing; it "
                              "comes with the modelnet40_normal_resampled release: restore it")

    def inventory(self, variant):
        classes = CLASSES[variant]
        items, missing = {}, []
        for split in SPLITS:
            ids, where, strict = self._split_list(variant, split)
            items[split] = []
            for line, shape_id in enumerate(ids, 1):
                label = _label_of(shape_id, classes, f"{where} line {line}", strict)
                if label is None:
                    continue
                name = f"{self.prefix}{shape_id.rsplit('_', 1)[0]}/{shape_id}.txt"
                if name in self.tree.name_set:
                    items[split].append((shape_id, label, name))
                elif len(missing) < 5:
                    missing.append(shape_id)
        return Inventory(variant, items, EXPECTED[(variant, "text")], missing)

    def examples(self, items, points_per_shape):
        for shape_id, label, name in items:
            data = parse_text(self.tree.read(name), self.tree.where(name), points_per_shape)
            points = normalize(data[:, :3], self.tree.where(name))
            yield shape_id, label, points, data[:, 3:6].astype(np.float32)


def parse_text(data: bytes, where: str, points_per_shape: int) -> np.ndarray:
    """First `points_per_shape` rows of a `x,y,z,nx,ny,nz` file, after checking every line's shape."""
    lines = data.split(b"\n")
    # Release files end with a newline; a file cut anywhere else is truncated.
    truncated = bool(data) and not data.endswith(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    bad = len(lines) - 1 if truncated else next(
        (i for i, line in enumerate(lines) if line.count(b",") != 5), None)
    if bad is not None:
        what = ("the last line is cut short: the file is truncated" if bad == len(lines) - 1
                else f"line {bad + 1} does not have 6 comma-separated values")
        raise DataFormatError(f"{where}: {what}; replace it with the file from the release "
                              "(or remove it and prepare with --allow-partial)")
    if len(lines) < points_per_shape:
        raise DataFormatError(f"{where}: only {len(lines)} points, fewer than the {points_per_shape} "
                              "this dataset stores; the file is truncated or not from the release: "
                              "replace it (or remove it and prepare with --allow-partial)")
    try:
        values = np.array(b",".join(lines[:points_per_shape]).split(b","), dtype=np.float64)
    except ValueError as e:
        raise DataFormatError(f"{where}: a value is not a number ({e}); the file is corrupt: replace "
                              "it with the file from the release") from e
    return values.reshape(points_per_shape, 6)


_H5_RE = re.compile(r"^(.*?)ply_data_(train|test)(\d+)\.h5$")


class Hdf5Source(Source):
    kind = "hdf5"

    def _files(self):
        out = {s: {} for s in SPLITS}
        for n in self.tree.names:
            m = _H5_RE.match(n)
            if m and m.group(1) == self.prefix:
                out[m.group(2)][int(m.group(3))] = n
        return out

    def classes_present(self):
        return set(MODELNET40_CLASSES)

    def _ids(self, split, index, rows, where):
        name = f"{self.prefix}ply_data_{split}_{index}_id2file.json"
        if name not in self.tree.name_set:
            return [f"{split}{index}_{r:04d}" for r in range(rows)]
        try:
            files = json.loads(self.tree.read(name))
        except ValueError as e:
            raise DataFormatError(f"{self.tree.where(name)}: not valid JSON ({e}); restore the file "
                                  "from the release or delete it (shape ids then become row numbers)") from e
        if len(files) != rows:
            raise DataFormatError(f"{self.tree.where(name)} names {len(files)} shapes but {where} has "
                                  f"{rows} rows; the two files come from different copies: restore both")
        return [pathlib.PurePosixPath(f).stem for f in files]

    def inventory(self, variant):
        classes = CLASSES[variant]
        items, missing = {}, []
        for split in SPLITS:
            items[split] = []
            files = self._files()[split]
            for index in range(HDF5_FILES[split]):
                if index not in files:
                    missing.append(f"ply_data_{split}{index}.h5")
                    continue
                name = files[index]
                where = self.tree.where(name)
                with self.tree.open_h5(name) as f:
                    labels = _h5_labels(f, where)
                ids = self._ids(split, index, len(labels), where)
                for row, (label, shape_id) in enumerate(zip(labels, ids)):
                    if not 0 <= label < len(MODELNET40_CLASSES):
                        raise DataFormatError(
                            f"{where}: row {row} has label {label}, outside the 40 ModelNet40 classes "
                            "(0..39); the file is corrupt or from another dataset: replace it")
                    name40 = MODELNET40_CLASSES[label]
                    if name40 in classes:
                        items[split].append((shape_id, classes.index(name40), name, row))
        return Inventory(variant, items, EXPECTED[(variant, "hdf5")], missing)

    def examples(self, items, points_per_shape):
        by_file = {}
        for item in items:
            by_file.setdefault(item[2], []).append(item)
        for name, file_items in by_file.items():
            where = self.tree.where(name)
            with self.tree.open_h5(name) as f:
                data = _h5_array(f, "data", where)
                if data.ndim != 3 or data.shape[2] != 3:
                    raise DataFormatError(f"{where}: 'data' has shape {data.shape}, expected (n, points, 3)")
                if data.shape[1] < points_per_shape:
                    raise DataFormatError(f"{where}: shapes have {data.shape[1]} points, fewer than the "
                                          f"{points_per_shape} this dataset stores; use the 2048-point release")
                normals = _h5_array(f, "normal", where) if "normal" in f else None
            for shape_id, label, _, row in file_items:
                points = normalize(data[row, :points_per_shape], f"{where} row {row}")
                n = (normals[row, :points_per_shape] if normals is not None
                     else np.zeros((points_per_shape, 3)))
                yield shape_id, label, points, n.astype(np.float32)


def _h5_array(f, key, where):
    try:
        return np.asarray(f[key])
    except (OSError, KeyError) as e:
        raise DataFormatError(f"{where}: cannot read dataset '{key}' ({e}); the file is truncated or "
                              "corrupt: replace it with a fresh copy of the release") from e


def _h5_labels(f, where):
    if "label" not in f or "data" not in f:
        raise DataFormatError(f"{where}: missing 'data' or 'label'; not a PointNet HDF5 file")
    labels = _h5_array(f, "label", where).reshape(-1).astype(np.int64)
    if len(labels) != f["data"].shape[0]:
        raise DataFormatError(f"{where}: {len(labels)} labels for {f['data'].shape[0]} shapes; corrupt file")
    return labels


_OFF_RE = re.compile(r"^(.*?)([a-z_]+)/(train|test)/\2_(\d+)\.off$")


class OffSource(Source):
    kind = "off"

    def _files(self):
        for n in self.tree.names:
            m = _OFF_RE.match(n)
            if m and m.group(1) == self.prefix:
                yield n, m.group(2), m.group(3)

    def classes_present(self):
        return {c for _, c, _ in self._files()}

    def inventory(self, variant):
        classes = CLASSES[variant]
        items = {s: [] for s in SPLITS}
        for name, cls, split in sorted(self._files()):
            if cls not in MODELNET40_CLASSES:
                raise DataFormatError(f"{self.tree.where(name)}: class folder {cls!r} is not one of the "
                                      "40 ModelNet classes; remove it or restore the original archive")
            if cls in classes:
                items[split].append((pathlib.PurePosixPath(name).stem, classes.index(cls), name))
        return Inventory(variant, items, EXPECTED[(variant, "off")], [])

    def examples(self, items, points_per_shape):
        for shape_id, label, name in items:
            where = self.tree.where(name)
            vertices, triangles = parse_off(self.tree.read(name), where)
            points, normals = sample_surface(vertices, triangles, points_per_shape, stable_seed(shape_id),
                                             where)
            # Princeton meshes are z-up; the other two releases (and our metadata) are y-up.
            to_y_up = np.array([[1, 0, 0], [0, 0, -1], [0, 1, 0]], dtype=np.float64)
            yield (shape_id, label, normalize(points @ to_y_up, where),
                   (normals @ to_y_up).astype(np.float32))


def parse_off(data: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """Vertices (V, 3) and triangles (T, 3) of an OFF mesh; polygons are fan-triangulated."""
    fix = "replace it with the file from the archive (or remove it and prepare with --allow-partial)"
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as e:
        raise DataFormatError(f"{where}: not a text OFF file ({e}); {fix}") from e
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith("OFF"):
        raise DataFormatError(f"{where}: does not start with 'OFF'; {fix}")
    # Many ModelNet files glue the counts to the keyword ("OFF490 518 0").
    head, body = (lines[1], lines[2:]) if lines[0] == "OFF" else (lines[0][3:], lines[1:])
    try:
        nv, nf = (int(x) for x in head.split()[:2])
    except ValueError as e:
        raise DataFormatError(f"{where}: bad vertex/face counts {head!r}; {fix}") from e
    if len(body) < nv + nf:
        raise DataFormatError(f"{where}: declares {nv} vertices and {nf} faces but has only "
                              f"{len(body)} lines: the file is truncated; {fix}")
    try:
        vertices = np.array([ln.split()[:3] for ln in body[:nv]], dtype=np.float64).reshape(nv, 3)
        tokens = " ".join(body[nv:nv + nf]).split()
        flat = np.array(tokens, dtype=np.int64) if nf else np.zeros(0, np.int64)
        if len(flat) == 4 * nf and np.all(flat[::4] == 3):
            triangles = flat.reshape(nf, 4)[:, 1:]
        else:
            tris = []
            for ln in body[nv:nv + nf]:
                idx = [int(t) for t in ln.split()]
                k = idx[0]
                if len(idx) < k + 1:
                    raise ValueError(f"face line {ln!r} lists fewer than {k} vertices")
                tris += [(idx[1], idx[j], idx[j + 1]) for j in range(2, k)]
            triangles = np.array(tris, dtype=np.int64).reshape(-1, 3)
    except ValueError as e:
        raise DataFormatError(f"{where}: malformed vertex or face line ({e}); {fix}") from e
    if triangles.size and (triangles.min() < 0 or triangles.max() >= nv):
        raise DataFormatError(f"{where}: a face refers to a vertex outside 0..{nv - 1}; {fix}")
    return vertices, triangles


def sample_surface(vertices, triangles, n, seed, where):
    """`n` points uniform on the mesh surface (faces drawn by area) and their face normals."""
    if len(triangles) == 0:
        raise DataFormatError(f"{where}: the mesh has no faces, so no points can be sampled; "
                              "replace the file (or remove it and prepare with --allow-partial)")
    a, b, c = (vertices[triangles[:, i]] for i in range(3))
    cross = np.cross(b - a, c - a)
    area = np.linalg.norm(cross, axis=1)
    total = area.sum()
    if not np.isfinite(total) or total <= 0:
        raise DataFormatError(f"{where}: the mesh has zero surface area (too few distinct points); "
                              "replace the file (or remove it and prepare with --allow-partial)")
    rng = np.random.default_rng(seed)
    face = rng.choice(len(triangles), size=n, p=area / total)
    r1, r2 = np.sqrt(rng.uniform(size=n)), rng.uniform(size=n)
    points = ((1 - r1)[:, None] * a[face] + (r1 * (1 - r2))[:, None] * b[face]
              + (r1 * r2)[:, None] * c[face])
    return points, cross[face] / area[face][:, None]


# --- discovery ----------------------------------------------------------------------------------

def _sources_in(tree: Tree) -> list[Source]:
    found = []
    prefixes = set()
    for n in tree.names:
        base = n.rsplit("/", 1)
        prefix = base[0] + "/" if len(base) == 2 else ""
        leaf = base[-1]
        if leaf == "modelnet40_shape_names.txt" or leaf == "modelnet10_shape_names.txt":
            prefixes.add(("text", prefix))
        elif _H5_RE.match(n):
            prefixes.add(("hdf5", _H5_RE.match(n).group(1)))
    off_prefixes = {m.group(1) for m in map(_OFF_RE.match, tree.names) if m}
    kinds = {"text": TextSource, "hdf5": Hdf5Source}
    found += [kinds[k](tree, p) for k, p in sorted(prefixes)]
    found += [OffSource(tree, p) for p in sorted(off_prefixes)]
    return found


def find_sources(roots) -> list[Source]:
    """Every recognised ModelNet copy in `roots`: directories (and zip archives anywhere below them)
    or zip archives themselves; roots that do not exist are passed over.

    An unreadable zip is skipped while anything else is found; alone, its error is raised.
    """
    out, broken = [], []
    for root in roots:
        root = pathlib.Path(root)
        if root.is_file():
            zips = [root]
        elif root.is_dir():
            out += _sources_in(Tree(root))
            zips = sorted(root.rglob("*.zip"))
        else:
            continue
        for z in zips:
            try:
                out += _sources_in(Tree(z))
            except DataFormatError as e:
                broken.append(e)
    if broken and not out:
        raise broken[0]
    return out


def choose(sources, variant: str, kind: str = "auto"):
    """The copy to read for `variant`: text over hdf5 over off (unless `kind`), then the fullest.

    Lower-priority forms are not even opened once one with shapes is found, so a broken copy of
    another form does not get in the way. For ModelNet10 from meshes, a ModelNet10 archive (aligned
    meshes) beats filtering ModelNet40. Returns (source, inventory) or None.
    """
    for k in ("text", "hdf5", "off"):
        if kind not in ("auto", k):
            continue
        scored = []
        for s in (s for s in sources if s.kind == k):
            inv = s.inventory(variant)
            total = sum(inv.found(sp) for sp in SPLITS)
            if total:
                aligned10 = (variant == "modelnet10" and k == "off"
                             and s.classes_present() <= set(MODELNET10_CLASSES))
                scored.append(((not aligned10, -total), s, inv))
        if scored:
            scored.sort(key=lambda t: t[0])
            return scored[0][1], scored[0][2]
    return None
