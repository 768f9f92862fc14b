"""The serving invariance suite: runs against any TF Serving endpoint, over REST and gRPC.

    pytest tests/serving --serving-url=http://127.0.0.1:8501 --model-name=setnet
    pytest tests/serving --serving-grpc=127.0.0.1:8500 --model-name=setnet

Without an address the embedded server is started and every check runs over both APIs
(see conftest.py). The model's F (values per point) and its output (a classifier's
`probabilities`, a regressor's `prediction`) are read from its signature, so the suite runs
on any setnet export; clouds get F - 3 seeded extra features beside x, y, z. Every check goes through the API exactly as a production client would,
and records its largest deviation in the session summary (printed, and written as JSON
for MLflow) under its name and API, e.g. "batch independence [gRPC]".
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from setnet import invariance as inv

# Every test here talks to a server process (the embedded one unless --serving-url).
pytestmark = pytest.mark.slow

PERMUTATIONS = 4


def _predict(endpoint, **kw):
    return lambda points: endpoint.client.predict(points, **kw)[endpoint.output]


def _record(report, endpoint, name, result):
    name = f"{name} [{endpoint.tag}]"
    report[name] = result
    assert result["passed"], (f"{name}: largest deviation {result['max_abs_deviation']:.3g} "
                              f"over the tolerance; details: {result}")


def synthetic_clouds(seed=0, num_features=3):
    rng = np.random.default_rng(seed)
    clouds = inv.shape_clouds(seed, sizes=(37, 128, 300)) + [
        rng.normal(size=(1024, 3)).astype(np.float32)]
    return [inv.with_features(c, num_features, seed=seed + i) for i, c in enumerate(clouds)]


def random_clouds(seed, count, points, num_features):
    return np.random.default_rng(seed).normal(size=(count, points, num_features)).astype(np.float32)


def test_permutation_invariance_real_clouds(endpoint, report, real_clouds):
    clouds = [inv.with_features(c, endpoint.num_features, seed=i) for i, c in enumerate(real_clouds)]
    result = inv.check_invariance(_predict(endpoint), clouds, permutations=PERMUTATIONS,
                                  seed=1)
    _record(report, endpoint, "permutation (real ModelNet40)", result)


def test_permutation_invariance_synthetic_clouds(endpoint, report):
    result = inv.check_invariance(_predict(endpoint), synthetic_clouds(num_features=endpoint.num_features),
                                  permutations=PERMUTATIONS, seed=2)
    _record(report, endpoint, "permutation (synthetic)", result)


def test_batch_independence(endpoint, report):
    clouds = random_clouds(3, 5, 200, endpoint.num_features)
    _record(report, endpoint, "batch independence",
            inv.check_batch_independence(_predict(endpoint), clouds, seed=3))


def test_the_two_encodings_of_a_request_agree(endpoint, report):
    """REST: row and columnar JSON; gRPC: packed tensor_content and typed value fields."""
    clouds = random_clouds(4, 6, 150, endpoint.num_features)
    (first, (a, _)), (second, (b, _)) = endpoint.encodings.items()
    one, two = a(clouds), b(clouds)
    dev = float(np.abs(one[endpoint.output] - two[endpoint.output]).max())
    same_class = endpoint.output != "probabilities" or bool(np.array_equal(one["class_id"], two["class_id"]))
    _record(report, endpoint, f"{first} vs {second}",
            {"clouds": len(clouds), "max_abs_deviation": dev,
             "passed": dev <= inv.DEFAULT_ATOL and same_class})


def test_padded_and_masked_equals_unpadded(endpoint, report):
    clouds = synthetic_clouds(seed=5, num_features=endpoint.num_features)
    unpadded = _predict(endpoint)
    for encoding, (_, predict_padded) in endpoint.encodings.items():
        result = inv.check_masked_padding(
            unpadded, lambda p, m: predict_padded(p, m)[endpoint.output], clouds, seed=5)
        _record(report, endpoint, f"padded+masked ({encoding})", result)


def test_pinned_versions_answer_with_that_version(endpoint, report):
    status = endpoint.client.status()["model_version_status"]
    available = sorted(int(s["version"]) for s in status if s["state"] == "AVAILABLE")
    assert available, f"no AVAILABLE version at {endpoint.url}: {status}"
    clouds = random_clouds(6, 3, 100, endpoint.num_features)
    answers = {v: endpoint.client.predict(clouds, version=v)[endpoint.output] for v in available}
    worst = 0.0
    for v in available:
        # TF Serving names the version that answered in the metadata's model_spec.
        spec = endpoint.client.metadata(version=v)["model_spec"]
        assert spec == {"name": endpoint.model_name, "signature_name": "", "version": str(v)}
        if v in endpoint.reference:
            worst = max(worst, float(np.abs(answers[v] - endpoint.reference[v](clouds)).max()))
    default = endpoint.client.predict(clouds)[endpoint.output]
    worst = max(worst, float(np.abs(default - answers[max(available)]).max()))
    for label, v in endpoint.labels.items():
        by_label = endpoint.client.predict(clouds, label=label)[endpoint.output]
        worst = max(worst, float(np.abs(by_label - answers[v]).max()))
    if endpoint.reference:
        # The two exported versions have different weights, so a wrong pin would show.
        assert not np.allclose(answers[1], answers[2], atol=1e-4)
    _record(report, endpoint, "pinned versions", {"clouds": len(clouds), "versions": available,
                                        "max_abs_deviation": worst,
                                        "passed": worst <= inv.DEFAULT_ATOL})


def test_status_and_metadata_follow_the_export_contract(endpoint):
    status = endpoint.client.status()
    for entry in status["model_version_status"]:
        assert isinstance(entry["version"], str) and entry["version"].isdigit()
        assert set(entry) == {"version", "state", "status"}
    sigs = endpoint.client.metadata()["metadata"]["signature_def"]["signature_def"]
    default, masked = sigs["serving_default"], sigs["serving_masked"]
    assert set(default["inputs"]) == {"points"} and set(masked["inputs"]) == {"points", "mask"}
    for sig in (default, masked):
        assert sig["method_name"] == "tensorflow/serving/predict"
        if endpoint.output == "probabilities":
            assert set(sig["outputs"]) == {"probabilities", "class_id"}
            assert sig["outputs"]["class_id"]["dtype"] == "DT_INT64"
        else:
            assert set(sig["outputs"]) == {"prediction"}
            assert sig["outputs"]["prediction"]["dtype"] == "DT_FLOAT"
        dims = [d["size"] for d in sig["inputs"]["points"]["tensor_shape"]["dim"]]
        assert dims == ["-1", "-1", str(endpoint.num_features)]
    assert masked["inputs"]["mask"]["dtype"] == "DT_BOOL"


def test_cli_predicts_files(endpoint, tmp_path):
    clouds = random_clouds(7, 3, 64, endpoint.num_features)
    np.save(tmp_path / "clouds.npy", clouds)
    out = tmp_path / "out.json"
    run = subprocess.run([sys.executable, "-m", "serving.client", "predict", "--url",
                          endpoint.url, *(["--grpc"] if endpoint.protocol == "grpc" else []),
                          "--model", endpoint.model_name, "--top-k", "2",
                          "--json", str(out), str(tmp_path / "clouds.npy")],
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "clouds.npy[2]" in run.stdout
    results = json.loads(out.read_text())
    want = endpoint.client.predict(clouds)
    np.testing.assert_allclose([r[endpoint.output] for r in results], want[endpoint.output],
                               atol=1e-7)
    if endpoint.output == "probabilities":
        assert [r["class_id"] for r in results] == want["class_id"].tolist()
        assert all(len(r["top"]) == 2 for r in results)
