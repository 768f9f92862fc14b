"""What the REST and gRPC clients share: pins, retries with backoff, clouds cut into batches.

`ServingClient` (`serving/client.py`, REST) and `GrpcServingClient` (`serving/grpc_client.py`)
derive from `BaseClient` and add their transport: how one attempt is sent and how a batch of
arrays becomes a request. Both answer `predict` in the same form and fail with the same
`ServingClientError` messages, so code written against one runs on the other. Nothing here
needs TensorFlow or httpx.

Example:

>>> clouds = [np.ones((2, 3)), np.ones((4, 3)), np.ones((3, 3))]
>>> [(inputs["points"].shape, inputs["mask"].sum(axis=1).tolist(), name)
...  for inputs, name in cloud_batches(clouds, batch_size=2)]
[((2, 4, 3), [2, 4], 'serving_masked'), ((1, 3, 3), [3], 'serving_masked')]
>>> client = BaseClient("setnet", retries=2, sleep=lambda s: None)
>>> def once(attempts):
...     raise RetryableFailure(ServingClientError(503, f"still loading ({attempts} attempts)"))
>>> client.with_retries(once)
Traceback (most recent call last):
...
serving.base_client.ServingClientError: 503: still loading (3 attempts)
"""

from __future__ import annotations

import random
import time
from typing import Callable, Iterator, Sequence, TypeVar

import numpy as np

__all__ = ["BaseClient", "RetryableFailure", "ServingClientError", "as_cloud_list",
           "backoff_delay", "check_rows", "cloud_batches", "join_outputs", "no_answer",
           "pad_clouds", "padded_batches", "unreachable"]

T = TypeVar("T")


class ServingClientError(Exception):
    """A request failed; `status` is the HTTP status (REST) or the gRPC status name such as
    "NOT_FOUND" (gRPC), None if the server was unreachable."""

    def __init__(self, status: int | str | None, message: str, url: str = ""):
        super().__init__(f"{status or 'no answer'}: {message}" + (f" ({url})" if url else ""))
        self.status = status
        self.message = message
        self.url = url


class RetryableFailure(Exception):
    """An attempt failed in a way a later attempt may not (busy, loading, no answer in time,
    no server yet).

    Args:
        error: what to raise when no attempts are left.
        retry_after: the server's Retry-After header, if it sent one.
    """

    def __init__(self, error: ServingClientError, retry_after: str | None = None):
        super().__init__(str(error))
        self.error, self.retry_after = error, retry_after


def no_answer(timeout: float, attempts: int, url: str, status: str | None = None,
              detail: str = "") -> ServingClientError:
    """The error for a server that never answered in time, with what to change."""
    return ServingClientError(status, f"no answer within {timeout} s after {attempts} "
                              f"attempts{detail}; raise --timeout or send smaller batches", url)


def unreachable(attempts: int, detail, server: str, url: str) -> ServingClientError:
    """The error for a server nobody answered at (refused or failed connections)."""
    return ServingClientError(None, f"cannot reach the server after {attempts} attempts: "
                              f"{detail}. Is it running at {server}?", url)


def backoff_delay(attempt: int, backoff: float, max_backoff: float,
                  retry_after: str | None = None) -> float:
    """Seconds to wait before retry `attempt` (0-based): `backoff` doubling, at most
    `max_backoff`, with jitter; a larger Retry-After from the server wins."""
    delay = min(max_backoff, backoff * 2 ** attempt)
    delay *= 0.5 + random.random() / 2  # jitter: clients that failed together spread out
    if retry_after:
        try:
            delay = max(delay, min(float(retry_after), max_backoff))
        except ValueError:
            pass
    return delay


class BaseClient:
    """One model on one server, whatever the transport: the pinned version, the retry policy
    and the batch size.

    Args:
        model_name: the model's name.
        version: pin a version; default: the server's choice (highest).
        label: pin a version label instead.
        timeout: seconds per request.
        retries: extra attempts after a failure that `RetryableFailure` reports.
        backoff: first retry delay in seconds; doubles each retry (with jitter), capped at
            `max_backoff`; a larger Retry-After from the server wins.
        batch_size: most clouds per request.
        sleep: how to wait between attempts (tests pass a recorder).
    """

    def __init__(self, model_name: str, *, version: int | None = None,
                 label: str | None = None, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.25, max_backoff: float = 8.0, batch_size: int = 32,
                 sleep: Callable[[float], None] = time.sleep):
        if version is not None and label is not None:
            raise ValueError("pass a version or a label, not both")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.model_name = model_name
        self.version, self.label = version, label
        self.timeout, self.retries = timeout, retries
        self.backoff, self.max_backoff = backoff, max_backoff
        self.batch_size = batch_size
        self._sleep = sleep
        self.attempts = 0  # requests sent, retries included (for tests and benches)

    def pinned(self, version: int | None, label: str | None) -> tuple[int | None, str | None]:
        """The version or label one call goes to: its own if it names one, else the client's."""
        version = self.version if version is None and label is None else version
        label = self.label if label is None and version is None else label
        return version, label

    def with_retries(self, once: Callable[[int], T]) -> T:
        """`once(attempts)` (attempts: this one included) until it returns or raises anything
        but `RetryableFailure`, at most `retries + 1` times, waiting `backoff_delay` between;
        after the last, the failure's error is raised."""
        for attempt in range(self.retries + 1):
            self.attempts += 1
            try:
                return once(attempt + 1)
            except RetryableFailure as failure:
                if attempt == self.retries:
                    # The failure's own cause (e.g. httpx's timeout), or none where the
                    # transport chose to hide it.
                    raise failure.error from failure.__cause__
                self._sleep(backoff_delay(attempt, self.backoff, self.max_backoff,
                                          failure.retry_after))
        raise AssertionError("unreachable")


