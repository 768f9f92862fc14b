"""One training loop, three strategies: same weights as one device, and XLA in effect in every mode.

Each run happens in a fresh subprocess (tests/training/distributed_worker.py): logical CPU devices
must be configured before TensorFlow initialises, and the XLA dump folder is a process-wide flag.
"""

import json
import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest

from tests.support.training import free_ports

HERE = pathlib.Path(__file__).resolve().parent
ROOT = HERE.parents[1]
WORKER = HERE / "distributed_worker.py"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(420)]


def _env(**extra):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "CUDA_VISIBLE_DEVICES": ""}
    env.pop("TF_CONFIG", None)
    env.update(extra)
    return env


def _run_worker(args, env, timeout=300):
    proc = subprocess.run([sys.executable, str(WORKER), *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def _weights(path, prefix):
    saved = np.load(path)
    return [saved[k] for k in sorted(saved) if k.startswith(prefix + "/")]


def _compiled_modules(dump_dir: pathlib.Path) -> dict[str, int]:
    """XLA's own record of what it compiled: one optimised HLO module per compilation, by function."""
    out: dict[str, int] = {}
    for f in dump_dir.glob("*after_optimizations.txt"):
        for unit in ("_train_step", "_eval_step", "_replica_grads", "_replica_logits"):
            if f"inference_{unit}_" in f.name or f"inference_{unit[1:]}_" in f.name:
                out[unit] = out.get(unit, 0) + 1
    return out


@pytest.fixture(scope="module")
def single_and_mirrored(tmp_path_factory):
    """One process: single-device training, then MirroredStrategy over 2 logical CPUs from the same
    initial weights on the same batches; XLA dumps every compiled module."""
    tmp = tmp_path_factory.mktemp("mirrored")
    dump = tmp / "xla"
    out = tmp / "both.npz"
    _run_worker(["both", out, "--optimizer", "sgd"], _env(XLA_FLAGS=f"--xla_dump_to={dump} --xla_dump_hlo_as_text"))
    return out, json.loads(out.with_suffix(".json").read_text()), dump


def test_mirrored_matches_single_device(single_and_mirrored):
    out, report, _ = single_and_mirrored
    assert report["single"]["replicas"] == 1 and not report["single"]["distributed"]
    assert report["mirrored"]["replicas"] == 2 and report["mirrored"]["distributed"]
    init, single, mirrored = (_weights(out, k) for k in ("init", "single", "mirrored"))
    assert len(single) == len(mirrored) == len(init) > 0
    # Training moved the weights (else equality would prove nothing) ...
    assert max(float(np.abs(s - i).max()) for s, i in zip(single, init)) > 1e-2
    # ... to the same place on both strategies: each replica differentiates its share of the global
    # mean loss, so the all-reduced gradient is the single-device one up to float32 summation order.
    # The comparison uses SGD with momentum: Adam divides each coordinate by its own gradient scale,
    # so coordinates whose gradient is pure round-off (cancelling sums, ~1e-8) take steps of up to
    # the learning rate with a sign set by the summation order, which differs between one device and
    # an all-reduce (measured: 8 Adam steps at lr 1e-2 differ by up to 7e-3; SGD by 3e-8).
    for s, m in zip(single, mirrored):
        np.testing.assert_allclose(m, s, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(report["mirrored"]["loss"], report["single"]["loss"], rtol=1e-6)
    assert report["mirrored"]["replica_spread"] == 0.0


def test_xla_compiles_the_step_on_one_device_and_the_replica_compute_under_mirroring(single_and_mirrored):
    _, report, dump = single_and_mirrored
    modules = _compiled_modules(dump)
    # One device: the whole step (forward, backward, optimizer update) is one XLA module.
    assert modules.get("_train_step", 0) >= 1, sorted(p.name for p in dump.iterdir())[:20]
    # Mirrored: Keras would turn jit off; the per-replica forward+backward is compiled instead,
    # once per replica device, while the all-reduce stays outside XLA.
    assert modules.get("_replica_grads", 0) >= 1, modules
    assert report["mirrored"]["compilations"]["train"] >= 1
    # The one-device step never traces the replica function as its own XLA unit.
    assert report["single"]["compilations"] == {"train": 1}


def test_without_xla_nothing_is_compiled(tmp_path):
    dump = tmp_path / "xla"
    _run_worker(["single", tmp_path / "single.npz", "--no-xla"],
                _env(XLA_FLAGS=f"--xla_dump_to={dump} --xla_dump_hlo_as_text"))
    assert _compiled_modules(dump) == {}


def test_multi_worker_matches_single_device(single_and_mirrored, tmp_path):
    """Two worker processes on 127.0.0.1 (MultiWorkerMirroredStrategy from TF_CONFIG) reach the
    single-device weights: each worker takes its half of every global batch."""
    out, _, _ = single_and_mirrored
    workers = [f"127.0.0.1:{p}" for p in free_ports(2)]
    procs = []
    for index in range(2):
        tf_config = json.dumps({"cluster": {"worker": workers}, "task": {"type": "worker", "index": index}})
        procs.append(subprocess.Popen(
            [sys.executable, str(WORKER), "worker", str(tmp_path / f"w{index}.npz"), "--init", str(out),
             "--optimizer", "sgd"],
            env=_env(TF_CONFIG=tf_config), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    try:
        logs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    for p, (o, e) in zip(procs, logs):
        assert p.returncode == 0, o[-2000:] + e[-4000:]
    single = _weights(out, "single")
    for index in range(2):
        report = json.loads((tmp_path / f"w{index}.json").read_text())["worker"]
        assert report["replicas"] == 2 and report["distributed"]
        worker = _weights(tmp_path / f"w{index}.npz", "worker")
        assert len(worker) == len(single)
        for s, w in zip(single, worker):
            np.testing.assert_allclose(w, s, rtol=1e-5, atol=1e-6)
