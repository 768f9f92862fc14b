"""Tests of the batching parameters reader and the batch scheduler, with a stand-in model."""

import concurrent.futures
import doctest
import threading
import time

import numpy as np
import pytest

from serving.server import batching
from serving.server.batching import Batcher, BatchingOptions, load_batching_parameters
from serving.server.errors import ConfigError, ServingError


class Model:
    """Doubles its input; records each call's batch; the first call can be held open."""

    model_name, version = "m", 1

    def __init__(self, hold_first=False):
        self.batches = []
        self.entered = threading.Event()
        self.release = threading.Event()
        if not hold_first:
            self.release.set()

    def run(self, signature, arrays):
        self.batches.append({k: v.copy() for k, v in arrays.items()})
        self.entered.set()
        assert self.release.wait(60)
        if "boom" in arrays and arrays["boom"].any():
            raise ValueError("the model failed")
        return {"y": arrays["x"] * 2, "n": np.full(len(arrays["x"]), arrays["x"].shape[1])}


def _clouds(n_points, seed):
    return {"x": np.random.default_rng(seed).normal(size=(1, n_points, 3)).astype(np.float32)}


def _wait_queued(batcher, n):
    """Until `n` tasks wait in the batcher's queues (its one thread is busy meanwhile)."""
    for _ in range(1200):
        with batcher._cond:
            if sum(len(b.tasks) for q in batcher._queues.values() for b in q.batches) >= n:
                return
        time.sleep(0.05)
    raise AssertionError(f"{n} tasks never got queued")


def _while_held(batcher, model, requests):
    """Runs one request that the model holds, queues `requests` behind it, releases it, and
    returns every request's answer (or error) in order."""
    pool = concurrent.futures.ThreadPoolExecutor(len(requests) + 1)
    first = pool.submit(batcher.run, model, "sig", _clouds(5, 99))
    assert model.entered.wait(30)
    futures = [pool.submit(batcher.run, model, "sig", r) for r in requests]
    _wait_queued(batcher, len(requests))
    model.release.set()
    first.result(30)
    out = []
    for f in futures:
        try:
            out.append(f.result(30))
        except ServingError as err:
            out.append(err)
    pool.shutdown()
    return out


def test_concurrent_calls_are_merged_and_split_back():
    model = Model(hold_first=True)
    batcher = Batcher(BatchingOptions(max_batch_size=16, num_batch_threads=1))
    requests = [_clouds(5, seed) for seed in range(6)]
    answers = _while_held(batcher, model, requests)
    batcher.close()
    assert [len(b["x"]) for b in model.batches] == [1, 6]
    for request, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["y"], request["x"] * 2)
        assert answer["y"].shape == (1, 5, 3)


def test_clouds_of_different_sizes_are_batched_separately():
    model = Model(hold_first=True)
    batcher = Batcher(BatchingOptions(max_batch_size=16, num_batch_threads=1))
    requests = [_clouds(n, seed) for seed, n in enumerate([5, 7, 5, 7, 7])]
    answers = _while_held(batcher, model, requests)
    batcher.close()
    assert sorted((b["x"].shape[0], b["x"].shape[1]) for b in model.batches[1:]) == [(2, 5),
                                                                                   (3, 7)]
    for request, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["y"], request["x"] * 2)
        assert answer["n"].tolist() == [request["x"].shape[1]]


def test_a_full_batch_runs_without_waiting_for_the_timeout():
    model = Model()
    batcher = Batcher(BatchingOptions(max_batch_size=3, batch_timeout_micros=600_000_000,
                                      num_batch_threads=1))
    with concurrent.futures.ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(lambda s: batcher.run(model, "sig", _clouds(4, s)), range(3)))
    batcher.close()
    assert [len(b["x"]) for b in model.batches] == [3]
    assert [a["y"].shape for a in answers] == [(1, 4, 3)] * 3


def test_batches_are_padded_to_the_allowed_sizes():
    model = Model(hold_first=True)
    batcher = Batcher(BatchingOptions(max_batch_size=4, allowed_batch_sizes=(2, 4),
                                      num_batch_threads=1))
    requests = [_clouds(5, seed) for seed in range(3)]
    answers = _while_held(batcher, model, requests)
    batcher.close()
    assert [len(b["x"]) for b in model.batches] == [2, 4]  # 1 -> 2, 3 -> 4
    np.testing.assert_array_equal(model.batches[1]["x"][3], requests[2]["x"][0])
    for request, answer in zip(requests, answers):
        np.testing.assert_array_equal(answer["y"], request["x"] * 2)


