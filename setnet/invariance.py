"""Permutation-invariance checks for anything that maps point clouds to class probabilities
(or, for a regressor, to its predictions).

The same checks run in three places: in process before an export is written
(`pipelines.export.export_model`), against a REST endpoint in the serving test suite
(`tests/serving/`), and from training, which logs the summary dict to MLflow. So the
functions here take a plain `predict_fn(points) -> probabilities` and know nothing about
TensorFlow or HTTP.

A set classifier must give the same answer for every ordering of a cloud's points. In
float32 "the same" means up to rounding: sum and mean pooling add the points in a
different order under a permutation, so the tolerance is `atol + rtol * |reference|`,
and the summary always reports the largest deviation seen so that a drift towards the
tolerance is visible long before it fails.

Example:

>>> import numpy as np
>>> def mean_pool(points):                       # (B, N, 3) -> (B, 3), invariant
...     return points.mean(axis=1)
>>> clouds = [np.random.default_rng(0).normal(size=(50, 3)).astype("float32")]
>>> check_invariance(mean_pool, clouds, permutations=4)["passed"]
True
"""

from __future__ import annotations

from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

DEFAULT_ATOL = 1e-5
DEFAULT_RTOL = 1e-4

__all__ = [
    "InvarianceError",
    "check_invariance",
    "check_batch_independence",
    "check_masked_padding",
    "pad_clouds",
    "summarize",
    "format_summary",
    "as_clouds",
    "shape_clouds",
    "probabilities_of",
    "with_features",
    "DEFAULT_ATOL",
    "DEFAULT_RTOL",
]


class InvarianceError(ValueError):
    """A model's answers changed under a permutation, a batch change or padding."""


def probabilities_of(output) -> np.ndarray:
    """The probabilities array in a predict function's output (a regressor's: its predictions).

    Accepts an array, or a mapping with a `probabilities` (or `prediction`) entry (a
    SavedModel signature's output dict or a REST client's parsed answer).
    """
    if isinstance(output, Mapping):
        key = "probabilities" if "probabilities" in output else "prediction"
        if key not in output:
            raise KeyError(
                f"predict_fn returned a mapping without 'probabilities' or 'prediction' (keys: "
                f"{sorted(output)}); return the array or a dict with one of those entries")
        output = output[key]
    if hasattr(output, "numpy"):
        output = output.numpy()
    return np.asarray(output, dtype=np.float64)


def as_clouds(clouds) -> list[np.ndarray]:
    """Clouds as a list of float32 (N_i, 3) arrays, from an array (K, N, 3) or a list."""
    if isinstance(clouds, np.ndarray):
        if clouds.ndim == 2:
            clouds = clouds[None]
        if clouds.ndim != 3:
            raise ValueError(f"clouds must have shape (K, N, 3) or be a list of (N, 3) arrays; "
                             f"got an array of shape {clouds.shape}")
        clouds = list(clouds)
    out = []
    for i, cloud in enumerate(clouds):
        cloud = np.asarray(cloud, dtype=np.float32)
        if cloud.ndim != 2 or cloud.shape[0] == 0:
            raise ValueError(f"cloud {i} must have shape (N, C) with N >= 1; got {cloud.shape}")
        out.append(cloud)
    if not out:
        raise ValueError("no clouds given: pass at least one (N, 3) array")
    return out


def shape_clouds(seed: int = 0, sizes=(37, 128, 300)):
    """A few geometric clouds of different sizes, the default clouds of the export checks.

    Cloud i is a sphere, a cube surface or a torus (i mod 3), with `sizes[i]` points, so
    the checks see clouds of several sizes and of shapes without a natural point order.

    Args:
        seed: seed of the random points.
        sizes: points per cloud, one entry per cloud.

    Returns:
        List of float32 arrays `(sizes[i], 3)`.

    Example:

    >>> [c.shape for c in shape_clouds(0, sizes=(5, 8))]
    [(5, 3), (8, 3)]
    """
    rng = np.random.default_rng(seed)
    out = []
    for i, n in enumerate(sizes):
        kind = i % 3
        if kind == 0:
            v = rng.normal(size=(n, 3))
            out.append(v / np.linalg.norm(v, axis=1, keepdims=True))
        elif kind == 1:
            v = rng.uniform(-1, 1, size=(n, 3))
            axis = rng.integers(0, 3, size=n)
            v[np.arange(n), axis] = np.sign(v[np.arange(n), axis])
            out.append(v)
        else:
            a, b = rng.uniform(0, 2 * np.pi, size=(2, n))
            out.append(np.stack([(1 + 0.3 * np.cos(b)) * np.cos(a),
                                 (1 + 0.3 * np.cos(b)) * np.sin(a), 0.3 * np.sin(b)], axis=1))
    return [c.astype(np.float32) for c in out]


