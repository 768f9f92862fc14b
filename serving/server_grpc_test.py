"""The embedded server's gRPC API in a real server process, called with TF Serving's own
stubs (`prediction_service_pb2_grpc`, `model_service_pb2_grpc`) as a production client
calls tensorflow_model_server, and compared with its REST answers."""

import signal
import time

import grpc
import httpx
import numpy as np
import pytest
import tensorflow as tf
from tensorflow.core.protobuf import saved_model_pb2
from tensorflow_serving.apis import (classification_pb2, get_model_metadata_pb2,
                                     get_model_status_pb2, inference_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc, regression_pb2)

from pipelines.export import export_model
from serving.server.process import ServerProcess, free_port
from tests.support.serving import tiny_classifier, train_tiny

# Every test here talks to a server process.
pytestmark = pytest.mark.slow

CLASSES = ["a", "b", "c", "d"]


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    (root / "tiny").mkdir()
    return root / "tiny"


@pytest.fixture(scope="module")
def server(base, tmp_path_factory):
    """The server on two ports this test picks, started before the models exist (it
    imports TensorFlow meanwhile) and serving both versions once they are exported."""
    ports = {"rest": free_port(), "grpc": free_port()}
    proc = ServerProcess(["--model-name", "tiny", "--model-base-path", str(base),
                          "--version-policy", "all", "--version-label", "stable=1",
                          "--version-label", "canary=2", "--file-system-poll-wait-seconds",
                          "0.3", "--rest_api_port", str(ports["rest"]),
                          "--port", str(ports["grpc"])], tmp_path_factory.mktemp("server"))
    try:
        for seed in (0, 7):
            export_model(train_tiny(tiny_classifier(len(CLASSES), seed=seed), steps=3,
                                    seed=seed), base.parent, "tiny", CLASSES)
        proc.wait_ready()
        channel = grpc.insecure_channel(proc.grpc_target)
        models = model_service_pb2_grpc.ModelServiceStub(channel)
        request = get_model_status_pb2.GetModelStatusRequest()
        request.model_spec.name = "tiny"
        deadline = time.monotonic() + 120
        while True:
            try:
                if len(models.GetModelStatus(request, timeout=5).model_version_status) == 2:
                    break
            except grpc.RpcError:
                pass  # NOT_FOUND until the first version is seen
            assert time.monotonic() < deadline, "versions 1 and 2 did not load in 120 s"
            time.sleep(0.2)
        yield proc, ports, channel
        channel.close()
    finally:
        proc.stop()


@pytest.fixture(scope="module")
def stubs(server):
    channel = server[2]
    return (prediction_service_pb2_grpc.PredictionServiceStub(channel),
            model_service_pb2_grpc.ModelServiceStub(channel))


@pytest.fixture(scope="module")
def reference(base):
    loaded = {v: tf.saved_model.load(str(base / str(v))) for v in (1, 2)}
    return lambda version, points: {
        k: v.numpy() for k, v in loaded[version].signatures["serving_default"](
            points=tf.constant(points)).items()}


def clouds(batch=3, n=40, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, n, 3)).astype(np.float32)


def predict_request(points, name="tiny", **spec):
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    for key, value in spec.items():
        if key == "version":
            request.model_spec.version.value = value
        else:
            setattr(request.model_spec, key, value)
    request.inputs["points"].CopyFrom(tf.make_tensor_proto(points))
    return request


def test_rest_is_on_rest_api_port_and_grpc_on_port(server):
    proc, ports, _ = server
    assert proc.url == f"http://127.0.0.1:{ports['rest']}"
    assert proc.grpc_target == f"127.0.0.1:{ports['grpc']}"
    assert httpx.get(f"{proc.url}/v1/models/tiny").status_code == 200


def test_predict_by_version_and_label_equals_rest_and_the_saved_model(server, stubs,
                                                                      reference):
    predictions, _ = stubs
    url = server[0].url
    x = clouds()
    for spec, version, path in (({}, 2, ""), ({"version": 1}, 1, "/versions/1"),
                                ({"version": 2}, 2, "/versions/2"),
                                ({"version_label": "stable"}, 1, "/labels/stable"),
                                ({"version_label": "canary"}, 2, "/labels/canary")):
        answer = predictions.Predict(predict_request(x, **spec), timeout=60)
        assert (answer.model_spec.name, answer.model_spec.signature_name,
                answer.model_spec.version.value) == ("tiny", "serving_default", version)
        got = {k: tf.make_ndarray(v) for k, v in answer.outputs.items()}
        rest = httpx.post(f"{url}/v1/models/tiny{path}:predict",
                          json={"instances": x.tolist()}, timeout=60).json()["predictions"]
        # REST writes each float32 in the shortest form that reads back the same.
        np.testing.assert_array_equal(got["probabilities"],
                                      np.float32([p["probabilities"] for p in rest]))
        assert got["class_id"].tolist() == [p["class_id"] for p in rest]
        want = reference(version, x)
        np.testing.assert_allclose(got["probabilities"], want["probabilities"], rtol=0,
                                   atol=1e-7)
        assert got["class_id"].tolist() == want["class_id"].tolist()
    one, two = (tf.make_ndarray(predictions.Predict(predict_request(x, version=v)).outputs[
        "probabilities"]) for v in (1, 2))
    assert not np.allclose(one, two, atol=1e-4)  # so that a wrong pin would show