# ----------------------------------------------------------------------------- batches

def as_cloud_list(clouds) -> list[np.ndarray]:
    """An array `(B, N, F)` (or one cloud `(N, F)`) or a list of `(N_i, F)` arrays as a list of
    float32 clouds; ValueError for anything else."""
    if isinstance(clouds, np.ndarray):
        if clouds.ndim == 2:
            clouds = clouds[None]
        if clouds.ndim != 3:
            raise ValueError(f"clouds must be (B, N, 3) or a list of (N, 3); got {clouds.shape}")
        return [np.asarray(c, dtype=np.float32) for c in clouds]
    out = [np.asarray(c, dtype=np.float32) for c in clouds]
    if not out:
        raise ValueError("no clouds to predict")
    for i, c in enumerate(out):
        if c.ndim != 2:
            raise ValueError(f"cloud {i} must have shape (N, 3); got {c.shape}")
    return out


def pad_clouds(clouds: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Clouds of different sizes as `points (B, N_max, 3)` float32 padded with zeros and
    `mask (B, N_max)` true at the real points (the inputs of `serving_masked`)."""
    n = max(c.shape[0] for c in clouds)
    points = np.zeros((len(clouds), n, clouds[0].shape[1]), dtype=np.float32)
    mask = np.zeros((len(clouds), n), dtype=bool)
    for i, c in enumerate(clouds):
        points[i, :len(c)] = c
        mask[i, :len(c)] = True
    return points, mask


def cloud_batches(clouds, batch_size: int, masked: bool | None = None,
                  signature_name: str | None = None) -> Iterator[tuple[dict, str | None]]:
    """Clouds cut into requests of at most `batch_size`, in order: `({"points": array}, name)`,
    or with `masked` (default: when the clouds differ in size) `({"points", "mask"}, name)`
    padded, name defaulting to `serving_masked`."""
    clouds = as_cloud_list(clouds)
    if masked is None:
        masked = len({c.shape[0] for c in clouds}) > 1
    for start in range(0, len(clouds), batch_size):
        chunk = clouds[start:start + batch_size]
        if masked:
            points, mask = pad_clouds(chunk)
            yield {"points": points, "mask": mask}, signature_name or "serving_masked"
            continue
        sizes = {c.shape for c in chunk}
        if len(sizes) > 1:
            raise ValueError(f"clouds of different shapes {sorted(sizes)} need masked=True")
        yield {"points": np.stack(chunk)}, signature_name


def padded_batches(points, mask, batch_size: int) -> Iterator[dict]:
    """Already padded `points (B, N, 3)` and `mask (B, N)` cut into requests of at most
    `batch_size`, as given: `{"points": float32, "mask": bool}`."""
    points = np.asarray(points, dtype=np.float32)
    mask = np.asarray(mask, dtype=bool)
    if points.ndim != 3 or mask.shape != points.shape[:2]:
        raise ValueError(f"points must be (B, N, 3) and mask (B, N); got {points.shape} "
                         f"and {mask.shape}")
    for start in range(0, len(points), batch_size):
        yield {"points": points[start:start + batch_size],
               "mask": mask[start:start + batch_size]}


def check_rows(outputs: dict, count: int, status: int | str) -> dict:
    """`outputs` if every output has one row per cloud sent, else the error `status` names
    (the transport's "success": the server answered, but not what was asked)."""
    for name, value in outputs.items():
        if value.shape[:1] != (count,):
            raise ServingClientError(status, f"output {name!r} has {value.shape[:1]} rows for "
                                     f"{count} clouds")
    return outputs


def join_outputs(parts: Sequence[dict]) -> dict[str, np.ndarray]:
    """The answers of consecutive batches as one: each output's rows concatenated in order."""
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
