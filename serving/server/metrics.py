"""Prometheus metrics, switched on as TF Serving does it: `--monitoring_config_file`.

The file is TF Serving's text-format `MonitoringConfig`::

    prometheus_config {
      enable: true
      path: "/monitoring/prometheus/metrics"   # the default when left out
    }

and the metrics are then served on the REST port at that path, in Prometheus' text
format, by `prometheus_client`:

- `setnet_serving_requests_total{model, version, api, entrypoint, code}`: requests by
  model, the version that answered, API (`predict`, `classify`, `regress`, `status`,
  `metadata`), entrypoint (`REST` or `GRPC`) and status code (`OK`, `INVALID_ARGUMENT`,
  `NOT_FOUND`, `RESOURCE_EXHAUSTED`, ...: the same names over both protocols).
- `setnet_serving_request_duration_seconds{...same labels}`: a latency histogram.
- `setnet_serving_batch_size{model, version, signature}`: clouds per model call when
  server-side batching is on (`--enable_batching`).
- TF Serving's own two series under its own names, so that dashboards written for
  `tensorflow_model_server` work: `:tensorflow:serving:request_count{model_name,
  status}` and the histogram `:tensorflow:serving:request_latency{model_name, API,
  entrypoint}` in microseconds (successful requests only, TF Serving's buckets).

Example:

>>> metrics = Metrics()
>>> metrics.observe("setnet", "3", "predict", "REST", "OK", 0.012)
>>> print([line for line in metrics.page()[0].decode().splitlines()
...        if line.startswith("setnet_serving_requests_total")][0])
setnet_serving_requests_total{api="predict",code="OK",entrypoint="REST",model="setnet",version="3"} 1.0
"""

from __future__ import annotations

import pathlib
import threading

from serving.server.errors import ConfigError

DEFAULT_PATH = "/monitoring/prometheus/metrics"  # PrometheusExporter::kPrometheusPath

# Request latency buckets in seconds, from 0.5 ms to 60 s.
_SECONDS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            10.0, 30.0, 60.0)
# TF Serving's request_latency buckets: 10 us growing by 1.8, 33 of them (~20 minutes).
_TF_MICROS = tuple(10 * 1.8 ** i for i in range(33))


def _message_classes():
    """tensorflow.serving.MonitoringConfig, built from TF Serving's
    config/monitoring_config.proto (tensorflow-serving-api does not ship it)."""
    from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

    fdp = descriptor_pb2.FileDescriptorProto(
        name="setnet/tensorflow_serving/config/monitoring_config.proto",
        package="tensorflow.serving", syntax="proto3")
    F = descriptor_pb2.FieldDescriptorProto
    prom = fdp.message_type.add(name="PrometheusConfig")
    prom.field.add(name="enable", number=1, type=F.TYPE_BOOL, label=F.LABEL_OPTIONAL)
    prom.field.add(name="path", number=2, type=F.TYPE_STRING, label=F.LABEL_OPTIONAL)
    mon = fdp.message_type.add(name="MonitoringConfig")
    mon.field.add(name="prometheus_config", number=1, type=F.TYPE_MESSAGE,
                  type_name=".tensorflow.serving.PrometheusConfig", label=F.LABEL_OPTIONAL)
    pool = descriptor_pool.DescriptorPool()
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.MonitoringConfig"))


def load_monitoring_config(path) -> str | None:
    """The metrics path a `--monitoring_config_file` asks for, or None if it leaves
    Prometheus off.

    Raises:
        ConfigError: the file cannot be read or is not a MonitoringConfig, or its path does
            not start with "/".
    """
    from google.protobuf import text_format

    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read monitoring config file {path}: {err.strerror}") from err
    config = _message_classes()()
    try:
        text_format.Parse(text, config)
    except text_format.ParseError as err:
        raise ConfigError(f"{path}: not a TF Serving monitoring config ({err}); expected "
                          f'prometheus_config {{ enable: true path: "{DEFAULT_PATH}" }}') from err
    if not config.prometheus_config.enable:
        return None
    metrics_path = config.prometheus_config.path or DEFAULT_PATH
    if not metrics_path.startswith("/") or metrics_path.lower().startswith("/v1/"):
        raise ConfigError(f"{path}: prometheus_config path {metrics_path!r} must start with "
                          f"'/' and lie outside /v1/ (the API's own URLs), e.g. "
                          f"{DEFAULT_PATH!r}")
    return metrics_path