def test_metadata_is_the_saved_model_signature_defs(server, stubs, base):
    predictions, _ = stubs
    request = get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"])
    request.model_spec.name = "tiny"
    request.model_spec.version.value = 1
    answer = predictions.GetModelMetadata(request, timeout=30)
    assert (answer.model_spec.name, answer.model_spec.version.value) == ("tiny", 1)
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert answer.metadata["signature_def"].Unpack(signatures)
    saved = saved_model_pb2.SavedModel.FromString((base / "1" / "saved_model.pb").read_bytes())
    assert dict(signatures.signature_def) == dict(saved.meta_graphs[0].signature_def)
    assert set(signatures.signature_def) >= {"serving_default", "serving_masked"}


def test_status_lists_every_version(stubs):
    _, models = stubs
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = "tiny"
    answer = models.GetModelStatus(request, timeout=30)
    assert [(s.version, get_model_status_pb2.ModelVersionStatus.State.Name(s.state),
             s.status.error_code) for s in answer.model_version_status] == [
        (2, "AVAILABLE", 0), (1, "AVAILABLE", 0)]


def _fails(call, request):
    with pytest.raises(grpc.RpcError) as info:
        call(request, timeout=30)
    return info.value.code(), info.value.details()


def test_errors_have_tf_servings_status_codes_and_the_server_keeps_serving(stubs):
    predictions, models = stubs
    x = clouds(batch=1)
    assert _fails(predictions.Predict, predict_request(x, name="nope")) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Latest(nope)")
    assert _fails(predictions.Predict, predict_request(x, version=9)) == (
        grpc.StatusCode.NOT_FOUND, "Servable not found for request: Specific(tiny, 9)")
    assert _fails(predictions.Predict, predict_request(x, version_label="beta")) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: beta")
    assert _fails(predictions.Predict, predict_request(x, signature_name="nope")) == (
        grpc.StatusCode.FAILED_PRECONDITION, 'Serving signature key "nope" not found.')
    assert _fails(predictions.Predict, predict_request(x.astype(np.float64))) == (
        grpc.StatusCode.INVALID_ARGUMENT, "Expects arg[0] to be float but double is provided")
    status = get_model_status_pb2.GetModelStatusRequest()
    status.model_spec.name = "tiny"
    status.model_spec.version.value = 9
    assert _fails(models.GetModelStatus, status) == (
        grpc.StatusCode.NOT_FOUND, "Could not find version 9 of model tiny")
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = "tiny"
    code, details = _fails(predictions.Classify, classify)
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("No classification inputs found in SignatureDef: inputs {")
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = "tiny"
    assert _fails(predictions.Regress, regress) == (grpc.StatusCode.INVALID_ARGUMENT,
                                                    "Expected one output Tensor.")
    code, _ = _fails(predictions.MultiInference, inference_pb2.MultiInferenceRequest())
    assert code == grpc.StatusCode.UNIMPLEMENTED
    assert predictions.Predict(predict_request(x), timeout=30).outputs["class_id"].int64_val


def test_grpc_only_on_a_unix_socket_stops_cleanly_on_sigterm(base, server, tmp_path):
    """--rest_api_port 0 switches REST off and --port 0 with --grpc_socket_path serves gRPC
    on the socket only, as tensorflow_model_server; SIGTERM ends the process with 0."""
    socket_path = tmp_path / "tfs.sock"
    with ServerProcess(["--model-name", "tiny", "--model-base-path", str(base),
                        "--rest_api_port", "0", "--port", "0", "--grpc_socket_path",
                        str(socket_path), "--file-system-poll-wait-seconds", "0"],
                       tmp_path) as proc:
        assert proc.wait_ready() is None and proc.grpc_target is None
        with grpc.insecure_channel(f"unix:{socket_path}") as channel:
            predictions = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            answer = predictions.Predict(predict_request(clouds(batch=1)), timeout=60)
            assert answer.model_spec.version.value == 2
        proc.proc.send_signal(signal.SIGTERM)
        assert proc.proc.wait(timeout=30) == 0
    assert "Traceback" not in proc.log_path.read_text()


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def test_memory_returns_after_bursts_of_rejected_requests(server, stubs):
    """Two bursts of 8 concurrent 11 MiB requests, each rejected for one NaN: the server's
    resident memory grows during a burst and is back within 10% two seconds after it."""
    import concurrent.futures

    proc, predictions = server[0].proc, stubs[0]
    x = np.random.default_rng(0).normal(size=(16, 60_000, 3)).astype(np.float32)
    x[-1, -1, -1] = np.nan
    request = predict_request(x)
    predictions.Predict(predict_request(clouds()), timeout=60)
    time.sleep(1)
    before = _rss_mib(proc.pid)
    for burst in range(2):
        peak = [before]

        def reject(_):
            code, _ = _fails(predictions.Predict, request)
            peak[0] = max(peak[0], _rss_mib(proc.pid))
            return code

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            assert set(pool.map(reject, range(8))) == {grpc.StatusCode.INVALID_ARGUMENT}
        assert peak[0] > before + 40, f"burst {burst} did not raise the memory: {peak[0]:.0f} MiB"
        time.sleep(2)
        after = _rss_mib(proc.pid)
        assert after <= 1.1 * before, (f"burst {burst}: {after:.0f} MiB two seconds after, "
                                       f"{before:.0f} MiB before")
