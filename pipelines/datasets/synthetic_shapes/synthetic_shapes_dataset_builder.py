"""`synthetic_shapes`: procedurally generated 3D point clouds of ten shape classes.

The embedded default dataset: no download, deterministic by seed, sizes set by the builder config.
Every shape is sampled on its surface, then given a random aspect (anisotropic stretch), pose
(rotation in SO(3) and a small offset), scale, Gaussian noise and a few outliers, so that classes
overlap at the edges (a sphere stretched by the aspect nuisance looks like a mild ellipsoid) and a
model has to learn rather than read off one statistic. README.md gives a trivial baseline.

Example:

    import numpy as np
    from pipelines.datasets.synthetic_shapes.synthetic_shapes_dataset_builder import generate_shape
    points = generate_shape(3, np.random.default_rng(0), 256)   # a cylinder, (256, 3) float32
"""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow_datasets as tfds

CLASS_NAMES = ("sphere", "ellipsoid", "cube", "cylinder", "cone", "torus", "pyramid", "plane",
               "helix", "capsule")

# Nuisance ranges. Chosen so that a rotation-invariant radius-histogram baseline stays far from
# 100% (see README.md), while every class keeps a property that sets it apart in principle.
ASPECT_RANGE = (0.75, 1.33)    # per-axis stretch, log-uniform, applied to every class
SCALE_RANGE = (0.5, 1.0)
OFFSET = 0.1
NOISE_RANGE = (0.0, 0.04)      # Gaussian sigma relative to the shape's size
OUTLIER_MAX = 0.03             # fraction of points replaced by uniform clutter


def _sphere(rng, n):
    v = rng.normal(size=(n, 3))
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _ellipsoid(rng, n):
    # Strongly anisotropic, unlike a sphere under the aspect nuisance.
    axes = np.array([1.0, rng.uniform(0.35, 0.65), rng.uniform(0.2, 0.5)])
    return _sphere(rng, n) * axes


def _box_faces(rng, n, half):
    areas = np.array([half[1] * half[2], half[0] * half[2], half[0] * half[1]] * 2)
    face = rng.choice(6, size=n, p=areas / areas.sum())
    p = rng.uniform(-1, 1, size=(n, 3)) * half
    axis = face % 3
    sign = np.where(face < 3, 1.0, -1.0)
    p[np.arange(n), axis] = sign * half[axis]
    return p


def _cube(rng, n):
    return _box_faces(rng, n, np.ones(3))


def _disk(rng, n, radius):
    r = radius * np.sqrt(rng.uniform(size=n))
    t = rng.uniform(0, 2 * np.pi, size=n)
    return np.stack([r * np.cos(t), r * np.sin(t)], axis=1)


def _cylinder(rng, n):
    r = rng.uniform(0.4, 0.8)
    side, cap = 2 * np.pi * r * 2.0, np.pi * r * r
    part = rng.choice(3, size=n, p=np.array([side, cap, cap]) / (side + 2 * cap))
    t = rng.uniform(0, 2 * np.pi, size=n)
    p = np.stack([r * np.cos(t), r * np.sin(t), rng.uniform(-1, 1, size=n)], axis=1)
    caps = part > 0
    p[caps, :2] = _disk(rng, int(caps.sum()), r)
    p[caps, 2] = np.where(part[caps] == 1, 1.0, -1.0)
    return p


def _cone(rng, n):
    r = rng.uniform(0.5, 1.0)
    side, base = np.pi * r * np.hypot(r, 2.0), np.pi * r * r
    on_base = rng.uniform(size=n) < base / (side + base)
    # Lateral area at height fraction t (0 base, 1 apex) shrinks like (1 - t).
    t = 1 - np.sqrt(rng.uniform(size=n))
    a = rng.uniform(0, 2 * np.pi, size=n)
    p = np.stack([r * (1 - t) * np.cos(a), r * (1 - t) * np.sin(a), 2 * t - 1], axis=1)
    p[on_base, :2] = _disk(rng, int(on_base.sum()), r)
    p[on_base, 2] = -1.0
    return p


def _torus(rng, n):
    big, small = 1.0, rng.uniform(0.2, 0.45)
    out = np.empty((0, 3))
    while len(out) < n:  # rejection keeps the density uniform on the surface
        u, v = rng.uniform(0, 2 * np.pi, size=(2, 2 * n))
        keep = rng.uniform(size=2 * n) < (big + small * np.cos(v)) / (big + small)
        u, v = u[keep], v[keep]
        ring = big + small * np.cos(v)
        out = np.concatenate([out, np.stack([ring * np.cos(u), ring * np.sin(u), small * np.sin(v)], 1)])
    return out[:n]


def _triangles(rng, n, tri):
    """Area-weighted uniform samples on triangles `tri` (T, 3, 3)."""
    areas = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    idx = rng.choice(len(tri), size=n, p=areas / areas.sum())
    r1, r2 = np.sqrt(rng.uniform(size=n)), rng.uniform(size=n)
    a, b, c = tri[idx, 0], tri[idx, 1], tri[idx, 2]
    return (1 - r1)[:, None] * a + (r1 * (1 - r2))[:, None] * b + (r1 * r2)[:, None] * c


def _pyramid(rng, n):
    h = rng.uniform(1.2, 2.0)
    base = np.array([[1, 1, 0], [-1, 1, 0], [-1, -1, 0], [1, -1, 0]], float)
    apex = np.array([0, 0, h])
    tri = [np.stack([base[i], base[(i + 1) % 4], apex]) for i in range(4)]
    tri += [np.stack([base[0], base[1], base[2]]), np.stack([base[0], base[2], base[3]])]
    return _triangles(rng, n, np.stack(tri)) - np.array([0, 0, h / 3])


