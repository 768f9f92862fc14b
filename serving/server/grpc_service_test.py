"""Tests of the gRPC services on fake model versions: TF Serving's statuses and messages for
every request a client can get wrong, the answer's tensor encoding, the status and metadata
answers. No server runs here: the servicer methods are called with a stand-in context
(serving/server_grpc_test.py talks to a real server with TF Serving's stubs)."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, predict_pb2, regression_pb2)

from serving.server.config import Limits, ModelConfig
from serving.server.errors import HTTP_OF, ServingError
from serving.server.grpc_service import (ModelService, PredictionService, array_to_tensor,
                                         grpc_code, tensor_to_array)
from serving.server.servable import PREDICT_METHOD, Signature, TensorSpec
from serving.server.versions import ModelRegistry

LIMITS = Limits(max_points=100, max_batch_size=8, max_body_bytes=1 << 20, max_inflight=4)


def _tensor_info(name, dtype, dims):
    info = meta_graph_pb2.TensorInfo(name=name, dtype=dtype)
    for d in dims:
        info.tensor_shape.dim.add().size = d
    return info


def _signature_def(name, inputs, outputs, method=PREDICT_METHOD):
    sig = meta_graph_pb2.SignatureDef(method_name=method)
    for alias, (dtype, dims) in inputs.items():
        sig.inputs[alias].CopyFrom(_tensor_info(f"{name}_{alias}:0", dtype, dims))
    for alias, (dtype, dims) in outputs.items():
        sig.outputs[alias].CopyFrom(_tensor_info(f"StatefulPartitionedCall:{alias}", dtype,
                                                 dims))
    return sig


OUTPUTS = {"probabilities": (types_pb2.DT_FLOAT, [-1, 3]), "class_id": (types_pb2.DT_INT64, [-1])}
POINTS = (types_pb2.DT_FLOAT, [-1, -1, 3])


class FakeVersion:
    """A model version without TensorFlow: scores are a softmax of the mean point times the
    version number, so versions answer differently."""

    def __init__(self, name, version, path):
        self.model_name, self.version = name, version
        self.signature_defs = {
            "serving_default": _signature_def("serving_default", {"points": POINTS}, OUTPUTS),
            "serving_masked": _signature_def(
                "serving_masked", {"points": POINTS, "mask": (types_pb2.DT_BOOL, [-1, -1])},
                OUTPUTS),
            "scores": _signature_def("scores", {"inputs": (types_pb2.DT_STRING, [-1])},
                                     {"scores": (types_pb2.DT_FLOAT, [-1, 3])},
                                     "tensorflow/serving/classify"),
        }
        specs = {"points": TensorSpec("points", np.float32, "float", (-1, -1, 3)),
                 "mask": TensorSpec("mask", np.bool_, "bool", (-1, -1))}
        self.signatures = {
            name: Signature(name, sig.method_name,
                            {k: specs.get(k, TensorSpec(k, np.object_, "string", (-1,)))
                             for k in sig.inputs}, tuple(sorted(sig.outputs)), None)
            for name, sig in self.signature_defs.items()}

    def call(self, signature, arrays):
        points = arrays["points"]
        if points[0, 0, 0] == 123:
            raise RuntimeError("the kernel fell over")
        mask = arrays.get("mask", np.ones(points.shape[:2], bool))[..., None]
        mean = (points * mask).sum(axis=1) / mask.sum(axis=1) * self.version
        probabilities = np.exp(mean) / np.exp(mean).sum(axis=1, keepdims=True)
        return {"probabilities": probabilities.astype(np.float32),
                "class_id": probabilities.argmax(axis=1).astype(np.int64)}


class Aborted(Exception):
    pass


class Context:
    """grpc.ServicerContext as far as the services use it."""

    def abort(self, code, details):
        raise Aborted(code, details)


@pytest.fixture(scope="module")
def services(tmp_path_factory):
    base = tmp_path_factory.mktemp("m")
    for v in (1, 2):
        (base / str(v)).mkdir()
        (base / str(v) / "saved_model.pb").write_bytes(b"")
    registry = ModelRegistry([ModelConfig("m", str(base), ("all",), {"stable": 1})],
                             poll_seconds=0, loader=FakeVersion)
    registry.poll_once()
    return PredictionService(registry, LIMITS), ModelService(registry)


def clouds(batch=2, n=5, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, n, 3)).astype(np.float32)


def predict_request(points=None, **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "m"
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["points"].CopyFrom(tf.make_tensor_proto(clouds() if points is None
                                                           else points))
    return request


def failure(method, request):
    with pytest.raises(Aborted) as info:
        method(request, Context())
    return info.value.args


def test_predict_answers_like_tf_serving(services):
    predictions, _ = services
    x = clouds()
    answer = predictions.Predict(predict_request(x), Context())
    assert (answer.model_spec.name, answer.model_spec.signature_name,
            answer.model_spec.version.value) == ("m", "serving_default", 2)
    want = FakeVersion("m", 2, None).call(None, {"points": x})
    probabilities = answer.outputs["probabilities"]
    # Tensor::AsProtoField: typed value fields, no tensor_content.
    assert probabilities.dtype == types_pb2.DT_FLOAT and not probabilities.tensor_content
    assert [d.size for d in probabilities.tensor_shape.dim] == [2, 3]
    np.testing.assert_array_equal(tf.make_ndarray(probabilities), want["probabilities"])
    assert list(answer.outputs["class_id"].int64_val) == want["class_id"].tolist()
    # Pinned by version and by label, and the masked signature.
    for spec in ({"version": 1}, {"version_label": "stable"}):
        pinned = predictions.Predict(predict_request(x, **spec), Context())
        assert pinned.model_spec.version.value == 1
        np.testing.assert_array_equal(tf.make_ndarray(pinned.outputs["probabilities"]),
                                      FakeVersion("m", 1, None).call(None, {"points": x})[
                                          "probabilities"])
    masked = predict_request(x, signature_name="serving_masked")
    masked.inputs["mask"].CopyFrom(tf.make_tensor_proto(np.ones((2, 5), bool)))
    assert predictions.Predict(masked, Context()).outputs["class_id"].int64_val == \
        answer.outputs["class_id"].int64_val
    only = predict_request(x)
    only.output_filter.append("class_id")
    assert list(predictions.Predict(only, Context()).outputs) == ["class_id"]


def _without_spec(request):
    request.ClearField("model_spec")


def _add_input(name, value):
    return lambda r: r.inputs[name].CopyFrom(tf.make_tensor_proto(value))


def _rename_points(request):
    request.inputs["pts"].CopyFrom(request.inputs["points"])
    del request.inputs["points"]


def _points_proto(**fields):
    def mutate(request):
        request.inputs["points"].CopyFrom(tensor_pb2.TensorProto(**fields))
    return mutate


def _shape(*dims):
    from tensorflow.core.framework import tensor_shape_pb2
    return tensor_shape_pb2.TensorShapeProto(
        dim=[tensor_shape_pb2.TensorShapeProto.Dim(size=d) for d in dims])


BAD_PREDICTS = [
    ("no model spec", _without_spec, "INVALID_ARGUMENT", "Missing ModelSpec"),
    ("no name", lambda r: setattr(r.model_spec, "name", ""), "INVALID_ARGUMENT",
     "ModelSpec has no name specified."),
    ("unknown model", lambda r: setattr(r.model_spec, "name", "x"), "NOT_FOUND",
     "Servable not found for request: Latest(x)"),
    ("unknown version", lambda r: setattr(r.model_spec.version, "value", 9), "NOT_FOUND",
     "Servable not found for request: Specific(m, 9)"),
    ("unknown label", lambda r: setattr(r.model_spec, "version_label", "beta"),
     "INVALID_ARGUMENT", "Unrecognized servable version label: beta"),
    ("unknown signature", lambda r: setattr(r.model_spec, "signature_name", "nope"),
     "FAILED_PRECONDITION", 'Serving signature key "nope" not found.'),
    ("an extra input", _add_input("extra", np.zeros(1, np.float32)), "INVALID_ARGUMENT",
     "input size does not match signature: 2!=1 len({extra,points}) != len({points}). "
     "Sent extra: {extra}. Missing but required: {}."),
    ("a missing input", lambda r: setattr(r.model_spec, "signature_name", "serving_masked"),
     "INVALID_ARGUMENT", "input size does not match signature: 1!=2 len({points}) != "
     "len({mask,points}). Sent extra: {}. Missing but required: {mask}."),
    ("a misnamed input", _rename_points, "INVALID_ARGUMENT",
     "Signature input alias: points(feed name: serving_default_points:0) not found in "
     "request and no default value provided. Inputs expected to be in the request {pts}, "
     "or default input alias set: "),
    ("float64 points", _add_input("points", clouds().astype(np.float64)), "INVALID_ARGUMENT",
     "Expects arg[0] to be float but double is provided"),
    ("unknown output", lambda r: r.output_filter.append("logits"), "INVALID_ARGUMENT",
     "output tensor alias not found in signature: logits Outputs expected to be in the set "
     "{class_id,probabilities}."),
    ("repeated output", lambda r: r.output_filter.extend(["class_id", "class_id"]),
     "INVALID_ARGUMENT", "duplicate output tensor alias: class_id"),
    ("content of the wrong size", _points_proto(dtype=types_pb2.DT_FLOAT,
                                                tensor_shape=_shape(1, 2, 3),
                                                tensor_content=b"\0" * 20),
     "INVALID_ARGUMENT", "tensor parsing error: points"),
    ("a negative dimension", _points_proto(dtype=types_pb2.DT_FLOAT,
                                           tensor_shape=_shape(1, -1, 3), float_val=[1.0]),
     "INVALID_ARGUMENT", "tensor parsing error: points"),
    ("a huge shape padded from one value",
     _points_proto(dtype=types_pb2.DT_FLOAT, tensor_shape=_shape(1 << 20, 1 << 10, 3),
                   float_val=[1.0]),
     "INVALID_ARGUMENT", "Input 'points' of shape [1048576,1024,3] would take 12884901888 "
                         "bytes, far more than its message holds"),
    ("a NaN", _add_input("points", np.full((1, 4, 3), np.nan, np.float32)),
     "INVALID_ARGUMENT", "Input 'points' has 12 NaN or Inf coordinates"),
    ("points of rank 2", _add_input("points", np.zeros((4, 3), np.float32)),
     "INVALID_ARGUMENT", "Input 'points' of signature 'serving_default' must have shape "
                         "[batch, N, 3] (rank 3)"),
    ("too many points", _add_input("points", np.zeros((1, 101, 3), np.float32)),
     "INVALID_ARGUMENT", "Clouds of 101 points exceed this server's maximum of 100 points"),
    ("a model that fails", _add_input("points", np.full((1, 2, 3), 123, np.float32)),
     "INTERNAL", "RuntimeError: the kernel fell over"),
]


@pytest.mark.parametrize("what, mutate, code, message", BAD_PREDICTS,
                         ids=[b[0] for b in BAD_PREDICTS])
def test_bad_predict_requests_get_tf_servings_status_and_message(services, what, mutate,
                                                                  code, message):
    request = predict_request()
    mutate(request)
    got_code, details = failure(services[0].Predict, request)
    assert got_code == grpc.StatusCode[code]
    assert details.startswith(message), details


def test_long_messages_are_cut_as_tf_serving_cuts_them(services):
    request = predict_request()
    request.model_spec.name = "x" * 2000
    code, details = failure(services[0].Predict, request)
    assert code == grpc.StatusCode.NOT_FOUND
    assert len(details) == 1024 + len("...TRUNCATED") and details.endswith("x...TRUNCATED")


def test_metadata_answers_the_signature_defs(services):
    predictions, _ = services
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = "m"
    code, details = failure(predictions.GetModelMetadata, request)
    assert (code, details) == (grpc.StatusCode.INVALID_ARGUMENT,
                               "GetModelMetadataRequest must specify at least one "
                               "metadata_field")
    request.metadata_field.append("saved_model")
    assert failure(predictions.GetModelMetadata, request)[1] == \
        "Metadata field saved_model is not supported"
    del request.metadata_field[:]
    request.metadata_field.append("signature_def")
    request.model_spec.version_label = "stable"
    answer = predictions.GetModelMetadata(request, Context())
    assert (answer.model_spec.name, answer.model_spec.version.value) == ("m", 1)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    assert dict(signatures.signature_def) == FakeVersion("m", 1, None).signature_defs
    request.model_spec.name = "x"
    assert failure(predictions.GetModelMetadata, request)[0] == grpc.StatusCode.INVALID_ARGUMENT


def test_status_answers_every_version_unless_one_is_asked_for(services):
    _, models = services
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "m"
    request.model_spec.version_label = "stable"  # TF Serving ignores labels here
    answer = models.GetModelStatus(request, Context())
    assert [(s.version, s.state) for s in answer.model_version_status] == [
        (2, get_model_status_pb2.ModelVersionStatus.AVAILABLE),
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)]
    request.model_spec.version.value = 1
    assert [s.version for s in models.GetModelStatus(request, Context()).model_version_status
            ] == [1]
    request.model_spec.version.value = 5
    assert failure(models.GetModelStatus, request) == (
        grpc.StatusCode.NOT_FOUND, "Could not find version 5 of model m")
    request.model_spec.name = "x"
    request.model_spec.ClearField("version")
    assert failure(models.GetModelStatus, request) == (
        grpc.StatusCode.NOT_FOUND, "Could not find any versions of model x")
    assert failure(models.GetModelStatus, get_model_status_pb2.GetModelStatusRequest()) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


@pytest.mark.parametrize("api, signature, code, message", [
    ("Classify", "", "INVALID_ARGUMENT", "No classification inputs found in SignatureDef: "
                                         "inputs {\n  key: \"points\""),
    ("Regress", "", "INVALID_ARGUMENT", "Expected one output Tensor."),
    ("Classify", "serving_masked", "INVALID_ARGUMENT", "Expected one input Tensor."),
    ("Regress", "nope", "INVALID_ARGUMENT", "No signature was found with the name: nope"),
    ("Classify", "scores", "UNIMPLEMENTED", "Signature scores of model m is a classify "
                                           "signature; this server runs predict signatures"),
])
def test_classify_and_regress_answer_as_tf_serving_does(services, api, signature, code,
                                                         message):
    request = (classification_pb2.ClassificationRequest() if api == "Classify"
               else regression_pb2.RegressionRequest())
    assert failure(getattr(services[0], api), request) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                           "Missing ModelSpec")
    request.model_spec.name = "m"
    request.model_spec.signature_name = signature
    got_code, details = failure(getattr(services[0], api), request)
    assert got_code == grpc.StatusCode[code] and details.startswith(message), details


def test_every_error_code_has_a_grpc_status():
    for code in HTTP_OF:
        assert isinstance(grpc_code(code), grpc.StatusCode)
    assert grpc_code("PAYLOAD_TOO_LARGE") == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert grpc_code(ServingError("UNAVAILABLE", "loading").code) == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("array", [
    np.arange(6, dtype=np.float32).reshape(2, 3) / 7, np.array([3, -1], np.int64),
    np.array([[True, False]]), np.arange(4, dtype=np.float64), np.array([1, 2], np.int32),
    np.array([b"a", b"bc"], dtype=object), np.array([1, 2], np.uint8)])
def test_tensors_travel_both_ways(array):
    proto = tensor_pb2.TensorProto()
    array_to_tensor(array, proto)
    back = tensor_to_array(proto, "x", LIMITS)
    assert back.dtype == array.dtype and back.shape == array.shape
    np.testing.assert_array_equal(back, array)
    # tf.make_tensor_proto's packed bytes read back the same.
    np.testing.assert_array_equal(tensor_to_array(tf.make_tensor_proto(array), "x", LIMITS),
                                  array)


def test_tensor_protos_pad_with_the_last_value_as_tensorflow_does():
    proto = tensor_pb2.TensorProto(dtype=types_pb2.DT_FLOAT, tensor_shape=_shape(2, 2),
                                   float_val=[1.0, 2.0])
    np.testing.assert_array_equal(tensor_to_array(proto, "x", LIMITS), [[1, 2], [2, 2]])
    empty = tensor_pb2.TensorProto(dtype=types_pb2.DT_INT64, tensor_shape=_shape(3))
    np.testing.assert_array_equal(tensor_to_array(empty, "x", LIMITS), [0, 0, 0])
