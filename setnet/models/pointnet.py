"""PointNet (Qi et al., CVPR 2017), the published classification architecture, as a baseline.

Shared per-point MLP 64-64-64-128-1024 with normalisation and ReLU, a global
max pool, and a 512-256-k head with normalisation, ReLU and dropout (0.3, the
paper's keep probability 0.7). The input and feature transform networks
(T-Nets) are left out, as in the paper's "vanilla" variant, which the paper
reports at 87.2% on ModelNet40 against 89.2% with them. The per-point
normalisation is `SetNormalization` by default, which is BatchNormalization
restricted to real points, so padded batches give the same answers as unpadded
ones; ``normalization="batch"`` (``model.type: pointnet_bn`` in a config) uses
Keras' BatchNormalization, the published network: on fixed-size sets such as
ModelNet's the two compute the same thing, and that one is the fair speed
baseline (``make bench-train``).

>>> model = build_pointnet(5)
>>> model.count_params() > 800_000
True
"""

from __future__ import annotations

import keras

from setnet.layers import MaskedGlobalPooling, SetNormalization

SHARED_MLP = (64, 64, 64, 128, 1024)
HEAD = (512, 256)


NORMALIZATIONS = ("set", "batch")


def build_pointnet(num_classes: int, head_dropout: float = 0.3, name: str = "pointnet",
                   normalization: str = "set", *, num_features: int = 3,
                   output_name: str = "logits") -> keras.Model:
    """PointNet classifier with the same inputs and output as `build_classifier`.

    Args:
        num_classes: number of classes k.
        head_dropout: dropout rate in the 512-256 head.
        name: model name.
        normalization: ``"set"`` (`SetNormalization` over the real points) or ``"batch"``
            (``keras.layers.BatchNormalization``, whose statistics also count padded points; for
            comparisons on unpadded batches).
        num_features: F, the features per point.
        output_name: the last layer's name (``prediction`` for a regression head of
            ``num_classes`` real outputs).

    Returns:
        Functional Keras model, inputs ``points`` (B, N, 3) and ``mask`` (B, N) bool, output logits (B, k).
    """
    if normalization not in NORMALIZATIONS:
        raise ValueError(f"normalization must be one of {NORMALIZATIONS}, got {normalization!r}")
    points = keras.Input((None, num_features), name="points")
    mask = keras.Input((None,), dtype="bool", name="mask")
    x = keras.ops.where(keras.ops.expand_dims(mask, -1), points, keras.ops.zeros_like(points))
    for i, units in enumerate(SHARED_MLP):
        # A Dense layer on (B, N, C) is the paper's 1x1 convolution: the same MLP on every point.
        x = keras.layers.Dense(units, use_bias=False, name=f"mlp{i}")(x)
        if normalization == "set":
            x = SetNormalization(name=f"mlp{i}_norm")(x, mask=mask)
        else:
            x = keras.layers.BatchNormalization(name=f"mlp{i}_norm")(x)
        x = keras.layers.Activation("relu", name=f"mlp{i}_relu")(x)
    h = MaskedGlobalPooling("max", name="pool")(x, mask=mask)
    for j, units in enumerate(HEAD):
        h = keras.layers.Dense(units, use_bias=False, name=f"fc{j}")(h)
        h = keras.layers.BatchNormalization(name=f"fc{j}_norm")(h)
        h = keras.layers.Activation("relu", name=f"fc{j}_relu")(h)
        if head_dropout:
            h = keras.layers.Dropout(head_dropout, name=f"fc{j}_dropout")(h)
    logits = keras.layers.Dense(num_classes, name=output_name)(h)
    return keras.Model({"points": points, "mask": mask}, logits, name=name)
