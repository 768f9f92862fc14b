"""Tests of the REST client and its CLI: retries and backoff, batching, padding (no TF)."""

import json

import httpx
import numpy as np
import pytest

from serving import client as C
from serving.base_client import ServingClientError


STATUS = {"model_version_status": [{"version": "1", "state": "AVAILABLE",
                                    "status": {"error_code": "OK", "error_message": ""}}]}


def fake_server(responses=None, record=None):
    """An httpx transport answering like TF Serving for a model that sums coordinates.

    `responses` is a list of (status, headers, body) answered first, in order.
    """
    queue = list(responses or [])

    def handler(request: httpx.Request) -> httpx.Response:
        if record is not None:
            record.append(request)
        if queue:
            status, headers, body = queue.pop(0)
            if isinstance(body, Exception):
                raise body
            return httpx.Response(status, headers=headers, json=body)
        if request.method == "GET":
            return httpx.Response(200, json=STATUS)
        doc = json.loads(request.content)
        if "instances" in doc:
            items = doc["instances"]
            if isinstance(items[0], dict):
                pts = np.array([i["points"] for i in items])
                mask = np.array([i["mask"] for i in items])
            else:
                pts, mask = np.array(items), None
        else:
            inputs = doc["inputs"]
            pts = np.array(inputs["points"] if isinstance(inputs, dict) else inputs)
            mask = np.array(inputs["mask"]) if isinstance(inputs, dict) else None
        if mask is not None:
            pts = pts * mask[..., None]
        s = pts.sum(axis=(1, 2))
        probs = np.stack([s, -s], 1)
        if "instances" in doc:
            return httpx.Response(200, json={"predictions": [
                {"class_id": int(i), "probabilities": p.tolist()} for i, p in
                enumerate(probs)]})
        return httpx.Response(200, json={"outputs": {"class_id": list(range(len(s))),
                                                     "probabilities": probs.tolist()}})

    return httpx.Client(transport=httpx.MockTransport(handler))


def make_client(http, **kw):
    sleeps = []
    client = C.ServingClient("http://serving:8501/", "m", http=http, sleep=sleeps.append, **kw)
    return client, sleeps


def test_retries_503_and_429_with_backoff_then_succeeds():
    http = fake_server([(503, {}, {"error": "loading"}),
                        (429, {"Retry-After": "2"}, {"error": "busy"}),
                        (503, {}, {"error": "loading"})])
    client, sleeps = make_client(http, retries=4, backoff=0.1)
    out = client.predict(np.ones((2, 5, 3)))
    assert client.attempts == 4 and len(sleeps) == 3
    assert 0.05 <= sleeps[0] <= 0.1          # backoff with jitter
    assert sleeps[1] >= 2                   # the server's Retry-After wins
    assert 0.2 <= sleeps[2] <= 0.4          # doubled
    np.testing.assert_allclose(out["probabilities"][:, 0], [15, 15])


def test_gives_up_after_the_retries():
    http = fake_server([(503, {}, {"error": "Model m has no version available yet"})] * 3)
    client, sleeps = make_client(http, retries=2)
    with pytest.raises(ServingClientError, match="no version available") as info:
        client.status()
    assert info.value.status == 503 and client.attempts == 3 and len(sleeps) == 2


def test_client_errors_are_not_retried():
    http = fake_server([(400, {}, {"error": "Input 'points' has 4 values per point"})])
    client, sleeps = make_client(http)
    with pytest.raises(ServingClientError, match="4 values per point") as info:
        client.predict(np.ones((1, 2, 3)))
    assert info.value.status == 400 and client.attempts == 1 and sleeps == []


def test_timeouts_and_refused_connections_are_retried():
    http = fake_server([(0, {}, httpx.ReadTimeout("slow")),
                        (0, {}, httpx.ConnectError("refused"))])
    client, sleeps = make_client(http, retries=3)
    assert client.status() == STATUS
    assert client.attempts == 3 and len(sleeps) == 2
    dead = fake_server([(0, {}, httpx.ConnectError("refused"))] * 2)
    client, _ = make_client(dead, retries=1)
    with pytest.raises(ServingClientError, match="cannot reach the server") as info:
        client.metadata()
    assert info.value.status is None
    slow = fake_server([(0, {}, httpx.ReadTimeout("slow"))] * 2)
    client, _ = make_client(slow, retries=1, timeout=0.5)
    with pytest.raises(ServingClientError, match="no answer within 0.5 s"):
        client.metadata()


