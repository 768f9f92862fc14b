"""Point-cloud checks TF Serving leaves to the model's kernels, answered with what to send instead.

Rank and shape against the signature, `[x, y, z]` points, no empty clouds, finite
coordinates, a mask that matches the points and marks at least one point per cloud, and
the configured maxima of points per cloud and clouds per request (`Limits`).

Example:

>>> import numpy as np
>>> from serving.server.config import Limits
>>> from serving.server.servable import Signature, TensorSpec
>>> sig = Signature("serving_default", "tensorflow/serving/predict",
...                 {"points": TensorSpec("points", np.float32, "float", (-1, -1, 3))}, (), None)
>>> validate_inputs({"points": np.zeros((1, 4, 2), np.float32)}, sig, Limits())
Traceback (most recent call last):
...
serving.server.errors.ServingError: Input 'points' has 2 values per point; each point must be [x, y, z] (3 values).
"""

from __future__ import annotations

import numpy as np

from serving.server.config import Limits
from serving.server.errors import invalid
from serving.server.servable import Signature


def _shape_str(shape) -> str:
    return "[" + ", ".join(("batch" if i == 0 else "N") if d in (-1, None) else str(d)
                           for i, d in enumerate(shape)) + "]"


def validate_inputs(arrays: dict, signature: Signature, limits: Limits) -> None:
    """Shape, dtype and point-cloud checks that TF Serving leaves to the model's kernels,
    answered here with a message that says what to send instead."""
    batch = None
    for name, arr in arrays.items():
        spec = signature.inputs[name]
        if name == "points" and arr.ndim == 2 and arr.shape[1] == 0:
            raise invalid("Input 'points' has clouds with no points (an empty set); send at "
                          "least one [x, y, z] point per cloud.")
        if spec.shape is not None:
            if arr.ndim != len(spec.shape):
                hint = (" Send each cloud as a list of [x, y, z] points, e.g. "
                        "{\"instances\": [[[0.1, 0.2, 0.3], ...], ...]}." if name == "points"
                        else "")
                raise invalid(f"Input '{name}' of signature '{signature.name}' must have shape "
                              f"{_shape_str(spec.shape)} (rank {len(spec.shape)}); got "
                              f"{_shape_str(arr.shape)} (rank {arr.ndim}).{hint}")
            for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
                if want not in (-1, None) and want != got:
                    if name == "points" and axis == len(spec.shape) - 1:
                        what = "[x, y, z] (3 values)" if want == 3 else f"{want} values (this model's features)"
                        raise invalid(f"Input 'points' has {got} values per point; each point "
                                      f"must be {what}.")
                    raise invalid(f"Input '{name}' must have shape {_shape_str(spec.shape)}; "
                                  f"got {_shape_str(arr.shape)} (axis {axis} is {got}, not "
                                  f"{want}).")
        if arr.ndim:
            if batch is not None and arr.shape[0] != batch:
                raise invalid(f"Inputs have different batch sizes ({batch} and {arr.shape[0]} "
                              f"for '{name}'); send one entry per cloud in every input.")
            batch = arr.shape[0]
    if batch is not None and batch > limits.max_batch_size:
        raise invalid(f"The request has {batch} clouds, over this server's maximum of "
                      f"{limits.max_batch_size} per request (--max-batch-size); split it into "
                      f"smaller requests (the client does: --batch-size).")
    points = arrays.get("points")
    if points is not None and points.ndim == 3:
        n = points.shape[1]
        if n == 0:
            raise invalid("Input 'points' has clouds with no points (an empty set); send at "
                          "least one [x, y, z] point per cloud.")
        if n > limits.max_points:
            raise invalid(f"Clouds of {n} points exceed this server's maximum of "
                          f"{limits.max_points} points per cloud (--max-points); subsample "
                          f"them (the client does: --num-points).")
        if points.dtype.kind == "f":
            bad = ~np.isfinite(points)
            if bad.any():
                cloud, point, _ = np.argwhere(bad)[0]
                raise invalid(f"Input 'points' has {int(bad.sum())} NaN or Inf coordinates "
                              f"(the first in cloud {cloud}, point {point}); send finite "
                              f"numbers.")
        mask = arrays.get("mask")
        if mask is not None:
            if mask.shape != points.shape[:2]:
                raise invalid(f"Input 'mask' has shape {_shape_str(mask.shape)} but 'points' has "
                              f"{_shape_str(points.shape)}; the mask needs one true/false per "
                              f"point: shape [batch, N].")
            empty = np.flatnonzero(~mask.any(axis=1))
            if empty.size:
                raise invalid(f"Cloud {int(empty[0])} has no point with mask true (an empty "
                              f"set); every cloud needs at least one real point.")
