"""Fixtures of the serving invariance suite: the endpoint under test and the summary report.

With `--serving-url URL` (REST) and/or `--serving-grpc HOST:PORT` (gRPC) and `--model-name
NAME` the suite runs against that endpoint (real TF Serving or the embedded server), over
each API given. Without them, it exports two small trained models as versions 1 and 2 of
`suite_model` and starts `python -m serving.server` on 127.0.0.1 on free ports, with labels
stable=1 and canary=2, and runs over both REST and gRPC (`--serving-protocol` picks one);
the in-process SavedModels then serve as the reference for the pinned-version checks.
Every test that takes `endpoint` runs once per API, with ids `[rest]` and `[grpc]`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import numpy as np
import pytest

from serving.client import ServingClient
from setnet.invariance import format_summary
from serving.server.process import ServerProcess
from tests.support.serving import tiny_classifier, train_tiny

ROOT = pathlib.Path(__file__).resolve().parents[2]
EMBEDDED_MODEL = "suite_model"
CLASSES = ["sphere", "cube", "torus", "blob"]
_SUMMARY: dict = {}


@dataclasses.dataclass
class Endpoint:
    protocol: str        # "rest" or "grpc"
    url: str             # REST root URL, or the gRPC host:port
    model_name: str
    client: object       # ServingClient or GrpcServingClient (the same methods)
    embedded: bool
    # version -> predict_fn(points) -> probabilities, from the SavedModels in process
    # (embedded mode only; against a remote endpoint the files are not here).
    reference: dict
    labels: dict
    # Two encodings of the same request, which must give the same answers: REST's row and
    # columnar JSON, gRPC's packed tensor_content and typed value fields.
    # name -> (predict(points), predict_padded(points, mask)), each returning the outputs.
    encodings: dict
    # From the model's signature: F (values per point) and the output the checks compare
    # (a classifier's "probabilities", a regressor's "prediction").
    num_features: int = 3
    output: str = "probabilities"

    @property
    def tag(self) -> str:
        return "REST" if self.protocol == "rest" else "gRPC"


def _client(protocol: str, address: str, name: str, **kw):
    if protocol == "rest":
        return ServingClient(address, name, timeout=120, batch_size=32, **kw)
    from serving.grpc_client import GrpcServingClient
    return GrpcServingClient(address, name, timeout=120, batch_size=32, **kw)


def _encodings(protocol: str, address: str, name: str, client) -> dict:
    if protocol == "rest":
        return {"row": (client.predict, client.predict_padded),
                "columnar": (lambda p: client.predict(p, columnar=True),
                             lambda p, m: client.predict_padded(p, m, columnar=True))}
    fields = _client(protocol, address, name, tensor_content=False)
    return {"tensor_content": (client.predict, client.predict_padded),
            "value fields": (fields.predict, fields.predict_padded)}


def protocols(config) -> list[str]:
    """The APIs the suite runs over, from the command line (see the root conftest.py)."""
    url, target = config.getoption("--serving-url"), config.getoption("--serving-grpc")
    chosen = config.getoption("--serving-protocol")
    given = [p for p, a in (("rest", url), ("grpc", target)) if a]
    if chosen is None:
        return given or ["rest", "grpc"]
    wanted = ["rest", "grpc"] if chosen == "both" else [chosen]
    flags = {"rest": "--serving-url", "grpc": "--serving-grpc"}
    missing = [flags[p] for p in wanted if given and p not in given]
    if missing:
        raise pytest.UsageError(f"--serving-protocol {chosen} needs the endpoint's "
                                f"{' and '.join(missing)} too")
    return wanted


def pytest_generate_tests(metafunc):
    if "endpoint" in metafunc.fixturenames:
        metafunc.parametrize("protocol", protocols(metafunc.config), scope="session")


def _wait_versions(client: ServingClient, versions, timeout=240):
    deadline = time.monotonic() + timeout
    states = None
    while time.monotonic() < deadline:
        try:
            states = {int(s["version"]): s["state"]
                      for s in client.status()["model_version_status"]}
        except Exception:  # 404 until the first version is seen
            states = None
        if states and all(states.get(v) == "AVAILABLE" for v in versions):
            return
        time.sleep(0.2)
    raise RuntimeError(f"versions {versions} did not become AVAILABLE (last status: {states})")


@pytest.fixture(scope="session")
def served(request, tmp_path_factory):
    """Where the endpoint is: `{"rest": url, "grpc": target}`, the model name, and (for the
    embedded server) the in-process reference and the labels."""
    url, target = (request.config.getoption("--serving-url"),
                   request.config.getoption("--serving-grpc"))
    name = request.config.getoption("--model-name")
    _SUMMARY["report_path"] = request.config.getoption("--serving-report") or str(
        ROOT / "runs" / "serving" / "invariance_summary.json")
    if url or target:
        name = name or "setnet"
        _SUMMARY.update(model_name=name, embedded=False)
        yield {"rest": url, "grpc": target}, name, {}, {}
        return

    work = tmp_path_factory.mktemp("serving_suite")
    base = work / "exports" / EMBEDDED_MODEL
    base.mkdir(parents=True)
    labels = {"stable": 1, "canary": 2}
    # Start the server first: it imports TensorFlow while this process trains and exports,
    # and it picks the versions up from the folder as they appear.
    server = ServerProcess(["--model-name", EMBEDDED_MODEL, "--model-base-path", str(base),
                            "--host", "127.0.0.1", "--version-policy", "all",
                            "--file-system-poll-wait-seconds", "0.3"] + [
        a for k, v in labels.items() for a in ("--version-label", f"{k}={v}")], work)
    try:
        import tensorflow as tf

        from pipelines.export import export_model

        paths = {}
        for version, seed in ((1, 11), (2, 12)):
            model = train_tiny(tiny_classifier(len(CLASSES), seed=seed), steps=6, seed=seed)
            paths[version] = export_model(model, base.parent, EMBEDDED_MODEL, CLASSES,
                                          version=version)
        url = server.wait_ready()
        _wait_versions(ServingClient(url, EMBEDDED_MODEL, timeout=120), [1, 2])

        def reference_fn(path):
            sig = tf.saved_model.load(str(path)).signatures["serving_default"]
            return lambda points: sig(points=tf.constant(points, tf.float32))["probabilities"
                                                                                ].numpy()

        reference = {v: reference_fn(p) for v, p in paths.items()}
        _SUMMARY.update(model_name=EMBEDDED_MODEL, embedded=True)
        yield ({"rest": url, "grpc": server.grpc_target}, EMBEDDED_MODEL, reference, labels)
    finally:
        server.stop()


@pytest.fixture(scope="session")
def endpoint(protocol, served):
    """The endpoint under test over one API (`protocol`, a session-scoped parameter)."""
    addresses, name, reference, labels = served
    address = addresses[protocol]
    client = _client(protocol, address, name)
    _SUMMARY.setdefault("endpoints", {})[protocol] = address
    num_features, output = _signature_facts(client.metadata())
    return Endpoint(protocol, address, name, client, bool(reference), reference, labels,
                    _encodings(protocol, address, name, client), num_features, output)


def _signature_facts(metadata: dict) -> tuple[int, str]:
    """(F, the output to compare) of the served model's serving_default signature."""
    from serving.clouds import features_of

    sig = metadata["metadata"]["signature_def"]["signature_def"]["serving_default"]
    output = "probabilities" if "probabilities" in sig["outputs"] else "prediction"
    return features_of(metadata) or 3, output


