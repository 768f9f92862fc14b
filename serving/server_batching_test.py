"""`python -m serving.server --enable_batching` end to end: concurrent batch-1 requests over
REST and gRPC are merged into model calls of `max_batch_size` clouds (seen on the
Prometheus page the monitoring config switches on), clouds of different sizes are
batched separately, and every answer equals the unbatched model's, bit for bit.
"""

import concurrent.futures

import httpx
import numpy as np
import pytest

from pipelines.export import export_model
from serving.server.process import ServerProcess
from tests.support.serving import tiny_classifier

pytestmark = pytest.mark.slow

BATCH = 4


@pytest.fixture(scope="module")
def export(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    return export_model(tiny_classifier(4, seed=3), root, "tiny", list("abcd"))


@pytest.fixture(scope="module")
def server(export, tmp_path_factory):
    work = tmp_path_factory.mktemp("server")
    # A batch runs when it is full; the long timeout makes the batches deterministic.
    (work / "batching.config").write_text(
        f"max_batch_size {{ value: {BATCH} }}\nbatch_timeout_micros {{ value: 30000000 }}\n"
        f"num_batch_threads {{ value: 1 }}\nmax_enqueued_batches {{ value: 100 }}\n")
    (work / "monitoring.config").write_text(
        'prometheus_config { enable: true path: "/monitoring/prometheus/metrics" }\n')
    with ServerProcess(["--model-name", "tiny", "--model-base-path", str(export.parent),
                        "--enable_batching", "--batching_parameters_file",
                        str(work / "batching.config"), "--monitoring_config_file",
                        str(work / "monitoring.config"),
                        "--file-system-poll-wait-seconds", "0"], work) as proc:
        proc.wait_ready()
        yield proc


def _unbatched(export, clouds):
    import tensorflow as tf

    sig = tf.saved_model.load(str(export)).signatures["serving_default"]
    return [sig(points=tf.constant(c[None]))["probabilities"].numpy()[0] for c in clouds]


def _rest(url, cloud):
    r = httpx.post(f"{url}/v1/models/tiny:predict", json={"instances": [cloud.tolist()]},
                   timeout=120)
    assert r.status_code == 200, r.text
    return np.float32(r.json()["predictions"][0]["probabilities"])


def _grpc(target, cloud):
    import grpc
    import tensorflow as tf
    from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

    request = predict_pb2.PredictRequest()
    request.model_spec.name = "tiny"
    request.inputs["points"].CopyFrom(tf.make_tensor_proto(cloud[None]))
    with grpc.insecure_channel(target) as channel:
        answer = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(
            request, timeout=120)
    return tf.make_ndarray(answer.outputs["probabilities"])[0]


def _batch_sizes(url):
    from prometheus_client.parser import text_string_to_metric_families

    page = httpx.get(f"{url}/monitoring/prometheus/metrics").text
    out = {}
    for family in text_string_to_metric_families(page):
        for s in family.samples:
            if s.name in ("setnet_serving_batch_size_count", "setnet_serving_batch_size_sum"):
                out[s.name.rsplit("_", 1)[1]] = s.value
    return out


def test_concurrent_requests_are_batched_and_answer_as_unbatched(server, export):
    rng = np.random.default_rng(0)
    same = [rng.normal(size=(40, 3)).astype(np.float32) for _ in range(2 * BATCH)]
    mixed = [rng.normal(size=(n, 3)).astype(np.float32) for n in [30, 50] * BATCH]
    with concurrent.futures.ThreadPoolExecutor(2 * BATCH) as pool:
        rest_same = list(pool.map(lambda c: _rest(server.url, c), same))
        rest_mixed = list(pool.map(lambda c: _rest(server.url, c), mixed))
        grpc_same = list(pool.map(lambda c: _grpc(server.grpc_target, c), same[:BATCH]))
    for got, want in zip(rest_same + rest_mixed + grpc_same,
                         _unbatched(export, same + mixed + same[:BATCH])):
        np.testing.assert_array_equal(got, want)
    # 8 + 8 + 4 requests of one cloud each, in full batches of 4: two of 40-point clouds,
    # one of 30 and one of 50 points (never mixed), one more from gRPC.
    assert _batch_sizes(server.url) == {"count": 5, "sum": 20}
    page = httpx.get(f"{server.url}/monitoring/prometheus/metrics").text
    assert ('setnet_serving_requests_total{api="predict",code="OK",entrypoint="GRPC",'
            'model="tiny",version="1"} 4.0') in page
    assert ('setnet_serving_requests_total{api="predict",code="OK",entrypoint="REST",'
            'model="tiny",version="1"} 16.0') in page


def test_a_request_over_the_batch_size_gets_tf_servings_error(server):
    r = httpx.post(f"{server.url}/v1/models/tiny:predict",
                   json={"instances": np.zeros((BATCH + 1, 10, 3)).tolist()}, timeout=60)
    assert r.status_code == 400
    assert r.json() == {"error": f"Task size {BATCH + 1} is larger than maximum input batch "
                                 f"size {BATCH}"}
