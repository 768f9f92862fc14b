"""Small random set models and batches for the teleport tests (and for trying teleport out).

>>> model = set_model([("linear", 8, "relu", "sum", "inside")], head=[6], seed=0)
>>> x, y = set_batch(4, 5, seed=0)
>>> tuple(model(x).shape)
(4, 3)
"""

from __future__ import annotations

import keras
import numpy as np

import setnet.layers as layers

NUM_CLASSES = 3


def set_model(blocks, head=(8,), head_activation="relu", global_pool="max", seed=0, name="teleport_test"):
    """A functional set classifier with inputs {"points", "mask"} like `setnet.models.build_classifier`.

    Args:
        blocks: list of (kind, units, activation, pooling, placement) where kind is "linear",
            "quadratic" (5 orbits), "quadratic_sym" (4 orbits) or "quadratic_rank2" (factorised);
            activation a Keras name; placement "inside" (the layer's own activation),
            "layer" (a separate Activation layer), "norm" (SetNormalization, then activation),
            "batchnorm" (keras BatchNormalization, then activation) or "dropout" (activation
            inside, then Dropout).
        head: hidden Dense widths after pooling.
        head_activation: activation of the hidden Dense layers.
        global_pool: MaskedGlobalPooling mode.
        seed: weight initialisation seed.
    """
    keras.utils.set_random_seed(seed)
    points = keras.Input((None, 3), name="points")
    mask = keras.Input((None,), dtype="bool", name="mask")
    x = points
    for i, (kind, units, activation, pooling, placement) in enumerate(blocks):
        inside = activation if placement in ("inside", "dropout") else None
        # Random (nonzero) biases, so that the bias columns are exercised by every check.
        kwargs = dict(activation=inside, bias_initializer=keras.initializers.RandomNormal(stddev=0.3),
                      name=f"block{i}")
        if kind.startswith("quadratic"):
            layer = layers.PermEquivariantQuadratic(units, pooling=pooling, symmetric=kind == "quadratic_sym",
                                                    rank=2 if kind == "quadratic_rank2" else None, **kwargs)
        else:
            layer = layers.PermEquivariantLinear(units, pooling=pooling, **kwargs)
        x = layer(x, mask=mask)
        if placement == "norm":
            x = layers.SetNormalization(name=f"block{i}_norm")(x, mask=mask)
        if placement == "batchnorm":
            x = keras.layers.BatchNormalization(name=f"block{i}_batchnorm")(x)
        if placement in ("layer", "norm", "batchnorm"):
            x = keras.layers.Activation(activation, name=f"block{i}_act")(x)
        if placement == "dropout":
            x = keras.layers.Dropout(0.2, name=f"block{i}_dropout")(x)
    h = layers.MaskedGlobalPooling(global_pool, name="pool")(x, mask=mask)
    for j, units in enumerate(head):
        h = keras.layers.Dense(units, activation=head_activation, name=f"head{j}",
                               bias_initializer=keras.initializers.RandomNormal(stddev=0.3))(h)
    logits = keras.layers.Dense(NUM_CLASSES, name="logits")(h)
    return keras.Model({"points": points, "mask": mask}, logits, name=name)


def set_batch(batch, points, seed=0, padded=True):
    """({"points", "mask"}, labels): random clouds, the last sets padded (padding holds garbage)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, points, 3)).astype("float32")
    mask = np.ones((batch, points), bool)
    if padded and points > 2:
        mask[batch // 2:, points - 2:] = False
        x[~mask] = 7.0
    y = rng.integers(0, NUM_CLASSES, size=batch)
    return {"points": x, "mask": mask}, y


def loss():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)