def _plane(rng, n):
    p = np.zeros((n, 3))
    p[:, :2] = rng.uniform(-1, 1, size=(n, 2)) * np.array([1.0, rng.uniform(0.5, 1.0)])
    return p


def _helix(rng, n):
    radius, turns, tube = rng.uniform(0.6, 1.0), rng.uniform(2, 4), rng.uniform(0.05, 0.12)
    t = rng.uniform(0, 1, size=n)
    centre = np.stack([radius * np.cos(2 * np.pi * turns * t), radius * np.sin(2 * np.pi * turns * t),
                       2 * t - 1], axis=1)
    return centre + tube * _sphere(rng, n)


def _capsule(rng, n):
    r, half = rng.uniform(0.3, 0.6), 1.0
    side, caps = 2 * np.pi * r * 2 * half, 4 * np.pi * r * r
    on_cap = rng.uniform(size=n) < caps / (side + caps)
    a = rng.uniform(0, 2 * np.pi, size=n)
    p = np.stack([r * np.cos(a), r * np.sin(a), rng.uniform(-half, half, size=n)], axis=1)
    s = _sphere(rng, int(on_cap.sum())) * r
    s[:, 2] += np.where(s[:, 2] > 0, half, -half)
    p[on_cap] = s
    return p


_SAMPLERS = (_sphere, _ellipsoid, _cube, _cylinder, _cone, _torus, _pyramid, _plane, _helix, _capsule)
assert len(_SAMPLERS) == len(CLASS_NAMES)


def random_rotation(rng) -> np.ndarray:
    """A rotation matrix uniform on SO(3) (from a uniform unit quaternion)."""
    q = rng.normal(size=4)
    w, x, y, z = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                     [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                     [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])


def generate_shape(label: int, rng: np.random.Generator, num_points: int) -> np.ndarray:
    """Samples one shape of class `label`: (num_points, 3) float32 with all nuisances applied."""
    p = _SAMPLERS[label](rng, num_points)
    p = p - p.mean(axis=0)
    p = p / np.linalg.norm(p, axis=1).max()
    p = p * np.exp(rng.uniform(*np.log(ASPECT_RANGE), size=3))
    p = p @ random_rotation(rng).T
    p = p * rng.uniform(*SCALE_RANGE)
    size = np.linalg.norm(p, axis=1).max()
    p = p + rng.normal(size=p.shape) * rng.uniform(*NOISE_RANGE) * size
    n_out = rng.integers(0, int(OUTLIER_MAX * num_points) + 1)
    p[rng.choice(num_points, size=n_out, replace=False)] = rng.uniform(-size, size, size=(n_out, 3))
    p = p + rng.uniform(-OFFSET, OFFSET, size=3)
    return p[rng.permutation(num_points)].astype(np.float32)


_SPLIT_IDS = {"train": 0, "test": 1}


def generate_split(split: str, size: int, num_points: int, seed: int):
    """Yields (index, label, points) for one split; the label cycles so classes stay balanced."""
    for i in range(size):
        label = i % len(CLASS_NAMES)
        rng = np.random.default_rng([seed, _SPLIT_IDS[split], i])
        yield i, label, generate_shape(label, rng, num_points)


@dataclasses.dataclass(eq=False)
class SyntheticShapesConfig(tfds.core.BuilderConfig):
    """Sizes and seed of a synthetic_shapes variant (a new name for every new combination)."""

    train_size: int = 4000
    test_size: int = 1000
    points_per_shape: int = 1024
    seed: int = 0


class Builder(tfds.core.GeneratorBasedBuilder):
    """Ten procedurally generated 3D shape classes with random pose, scale, aspect and noise."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES = {"1.0.0": "Initial release."}
    BUILDER_CONFIGS = [
        SyntheticShapesConfig(name="default", description="4000 train / 1000 test shapes, 1024 points"),
        SyntheticShapesConfig(name="small", train_size=500, test_size=200, points_per_shape=256,
                              description="500 train / 200 test shapes, 256 points (smoke runs)"),
        SyntheticShapesConfig(name="tiny", train_size=100, test_size=40, points_per_shape=128,
                              description="100 train / 40 test shapes, 128 points (unit tests)"),
    ]
    DEFAULT_CONFIG_NAME = "default"

    def _info(self) -> tfds.core.DatasetInfo:
        return self.dataset_info_from_configs(
            features=tfds.features.FeaturesDict({
                "points": tfds.features.Tensor(shape=(None, 3), dtype=np.float32),
                "label": tfds.features.ClassLabel(names=CLASS_NAMES),
                "shape_id": tfds.features.Text(),
            }),
            supervised_keys=("points", "label"),
            metadata=tfds.core.MetadataDict(up_axis=2, spatial_axes=[0, 1, 2]),
            homepage="https://github.com/setnet/setnet",
        )

    def _split_generators(self, dl_manager):
        del dl_manager  # generated locally
        cfg = self.builder_config
        return {"train": self._generate_examples("train", cfg.train_size),
                "test": self._generate_examples("test", cfg.test_size)}

    def _generate_examples(self, split, size):
        cfg = self.builder_config
        for i, label, points in generate_split(split, size, cfg.points_per_shape, cfg.seed):
            key = f"{split}_{i:06d}"
            yield key, {"points": points, "label": label, "shape_id": key}
