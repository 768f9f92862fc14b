"""Point-cloud files read into arrays, for the clients and their CLI.

`load_clouds` reads `.npy`, `.txt`/`.csv`/`.xyz`/`.pts`, `.h5`/`.hdf5` and `.off` files
(meshes are sampled on their surface) into `[(label, (N, F) float32 array), ...]`;
anything it cannot read raises `CloudFileError` with one line naming the file, the problem
and what to write instead. `features_of` reads F, the values per point a served model
takes, from its metadata, so that a file's extra columns can be dropped before sending.

Example:

>>> import tempfile, numpy as np
>>> path = pathlib.Path(tempfile.mkdtemp()) / "cloud.npy"
>>> np.save(path, np.zeros((3, 100, 6)))          # 3 clouds, 100 points, x y z + normals
>>> [(pathlib.Path(label).name, cloud.shape) for label, cloud in load_clouds(path, num_points=64)]
[('cloud.npy[0]', (64, 3)), ('cloud.npy[1]', (64, 3)), ('cloud.npy[2]', (64, 3))]
"""

from __future__ import annotations

import pathlib
import warnings

import numpy as np

__all__ = ["CloudFileError", "features_of", "load_clouds"]


class CloudFileError(ValueError):
    """A point-cloud file could not be read; the message names the file and the problem."""


def _read_off(path: pathlib.Path, num_points: int, seed: int) -> np.ndarray:
    tokens_by_line = [line.split("#")[0].split() for line in
                      path.read_text(encoding="utf-8", errors="replace").splitlines()]
    lines = [t for t in tokens_by_line if t]
    if not lines or not lines[0][0].upper().startswith("OFF"):
        raise CloudFileError(f"{path}: not an OFF file (the first line must start with OFF)")
    head = lines[0]
    # ModelNet's OFF files sometimes glue the counts to the keyword: "OFF490 518 0".
    counts = ([head[0][3:]] if len(head[0]) > 3 else []) + head[1:]
    body = lines[1:]
    if len(counts) < 2:
        counts, body = body[0], body[1:]
    try:
        nv, nf = int(counts[0]), int(counts[1])
        verts = np.array([[float(x) for x in body[i][:3]] for i in range(nv)])
        faces = [[int(x) for x in body[nv + j][1:1 + int(body[nv + j][0])]] for j in range(nf)]
    except (ValueError, IndexError) as err:
        raise CloudFileError(f"{path}: malformed OFF file ({err}); expected 'OFF', then "
                             f"'V F E' counts, V vertex lines and F face lines") from err
    if nv == 0:
        raise CloudFileError(f"{path}: the mesh has no vertices")
    tris = np.array([[f[0], f[k], f[k + 1]] for f in faces for k in range(1, len(f) - 1)],
                    dtype=np.int64).reshape(-1, 3)
    if len(tris) == 0 or tris.max() >= nv:
        return verts  # a point set, not a mesh
    a, b, c = verts[tris[:, 0]], verts[tris[:, 1]], verts[tris[:, 2]]
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if area.sum() <= 0:
        return verts
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(tris), size=num_points, p=area / area.sum())
    u, v = rng.random((2, num_points, 1))
    flip = (u + v) > 1  # reflect into the triangle: uniform on its surface
    u, v = np.where(flip, 1 - u, u), np.where(flip, 1 - v, v)
    return a[pick] + u * (b[pick] - a[pick]) + v * (c[pick] - a[pick])


def _read_txt(path: pathlib.Path) -> np.ndarray:
    with path.open(encoding="utf-8", errors="replace") as f:
        first = f.readline()
    delimiter = "," if "," in first else None
    try:
        with warnings.catch_warnings():
            # A file of comments only: numpy warns and returns no rows; the shape check
            # after loading reports it in one line instead.
            warnings.simplefilter("ignore", UserWarning)
            data = np.loadtxt(path, delimiter=delimiter, ndmin=2, dtype=np.float64)
    except ValueError as err:
        raise CloudFileError(f"{path}: cannot read numbers ({err}); expected one point per "
                             f"line: x y z [more columns], separated by spaces or commas") from err
    return data


NPY_MAGIC = b"\x93NUMPY"


def _read_npy(path: pathlib.Path) -> np.ndarray:
    save_hint = "write it with numpy.save(path, clouds), clouds float (N, 3) or (B, N, 3)"
    with path.open("rb") as f:
        head = f.read(len(NPY_MAGIC))
    if head != NPY_MAGIC:
        raise CloudFileError(f"{path}: not a .npy file (it does not start with NumPy's magic "
                             f"bytes \\x93NUMPY); {save_hint}")
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as err:
        if "allow_pickle" in str(err):
            raise CloudFileError(f"{path}: the array holds Python objects, not numbers; "
                                 f"{save_hint}") from err
        raise CloudFileError(f"{path}: truncated or corrupt .npy file ({err}); "
                             f"{save_hint}") from err
    except EOFError as err:
        raise CloudFileError(f"{path}: truncated .npy file ({err}); {save_hint}") from err


