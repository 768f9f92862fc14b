"""The set classifier: equivariant blocks, masked invariant pooling, a dense head.

A point set enters as ``points`` (B, N, F) with a boolean ``mask`` (B, N) that
marks real points; padded points never influence the logits, so a padded
batch gives the same answers as the unpadded sets (up to float rounding).
F is the dataset's features per point (3 for x, y, z); ``spatial_axes`` names
the three coordinates among them, which the input normalisation centres and
scales, the other features pass as they are. `build_regressor` is the same
network with a linear ``prediction`` (B, T) head for set-level real targets.

Blocks (`ModelConfig.blocks`, in order; setnet/models/config.py), each ``layer -> SetNormalization ->
activation -> dropout``:

- ``linear``: `PermEquivariantLinear` (y = xΛ + pool(x)Γ + b).
- ``quadratic``: `PermEquivariantQuadratic` (orbit-tied quadratic term + linear term).
- ``folded``: `FoldedEquivariant` over the 2N points ``[x ; skip]``: the
  block's input x stacked on the set axis with the previous block's input
  (projected pointwise to the same width), so the fold i ~ i + N pairs each
  point's current features with its features one block earlier. S_N acting on
  the set acts on both halves alike, which is exactly the fold group's action,
  so the block stays S_N-equivariant and the classifier S_N-invariant.

Every step is equivariant (normalisation pools statistics over the batch and
the real points, dropout and activations are pointwise), and the pooling is
invariant, so the classifier is permutation invariant.

>>> model = build_classifier({"num_classes": 3, "blocks": [{"kind": "linear", "units": 8},
...                           {"kind": "quadratic", "units": 8}], "head": [8]})
>>> import numpy as np
>>> logits = model({"points": np.zeros((2, 5, 3), "float32"), "mask": np.ones((2, 5), bool)})
>>> tuple(logits.shape)
(2, 3)
"""

from __future__ import annotations

from typing import Any, Mapping

import keras

from setnet.layers import (
    FoldedEquivariant,
    MaskedGlobalPooling,
    PermEquivariantLinear,
    PermEquivariantQuadratic,
    SetNormalization,
)
from setnet.config import ConfigError
from setnet.models.config import Block, ModelConfig


def _resolve_model_config(config: ModelConfig | Mapping[str, Any] | None,
                         num_classes: int | None = None) -> tuple[ModelConfig, int]:
    """(model config, number of classes) from a `ModelConfig` or a mapping of its keys.

    A mapping may also carry ``num_classes`` (the argument wins when both are given).
    """
    if config is None or isinstance(config, Mapping):
        config = dict(config or {})
        from_mapping = config.pop("num_classes", None)
        num_classes = from_mapping if num_classes is None else num_classes
        config = ModelConfig.from_dict(config, source="the model config")
    elif not isinstance(config, ModelConfig):
        raise TypeError(f"build_classifier: config must be a ModelConfig or a mapping, got {type(config).__name__}")
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ConfigError(f"num_classes: must be an integer >= 2, got {num_classes!r}")
    return config, num_classes


def _activation(name: str):
    return None if name == "linear" else name


def _equivariant_layer(block: Block, index: int, regularizer):
    name = f"block{index}_{block.kind}"
    # The bias is redundant when a normalisation follows (it subtracts the mean).
    use_bias = not block.normalization
    if block.kind == "linear":
        return PermEquivariantLinear(block.units, pooling=block.pooling, use_bias=use_bias,
                                     kernel_regularizer=regularizer, name=name)
    if block.kind == "quadratic":
        return PermEquivariantQuadratic(block.units, symmetric=block.symmetric, pooling=block.pooling,
                                        rank=block.rank, use_bias=use_bias, kernel_regularizer=regularizer,
                                        name=name)
    return FoldedEquivariant(block.units, group=block.group, order=block.order, pooling=block.pooling,
                             use_bias=use_bias, kernel_regularizer=regularizer, name=name)


def input_features(points, mask, norm: str = "center_scale", radius: bool = True, spatial_axes=None):
    """Per-point input features that are S_N-equivariant (and make rotation easier to ignore).

    ``center`` subtracts each set's centroid (over real points), ``center_scale`` also divides by its
    RMS radius, so the features no longer see position and size; ``radius`` appends each point's
    distance to the centroid, the one coordinate that rotations leave alone. Padded points are zero.
    These act on the coordinate features ``spatial_axes`` (default: all of them); the other
    features follow them unchanged (``[coordinates, others, radius]``), and without coordinates
    (``spatial_axes=()``) the features pass as they are.
    """
    ops = keras.ops
    # Padding may hold anything; zeroing it keeps every layer's padded outputs zero.
    points = ops.where(ops.expand_dims(mask, -1), points, ops.zeros_like(points))
    channels = points.shape[-1]
    axes = list(range(channels)) if spatial_axes is None else [int(a) for a in spatial_axes]
    if not axes:
        return points
    others = [c for c in range(channels) if c not in axes]
    rest = ops.take(points, others, axis=-1) if others else None
    x = points if axes == list(range(channels)) else ops.take(points, axes, axis=-1)
    m = ops.expand_dims(ops.cast(mask, x.dtype), -1)
    count = ops.maximum(ops.sum(m, axis=1, keepdims=True), 1.0)
    if norm in ("center", "center_scale"):
        x = (x - ops.sum(x, axis=1, keepdims=True) / count) * m
    if norm == "center_scale":
        rms = ops.sqrt(ops.sum(ops.sum(x * x, axis=-1, keepdims=True), axis=1, keepdims=True) / count)
        x = x / ops.maximum(rms, 1e-6)
    elif norm != "none":
        raise ValueError(f"model config: input_norm must be none, center or center_scale, got {norm!r}")
    parts = [x] + ([rest] if rest is not None else [])
    if radius:
        parts.append(ops.sqrt(ops.sum(x * x, axis=-1, keepdims=True) + 1e-12) * m)
    return ops.concatenate(parts, axis=-1) if len(parts) > 1 else x


