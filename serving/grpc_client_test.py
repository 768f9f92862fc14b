"""Tests of the gRPC client without a server: retries, errors, batching, padding, the
request's model spec and tensor encodings, and the CLI's --grpc refusals."""

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2

from serving import client as C
from serving.base_client import ServingClientError
from serving.grpc_client import GrpcServingClient


class RpcError(grpc.RpcError):
    def __init__(self, code, details=""):
        self._code, self._details = code, details

    def code(self):
        return self._code

    def details(self):
        return self._details


class FakePredict:
    """PredictionService.Predict: records requests, fails with the queued errors first, then
    answers class_id = number of real points per cloud and probabilities = the mean x."""

    def __init__(self, errors=()):
        self.errors, self.requests = list(errors), []

    def __call__(self, request, timeout=None):
        self.requests.append(request)
        if self.errors:
            raise self.errors.pop(0)
        points = tf.make_ndarray(request.inputs["points"])
        mask = (tf.make_ndarray(request.inputs["mask"]) if "mask" in request.inputs
                else np.ones(points.shape[:2], bool))
        answer = predict_pb2.PredictResponse()
        answer.outputs["class_id"].CopyFrom(tf.make_tensor_proto(mask.sum(axis=1)))
        answer.outputs["probabilities"].CopyFrom(tf.make_tensor_proto(
            points[..., :1].sum(axis=1) / mask.sum(axis=1, keepdims=True)))
        return answer


def make(predict, **kw):
    sleeps = []
    client = GrpcServingClient("127.0.0.1:1", "m", sleep=sleeps.append, **kw)
    client.predictions = type("Stub", (), {"Predict": predict})()
    return client, sleeps


def test_retries_unavailable_and_busy_then_succeeds():
    predict = FakePredict([RpcError(grpc.StatusCode.UNAVAILABLE, "loading"),
                           RpcError(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy")])
    client, sleeps = make(predict, backoff=0.5)
    out = client.predict(np.ones((2, 4, 3), np.float32))
    assert out["class_id"].tolist() == [4, 4] and len(predict.requests) == 3
    assert len(sleeps) == 2 and 0.25 <= sleeps[0] <= 0.5 and 0.5 <= sleeps[1] <= 1.0


def test_client_errors_are_not_retried_and_name_the_status():
    client, sleeps = make(FakePredict([RpcError(grpc.StatusCode.NOT_FOUND,
                                                "Servable not found for request: Latest(m)")]))
    with pytest.raises(ServingClientError, match="Latest") as info:
        client.predict(np.ones((1, 4, 3), np.float32))
    assert info.value.status == "NOT_FOUND" and sleeps == []


def test_no_server_and_timeouts_read_as_the_rest_clients_do():
    refused = RpcError(grpc.StatusCode.UNAVAILABLE, "failed to connect to all addresses")
    client, sleeps = make(FakePredict([refused] * 3), retries=2)
    with pytest.raises(ServingClientError, match="cannot reach the server after 3 "
                                                   "attempts.*Is it running at 127.0.0.1:1"):
        client.predict(np.ones((1, 4, 3), np.float32))
    assert len(sleeps) == 2
    client, _ = make(FakePredict([RpcError(grpc.StatusCode.DEADLINE_EXCEEDED)] * 2),
                     retries=1, timeout=0.5)
    with pytest.raises(ServingClientError, match="no answer within 0.5 s after 2 attempts"):
        client.predict(np.ones((1, 4, 3), np.float32))


def test_batches_pins_and_padding():
    predict = FakePredict()
    client, _ = make(predict, batch_size=2, label="stable")
    rng = np.random.default_rng(0)
    same = rng.normal(size=(5, 6, 3)).astype(np.float32)
    out = client.predict(same)
    assert [r.inputs["points"].tensor_shape.dim[0].size for r in predict.requests] == [2, 2, 1]
    assert all(r.model_spec.version_label == "stable" and not r.model_spec.signature_name
               for r in predict.requests)
    np.testing.assert_allclose(out["probabilities"][:, 0], same[..., 0].mean(axis=1),
                               rtol=1e-6)
    predict.requests.clear()
    sizes = [3, 7, 5]
    out = client.predict([rng.normal(size=(n, 3)) for n in sizes], version=4)
    assert out["class_id"].tolist() == sizes
    first = predict.requests[0]
    assert first.model_spec.signature_name == "serving_masked"
    assert first.model_spec.version.value == 4 and not first.model_spec.version_label
    assert tf.make_ndarray(first.inputs["mask"]).tolist() == [[True] * 3 + [False] * 4,
                                                              [True] * 7]


def test_tensor_encodings():
    predict = FakePredict()
    packed, _ = make(predict)
    fields, _ = make(predict, tensor_content=False)
    x = np.arange(12, dtype=np.float32).reshape(1, 4, 3) / 3
    a, b = packed.predict(x), fields.predict(x)
    first, second = (r.inputs["points"] for r in predict.requests)
    assert first.tensor_content and not first.float_val
    assert second.float_val and not second.tensor_content
    assert np.array_equal(tf.make_ndarray(first), tf.make_ndarray(second))
    assert np.array_equal(a["probabilities"], b["probabilities"])


def test_arguments_and_cli_refusals(capsys):
    with pytest.raises(ValueError, match="not a URL"):
        GrpcServingClient("http://127.0.0.1:8500", "m")
    with pytest.raises(ValueError, match="version or a label"):
        GrpcServingClient("127.0.0.1:8500", "m", version=1, label="a")
    for argv, fragment in (
            (["predict", "--grpc", "--columnar", "x.npy"], "--columnar chooses a REST"),
            (["status", "--grpc", "--url", "http://127.0.0.1:8500"], "not a URL")):
        assert C.main(argv) == 2
        err = capsys.readouterr().err
        assert fragment in err and err.startswith("error: ") and err.count("\n") == 1
