"""Tiny models and data shared by the training tests (and by tests/training/distributed_worker.py)."""

from __future__ import annotations

import numpy as np

NUM_CLASSES = 3


def tiny_model_config(normalization: bool = False) -> dict:
    """Two equivariant blocks (linear, low-rank quadratic) and a small head; no dropout, so that
    runs on different strategies can be compared weight for weight."""
    return {"num_classes": NUM_CLASSES, "head": [8], "head_dropout": 0.0,
            "blocks": [{"kind": "linear", "units": 8, "normalization": normalization},
                       {"kind": "quadratic", "units": 8, "rank": 2, "normalization": normalization}]}


def tiny_arrays(examples: int = 64, points: int = 12, seed: int = 0, variable: bool = False):
    """(points, mask, labels): the class sets the cloud's spread, so a few steps already learn."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, NUM_CLASSES, examples)
    x = rng.normal(size=(examples, points, 3)).astype("float32") * (1.0 + labels[:, None, None])
    mask = np.ones((examples, points), bool)
    if variable:
        sizes = rng.integers(2, points + 1, examples)
        mask = np.arange(points)[None] < sizes[:, None]
        x = x * mask[..., None]
    return x, mask, labels.astype("int64")


def tiny_dataset(batch_size: int, examples: int = 64, points: int = 12, seed: int = 0):
    import tensorflow as tf

    x, mask, y = tiny_arrays(examples, points, seed)
    return tf.data.Dataset.from_tensor_slices(({"points": x, "mask": mask}, y)).batch(batch_size)


def build(strategy, normalization: bool = False, init=None, learning_rate: float = 1e-2, optimizer: str = "adam"):
    """Model and built optimizer in the strategy's scope, optionally from given initial weights."""
    import keras

    from setnet.models import build_classifier

    with strategy.scope():
        model = build_classifier(tiny_model_config(normalization))
        if init is not None:
            model.set_weights(init)
        optimizer = (keras.optimizers.Adam(learning_rate) if optimizer == "adam"
                     else keras.optimizers.SGD(learning_rate, momentum=0.9))
        optimizer.build(model.trainable_variables)
    return model, optimizer


def free_ports(n: int) -> list[int]:
    """``n`` distinct free TCP ports on 127.0.0.1 (all bound at once, so none repeats), e.g. for the
    workers of a TF_CONFIG cluster."""
    import socket

    socks = [socket.socket() for _ in range(n)]
    for s in socks:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in socks]
    for s in socks:
        s.close()
    return ports
