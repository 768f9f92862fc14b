"""Tests of the monitoring config reader and the metrics page, without a server."""

import doctest

import pytest

from serving.server import metrics as metrics_module
from serving.server.config import ModelConfig
from serving.server.errors import ConfigError
from serving.server.metrics import Metrics, load_monitoring_config, served_version
from serving.server.versions import ModelRegistry


@pytest.mark.parametrize("text,path", [
    ('prometheus_config: { enable: true, path: "/monitoring/prometheus/metrics" }',
     "/monitoring/prometheus/metrics"),   # TF Serving's own testdata/monitoring_config.txt
    ('prometheus_config { enable: true path: "/metrics" }', "/metrics"),
    ("prometheus_config { enable: true }", "/monitoring/prometheus/metrics"),
    ("prometheus_config { enable: false path: '/metrics' }", None),
    ("", None),
])
def test_monitoring_config_is_read_as_tf_serving_reads_it(tmp_path, text, path):
    f = tmp_path / "monitoring.config"
    f.write_text(text)
    assert load_monitoring_config(f) == path


@pytest.mark.parametrize("text,fragment", [
    ("prometheus_config { enabled: true }", "not a TF Serving monitoring config"),
    ("prometheus_config { enable: true path: 'metrics' }", "must start with '/'"),
    ("prometheus_config { enable: true path: '/v1/metrics' }", "outside /v1/"),
])
def test_bad_monitoring_configs_name_the_file_and_the_fix(tmp_path, text, fragment):
    f = tmp_path / "monitoring.config"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_monitoring_config(f)
    assert str(f) in str(err.value) and fragment in str(err.value)
    with pytest.raises(ConfigError, match="cannot read monitoring config file"):
        load_monitoring_config(tmp_path / "missing.config")


def _samples(page: bytes) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(page.decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_page_counts_by_model_version_api_entrypoint_and_code():
    m = Metrics()
    m.observe("setnet", "2", "predict", "REST", "OK", 0.004)
    m.observe("setnet", "2", "predict", "REST", "OK", 0.2)
    m.observe("setnet", "1", "predict", "GRPC", "INVALID_ARGUMENT", 0.001)
    m.observe("setnet", "2", "status", "REST", "OK", 0.0001)
    m.observe_batch("setnet", "2", "serving_default", 5)
    page, content_type = m.page()
    assert content_type.startswith("text/plain")
    got = _samples(page)
    key = (("api", "predict"), ("code", "OK"), ("entrypoint", "REST"), ("model", "setnet"),
           ("version", "2"))
    assert got[("setnet_serving_requests_total", key)] == 2
    assert got[("setnet_serving_request_duration_seconds_count", key)] == 2
    le = tuple(sorted(dict(key, le="0.005").items()))
    assert got[("setnet_serving_request_duration_seconds_bucket", le)] == 1
    assert got[("setnet_serving_requests_total", (
        ("api", "predict"), ("code", "INVALID_ARGUMENT"), ("entrypoint", "GRPC"),
        ("model", "setnet"), ("version", "1")))] == 1
    assert got[("setnet_serving_batch_size_sum", (("model", "setnet"), ("signature",
                                                                          "serving_default"),
                                                   ("version", "2")))] == 5
    # TF Serving's own series, names and labels as tensorflow_model_server exports them.
    text = page.decode()
    assert ':tensorflow:serving:request_count{model_name="setnet",status="OK"} 3.0' in text
    assert (':tensorflow:serving:request_count{model_name="setnet",status="INVALID_ARGUMENT"} '
            '1.0') in text
    assert got[(":tensorflow:serving:request_latency_count", (
        ("API", "predict"), ("entrypoint", "REST"), ("model_name", "setnet")))] == 2
    assert got[(":tensorflow:serving:request_latency_count", (
        ("API", ""), ("entrypoint", "REST"), ("model_name", "setnet")))] == 1
    assert "_created" not in text


def test_served_version_names_the_version_that_answers():
    registry = ModelRegistry([ModelConfig("m", "/nonexistent", labels={"stable": 1})],
                             poll_seconds=0)
    registry.managers["m"].available = {1: object(), 3: object()}
    assert served_version(registry, "m", None, None) == "3"
    assert served_version(registry, "m", 1, None) == "1"
    assert served_version(registry, "m", None, "stable") == "1"
    assert served_version(registry, "m", None, "beta") == ""
    assert served_version(registry, "nope", None, None) == ""


def test_module_examples_run():
    result = doctest.testmod(metrics_module)
    assert result.attempted > 0 and result.failed == 0


def test_the_shipped_monitoring_config_is_read():
    import pathlib

    shipped = pathlib.Path(__file__).resolve().parents[1] / "monitoring.config"
    assert load_monitoring_config(shipped) == "/monitoring/prometheus/metrics"
