"""Tests of the embedded TF-Serving-compatible server, over real HTTP on 127.0.0.1."""

import json
import os
import pathlib
import threading
import time

import httpx
import numpy as np
import pytest

from pipelines.export import export_model
from serving.server.app import create_app
from serving.server.config import Limits, ModelConfig
from serving.server.servable import PREDICT_METHOD, LoadedVersion, Signature, TensorSpec
from serving.server.versions import ModelRegistry
from tests.support.serving import serve_in_thread, tiny_classifier, train_tiny

# Every test here runs the server (in a thread) and most share one module-scoped instance.
pytestmark = pytest.mark.slow

CLASSES = ["a", "b", "c", "d"]
LIMITS = Limits(max_points=500, max_batch_size=16, max_body_bytes=1_000_000, max_inflight=8)
ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    """Two trained tiny models with different weights (versions 1 and 2 of one model)."""
    return [train_tiny(tiny_classifier(len(CLASSES), seed=s), steps=3, seed=s) for s in (0, 7)]


@pytest.fixture(scope="module")
def base(models, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    for m in models:
        export_model(m, root, "tiny", CLASSES)
    return root / "tiny"


@pytest.fixture(scope="module")
def reference(base):
    """The SavedModels called in process: what every REST answer must equal."""
    import tensorflow as tf
    loaded = {v: tf.saved_model.load(str(base / str(v))) for v in (1, 2)}

    def predict(version, points, mask=None):
        sig = loaded[version].signatures["serving_default" if mask is None else "serving_masked"]
        kw = {"points": tf.constant(points, tf.float32)}
        if mask is not None:
            kw["mask"] = tf.constant(mask)
        return {k: v.numpy() for k, v in sig(**kw).items()}

    return predict


@pytest.fixture(scope="module")
def url(base):
    registry = ModelRegistry([ModelConfig("tiny", str(base), ("all",),
                                              {"stable": 1, "canary": 2})], poll_seconds=0)
    registry.poll_once()
    with serve_in_thread(create_app(registry, LIMITS)) as u:
        yield u


def clouds(batch=3, n=40, seed=0):
    return np.random.default_rng(seed).normal(size=(batch, n, 3)).astype(np.float32)


def test_status_document(url):
    r = httpx.get(f"{url}/v1/models/tiny")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    ok = {"error_code": "OK", "error_message": ""}
    assert r.json() == {"model_version_status": [
        {"version": "2", "state": "AVAILABLE", "status": ok},
        {"version": "1", "state": "AVAILABLE", "status": ok}]}
    assert httpx.get(f"{url}/v1/models/tiny/versions/1").json() == {"model_version_status": [
        {"version": "1", "state": "AVAILABLE", "status": ok}]}


def test_metadata_renders_the_saved_model_signature_defs(url, base):
    from google.protobuf import json_format
    from tensorflow.core.protobuf import saved_model_pb2

    saved = saved_model_pb2.SavedModel.FromString((base / "1" / "saved_model.pb").read_bytes())
    want = {name: json_format.MessageToDict(sig, preserving_proto_field_name=True,
                                            always_print_fields_with_no_presence=True)
            for name, sig in saved.meta_graphs[0].signature_def.items()}
    doc = httpx.get(f"{url}/v1/models/tiny/versions/1/metadata").json()
    assert doc["model_spec"] == {"name": "tiny", "signature_name": "", "version": "1"}
    assert doc["metadata"]["signature_def"]["signature_def"] == want
    sig = want["serving_default"]
    assert sig["method_name"] == "tensorflow/serving/predict"
    assert sig["inputs"]["points"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in sig["inputs"]["points"]["tensor_shape"]["dim"]] == ["-1", "-1", "3"]
    assert set(want["serving_masked"]["inputs"]) == {"points", "mask"}
    assert set(sig["outputs"]) == {"probabilities", "class_id"}
    latest = httpx.get(f"{url}/v1/models/tiny/metadata").json()
    assert latest["model_spec"]["version"] == "2"


def test_row_and_columnar_predict_equal_the_saved_model(url, reference):
    x = clouds()
    row = httpx.post(f"{url}/v1/models/tiny:predict", json={"instances": x.tolist()}).json()
    col = httpx.post(f"{url}/v1/models/tiny:predict", json={"inputs": x.tolist()}).json()
    want = reference(2, x)
    assert len(row["predictions"]) == 3 and set(row["predictions"][0]) == {"probabilities",
                                                                          "class_id"}
    np.testing.assert_allclose([p["probabilities"] for p in row["predictions"]],
                               want["probabilities"], rtol=0, atol=1e-7)
    assert [p["class_id"] for p in row["predictions"]] == want["class_id"].tolist()
    np.testing.assert_array_equal(np.float32(col["outputs"]["probabilities"]),
                                  np.float32([p["probabilities"] for p in row["predictions"]]))
    assert col["outputs"]["class_id"] == want["class_id"].tolist()
    # Row objects keyed by input name, and the masked signature in both formats.
    named = httpx.post(f"{url}/v1/models/tiny:predict",
                       json={"instances": [{"points": c} for c in x.tolist()]}).json()
    assert named == row
    mask = np.ones(x.shape[:2], bool)
    masked = httpx.post(f"{url}/v1/models/tiny:predict", json={
        "signature_name": "serving_masked",
        "inputs": {"points": x.tolist(), "mask": mask.tolist()}}).json()
    np.testing.assert_allclose(masked["outputs"]["probabilities"], want["probabilities"],
                               atol=1e-6)


def test_versions_and_labels_pin_the_model(url, reference):
    x = clouds(2, 30, seed=5)
    for path, version in (("/versions/1", 1), ("/versions/2", 2), ("/labels/stable", 1),
                          ("/labels/canary", 2), ("", 2)):
        got = httpx.post(f"{url}/v1/models/tiny{path}:predict", json={"inputs": x.tolist()})
        np.testing.assert_allclose(got.json()["outputs"]["probabilities"],
                                   reference(version, x)["probabilities"], atol=1e-7)
    assert not np.allclose(reference(1, x)["probabilities"], reference(2, x)["probabilities"])


GOOD = {"instances": clouds(2, 20).round(4).tolist()}
BIG_CLOUD = [[0.5, 0.5, 0.5]] * 501
M = "/v1/models/tiny"

BAD_REQUESTS = [
    # (what, method, path, body, status, message fragment)
    ("empty body", "POST", M + ":predict", b"", 400, "JSON Parse error: The document is empty"),
    ("malformed JSON", "POST", M + ":predict", b"instances = [1, 2]", 400,
     "JSON Parse error: Invalid value."),
    ("truncated JSON", "POST", M + ":predict", b'{"instances": [[[1, 2, 3]]', 400,
     "JSON Parse error"),
    ("not UTF-8 in a string", "POST", M + ":predict", b'{"instances": "\xff"}', 400,
     "Expecting 'instances' to be an list/array"),
    ("too deeply nested", "POST", M + ":predict", b"[" * 100000 + b"]" * 100000, 400,
     "JSON Parse error"),
    ("top level not an object", "POST", M + ":predict", b"[1, 2]", 400, "Is not object"),
    ("neither key", "POST", M + ":predict", {"points": [[1, 2, 3]]}, 400,
     "Missing 'inputs' or 'instances' key"),
    ("both keys", "POST", M + ":predict", {"instances": [[[1, 2, 3]]], "inputs": [[[1, 2, 3]]]},
     400, "expecting only one of 'inputs' or 'instances' keys to exist"),
    ("instances not a list", "POST", M + ":predict", {"instances": 5}, 400,
     'JSON Value: {\n    "instances": 5\n} Expecting \'instances\' to be an list/array'),
    ("no instances", "POST", M + ":predict", {"instances": []}, 400,
     "No values in 'instances' array"),
    # (Plain clouds of different sizes to serving_default are padded and masked by the
    # server, serving/server/ragged.py; with the mask given by the client, TF Serving's rule.)
    ("instances of different shapes", "POST", M + ":predict",
     {"signature_name": "serving_masked",
      "instances": [{"points": [[1, 2, 3]], "mask": [True]},
                    {"points": [[1, 2, 3], [4, 5, 6]], "mask": [True, True]}]}, 400,
     "Failed to process element: 1 key: mask of 'instances' list. Error: INVALID_ARGUMENT: "
     "Expecting tensor size: 1 but got: 2"),
    ("ragged points", "POST", M + ":predict", {"instances": [[[1, 2, 3], [4, 5]]]}, 400,
     "Encountered list at unexpected size: 2 at level: 1 expected size: 3"),
    ("non-numeric value", "POST", M + ":predict", {"instances": [[[1, "x", 3]]]}, 400,
     'JSON Value: "x" Type: String is not of expected type: float'),
    ("boolean coordinate", "POST", M + ":predict", {"inputs": [[[1.5, True, 3]]]}, 400,
     "Type: True is not of expected type: float"),
    ("wrong rank", "POST", M + ":predict", {"instances": [[1, 2, 3]]}, 400,
     "must have shape [batch, N, 3] (rank 3); got [1, 3] (rank 2)"),
    ("last dimension 4", "POST", M + ":predict", {"instances": [[[1, 2, 3, 4]]]}, 400,
     "has 4 values per point; each point must be [x, y, z] (3 values)"),
    ("NaN coordinate", "POST", M + ":predict", b'{"instances": [[[1, 2, NaN], [0, 0, 0]]]}',
     400, "NaN or Inf coordinates (the first in cloud 0, point 0)"),
    ("Infinity coordinate", "POST", M + ":predict", b'{"inputs": [[[0, 0, 0], [1, -Infinity, 2]]]}',
     400, "1 NaN or Inf coordinates (the first in cloud 0, point 1)"),
    ("beyond float32: Inf", "POST", M + ":predict", {"inputs": [[[1e39, 0, 0]]]}, 400,
     "1 NaN or Inf coordinates (the first in cloud 0, point 0)"),
    ("beyond double", "POST", M + ":predict", b'{"inputs": [[[1e400, 0, 0]]]}', 400,
     "JSON Parse error: Number too big to be stored in double. at offset: 14"),
    ("beyond double after a NaN", "POST", M + ":predict",
     b'{"inputs": [[[NaN, 0, 0], [-1e400, 0, 0]]]}', 400,
     "JSON Parse error: Number too big to be stored in double. at offset: 27"),
    ("empty set", "POST", M + ":predict", {"instances": [[]]}, 400, "an empty set"),
    ("empty set through the mask", "POST", M + ":predict",
     {"signature_name": "serving_masked",
      "instances": [{"points": [[1, 2, 3]], "mask": [True]},
                    {"points": [[1, 2, 3]], "mask": [False]}]}, 400,
     "Cloud 1 has no point with mask true"),
    ("mask of the wrong length", "POST", M + ":predict",
     {"signature_name": "serving_masked",
      "inputs": {"points": [[[1, 2, 3], [4, 5, 6]]], "mask": [[True]]}}, 400,
     "Input 'mask' has shape [1, 1] but 'points' has [1, 2, 3]"),
    ("mask missing", "POST", M + ":predict",
     {"signature_name": "serving_masked", "inputs": {"points": [[[1, 2, 3]]]}}, 400,
     "Missing named input: mask in 'inputs' object."),
    ("plain list for two inputs", "POST", M + ":predict",
     {"signature_name": "serving_masked", "instances": [[[1, 2, 3]]]}, 400,
     "instances is a plain list, but expecting list of objects"),
    ("unknown input name", "POST", M + ":predict",
     {"instances": [{"pts": [[1, 2, 3]]}]}, 400, "does not have named input: pts"),
    ("too many points", "POST", M + ":predict", {"instances": [BIG_CLOUD]}, 400,
     "Clouds of 501 points exceed this server's maximum of 500"),
    ("batch over the maximum", "POST", M + ":predict", {"instances": [[[1, 2, 3]]] * 17}, 400,
     "The request has 17 clouds, over this server's maximum of 16"),
    ("body over the maximum", "POST", M + ":predict",
     b'{"instances": [[[' + b"0.000000," * 130000 + b"0]]]}", 413,
     "over this server's maximum of 1000000 bytes"),
    ("signature_name not a string", "POST", M + ":predict", {"signature_name": 3}, 400,
     "'signature_name' key must be a string value."),
    ("unknown signature", "POST", M + ":predict", {"signature_name": "nope", "instances": [1]},
     400, 'Serving signature name: "nope" not found in signature def'),
    ("init op as signature", "POST", M + ":predict",
     {"signature_name": "__saved_model_init_op", "instances": [1]}, 400,
     "Failed to get input map for signature: __saved_model_init_op"),
    ("unknown model", "POST", "/v1/models/nope:predict", GOOD, 404,
     "Servable not found for request: Latest(nope)"),
    ("unknown version", "POST", M + "/versions/9:predict", GOOD, 404,
     "Servable not found for request: Specific(tiny, 9)"),
    ("unknown label", "POST", M + "/labels/beta:predict", GOOD, 400,
     "Unrecognized servable version label: beta"),
    ("version too large", "POST", M + "/versions/99999999999999999999:predict", GOOD, 400,
     "Failed to convert version: 99999999999999999999 to numeric."),
    ("classify without examples", "POST", M + ":classify", {"instances": [[[1, 2, 3]]]}, 400,
     "JSON Value: {\n    \"instances\": [[[1, 2, 3]]]\n} When method is classify, key "
     "'examples' is expected and was not found"),
    ("regress without examples", "POST", M + ":regress", {"inputs": 1}, 400,
     "When method is classify, key 'examples' is expected and was not found"),
    ("examples not objects", "POST", M + ":classify", {"examples": [[1, 2]]}, 400,
     "Example must be JSON object but got JSON Array"),
    ("examples of mixed kinds", "POST", M + ":classify", {"examples": [{"x": [1.5, "a"]}]},
     400, "Unexpected element type in feature: x expecting type: float"),
    ("classify on a predict signature", "POST", M + ":classify",
     {"examples": [{"x": [1.5]}]}, 400,
     "No classification inputs found in SignatureDef: inputs {\n  key: \"points\""),
    ("regress on a predict signature", "POST", M + ":regress", {"examples": [{"x": [1.5]}]},
     400, "Expected one output Tensor."),
    ("classify on a model that is not there", "POST", "/v1/models/nope:classify",
     {"examples": [{"x": [1.5]}]}, 404, "Servable not found for request: Latest(nope)"),
    ("OPTIONS without Origin", "OPTIONS", M + ":predict", None, 400,
     "Origin header is missing in CORS preflight"),
    ("gzip that does not inflate", "POST", M + ":predict", b"\x1f\x8b not gzip", 400,
     "JSON Parse error: The document is empty (the body says Content-Encoding: gzip"),
    ("gzip inflating over the maximum", "POST", M + ":predict",
     __import__("gzip").compress(b" " * 1_000_001), 413,
     "inflates to more than this server's maximum of 1000000 bytes"),
    ("status of unknown model", "GET", "/v1/models/nope", None, 404,
     "Could not find any versions of model nope"),
    ("status of unknown version", "GET", M + "/versions/9", None, 404,
     "Could not find version 9 of model tiny"),
    ("metadata of unknown version", "GET", M + "/versions/9/metadata", None, 404,
     "Servable not found for request: Specific(tiny, 9)"),
    ("no model name", "GET", "/v1/models", None, 400, "Missing model name in request."),
    ("malformed path", "GET", "/v1/foo", None, 400, "Malformed request: GET /v1/foo"),
    ("GET on predict", "GET", M + ":predict", None, 400, "Malformed request: GET"),
    ("POST on metadata", "POST", M + "/metadata", b"{}", 400, "Malformed request: POST"),
]


@pytest.mark.parametrize("what,method,path,body,status,fragment", BAD_REQUESTS,
                         ids=[b[0] for b in BAD_REQUESTS])
def test_bad_input_gets_a_clear_4xx_and_the_server_keeps_serving(url, what, method, path, body,
                                                                 status, fragment):
    content = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    headers = {"Content-Encoding": "gzip"} if what.startswith("gzip") else {}
    r = httpx.request(method, url + path, content=content, headers=headers, timeout=60)
    assert r.status_code == status, r.text
    assert r.headers["content-type"] == "application/json"
    assert fragment in r.json()["error"], r.json()["error"]
    good = httpx.post(f"{url}/v1/models/tiny:predict", json=GOOD, timeout=60)
    assert good.status_code == 200 and len(good.json()["predictions"]) == 2


def test_paths_outside_v1_are_not_found(url):
    assert httpx.get(f"{url}/healthz").status_code == 404


def test_gzip_bodies_are_inflated_and_trailing_bytes_ignored(url):
    import gzip

    body = json.dumps({"instances": clouds(2, 30, seed=4).tolist()}).encode()
    plain = httpx.post(f"{url}/v1/models/tiny:predict", content=body)
    assert plain.status_code == 200
    zipped = httpx.post(f"{url}/v1/models/tiny:predict", content=gzip.compress(body),
                        headers={"Content-Encoding": "gzip"})
    assert zipped.status_code == 200 and zipped.json() == plain.json()
    # rapidjson stops after the first value, so TF Serving ignores what follows it.
    for tail in (b" trailing words", b'{"instances": 5}', b"\x00\xff"):
        r = httpx.post(f"{url}/v1/models/tiny:predict", content=body + tail)
        assert r.status_code == 200 and r.json() == plain.json(), r.text
    both = httpx.post(f"{url}/v1/models/tiny:predict",
                      content=b'{"instances": [[[1, 2, NaN]]]} junk')
    assert "NaN or Inf" in both.json()["error"]


def test_status_by_label_lists_every_version_as_tf_serving(url):
    every = httpx.get(f"{url}/v1/models/tiny").json()
    assert len(every["model_version_status"]) == 2
    for label in ("stable", "canary", "no-such-label"):
        r = httpx.get(f"{url}/v1/models/tiny/labels/{label}")
        assert r.status_code == 200 and r.json() == every
    r = httpx.get(f"{url}/v1/models/nope/labels/stable")
    assert r.status_code == 404
    assert r.json()["error"] == "Could not find any versions of model nope"
    # Metadata and predict still resolve the label.
    meta = httpx.get(f"{url}/v1/models/tiny/labels/stable/metadata").json()
    assert meta["model_spec"]["version"] == "1"


def test_cors_preflight_and_headers(url, base):
    ok = httpx.options(f"{url}/v1/models/tiny:predict",
                       headers={"Origin": "https://app.example",
                                "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 200 and ok.content == b""
    assert "access-control-allow-origin" not in ok.headers
    registry = ModelRegistry([ModelConfig("tiny", str(base))], poll_seconds=0)
    registry.poll_once()
    with serve_in_thread(create_app(registry, LIMITS, cors=True)) as cors_url:
        want = {"access-control-allow-origin": "*",
                "access-control-allow-methods": "POST, GET",
                "access-control-allow-headers": "Content-Type"}
        for r in (httpx.options(f"{cors_url}/v1/models/tiny:predict",
                                headers={"Origin": "http://localhost:3000"}),
                  httpx.post(f"{cors_url}/v1/models/tiny:predict", json=GOOD),
                  httpx.post(f"{cors_url}/v1/models/tiny:predict", json={"x": 1}),
                  httpx.get(f"{cors_url}/v1/models/tiny")):
            assert {k: r.headers.get(k) for k in want} == want, (r.status_code, r.headers)


class _Gate:
    """A loader wrapper that holds chosen versions until the test opens the gate."""

    def __init__(self, hold):
        self.hold = set(hold)
        self.started = {v: threading.Event() for v in self.hold}
        self.release = {v: threading.Event() for v in self.hold}

    def __call__(self, name, version, path):
        if version in self.hold:
            self.started[version].set()
            assert self.release[version].wait(120), "the test never released the load"
        return LoadedVersion(name, version, path)


def _wait(predicate, what, timeout=120):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _states(url):
    doc = httpx.get(f"{url}/v1/models/hot").json()
    return {int(s["version"]): s["state"] for s in doc.get("model_version_status", [])}


def test_new_versions_load_in_the_background_without_a_restart(models, base, reference,
                                                               tmp_path):
    hot = tmp_path / "hot"
    hot.mkdir()
    gate = _Gate(hold={1, 2})
    registry = ModelRegistry([ModelConfig("hot", str(hot), ("latest", 1))],
                               poll_seconds=0.1, loader=gate)
    x = clouds(2, 25, seed=3)
    body = {"inputs": x.tolist()}
    with serve_in_thread(create_app(registry, LIMITS)) as url:
        assert httpx.post(f"{url}/v1/models/hot:predict", json=body).status_code == 404
        # Version 1 appears (an atomic rename, as export_model does) and starts loading.
        os.rename(str(_copy(base / "1", hot / ".tmp-1")), hot / "1")
        assert gate.started[1].wait(60)
        r = httpx.post(f"{url}/v1/models/hot:predict", json=body)
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        assert "retry" in r.json()["error"]
        assert _states(url) == {1: "LOADING"}
        gate.release[1].set()
        _wait(lambda: _states(url) == {1: "AVAILABLE"}, "version 1")
        v1 = reference(1, x)["probabilities"]
        np.testing.assert_allclose(
            httpx.post(f"{url}/v1/models/hot:predict", json=body).json()["outputs"]
            ["probabilities"], v1, atol=1e-7)

        # Version 2 loads while version 1 keeps answering.
        os.rename(str(_copy(base / "2", hot / ".tmp-2")), hot / "2")
        assert gate.started[2].wait(60)
        assert _states(url) == {2: "LOADING", 1: "AVAILABLE"}
        # A pinned version that is still loading is not found, as in TF Serving.
        pinned = httpx.post(f"{url}/v1/models/hot/versions/2:predict", json=body)
        assert pinned.status_code == 404, pinned.text
        assert pinned.json()["error"] == "Servable not found for request: Specific(hot, 2)"
        for _ in range(3):
            got = httpx.post(f"{url}/v1/models/hot:predict", json=body).json()
            np.testing.assert_allclose(got["outputs"]["probabilities"], v1, atol=1e-7)
        gate.release[2].set()
        _wait(lambda: _states(url) == {2: "AVAILABLE", 1: "END"}, "version 2")
        np.testing.assert_allclose(
            httpx.post(f"{url}/v1/models/hot:predict", json=body).json()["outputs"]
            ["probabilities"], reference(2, x)["probabilities"], atol=1e-7)
        assert httpx.post(f"{url}/v1/models/hot/versions/1:predict", json=body).status_code == 404

        # A broken version 3 fails to load; version 2 goes on serving.
        (hot / "3").mkdir()
        (hot / "3" / "saved_model.pb").write_bytes(b"not a SavedModel")
        _wait(lambda: _states(url).get(3) == "END", "version 3 to fail")
        status = httpx.get(f"{url}/v1/models/hot/versions/3").json()["model_version_status"][0]
        assert status["status"]["error_code"] == "UNKNOWN"
        assert "Failed to load version 3" in status["status"]["error_message"]
        assert _states(url)[2] == "AVAILABLE"
        assert httpx.post(f"{url}/v1/models/hot:predict", json=body).status_code == 200


def _copy(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


class _SlowServable:
    """Stands in for a loaded model whose call blocks until released."""

    def __init__(self):
        self.entered = threading.Event()
        self.release = threading.Event()
        spec = TensorSpec("points", np.float32, "float", (-1, -1, 3))
        self.signatures = {"serving_default": Signature(
            "serving_default", PREDICT_METHOD, {"points": spec}, ("y",), fn=object())}

    def call(self, signature, arrays):
        self.entered.set()
        self.release.wait(60)
        return {"y": arrays["points"].sum(axis=(1, 2))}


def test_busy_server_answers_429_with_retry_after():
    slow = _SlowServable()
    registry = ModelRegistry([ModelConfig("slow", "/nonexistent")], poll_seconds=0)
    registry.managers["slow"].available = {1: slow}
    app = create_app(registry, Limits(max_inflight=1))
    with serve_in_thread(app) as url:
        results = {}
        first = threading.Thread(target=lambda: results.setdefault(
            "first", httpx.post(f"{url}/v1/models/slow:predict", json={"inputs": [[[1, 2, 3]]]},
                                timeout=60)))
        first.start()
        assert slow.entered.wait(30)
        busy = httpx.post(f"{url}/v1/models/slow:predict", json={"inputs": [[[1, 2, 3]]]})
        assert busy.status_code == 429 and busy.headers["retry-after"] == "1"
        assert "busy" in busy.json()["error"]
        slow.release.set()
        first.join(30)
        assert results["first"].json() == {"outputs": [6.0]}
        assert httpx.post(f"{url}/v1/models/slow:predict",
                          json={"inputs": [[[1, 2, 3]]]}).status_code == 200


def test_prometheus_metrics_count_requests_by_model_version_api_and_code(base):
    from prometheus_client.parser import text_string_to_metric_families

    from serving.server.metrics import Metrics

    registry = ModelRegistry([ModelConfig("tiny", str(base), ("all",), {"stable": 1})],
                             poll_seconds=0)
    registry.poll_once()
    path = "/monitoring/prometheus/metrics"
    with serve_in_thread(create_app(registry, LIMITS, metrics=Metrics(),
                                    metrics_path=path)) as u:
        for _ in range(2):
            assert httpx.post(f"{u}/v1/models/tiny:predict", json=GOOD).status_code == 200
        assert httpx.post(f"{u}/v1/models/tiny/labels/stable:predict",
                          json=GOOD).status_code == 200
        assert httpx.post(f"{u}/v1/models/tiny:predict", json={"x": 1}).status_code == 400
        assert httpx.post(f"{u}/v1/models/nope:predict", json=GOOD).status_code == 404
        assert httpx.get(f"{u}/v1/models/tiny").status_code == 200
        page = httpx.get(u + path)
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/plain")
    counts = {}
    for family in text_string_to_metric_families(page.text):
        for s in family.samples:
            if s.name == "setnet_serving_requests_total":
                counts[(s.labels["model"], s.labels["version"], s.labels["api"],
                        s.labels["entrypoint"], s.labels["code"])] = s.value
    assert counts == {("tiny", "2", "predict", "REST", "OK"): 2,
                      ("tiny", "1", "predict", "REST", "OK"): 1,
                      ("tiny", "2", "predict", "REST", "INVALID_ARGUMENT"): 1,
                      ("nope", "", "predict", "REST", "NOT_FOUND"): 1,
                      ("tiny", "", "status", "REST", "OK"): 1}
    assert ':tensorflow:serving:request_count{model_name="tiny",status="OK"} 4.0' in page.text


def test_no_metrics_page_without_a_monitoring_config(url):
    assert httpx.get(f"{url}/monitoring/prometheus/metrics").status_code == 404
