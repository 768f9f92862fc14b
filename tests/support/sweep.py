"""A small regression table for the sweep tests: the columns of configs/own_regression.yaml."""

from __future__ import annotations

import pathlib

import numpy as np


def write_regression_table(path, sets: int = 30, points: int = 20, seed: int = 0) -> pathlib.Path:
    """A Parquet table of `sets` sets of `points` rows: set_id, x, y, z, intensity, curvature and
    two float targets per set (elongation, mean_intensity), as `set_table` reads it with
    configs/own_regression.yaml (``--set data.path=<path>``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    stretch = rng.uniform(1.0, 3.0, sets)
    xyz = rng.normal(size=(sets, points, 3)) * np.stack([np.ones(sets), stretch, np.ones(sets)], -1)[:, None]
    intensity = rng.uniform(0.0, 1.0, (sets, points))
    columns = {"set_id": np.repeat([f"s{i:03d}" for i in range(sets)], points),
               "x": xyz[..., 0].ravel(), "y": xyz[..., 1].ravel(), "z": xyz[..., 2].ravel(),
               "intensity": intensity.ravel(), "curvature": rng.normal(size=sets * points),
               "elongation": np.repeat(stretch, points), "mean_intensity": np.repeat(intensity.mean(1), points)}
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path