def build_classifier(config: ModelConfig | Mapping[str, Any] | None = None, num_classes: int | None = None,
                     name: str = "setnet_classifier", *, num_features: int = 3,
                     spatial_axes=None) -> keras.Model:
    """A permutation-invariant set classifier (or the PointNet baseline) from a model config.

    Args:
        config: a `ModelConfig`, or a mapping of its keys (omitted keys take the defaults,
            docs/training.md lists them; ``blocks`` as mappings with ``kind``). A mapping may
            carry ``num_classes``. ``type: pointnet`` builds `setnet.models.build_pointnet`
            (``pointnet_bn``: with Keras' BatchNormalization, the published network).
        num_classes: number of classes (else the mapping's ``num_classes``).
        name: model name.
        num_features: F, the features per point.
        spatial_axes: which features are the coordinates x, y, z (default: the first three, or
            all of them when F < 3); ``()``: none.

    Returns:
        Functional Keras model, inputs ``{"points": (None, None, F) float32, "mask": (None, None) bool}``,
        output logits (batch, num_classes).

    Raises:
        ConfigError: an invalid key or value (the message names it), or no ``num_classes``.

    Example:

    >>> model = build_classifier(ModelConfig(blocks=[{"kind": "linear", "units": 8}], head=(8,)), num_classes=4)
    >>> model.output.shape
    (None, 4)
    """
    cfg, num_classes = _resolve_model_config(config, num_classes)
    return _build(cfg, num_classes, "logits", name, num_features, spatial_axes)


def build_regressor(config: ModelConfig | Mapping[str, Any] | None = None, num_targets: int = 1,
                    name: str = "setnet_regressor", *, num_features: int = 3, spatial_axes=None) -> keras.Model:
    """The network of `build_classifier` with a linear head: T real numbers per set.

    Args:
        config: as in `build_classifier`.
        num_targets: T, the targets per set.
        name: model name.
        num_features, spatial_axes: as in `build_classifier`.

    Returns:
        Functional Keras model, inputs ``points`` (None, None, F) and ``mask``, output
        ``prediction`` (batch, T).

    Example:

    >>> model = build_regressor({"blocks": [{"kind": "linear", "units": 8}], "head": [8]}, num_targets=2,
    ...                         num_features=5)
    >>> model.output.shape
    (None, 2)
    """
    cfg, _ = _resolve_model_config(config, 2)
    if isinstance(num_targets, bool) or not isinstance(num_targets, int) or num_targets < 1:
        raise ConfigError(f"num_targets: must be an integer >= 1, got {num_targets!r}")
    return _build(cfg, num_targets, "prediction", name, num_features, spatial_axes)


def _build(cfg: ModelConfig, outputs: int, output_name: str, name: str, num_features: int,
           spatial_axes) -> keras.Model:
    if spatial_axes is None:
        spatial_axes = tuple(range(min(3, num_features)))
    if cfg.type in ("pointnet", "pointnet_bn"):
        from setnet.models.pointnet import build_pointnet

        return build_pointnet(outputs, head_dropout=cfg.head_dropout, name=cfg.type,
                              normalization="batch" if cfg.type == "pointnet_bn" else "set",
                              num_features=num_features, output_name=output_name)
    regularizer = keras.regularizers.L2(cfg.l2) if cfg.l2 else None

    points = keras.Input((None, num_features), name="points")
    mask = keras.Input((None,), dtype="bool", name="mask")
    x = input_features(points, mask, cfg.input_norm, cfg.radius_feature, spatial_axes)
    block_input = None
    for i, block in enumerate(cfg.blocks):
        layer = _equivariant_layer(block, i, regularizer)
        if block.kind == "folded":
            skip = block_input
            if skip.shape[-1] != x.shape[-1]:
                # Pointwise and bias-free: equivariant, and padded points stay zero.
                skip = keras.layers.Dense(x.shape[-1], use_bias=False, name=f"block{i}_skip")(skip)
            paired = keras.ops.concatenate([x, skip], axis=1)
            paired_mask = keras.ops.concatenate([mask, mask], axis=1)
            y = layer(paired, mask=paired_mask)
        else:
            y = layer(x, mask=mask)
        if block.normalization:
            y = SetNormalization(momentum=cfg.norm_momentum, name=f"block{i}_norm")(y, mask=mask)
        act = _activation(block.activation)
        if act is not None:
            y = keras.layers.Activation(act, name=f"block{i}_{act}")(y)
        if block.dropout:
            y = keras.layers.Dropout(block.dropout, name=f"block{i}_dropout")(y)
        block_input, x = x, y

    h = MaskedGlobalPooling(cfg.global_pool, name="pool")(x, mask=mask)
    for j, units in enumerate(cfg.head):
        h = keras.layers.Dense(units, activation="relu", kernel_regularizer=regularizer, name=f"head{j}")(h)
        if cfg.head_dropout:
            h = keras.layers.Dropout(cfg.head_dropout, name=f"head{j}_dropout")(h)
    out = keras.layers.Dense(outputs, name=output_name)(h)
    return keras.Model({"points": points, "mask": mask}, out, name=name)