def test_batches_in_order_and_urls():
    record = []
    client, _ = make_client(fake_server(record=record), batch_size=32, version=3)
    clouds = np.arange(70 * 4 * 3, dtype=np.float32).reshape(70, 4, 3)
    out = client.predict(clouds)
    assert [len(json.loads(r.content)["instances"]) for r in record] == [32, 32, 6]
    assert all(r.url.path == "/v1/models/m/versions/3:predict" for r in record)
    np.testing.assert_allclose(out["probabilities"][:, 0], clouds.sum(axis=(1, 2)))
    assert out["class_id"].shape == (70,)
    record.clear()
    client.predict(clouds[:3], columnar=True, label="stable", version=None)
    assert record[0].url.path == "/v1/models/m/labels/stable:predict"
    assert "inputs" in json.loads(record[0].content)


def test_clouds_of_different_sizes_are_padded_with_a_mask():
    record = []
    client, _ = make_client(fake_server(record=record))
    clouds = [np.ones((n, 3), np.float32) * (i + 1) for i, n in enumerate((2, 5, 3))]
    out = client.predict(clouds)
    body = json.loads(record[0].content)
    assert body["signature_name"] == "serving_masked"
    assert [sum(i["mask"]) for i in body["instances"]] == [2, 5, 3]
    assert all(len(i["points"]) == 5 for i in body["instances"])
    np.testing.assert_allclose(out["probabilities"][:, 0], [6, 30, 27])


def test_predict_padded_sends_the_given_padding_and_mask():
    record = []
    client, _ = make_client(fake_server(record=record), batch_size=2)
    points = np.arange(3 * 4 * 3, dtype=np.float32).reshape(3, 4, 3)
    mask = np.array([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], bool)
    out = client.predict_padded(points, mask, columnar=True)
    assert len(record) == 2
    sent = json.loads(record[0].content)
    assert sent["signature_name"] == "serving_masked"
    np.testing.assert_array_equal(sent["inputs"]["points"], points[:2])
    np.testing.assert_array_equal(sent["inputs"]["mask"], mask[:2])
    np.testing.assert_allclose(out["probabilities"][:, 0], (points * mask[..., None]).sum((1, 2)))
    with pytest.raises(ValueError, match="mask"):
        client.predict_padded(points, mask[:, :2])


def test_float32_values_travel_exactly():
    record = []
    client, _ = make_client(fake_server(record=record))
    x = np.random.default_rng(0).normal(size=(1, 7, 3)).astype(np.float32)
    client.predict(x)
    sent = np.asarray(json.loads(record[0].content)["instances"], dtype=np.float32)
    np.testing.assert_array_equal(sent, x)


def test_nan_travels_as_nan_not_null():
    record = []
    client, _ = make_client(fake_server([(400, {}, {"error": "NaN or Inf"})], record=record))
    x = np.ones((1, 2, 3), np.float32)
    x[0, 1, 2] = np.nan
    with pytest.raises(ServingClientError, match="NaN"):
        client.predict(x)
    assert b"NaN" in record[0].content and b"null" not in record[0].content


def test_argument_errors():
    with pytest.raises(ValueError, match="not both"):
        C.ServingClient("http://x", "m", version=1, label="a")
    with pytest.raises(ValueError, match="batch_size"):
        C.ServingClient("http://x", "m", batch_size=0)
    client, _ = make_client(fake_server())
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        client.predict(np.ones((2, 2, 2, 3)))


# ----------------------------------------------------------------------------- CLI

def test_cli_reports_class_names_that_are_not_text(tmp_path, capsys):
    np.save(tmp_path / "c.npy", np.zeros((4, 3), np.float32))
    (tmp_path / "names.txt").write_bytes(b"chair\n\xff\xfe\n")
    assert C.main(["predict", "--class-names", str(tmp_path / "names.txt"),
                   str(tmp_path / "c.npy")]) == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "names.txt: not UTF-8 text" in err[0], err


def test_cli_reports_file_errors_and_usage(tmp_path, capsys):
    assert C.main(["predict", "--model", "m", str(tmp_path / "nope.npy")]) == 2
    assert "no such file" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        C.main(["predict", "--model", "m", "--version", "1", "--label", "x", "f.npy"])