def with_features(cloud: np.ndarray, num_features: int, seed: int = 0) -> np.ndarray:
    """A cloud `(N, C)` with `num_features` features per point, for models whose F is not 3.

    Extra features are seeded standard normal values per point (a model's answer may depend on
    them, which the checks need); fewer features keep the first ones.

    Example:

    >>> with_features(np.zeros((4, 3), np.float32), 5).shape
    (4, 5)
    """
    cloud = np.asarray(cloud, np.float32)
    have = cloud.shape[1]
    if num_features <= have:
        return np.ascontiguousarray(cloud[:, :num_features])
    extra = np.random.default_rng(seed).normal(size=(cloud.shape[0], num_features - have))
    return np.concatenate([cloud, extra.astype(np.float32)], axis=1)


def _within(dev: np.ndarray, ref: np.ndarray, atol: float, rtol: float) -> bool:
    return bool(np.all(dev <= atol + rtol * np.abs(ref)))


def _non_identity_permutation(rng, n: int) -> np.ndarray:
    # The identity would test nothing; for n >= 2 draw again (rarely needed but for tiny n).
    while True:
        perm = rng.permutation(n)
        if n < 2 or np.any(perm != np.arange(n)):
            return perm


def check_invariance(predict_fn: Callable, clouds, permutations: int = 8, seed: int = 0, *,
                     atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> dict:
    """Checks that `predict_fn` gives the same probabilities for permuted copies of each cloud.

    Each cloud is sent once as a batch of `permutations + 1` copies: the cloud as given
    followed by `permutations` random orderings of its points (a random element of S_N
    other than the identity for each copy), so one call per cloud suffices and clouds of
    different sizes never share a batch.

    Args:
        predict_fn: maps float32 points `(B, N, 3)` to probabilities `(B, K)`, or to a dict
            with a `probabilities` entry.
        clouds: array `(K, N, 3)` or a list of `(N_i, 3)` arrays.
        permutations: random permutations per cloud (M).
        seed: seed of the permutations.
        atol, rtol: a deviation passes when `|p_perm - p| <= atol + rtol * |p|` elementwise.

    Returns:
        dict with `clouds`, `permutations`, `max_abs_deviation` (over all clouds, permutations
        and classes), `passed`, `atol`, `rtol`, `class_changes` (permuted copies whose argmax
        differs from the original's) and `per_cloud` (max deviation of each cloud).

    Example:

    >>> import numpy as np
    >>> first_point = lambda p: p[:, 0, :]         # not invariant
    >>> cloud = np.arange(12, dtype="float32").reshape(4, 3)
    >>> check_invariance(first_point, [cloud], permutations=3)["passed"]
    False
    """
    if permutations < 1:
        raise ValueError(f"permutations must be >= 1, got {permutations}")
    rng = np.random.default_rng(seed)
    clouds = as_clouds(clouds)
    per_cloud, passed, class_changes = [], True, 0
    for cloud in clouds:
        n = cloud.shape[0]
        batch = [cloud] + [cloud[_non_identity_permutation(rng, n)] for _ in range(permutations)]
        probs = probabilities_of(predict_fn(np.stack(batch)))
        if probs.shape[0] != permutations + 1:
            raise ValueError(f"predict_fn returned {probs.shape[0]} rows for a batch of "
                             f"{permutations + 1} clouds")
        ref, perm = probs[:1], probs[1:]
        dev = np.abs(perm - ref)
        per_cloud.append(float(dev.max()))
        passed &= _within(dev, np.broadcast_to(ref, dev.shape), atol, rtol)
        class_changes += int(np.sum(perm.argmax(-1) != ref.argmax(-1)))
    return {
        "clouds": len(clouds),
        "permutations": int(permutations),
        "max_abs_deviation": max(per_cloud),
        "passed": bool(passed),
        "atol": atol,
        "rtol": rtol,
        "class_changes": class_changes,
        "per_cloud": per_cloud,
    }


def check_batch_independence(predict_fn: Callable, clouds, seed: int = 0, *, trials: int = 3,
                             atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> dict:
    """Checks that a cloud's answer does not depend on the other clouds in its batch.

    Every cloud is predicted alone, then `trials` times inside a shuffled batch of all the
    clouds plus a few fresh random ones (so the batch size changes too).

    Args:
        predict_fn: as in `check_invariance`.
        clouds: array `(K, N, 3)` or list of `(N, 3)` arrays, all with the same N.
        seed: seed of the shuffles and the extra clouds.
        trials: number of shuffled batches.
        atol, rtol: tolerance as in `check_invariance`.

    Returns:
        dict with `clouds`, `trials`, `max_abs_deviation`, `passed`.
    """
    rng = np.random.default_rng(seed)
    clouds = as_clouds(clouds)
    sizes = {c.shape for c in clouds}
    if len(sizes) != 1:
        raise ValueError(f"batch independence needs clouds of one shape; got {sorted(sizes)}")
    alone = np.concatenate([probabilities_of(predict_fn(c[None])) for c in clouds])
    worst, passed = 0.0, True
    for t in range(trials):
        extra = rng.normal(size=(1 + t, *clouds[0].shape)).astype(np.float32)
        batch = np.concatenate([np.stack(clouds), extra])
        order = rng.permutation(len(batch))
        probs = probabilities_of(predict_fn(batch[order]))
        back = np.empty_like(probs)
        back[order] = probs
        dev = np.abs(back[:len(clouds)] - alone)
        worst = max(worst, float(dev.max()))
        passed &= _within(dev, alone, atol, rtol)
    return {"clouds": len(clouds), "trials": trials, "max_abs_deviation": worst,
            "passed": bool(passed)}


def pad_clouds(clouds: Sequence[np.ndarray], num_points: int | None = None, *,
               fill: float | str = 0.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Pads clouds of different sizes into `points (B, N, 3)` and `mask (B, N)`.

    Args:
        clouds: list of `(N_i, 3)` arrays.
        num_points: padded size; defaults to the largest N_i.
        fill: value of the padded coordinates, or `"random"` for large random values (a
            model that leaks padding into its answer is caught by those).
        seed: seed for `fill="random"`.
    """
    clouds = as_clouds(clouds)
    n = max(c.shape[0] for c in clouds) if num_points is None else int(num_points)
    if any(c.shape[0] > n for c in clouds):
        raise ValueError(f"num_points={n} is smaller than the largest cloud "
                         f"({max(c.shape[0] for c in clouds)} points)")
    channels = clouds[0].shape[1]
    if fill == "random":
        points = np.random.default_rng(seed).uniform(-50, 50, size=(len(clouds), n, channels))
        points = points.astype(np.float32)
    else:
        points = np.full((len(clouds), n, channels), fill, dtype=np.float32)
    mask = np.zeros((len(clouds), n), dtype=bool)
    for i, c in enumerate(clouds):
        points[i, :len(c)] = c
        mask[i, :len(c)] = True
    return points, mask


def check_masked_padding(predict_fn: Callable, masked_predict_fn: Callable, clouds, seed: int = 0,
                         *, atol: float = DEFAULT_ATOL, rtol: float = DEFAULT_RTOL) -> dict:
    """Checks that padded clouds with a mask give the answers of the unpadded clouds.

    Args:
        predict_fn: unpadded `(1, N_i, 3) -> probabilities`.
        masked_predict_fn: `(points (B, N, 3), mask (B, N)) -> probabilities`.
        clouds: list of `(N_i, 3)` arrays, usually of different sizes.
        seed: seed of the random padding values.
        atol, rtol: tolerance as in `check_invariance`.

    Returns:
        dict with `clouds`, `padded_to`, `max_abs_deviation`, `passed`. Padding is filled
        with large random coordinates, so a mask that is ignored shows up.
    """
    clouds = as_clouds(clouds)
    alone = np.concatenate([probabilities_of(predict_fn(c[None])) for c in clouds])
    # Pad a little past the largest cloud so that every cloud has padding.
    padded_to = max(c.shape[0] for c in clouds) + 5
    points, mask = pad_clouds(clouds, padded_to, fill="random", seed=seed)
    probs = probabilities_of(masked_predict_fn(points, mask))
    dev = np.abs(probs - alone)
    return {"clouds": len(clouds), "padded_to": padded_to,
            "max_abs_deviation": float(dev.max()), "passed": _within(dev, alone, atol, rtol)}


def summarize(results: Mapping[str, Mapping], *, printer: Callable[[str], None] | None = print
              ) -> dict:
    """Combines named check results into one summary (largest deviation over all checks)."""
    checks: Iterable = results.values()
    summary = {
        "passed": all(bool(r.get("passed")) for r in checks),
        "max_abs_deviation": max((float(r.get("max_abs_deviation", 0.0))
                                  for r in results.values()), default=0.0),
        "checks": {k: dict(v) for k, v in results.items()},
    }
    if printer is not None:
        printer(format_summary(summary))
    return summary


def format_summary(summary: Mapping) -> str:
    width = max([32, *map(len, summary["checks"])])
    lines = [f"{'check':<{width}} {'clouds':>6} {'perms':>6} {'max |dev|':>11}  result"]
    for name, r in summary["checks"].items():
        lines.append(f"{name:<{width}} {r.get('clouds', '-'):>6} {r.get('permutations', '-'):>6} "
                     f"{float(r.get('max_abs_deviation', 0.0)):>11.3e}  "
                     f"{'ok' if r.get('passed') else 'FAILED'}")
    lines.append(f"largest deviation {summary['max_abs_deviation']:.3e}; "
                 f"{'all passed' if summary['passed'] else 'SOME FAILED'}")
    return "\n".join(lines)
