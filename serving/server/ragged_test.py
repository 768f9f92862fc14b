"""Server-side padding of REST instances of different sizes (serving/server/ragged.py)."""

import numpy as np
import pytest

from serving.server.errors import ServingError
from serving.server.ragged import masked_partner, pad_instances
from serving.server.servable import Signature, TensorSpec

PREDICT = "tensorflow/serving/predict"


def _run(**inputs):
    return inputs


def _signatures(width=5, with_masked=True):
    points = TensorSpec("points", np.float32, "float", (-1, -1, width))
    out = {"serving_default": Signature("serving_default", PREDICT, {"points": points}, ("prediction",), _run)}
    if with_masked:
        out["serving_masked"] = Signature("serving_masked", PREDICT,
                                          {"points": points, "mask": TensorSpec("mask", np.bool_, "bool", (-1, -1))},
                                          ("prediction",), _run)
    return out


def test_clouds_of_different_sizes_are_padded_masked_and_routed_to_the_masked_signature():
    sigs = _signatures()
    rng = np.random.default_rng(0)
    clouds = [rng.normal(size=(n, 5)).round(3).tolist() for n in (3, 7, 1)]
    sig, arrays = pad_instances(clouds, sigs["serving_default"], sigs, False)
    assert sig.name == "serving_masked"
    assert arrays["points"].shape == (3, 7, 5) and arrays["points"].dtype == np.float32
    assert arrays["mask"].sum(axis=1).tolist() == [3, 7, 1]
    for i, cloud in enumerate(clouds):
        np.testing.assert_allclose(arrays["points"][i, :len(cloud)], np.asarray(cloud, np.float32))
        assert not arrays["points"][i, len(cloud):].any()
    # Objects naming only `points` are the same request.
    sig2, arrays2 = pad_instances([{"points": c} for c in clouds], sigs["serving_default"], sigs, False)
    assert sig2 is sig and np.array_equal(arrays2["points"], arrays["points"])


@pytest.mark.parametrize("instances, with_masked, signature", [
    ([[[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5]]], True, "serving_default"),          # one size: TF Serving's path
    ([[[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5]] * 2], False, "serving_default"),     # no masked signature
    ([[[1, 2, 3, 4, 5]], [[1, 2, 3, 4, 5]] * 2], True, "serving_masked"),       # the request names inputs itself
    ([1.0, [1.0, 2.0]], True, "serving_default"),                               # not clouds of points
])
def test_requests_tf_serving_handles_are_left_to_it(instances, with_masked, signature):
    sigs = _signatures(with_masked=with_masked)
    assert pad_instances(instances, sigs[signature], sigs, False) is None


def test_a_cloud_of_the_wrong_width_is_named():
    sigs = _signatures(width=5)
    with pytest.raises(ServingError, match=r"element: 1 of 'instances' list.*5 values each; got shape \[2, 3\]"):
        pad_instances([[[0.0] * 5], [[0.0] * 3, [1.0] * 3]], sigs["serving_default"], sigs, False)


def test_masked_partner_prefers_serving_masked():
    sigs = _signatures()
    other = Signature("other", PREDICT, dict(sigs["serving_masked"].inputs), (), _run)
    assert masked_partner({"other": other, **sigs}).name == "serving_masked"
    assert masked_partner({"other": other}).name == "other"
    assert masked_partner({"serving_default": sigs["serving_default"]}) is None