@pytest.fixture(scope="session")
def report():
    """Check results by name; printed and written as JSON at the end of the session."""
    checks = _SUMMARY.setdefault("checks", {})
    return checks


def _real_h5() -> pathlib.Path | None:
    names = ("modelnet40_real_subset_test.h5", "ply_data_test0.h5")
    dirs = []
    if os.environ.get("SETNET_MODELNET_DIR"):
        dirs.append(pathlib.Path(os.environ["SETNET_MODELNET_DIR"]).expanduser())
    dirs += [ROOT / "data" / "manual" / "modelnet",
             ROOT.parent / "shared" / "data" / "modelnet40-subset"]
    for d in dirs:
        for sub in ("", "derived_pointnet_layout", "modelnet40_ply_hdf5_2048"):
            for n in names:
                if (d / sub / n).is_file():
                    return d / sub / n
    return None


@pytest.fixture(scope="session")
def real_clouds():
    """K real ModelNet40 test clouds (first 1024 points). Missing data fails the test that
    asks for them, in CI and locally alike, with where to put the files."""
    import h5py

    path = _real_h5()
    if path is None:
        pytest.fail("real ModelNet40 clouds not found: put modelnet40_real_subset_test.h5 (the "
                    "shared subset's derived_pointnet_layout/) or PointNet's ply_data_test0.h5 "
                    "in $SETNET_MODELNET_DIR or data/manual/modelnet/ "
                    f"(CI={os.environ.get('CI', 'unset')})")
    with h5py.File(path, "r") as f:
        data = f["data"][:4, :1024, :3].astype(np.float32)
    _SUMMARY["real_data"] = path.name
    return list(data)


def pytest_terminal_summary(terminalreporter):
    checks = _SUMMARY.get("checks")
    if not checks:
        return
    summary = {
        "endpoints": _SUMMARY.get("endpoints"),
        "model_name": _SUMMARY.get("model_name"),
        "embedded_server": _SUMMARY.get("embedded"),
        "real_data": _SUMMARY.get("real_data"),
        "clouds": sum(int(c.get("clouds", 0)) for k, c in checks.items()
                      if k.startswith("permutation")),
        "permutations": max((int(c.get("permutations", 0)) for c in checks.values()),
                            default=0),
        "max_abs_deviation": max(float(c.get("max_abs_deviation", 0.0))
                                 for c in checks.values()),
        "passed": all(c.get("passed") for c in checks.values()),
        "checks": checks,
    }
    path = pathlib.Path(_SUMMARY["report_path"])
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, indent=2) + "\n")
    terminalreporter.section("serving invariance summary")
    where = ", ".join(f"{'REST' if p == 'rest' else 'gRPC'} {a}"
                      for p, a in (summary["endpoints"] or {}).items())
    terminalreporter.write_line(f"{where}, model {summary['model_name']} "
                                f"({'embedded server' if summary['embedded_server'] else 'external'})")
    terminalreporter.write_line(format_summary(summary))
    terminalreporter.write_line(f"permutation checks: {summary['clouds']} clouds x "
                                f"{summary['permutations']} permutations; written to {path}")
