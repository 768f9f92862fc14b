"""Tests of what both clients share, without a server: the retry loop, pins, batches."""

import doctest

import numpy as np
import pytest

from serving import base_client
from serving.base_client import (BaseClient, RetryableFailure, ServingClientError,
                                 cloud_batches, join_outputs, padded_batches)


def test_module_example_runs():
    result = doctest.testmod(base_client)
    assert result.attempted > 0 and result.failed == 0


def test_retries_wait_longer_each_time_and_stop_at_the_first_answer():
    sleeps, seen = [], []
    client = BaseClient("m", retries=5, backoff=1.0, max_backoff=3.0, sleep=sleeps.append)

    def once(attempts):
        seen.append(attempts)
        if attempts < 4:
            raise RetryableFailure(ServingClientError(503, "loading"),
                                   retry_after="2.5" if attempts == 2 else None)
        return "answer"

    assert client.with_retries(once) == "answer"
    assert seen == [1, 2, 3, 4] and client.attempts == 4
    assert 0.5 <= sleeps[0] <= 1.0 and sleeps[1] == 2.5 and 1.5 <= sleeps[2] <= 3.0


def test_other_errors_are_not_retried_and_the_last_failure_keeps_its_cause():
    client = BaseClient("m", retries=3, sleep=lambda s: pytest.fail("slept"))

    def refused(attempts):
        raise ServingClientError(400, "bad request")

    with pytest.raises(ServingClientError, match="bad request"):
        client.with_retries(refused)
    assert client.attempts == 1

    client = BaseClient("m", retries=0)

    def timed_out(attempts):
        try:
            raise TimeoutError("socket")
        except TimeoutError as err:
            raise RetryableFailure(ServingClientError(None, "slow")) from err

    with pytest.raises(ServingClientError, match="slow") as info:
        client.with_retries(timed_out)
    assert isinstance(info.value.__cause__, TimeoutError)


def test_pins_a_call_overrides_the_clients():
    client = BaseClient("m", label="stable")
    assert client.pinned(None, None) == (None, "stable")
    assert client.pinned(3, None) == (3, None)
    assert client.pinned(None, "canary") == (None, "canary")
    with pytest.raises(ValueError, match="not both"):
        BaseClient("m", version=1, label="a")


def test_batches_keep_the_order_and_refuse_mixed_sizes_unmasked():
    clouds = [np.full((n, 3), i, np.float32) for i, n in enumerate((3, 3, 3, 3, 3))]
    batches = list(cloud_batches(clouds, batch_size=2))
    assert [(len(b["points"]), name) for b, name in batches] == [(2, None), (2, None), (1, None)]
    joined = join_outputs([{"x": b["points"][:, 0, 0]} for b, _ in batches])
    assert joined["x"].tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="need masked=True"):
        list(cloud_batches([np.ones((2, 3)), np.ones((4, 3))], batch_size=2, masked=False))
    with pytest.raises(ValueError, match=r"\(B, N, 3\) and mask \(B, N\)"):
        list(padded_batches(np.ones((2, 4, 3)), np.ones((2, 3)), batch_size=2))