class _TFServingRequestCount:
    """`:tensorflow:serving:request_count` exactly as TF Serving names it (no `_total`,
    which prometheus_client adds to its counters)."""

    def __init__(self):
        self.counts: dict[tuple[str, str], int] = {}
        self.lock = threading.Lock()

    def inc(self, model: str, status: str) -> None:
        with self.lock:
            self.counts[(model, status)] = self.counts.get((model, status), 0) + 1

    def collect(self):
        from prometheus_client.core import Metric

        name = ":tensorflow:serving:request_count"
        metric = Metric(name, "The total number of requests.", "unknown")
        with self.lock:
            counts = dict(self.counts)
        for (model, status), n in sorted(counts.items()):
            metric.add_sample(name, {"model_name": model, "status": status}, n)
        yield metric


class Metrics:
    """The server's request metrics, in a registry of their own (so that tests and several
    servers in one process do not share counts)."""

    def __init__(self):
        import prometheus_client as prom

        # TF Serving exports no *_created series; without them the page stays readable.
        prom.disable_created_metrics()
        self.registry = prom.CollectorRegistry(auto_describe=True)
        labels = ["model", "version", "api", "entrypoint", "code"]
        self.requests = prom.Counter("setnet_serving_requests",
                                     "Requests by model, version, API, entrypoint and status.",
                                     labels, registry=self.registry)
        self.duration = prom.Histogram("setnet_serving_request_duration_seconds",
                                       "Request latency in seconds, from the request read to "
                                       "the answer written.", labels, buckets=_SECONDS,
                                       registry=self.registry)
        self.batch_size = prom.Histogram("setnet_serving_batch_size",
                                         "Clouds per model call with --enable_batching.",
                                         ["model", "version", "signature"],
                                         buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
                                         registry=self.registry)
        self._tf_count = _TFServingRequestCount()
        self.registry.register(self._tf_count)
        self._tf_latency = prom.Histogram(
            ":tensorflow:serving:request_latency",
            "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
            ["model_name", "API", "entrypoint"], buckets=_TF_MICROS, registry=self.registry)

    def observe(self, model: str, version: str, api: str, entrypoint: str, code: str,
                seconds: float) -> None:
        """One answered request. `code` is the status name (`OK`, `NOT_FOUND`, ...)."""
        self.requests.labels(model, version, api, entrypoint, code).inc()
        self.duration.labels(model, version, api, entrypoint, code).observe(seconds)
        self._tf_count.inc(model, code)
        if code == "OK":
            # TF Serving's API label: the REST verb ("predict", "" for GETs) or the RPC name.
            tf_api = api if entrypoint == "REST" else _RPC_NAMES.get(api, api)
            if entrypoint == "REST" and api in ("status", "metadata"):
                tf_api = ""
            self._tf_latency.labels(model, tf_api, entrypoint).observe(seconds * 1e6)

    def observe_batch(self, model: str, version: str, signature: str, size: int) -> None:
        self.batch_size.labels(model, version, signature).observe(size)

    def page(self) -> tuple[bytes, str]:
        """The metrics page and its content type."""
        import prometheus_client as prom

        return prom.generate_latest(self.registry), prom.CONTENT_TYPE_LATEST


_RPC_NAMES = {"predict": "Predict", "classify": "Classify", "regress": "Regress",
              "metadata": "GetModelMetadata", "status": "GetModelStatus"}


def served_version(registry, model: str, version: int | None, label: str | None) -> str:
    """The version label of a request's metrics: the one it named (a number, or the number
    of its label), else the version that answers the model's requests now."""
    if version is not None:
        return str(version)
    manager = registry.get(model)
    if manager is None:
        return ""
    if label is not None:
        found = manager.config.labels.get(label)
        return "" if found is None else str(found)
    available = manager.available
    return str(max(available)) if available else ""
