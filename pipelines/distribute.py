"""tf.distribute strategies from the config's ``train.strategy``.

- ``auto``: MirroredStrategy over every visible GPU when there are two or
  more, else the default (one-device) strategy.
- ``one_device``: the default strategy, whatever is visible.
- ``mirrored``: MirroredStrategy over every GPU, else over every logical CPU
  device (tests split the CPU into two logical devices).
- ``multi_worker``: MultiWorkerMirroredStrategy; the cluster comes from the
  ``TF_CONFIG`` environment variable (docs/training.md shows one).
"""

from __future__ import annotations

import dataclasses
import json
import os

import tensorflow as tf


class StrategyError(RuntimeError):
    """The requested strategy cannot be set up here; the message says why and what to do."""


@dataclasses.dataclass(frozen=True)
class Task:
    """This process's place in the cluster."""

    index: int
    num_workers: int
    chief: bool


def make_strategy(name: str) -> tf.distribute.Strategy:
    """The strategy for ``train.strategy`` (see the module docstring)."""
    # MultiWorkerMirroredStrategy configures the collective ops, which TensorFlow allows only before
    # its runtime starts: it comes first, before anything lists logical devices.
    if name == "multi_worker":
        raw = os.environ.get("TF_CONFIG")
        if not raw:
            raise StrategyError(
                "train.strategy=multi_worker needs the cluster in TF_CONFIG, e.g. "
                'TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
                '"task": {"type": "worker", "index": 0}}\' on the first worker (index 1 on the second); '
                "see docs/training.md")
        try:
            json.loads(raw)
        except json.JSONDecodeError as e:
            raise StrategyError(f"TF_CONFIG is not valid JSON ({e}): {raw!r}") from None
        try:
            return tf.distribute.MultiWorkerMirroredStrategy()
        except RuntimeError as e:
            raise StrategyError(f"cannot start MultiWorkerMirroredStrategy ({e}): create it before any other "
                                "TensorFlow work in the process (pipelines.train does)") from None
    gpus = tf.config.list_logical_devices("GPU")
    if name == "auto":
        if len(gpus) >= 2:
            return tf.distribute.MirroredStrategy([d.name for d in gpus])
        return tf.distribute.get_strategy()
    if name == "one_device":
        return tf.distribute.get_strategy()
    if name == "mirrored":
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    raise StrategyError(f"unknown strategy {name!r}; choose auto, one_device, mirrored or multi_worker")


def is_distributed(strategy: tf.distribute.Strategy) -> bool:
    """True for the mirrored strategies (replica steps run under ``strategy.run`` on several devices)."""
    return isinstance(strategy, (tf.distribute.MirroredStrategy, tf.distribute.MultiWorkerMirroredStrategy))


def task(strategy: tf.distribute.Strategy) -> Task:
    """Worker index, worker count and whether this process is the chief (the one that logs and exports)."""
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        resolver = strategy.cluster_resolver
        spec = resolver.cluster_spec().as_dict()
        workers = len(spec.get("worker", [])) + len(spec.get("chief", []))
        kind, index = resolver.task_type, resolver.task_id or 0
        chief = kind == "chief" or (kind == "worker" and index == 0 and "chief" not in spec)
        return Task(index=index, num_workers=workers, chief=chief)
    return Task(index=0, num_workers=1, chief=True)


def describe(strategy: tf.distribute.Strategy) -> str:
    """A one-line description for logs: strategy name, replicas, devices."""
    name = type(strategy).__name__.lstrip("_")
    if name == "DefaultDistributionStrategy":
        devices = tf.config.list_logical_devices("GPU") or tf.config.list_logical_devices("CPU")
        return f"one device ({devices[0].name})"
    if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        t = task(strategy)
        return (f"MultiWorkerMirroredStrategy: {t.num_workers} workers, {strategy.num_replicas_in_sync} replicas, "
                f"this is worker {t.index}{' (chief)' if t.chief else ''}")
    return f"{name}: {strategy.num_replicas_in_sync} replicas ({', '.join(strategy.extended.worker_devices)})"
