"""Your own sets, written the way other libraries write them: the data of docs/own-data.md.

    python -m examples.own_data --out data/own            # then: make train CONFIG=configs/own_classification.yaml

Writes, under ``--out``:

- ``shapes.parquet`` and ``shapes.csv``: one long table (pandas; Parquet through pyarrow), one
  row per point: ``set_id``, the five features ``x, y, z, intensity, curvature``, the class
  ``shape`` (sphere, cube or cylinder) and two real targets per set, ``elongation`` (how much the
  shape is stretched along y) and ``mean_intensity`` (the set's mean intensity without noise).
  `configs/own_regression.yaml` learns the two targets from the Parquet table (``set_table``).
- ``shape_folder/<shape>/``: the same kind of sets, one file per set, for ``set_folder``:
  ``.npy`` arrays (numpy, one row per point) and ``.ply`` point clouds (vertex properties x, y, z,
  intensity, curvature, written as binary little-endian PLY). `configs/own_classification.yaml`
  learns the three shapes from it.

Sets have 24 to 96 points (``--min-points``/``--max-points``), so a batch holds sets of different
sizes. Everything is seeded: the same arguments write the same files.

Example:

>>> import tempfile, pathlib
>>> out = write_all(pathlib.Path(tempfile.mkdtemp()), sets=6, seed=0)
>>> sorted(p.name for p in out.iterdir())
['shape_folder', 'shapes.csv', 'shapes.parquet']
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np

SHAPES = ("sphere", "cube", "cylinder")
FEATURES = ("x", "y", "z", "intensity", "curvature")
TARGETS = ("elongation", "mean_intensity")


def surface(shape: str, n: int, rng: np.random.Generator) -> np.ndarray:
    """n points (n, 3) on the unit sphere, the surface of the cube [-1, 1]^3, or a cylinder
    (radius 1, height 2, axis y, side only)."""
    if shape == "sphere":
        v = rng.normal(size=(n, 3))
        return v / np.linalg.norm(v, axis=1, keepdims=True)
    if shape == "cube":
        v = rng.uniform(-1, 1, size=(n, 3))
        face = rng.integers(0, 3, size=n)
        v[np.arange(n), face] = rng.choice([-1.0, 1.0], size=n)
        return v
    angle = rng.uniform(0, 2 * np.pi, size=n)
    return np.stack([np.cos(angle), rng.uniform(-1, 1, size=n), np.sin(angle)], axis=1)


def make_set(shape: str, n: int, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """One set: points (n, 5) with features x, y, z, intensity, curvature, and its targets."""
    elongation = float(rng.uniform(1.0, 2.5))
    mean_intensity = float(rng.uniform(0.0, 1.0))
    xyz = surface(shape, n, rng) * np.array([1.0, elongation, 1.0]) * rng.uniform(0.5, 2.0)
    xyz = xyz + rng.normal(scale=0.3, size=3)  # somewhere in space: the model centres each set
    intensity = mean_intensity + rng.normal(scale=0.05, size=n)
    curvature = {"sphere": 1.0, "cube": 0.0, "cylinder": 0.5}[shape] + rng.normal(scale=0.1, size=n)
    points = np.concatenate([xyz, intensity[:, None], curvature[:, None]], axis=1).astype(np.float32)
    return points, {"elongation": elongation, "mean_intensity": mean_intensity}


def write_ply(path: pathlib.Path, points: np.ndarray, names=FEATURES) -> None:
    """A binary little-endian PLY point cloud: one float vertex property per feature."""
    header = "ply\nformat binary_little_endian 1.0\ncomment written by examples/own_data.py\n"
    header += f"element vertex {len(points)}\n" + "".join(f"property float {n}\n" for n in names)
    header += "end_header\n"
    path.write_bytes(header.encode("ascii") + np.ascontiguousarray(points, "<f4").tobytes())


def write_table(out: pathlib.Path, sets: int, seed: int, min_points: int, max_points: int) -> None:
    """shapes.parquet and shapes.csv: the long table, written with pandas."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    frames = []
    for i in range(sets):
        shape = SHAPES[i % len(SHAPES)]
        points, targets = make_set(shape, int(rng.integers(min_points, max_points + 1)), rng)
        frame = pd.DataFrame(points, columns=list(FEATURES))
        frame.insert(0, "set_id", f"s{i:04d}")
        frame["shape"] = shape
        for name, value in targets.items():
            frame[name] = np.float32(value)
        frames.append(frame)
    table = pd.concat(frames, ignore_index=True)
    table.to_parquet(out / "shapes.parquet", index=False)  # pyarrow
    table.to_csv(out / "shapes.csv", index=False)


def write_folder(folder: pathlib.Path, sets: int, seed: int, min_points: int, max_points: int) -> None:
    """shape_folder/<shape>/set_NNN.npy or .ply: every third set a PLY file."""
    rng = np.random.default_rng(seed + 1)
    for i in range(sets):
        shape = SHAPES[i % len(SHAPES)]
        points, _ = make_set(shape, int(rng.integers(min_points, max_points + 1)), rng)
        target = folder / shape
        target.mkdir(parents=True, exist_ok=True)
        if (i // len(SHAPES)) % 3 == 2:
            write_ply(target / f"set_{i:03d}.ply", points)
        else:
            np.save(target / f"set_{i:03d}.npy", points)


def write_all(out: pathlib.Path, *, sets: int = 150, seed: int = 0, min_points: int = 24,
              max_points: int = 96) -> pathlib.Path:
    """Writes the table (both formats) and the folder under `out` (see the module docstring).

    Args:
        out: the folder to write into (created; existing files of the same names are replaced).
        sets: sets in the table, and sets in the folder.
        seed: seed of every random number.
        min_points, max_points: the range of set sizes.

    Returns:
        `out`.
    """
    if sets < len(SHAPES) or not 1 <= min_points <= max_points:
        raise ValueError(f"need sets >= {len(SHAPES)} and 1 <= min_points <= max_points; got sets={sets}, "
                         f"min_points={min_points}, max_points={max_points}")
    out.mkdir(parents=True, exist_ok=True)
    write_table(out, sets, seed, min_points, max_points)
    write_folder(out / "shape_folder", sets, seed, min_points, max_points)
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m examples.own_data", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="data/own", help="folder to write into (default data/own)")
    p.add_argument("--sets", type=int, default=150, help="sets in the table and in the folder (default 150)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-points", type=int, default=24)
    p.add_argument("--max-points", type=int, default=96)
    args = p.parse_args(argv)
    try:
        out = write_all(pathlib.Path(args.out), sets=args.sets, seed=args.seed, min_points=args.min_points,
                        max_points=args.max_points)
    except ValueError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out / 'shapes.parquet'}, {out / 'shapes.csv'} ({args.sets} sets, features "
          f"{', '.join(FEATURES)}; class 'shape', targets {', '.join(TARGETS)}) and {out / 'shape_folder'}/ "
          f"({', '.join(SHAPES)}: .npy and .ply)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
