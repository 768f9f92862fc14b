"""Sets of different sizes in one REST predict request, padded and masked by the server.

TF Serving's row format needs every instance to have one shape, so a request with clouds of
different sizes is refused there ("Expecting tensor size ..."): clients pad the clouds
themselves and send a mask to the model's masked signature. This server takes such a request
as it is, as an extension of TF Serving's API (docs/serving.md): when the instances of a row
format request to a signature whose only input is `points` are clouds of different sizes, and
the model has a signature taking `points` and `mask` (setnet exports: `serving_masked`), the
server pads the clouds with zeros to the largest, marks the real points in `mask` and calls that
signature. Padded points do not change a setnet model's answer, so each cloud gets the answer
it gets alone, in the order sent. Requests TF Serving accepts are answered as before; gRPC
carries dense tensors only and is unchanged.

Example:

>>> import numpy as np
>>> from serving.server.servable import Signature, TensorSpec
>>> spec = TensorSpec("points", np.float32, "float", (-1, -1, 3))
>>> run = lambda **inputs: inputs  # stands in for the loaded model's function
>>> default = Signature("serving_default", "tensorflow/serving/predict", {"points": spec}, (), run)
>>> masked = Signature("serving_masked", "tensorflow/serving/predict",
...                    {"points": spec, "mask": TensorSpec("mask", np.bool_, "bool", (-1, -1))}, (), run)
>>> routed = pad_instances([[[0, 0, 1]], [[1, 0, 0], [0, 1, 0]]], default,
...                        {"serving_default": default, "serving_masked": masked}, False)
>>> routed[0].name, routed[1]["points"].shape, routed[1]["mask"].tolist()
('serving_masked', (2, 2, 3), [[True, False], [True, True]])
"""

from __future__ import annotations

import numpy as np

from serving.server.codec import array_from_json, is_element_object
from serving.server.errors import ServingError, invalid
from serving.server.servable import Signature

MASKED_SIGNATURE = "serving_masked"


def masked_partner(signatures: dict) -> Signature | None:
    """The signature that takes `points` and `mask` (`serving_masked` first), or None."""
    candidates = [s for s in signatures.values() if s.fn is not None and set(s.inputs) == {"points", "mask"}]
    candidates.sort(key=lambda s: s.name != MASKED_SIGNATURE)
    return candidates[0] if candidates else None


def _cloud(instance) -> list | None:
    """The points of one instance (a list of points, or an object with only `points`)."""
    if is_element_object(instance):
        return instance.get("points") if set(instance) == {"points"} else None
    return instance


def pad_instances(instances: list, signature: Signature, signatures: dict,
                  bools_in_body: bool) -> tuple[Signature, dict] | None:
    """(the masked signature, {points (B, N_max, F), mask (B, N_max)}) for row-format clouds of
    different sizes sent to a `points`-only signature; None when TF Serving's own rules apply
    (one size, other inputs, no masked signature, or instances that are not lists of points).

    Raises:
        ServingError: an instance that is not a list of points of the model's width, naming it.
    """
    if set(signature.inputs) != {"points"}:
        return None
    clouds = [_cloud(item) for item in instances]
    if any(not isinstance(c, list) or not c or not isinstance(c[0], list) for c in clouds):
        return None
    if len({len(c) for c in clouds}) < 2:
        return None
    partner = masked_partner(signatures)
    if partner is None:
        return None
    spec = partner.inputs["points"]
    width = spec.shape[-1] if spec.shape and spec.shape[-1] not in (-1, None) else None
    arrays = []
    for i, cloud in enumerate(clouds):
        try:
            arr = array_from_json(cloud, spec, bools_in_body)
        except ServingError as err:
            raise invalid(f"Failed to process element: {i} of 'instances' list. Error: {err.status_string()}")
        if arr.ndim != 2 or (width is not None and arr.shape[1] != width):
            raise invalid(f"Failed to process element: {i} of 'instances' list: a cloud of different size "
                          f"must be a list of points of {width or 'the same number of'} values each; got shape "
                          f"{list(arr.shape)}.")
        arrays.append(arr)
    widths = {a.shape[1] for a in arrays}
    if len(widths) > 1:
        raise invalid(f"Instances have points of {sorted(widths)} values; every point needs the same "
                      f"number of values.")
    n = max(len(a) for a in arrays)
    points = np.zeros((len(arrays), n, arrays[0].shape[1]), dtype=spec.dtype)
    mask = np.zeros((len(arrays), n), dtype=bool)
    for i, a in enumerate(arrays):
        points[i, :len(a)] = a
        mask[i, :len(a)] = True
    return partner, {"points": points, "mask": mask}
