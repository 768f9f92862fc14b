"""The server gives memory back after bursts of large rejected requests.

A real `python -m serving.server` process, its resident memory read from
/proc/<pid>/status: two bursts of 8 concurrent rejected requests of ~7 MiB each, of the
three kinds that fail at different depths (NaN, parsed by the slow JSON path; 4 values per
point, refused after the tensor is built; a string among the numbers, found by the
element-by-element walk). Each burst must raise the memory (or it measured nothing), and
within two seconds after it the memory must be back within 10% of where it started.
"""

import concurrent.futures
import pathlib
import threading
import time

import httpx
import numpy as np
import pytest

from pipelines.export import export_model
from serving.server.process import ServerProcess
from tests.support.serving import tiny_classifier

pytestmark = pytest.mark.slow

CLOUD_POINTS = 120_000  # ~7 MiB of JSON per request
CONCURRENT = 8


def _rss_mib(pid: int) -> float:
    for line in pathlib.Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError(f"no VmRSS in /proc/{pid}/status")


def _bodies() -> dict:
    rng = np.random.default_rng(0)
    points = rng.normal(size=(1, CLOUD_POINTS, 3)).round(6).tolist()
    cloud = str(points)
    return {
        "NaN coordinate": ('{"instances": ' + cloud[:-3] + "], [NaN, 0, 0]]]}").encode(),
        "4 values per point": ('{"instances": ' + str(
            [[p + [0.5] for p in points[0]]]) + "}").encode(),
        "string coordinate": ('{"instances": ' + cloud[:-3] + '], [1, "x", 0]]]}').encode(),
    }


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    export_model(tiny_classifier(4, seed=0), root, "tiny", list("abcd"))
    work = tmp_path_factory.mktemp("server")
    with ServerProcess(["--model-name", "tiny", "--model-base-path", str(root / "tiny"),
                        "--max-points", str(CLOUD_POINTS * 2),
                        "--file-system-poll-wait-seconds", "0"], work) as proc:
        yield proc


def test_memory_returns_after_bursts_of_rejected_requests(server):
    url = server.wait_ready() + "/v1/models/tiny:predict"
    pid = server.proc.pid
    good = {"instances": np.zeros((2, 50, 3)).tolist()}
    with httpx.Client(timeout=120) as client:
        for _ in range(3):
            assert client.post(url, json=good).status_code == 200
        assert client.post(url, json={"instances": [[[1, 2]]]}).status_code == 400
    time.sleep(1.0)
    before = _rss_mib(pid)
    bodies = _bodies()

    for burst in range(2):
        peak = [before]
        sampling = threading.Event()

        def sample():
            while not sampling.is_set():
                peak[0] = max(peak[0], _rss_mib(pid))
                time.sleep(0.02)

        sampler = threading.Thread(target=sample)
        sampler.start()
        kinds = [kind for kind in bodies for _ in range(CONCURRENT // len(bodies) + 1)]
        kinds = kinds[:CONCURRENT]
        with concurrent.futures.ThreadPoolExecutor(CONCURRENT) as pool:
            answers = list(pool.map(
                lambda kind: (kind, httpx.post(url, content=bodies[kind], timeout=300)), kinds))
        sampling.set()
        sampler.join()
        for kind, r in answers:
            assert r.status_code == 400, (kind, r.text[:300])
        assert "NaN or Inf" in answers[0][1].json()["error"]
        assert peak[0] > before * 1.15, (
            f"burst {burst} raised the memory only from {before:.0f} to {peak[0]:.0f} MiB; "
            f"make the requests larger so the test measures something")

        deadline = time.monotonic() + 2.0
        now = _rss_mib(pid)
        while now > before * 1.1 and time.monotonic() < deadline:
            time.sleep(0.1)
            now = _rss_mib(pid)
        assert now <= before * 1.1, (
            f"burst {burst}: RSS {now:.0f} MiB two seconds after the burst, {before:.0f} MiB "
            f"before it (peak {peak[0]:.0f} MiB)")
    with httpx.Client(timeout=120) as client:
        assert client.post(url, json=good).status_code == 200
