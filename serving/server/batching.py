"""Server-side batching, as TF Serving's `--enable_batching`: concurrent predict calls
merged into one model call and split back.

With batching on, every call of a loaded version's signature (REST predict, gRPC Predict)
becomes a task in a queue; batch threads take batches of queued tasks, concatenate their
inputs along the batch axis, call the model once and hand each task its rows of the
outputs. The scheduling is that of TensorFlow's `SharedBatchScheduler`, which TF Serving
uses:

- a queue holds batches; tasks join the open (last) batch until the next one would take
  it over `max_batch_size` clouds, then a new batch opens, up to `max_enqueued_batches`
  (beyond that: UNAVAILABLE, 503 over REST, "The batch scheduling queue to which this
  task was submitted is full; ...");
- a batch is run when it is closed, full, or its first task has waited
  `batch_timeout_micros` (0: as soon as a batch thread is free, so batches grow only while
  the threads are busy);
- `num_batch_threads` threads serve all queues in turn;
- a request of more than `max_batch_size` clouds is refused: "Task size N is larger than
  maximum input batch size M" (INVALID_ARGUMENT);
- with `allowed_batch_sizes`, a batch is padded up to the next allowed size with copies
  of its last cloud, whose answers are dropped.

Which calls are batched together differs from TF Serving on purpose: TF Serving keeps one
queue per signature and, with `pad_variable_length_inputs: false` (its default), fails the
whole batch with FAILED_PRECONDITION ("Tensors with name ... from different tasks have
different shapes and padding is turned off") when clouds of different sizes meet in it.
Here a queue holds one version, signature and input shape (clouds of one number of
points, dtype), so requests of different sizes are simply batched separately and never
fail each other. `pad_variable_length_inputs: true` is refused: padding a cloud with
points changes a set model's answer. Large-batch splitting
(`enable_large_batch_splitting`, `max_execution_batch_size`) is not supported.

Answers are those of the unbatched model: the models here compute each cloud on its own,
and the batch only stacks them (tested bit for bit).

The parameters file is TF Serving's text-format `BatchingParameters`::

    max_batch_size { value: 32 }
    batch_timeout_micros { value: 2000 }
    num_batch_threads { value: 2 }
    max_enqueued_batches { value: 100 }

Example:

>>> import numpy as np
>>> class Doubler:  # stands in for a loaded SavedModel version
...     model_name, version = "m", 1
...     def run(self, signature, arrays):
...         return {"y": arrays["x"] * 2}
>>> batcher = Batcher(BatchingOptions(max_batch_size=8, num_batch_threads=1))
>>> batcher.run(Doubler(), "serving_default", {"x": np.ones((2, 3), np.float32)})["y"].shape
(2, 3)
>>> batcher.close()
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import logging
import os
import pathlib
import threading
import time
from typing import Any

import numpy as np

from serving.server.errors import ConfigError, ServingError, invalid
from serving.server.memory import detach

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class BatchingOptions:
    """TF Serving's BatchingParameters, with the defaults tensorflow_model_server uses when
    `--enable_batching` comes without `--batching_parameters_file`."""

    max_batch_size: int = 1000
    batch_timeout_micros: int = 0
    max_enqueued_batches: int = 10
    num_batch_threads: int = os.cpu_count() or 1
    thread_pool_name: str = "model_server_batch_threads"
    allowed_batch_sizes: tuple = ()


def _message_class():
    """tensorflow.serving.BatchingParameters, built from TF Serving's
    servables/tensorflow/session_bundle_config.proto (not in tensorflow-serving-api)."""
    from google.protobuf import (descriptor_pb2, descriptor_pool, message_factory,
                                 wrappers_pb2)

    pool = descriptor_pool.DescriptorPool()
    pool.AddSerializedFile(wrappers_pb2.DESCRIPTOR.serialized_pb)
    fdp = descriptor_pb2.FileDescriptorProto(
        name="setnet/tensorflow_serving/servables/tensorflow/batching_parameters.proto",
        package="tensorflow.serving", syntax="proto3",
        dependency=["google/protobuf/wrappers.proto"])
    F = descriptor_pb2.FieldDescriptorProto
    msg = fdp.message_type.add(name="BatchingParameters")
    for name, number, wrapper in (("max_batch_size", 1, "Int64Value"),
                                  ("batch_timeout_micros", 2, "Int64Value"),
                                  ("max_enqueued_batches", 3, "Int64Value"),
                                  ("num_batch_threads", 4, "Int64Value"),
                                  ("thread_pool_name", 5, "StringValue"),
                                  ("enable_large_batch_splitting", 8, "BoolValue"),
                                  ("max_execution_batch_size", 9, "Int64Value")):
        msg.field.add(name=name, number=number, type=F.TYPE_MESSAGE, label=F.LABEL_OPTIONAL,
                      type_name=f".google.protobuf.{wrapper}")
    msg.field.add(name="allowed_batch_sizes", number=6, type=F.TYPE_INT64,
                  label=F.LABEL_REPEATED)
    msg.field.add(name="pad_variable_length_inputs", number=7, type=F.TYPE_BOOL,
                  label=F.LABEL_OPTIONAL)
    pool.Add(fdp)
    return message_factory.GetMessageClass(
        pool.FindMessageTypeByName("tensorflow.serving.BatchingParameters"))


def load_batching_parameters(path) -> BatchingOptions:
    """A `--batching_parameters_file` read as TF Serving reads it.

    Raises:
        ConfigError: the file cannot be read or parsed, or asks for what this server does
            not do; the message names the file and the field.
    """
    from google.protobuf import text_format

    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read batching parameters file {path}: "
                          f"{err.strerror}") from err
    params = _message_class()()
    try:
        text_format.Parse(text, params)
    except text_format.ParseError as err:
        raise ConfigError(f"{path}: not a TF Serving batching parameters file ({err}); "
                          f"expected e.g. max_batch_size {{ value: 32 }} "
                          f"batch_timeout_micros {{ value: 1000 }}") from err
    defaults = BatchingOptions()
    values = {}
    for field in ("max_batch_size", "batch_timeout_micros", "max_enqueued_batches",
                  "num_batch_threads", "thread_pool_name"):
        if params.HasField(field):
            values[field] = getattr(params, field).value
    options = dataclasses.replace(defaults, **values,
                                  allowed_batch_sizes=tuple(params.allowed_batch_sizes))
    for field, least in (("max_batch_size", 1), ("batch_timeout_micros", 0),
                         ("max_enqueued_batches", 1), ("num_batch_threads", 1)):
        if getattr(options, field) < least:
            raise ConfigError(f"{path}: {field} must be at least {least}, got "
                              f"{getattr(options, field)}")
    sizes = options.allowed_batch_sizes
    if sizes:
        if any(b <= a for a, b in zip(sizes, sizes[1:])) or sizes[0] < 1:
            raise ConfigError(f"{path}: allowed_batch_sizes must be positive and increasing, "
                              f"got {list(sizes)}")
        if sizes[-1] != options.max_batch_size:
            raise ConfigError(f"{path}: Last entry in allowed_batch_sizes must match "
                              f"max_batch_size; last entry was {sizes[-1]}; expected "
                              f"{options.max_batch_size}")
    if params.pad_variable_length_inputs:
        raise ConfigError(f"{path}: pad_variable_length_inputs: true is not supported: "
                          f"padding a cloud with points changes a set model's answer, so "
                          f"clouds of different sizes are batched separately instead; "
                          f"remove the line")
    if params.enable_large_batch_splitting.value or params.HasField("max_execution_batch_size"):
        raise ConfigError(f"{path}: enable_large_batch_splitting and max_execution_batch_size "
                          f"are not supported by this server; remove them (requests of up to "
                          f"max_batch_size clouds are batched whole)")
    return options


class _Task:
    __slots__ = ("arrays", "size", "done", "outputs", "error")

    def __init__(self, arrays: dict, size: int):
        self.arrays, self.size = arrays, size
        self.done = threading.Event()
        self.outputs: dict | None = None
        self.error: BaseException | None = None


class _Batch:
    __slots__ = ("tasks", "size", "start")

    def __init__(self):
        self.tasks: list[_Task] = []
        self.size = 0
        self.start = 0.0


class _Queue:
    """One version, signature and input shape: a deque of batches, the last one open."""

    def __init__(self, servable, signature):
        self.servable, self.signature = servable, signature
        self.batches = collections.deque([_Batch()])
        self.running = 0


class Batcher:
    """Merges concurrent calls of the same servable, signature and input shapes.

    Args:
        options: the batching parameters.
        metrics: the server's `Metrics`, to record each batch's size (optional).
    """

    def __init__(self, options: BatchingOptions, metrics=None):
        self.options = options
        self.metrics = metrics
        self._cond = threading.Condition()
        self._queues: dict[Any, _Queue] = {}
        self._order: list = []  # keys, served round-robin
        self._next = 0
        self._closed = False
        self._threads = [threading.Thread(target=self._work, daemon=True,
                                          name=f"{options.thread_pool_name}_{i}")
                         for i in range(options.num_batch_threads)]
        for t in self._threads:
            t.start()

    def loader(self, load):
        """Wraps a version loader (`LoadedVersion`) so that the versions it loads run
        their signatures through this batcher."""
        def load_batched(name, version, path):
            servable = load(name, version, path)
            servable.batcher = self
            return servable
        return load_batched

    def run(self, servable, signature, arrays: dict) -> dict:
        """`servable.run(signature, arrays)`, batched with concurrent calls like it."""
        sizes = {a.shape[0] if a.ndim else None for a in arrays.values()}
        if len(sizes) != 1 or None in sizes:
            return servable.run(signature, arrays)  # nothing to batch along
        (size,) = sizes
        if size > self.options.max_batch_size:
            raise invalid(f"Task size {size} is larger than maximum input batch size "
                          f"{self.options.max_batch_size}")
        name = getattr(signature, "name", signature)
        key = (id(servable), name, tuple(sorted((k, a.shape[1:], a.dtype.str)
                                                for k, a in arrays.items())))
        task = _Task(arrays, size)
        with self._cond:
            if self._closed:
                raise ServingError("UNAVAILABLE", "The server is shutting down.")
            queue = self._queues.get(key)
            if queue is None:
                queue = self._queues[key] = _Queue(servable, signature)
                self._order.append(key)
            open_batch = queue.batches[-1]
            if open_batch.size + size > self.options.max_batch_size:
                if len(queue.batches) >= self.options.max_enqueued_batches:
                    raise ServingError(
                        "UNAVAILABLE", f"The batch scheduling queue to which this task was "
                        f"submitted is full; currently {len(queue.batches)} batches enqueued "
                        f"and max_enqueued_batches is {self.options.max_enqueued_batches}",
                        {"Retry-After": "1"})
                open_batch = _Batch()
                queue.batches.append(open_batch)
            if not open_batch.tasks:
                open_batch.start = time.monotonic()
            open_batch.tasks.append(task)
            open_batch.size += size
            self._cond.notify()
        task.done.wait()
        if task.error is not None:
            raise task.error
        return task.outputs

    def _take(self, now: float):
        """The next batch to run, round-robin over the queues, or (None, seconds until an
        open batch times out)."""
        timeout = self.options.batch_timeout_micros / 1e6
        wait = None
        for _ in range(len(self._order)):
            self._next %= len(self._order)
            key = self._order[self._next]
            self._next += 1
            queue = self._queues[key]
            first = queue.batches[0]
            if len(queue.batches) == 1:
                if not first.tasks:
                    continue
                due = first.start + timeout
                if first.size < self.options.max_batch_size and now < due and not self._closed:
                    wait = due - now if wait is None else min(wait, due - now)
                    continue
                queue.batches.append(_Batch())
            queue.running += 1
            return queue, key, queue.batches.popleft(), None
        return None, None, None, wait

    def _work(self) -> None:
        while True:
            with self._cond:
                while True:
                    if self._closed and not any(
                            q.batches[0].tasks or len(q.batches) > 1
                            for q in self._queues.values()):
                        return
                    queue, key, batch, wait = self._take(time.monotonic())
                    if batch is not None:
                        break
                    self._cond.wait(wait)
            try:
                self._process(queue, batch)
            finally:
                with self._cond:
                    queue.running -= 1
                    # An empty queue goes, so that unloaded versions are not kept alive.
                    if (queue.running == 0 and len(queue.batches) == 1
                            and not queue.batches[0].tasks):
                        del self._queues[key]
                        self._order.remove(key)

    def _process(self, queue: _Queue, batch: _Batch) -> None:
        tasks = batch.tasks
        padded = batch.size
        for allowed in self.options.allowed_batch_sizes:
            if allowed >= batch.size:
                padded = allowed
                break
        try:
            if len(tasks) == 1 and padded == batch.size:
                merged = tasks[0].arrays
            else:
                merged = {}
                for name in tasks[0].arrays:
                    parts = [t.arrays[name] for t in tasks]
                    if padded > batch.size:
                        last = parts[-1][-1:]
                        parts.append(np.repeat(last, padded - batch.size, axis=0))
                    merged[name] = np.concatenate(parts, axis=0)
            if self.metrics is not None:
                self.metrics.observe_batch(queue.servable.model_name,
                                           str(queue.servable.version),
                                           getattr(queue.signature, "name", queue.signature),
                                           batch.size)
            outputs = queue.servable.run(queue.signature, merged)
            for k, v in outputs.items():
                if np.ndim(v) == 0 or len(v) != padded:
                    raise ServingError("INTERNAL", f"Output {k!r} has shape {np.shape(v)}, "
                                       f"not one row per cloud of the batch ({padded}); run "
                                       f"this model without --enable_batching")
            start = 0
            for task in tasks:
                task.outputs = {k: v[start:start + task.size] for k, v in outputs.items()}
                start += task.size
        except Exception as err:  # every task of the batch gets the batch's error
            detach(err)
            for task in tasks:
                task.error = copy.copy(err)
        finally:
            for task in tasks:
                task.done.set()

    def close(self) -> None:
        """Runs what is queued, then stops the batch threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join(timeout=30)
