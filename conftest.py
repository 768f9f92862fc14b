"""Root pytest configuration: the one place tests set their environment and options.

TensorFlow reads TF_CPP_MIN_LOG_LEVEL when it loads, so it is set here, before any test
module imports it; subprocesses started by tests inherit it.
"""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def pytest_addoption(parser):
    # tests/serving: the invariance suite, runnable against any TF Serving endpoint.
    group = parser.getgroup("serving", "serving invariance suite (tests/serving)")
    group.addoption("--serving-url", default=None,
                    help="TF Serving REST root, e.g. http://127.0.0.1:8501; without it and "
                         "--serving-grpc the suite exports a small model and starts the "
                         "embedded server itself")
    group.addoption("--serving-grpc", default=None, metavar="HOST:PORT",
                    help="TF Serving gRPC target, e.g. 127.0.0.1:8500 (its --port)")
    group.addoption("--serving-protocol", choices=("rest", "grpc", "both"), default=None,
                    help="API(s) the suite runs over (default: both on the embedded server; "
                         "against an endpoint, those whose address is given)")
    group.addoption("--model-name", default=None,
                    help="model name at --serving-url (default: setnet)")
    group.addoption("--serving-report", default=None,
                    help="where to write the suite's JSON summary "
                         "(default: runs/serving/invariance_summary.json)")