def features_of(metadata: dict, signature: str = "serving_default") -> int | None:
    """F, the values per point the model's `points` input takes, from its metadata (GET
    .../metadata, or the gRPC client's metadata()); None when the signature does not say."""
    try:
        sigs = metadata["metadata"]["signature_def"]["signature_def"]
        sig = sigs.get(signature) or sigs["serving_default"]
        size = int(sig["inputs"]["points"]["tensor_shape"]["dim"][-1]["size"])
    except (KeyError, IndexError, TypeError, ValueError):
        return None
    return size if size > 0 else None


def load_clouds(path, *, num_points: int | None = None, sample: str = "first",
                h5_key: str | None = None, normalize: bool = False,
                seed: int = 0, num_features: int | None = 3) -> list[tuple[str, np.ndarray]]:
    """Reads point clouds from a file: `[(label, (N, F) float32 array), ...]`.

    Args:
        path: `.npy` ((N, C) or (B, N, C)), `.txt`/`.csv`/`.xyz`/`.pts` (one point a line,
            e.g. ModelNet's `x,y,z,nx,ny,nz`), `.h5`/`.hdf5` (PointNet layout: dataset
            `data` (B, N, C)) or `.off` (a mesh: `num_points` points sampled uniformly on its
            surface, default 1024). The first `num_features` columns are used (x, y, z).
        num_points: at most this many points per cloud (`sample` says which).
        sample: `first` (the first points; ModelNet's resampled files are ordered so that
            any prefix covers the shape) or `random`.
        h5_key: dataset in an HDF5 file (default `data`, else the only 2-D/3-D dataset).
        normalize: centre each cloud and scale it into the unit sphere (raw meshes usually
            need this; the ModelNet files here are already normalised).
        seed: seed for surface sampling and `sample="random"`.
        num_features: F, the values per point the model takes (`features_of` reads it from
            the server); a file with fewer columns is refused. None: every column (at least 3).
    """
    path = pathlib.Path(path)
    if not path.exists():
        raise CloudFileError(f"{path}: no such file")
    if path.is_file() and path.stat().st_size == 0:
        raise CloudFileError(f"{path}: the file is empty (0 bytes); it must hold one or more "
                             f"point clouds (x, y, z per point)")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        data = _read_npy(path)
    elif suffix in (".txt", ".csv", ".xyz", ".pts"):
        data = _read_txt(path)
    elif suffix in (".h5", ".hdf5"):
        import h5py
        try:
            with h5py.File(path, "r") as f:
                key = h5_key
                if key is None:
                    candidates = [k for k, v in f.items()
                                  if isinstance(v, h5py.Dataset) and v.ndim in (2, 3)]
                    key = "data" if "data" in f else (candidates[0] if len(candidates) == 1
                                                       else None)
                if key is None or key not in f:
                    raise CloudFileError(f"{path}: no dataset {h5_key or 'data'!r}; datasets: "
                                         f"{sorted(f)} (pick one with --h5-key)")
                data = f[key][()]
        except OSError as err:
            raise CloudFileError(f"{path}: not a readable HDF5 file ({err})") from err
    elif suffix == ".off":
        data = _read_off(path, num_points or 1024, seed)
    else:
        raise CloudFileError(f"{path}: unknown file type {suffix!r}; use .npy, .txt, .csv, "
                             f".xyz, .pts, .h5, .hdf5 or .off")
    data = np.asarray(data)
    if data.dtype.kind not in "fiu":
        raise CloudFileError(f"{path}: expected numbers, found {data.dtype}")
    if data.ndim == 2:
        data = data[None]
    width = 3 if num_features is None else num_features
    if data.ndim != 3 or data.shape[-1] < width or data.shape[1] == 0:
        raise CloudFileError(f"{path}: expected points of shape (N, {width}+) or (B, N, {width}+)"
                             + ("" if num_features is None else
                                f" (the model takes {num_features} values per point)")
                             + f", got {tuple(data.shape)}")
    rng = np.random.default_rng(seed)
    out = []
    for i, cloud in enumerate(data[..., :num_features].astype(np.float64)):
        if not np.isfinite(cloud).all():
            raise CloudFileError(f"{path}: cloud {i} has NaN or Inf coordinates")
        if num_points is not None and len(cloud) > num_points:
            cloud = (cloud[:num_points] if sample == "first"
                     else cloud[np.sort(rng.choice(len(cloud), num_points, replace=False))])
        if normalize:  # the coordinates, x, y, z: the first three columns
            xyz = cloud[:, :3] - cloud[:, :3].mean(axis=0)
            radius = np.linalg.norm(xyz, axis=1).max()
            cloud = cloud.copy()
            cloud[:, :3] = xyz / radius if radius > 0 else xyz
        label = str(path) if len(data) == 1 else f"{path}[{i}]"
        out.append((label, cloud.astype(np.float32)))
    return out
