"""An embedded server that speaks TensorFlow Serving's REST and gRPC APIs, for development and tests.

Production serving is the `tensorflow/serving` image (see docker-compose.yml); its binary
cannot be installed where this project is built and tested. This server answers the same
requests the same way wherever a client could tell: URLs, the row and columnar JSON
formats, status and metadata documents (rendered from TF Serving's own protos), the error
JSON with TF Serving's HTTP codes and messages, PredictionService and ModelService over
gRPC with TF Serving's status codes, version policies and labels, and picking up new
versions from the model base path without a restart.

    python -m serving.server --model-name setnet --model-base-path exports/setnet --rest_api_port 8501 --port 8500

On top of TF Serving it checks point clouds before they reach the model (rank, 3
coordinates per point, finite values, no empty sets, configured maxima for points per
cloud, clouds per request and body size) and answers each with a 4xx that says what to
change. See docs/serving.md.

Where things live, in the order a request meets them:

- `__main__`: the CLI: flags -> configs, load what is there, listen, serve.
- `config`: `ModelConfig`, TF Serving's models.config reader, the flags, `Limits`.
- `versions`: `ModelRegistry` / `ServableManager`: version policies, labels, background
  loading and unloading, hot reload of base paths and of the config file.
- `servable`: `LoadedVersion`, one loaded SavedModel (signatures, warm-up, metadata).
- `app`: the Starlette app: URL routing, body limit, in-flight limit, error JSON.
- `grpc_service`: PredictionService and ModelService on the same registry and handlers.
- `handlers`: predict, status and metadata for one call, whatever the transport.
- `json_text`: request bodies read, and values quoted, as TF Serving's rapidjson does.
- `codec`: parsed JSON -> tensors and tensors -> JSON with TF Serving's rules and messages.
- `validation`: point-cloud checks answered with what to send instead.
- `batching`: `--enable_batching`, concurrent calls merged into one model call.
- `metrics`: `--monitoring_config_file`, the Prometheus page.
- `memory`: giving memory back after large and rejected requests.
- `errors`: `ServingError` (TF Serving's codes and HTTP statuses), `ConfigError`.
- `process`: `ServerProcess`, the server in a child process (free ports) for tests and
  benchmarks.

The names below are the public surface; everything else is imported from its module.

Example, serving an export from Python (needs an export under exports/setnet-default)::

    import uvicorn
    from serving.server import Limits, ModelConfig, ModelRegistry, create_app

    registry = ModelRegistry([ModelConfig("setnet", "exports/setnet-default")])
    registry.poll_once()
    uvicorn.run(create_app(registry, Limits(max_points=4096)), port=8501)
"""

from serving.server.app import create_app
from serving.server.config import Limits, ModelConfig
from serving.server.errors import ServingError
from serving.server.process import ServerProcess
from serving.server.versions import ModelRegistry

__all__ = ["Limits", "ModelConfig", "ModelRegistry", "ServerProcess", "ServingError",
           "create_app"]