def test_tf_serving_errors_for_too_large_tasks_and_full_queues():
    model = Model(hold_first=True)
    batcher = Batcher(BatchingOptions(max_batch_size=2, max_enqueued_batches=1,
                                      num_batch_threads=1))
    with pytest.raises(ServingError) as err:
        batcher.run(model, "sig", {"x": np.zeros((3, 4, 3), np.float32)})
    assert (err.value.code, err.value.message) == (
        "INVALID_ARGUMENT", "Task size 3 is larger than maximum input batch size 2")
    answers = _while_held(batcher, model, [{"x": np.zeros((2, 4, 3), np.float32)}])
    assert answers[0]["y"].shape == (2, 4, 3)
    model.release.clear()
    model.entered.clear()
    pool = concurrent.futures.ThreadPoolExecutor(2)
    running = pool.submit(batcher.run, model, "sig", _clouds(4, 1))
    assert model.entered.wait(30)
    queued = pool.submit(batcher.run, model, "sig", {"x": np.zeros((2, 4, 3), np.float32)})
    _wait_queued(batcher, 1)
    with pytest.raises(ServingError) as err:
        batcher.run(model, "sig", _clouds(4, 2))
    assert (err.value.code, err.value.http_status) == ("UNAVAILABLE", 503)
    assert err.value.message == ("The batch scheduling queue to which this task was submitted "
                                 "is full; currently 1 batches enqueued and "
                                 "max_enqueued_batches is 1")
    model.release.set()
    running.result(30), queued.result(30)
    pool.shutdown()
    batcher.close()


def test_a_failing_batch_fails_each_of_its_requests():
    model = Model(hold_first=True)
    batcher = Batcher(BatchingOptions(max_batch_size=8, num_batch_threads=1))
    requests = [dict(_clouds(5, s), boom=np.array([s == 1])) for s in range(3)]
    pool = concurrent.futures.ThreadPoolExecutor(4)
    first = pool.submit(batcher.run, model, "sig", dict(_clouds(5, 9), boom=np.array([False])))
    assert model.entered.wait(30)
    futures = [pool.submit(batcher.run, model, "sig", r) for r in requests]
    _wait_queued(batcher, 3)
    model.release.set()
    first.result(30)
    for f in futures:
        with pytest.raises(ValueError, match="the model failed"):
            f.result(30)
    pool.shutdown()
    batcher.close()


def test_tf_serving_parameter_files_are_read(tmp_path):
    f = tmp_path / "batching.config"
    f.write_text("max_batch_size { value: 32 }\nbatch_timeout_micros { value: 2000 }\n"
                 "num_batch_threads { value: 2 }\nmax_enqueued_batches { value: 100 }\n"
                 "thread_pool_name { value: 'pool' }\nallowed_batch_sizes: 8\n"
                 "allowed_batch_sizes: 32\npad_variable_length_inputs: false\n")
    assert load_batching_parameters(f) == BatchingOptions(
        max_batch_size=32, batch_timeout_micros=2000, num_batch_threads=2,
        max_enqueued_batches=100, thread_pool_name="pool", allowed_batch_sizes=(8, 32))
    f.write_text("")
    assert load_batching_parameters(f) == BatchingOptions()


@pytest.mark.parametrize("text,fragment", [
    ("max_batch_size: 32", "not a TF Serving batching parameters file"),
    ("max_batch_size { value: 0 }", "max_batch_size must be at least 1, got 0"),
    ("num_batch_threads { value: 0 }", "num_batch_threads must be at least 1"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 4",
     "Last entry in allowed_batch_sizes must match max_batch_size; last entry was 4; "
     "expected 8"),
    ("max_batch_size { value: 8 } allowed_batch_sizes: 8 allowed_batch_sizes: 4",
     "must be positive and increasing"),
    ("pad_variable_length_inputs: true", "padding a cloud with points changes"),
    ("enable_large_batch_splitting { value: true }", "not supported by this server"),
])
def test_bad_parameter_files_name_the_file_and_the_field(tmp_path, text, fragment):
    f = tmp_path / "batching.config"
    f.write_text(text)
    with pytest.raises(ConfigError) as err:
        load_batching_parameters(f)
    assert str(f) in str(err.value) and fragment in str(err.value)


def test_module_examples_run():
    result = doctest.testmod(batching)
    assert result.attempted > 0 and result.failed == 0


def test_the_shipped_batching_config_is_read():
    import pathlib

    shipped = pathlib.Path(__file__).resolve().parents[1] / "batching.config"
    assert load_batching_parameters(shipped) == BatchingOptions(
        max_batch_size=32, batch_timeout_micros=0, num_batch_threads=1,
        max_enqueued_batches=100)
