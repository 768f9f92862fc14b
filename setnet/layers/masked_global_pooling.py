"""Masked invariant pooling of sets, for set-level heads."""

from __future__ import annotations

import keras
from keras import ops

from setnet.layers import set_ops

MODES = ("max", "mean", "sum")


@keras.saving.register_keras_serializable(package="setnet")
class MaskedGlobalPooling(keras.layers.Layer):
    """Permutation-invariant pooling over the real points of each set.

    ``(batch, N, C) -> (batch, C)``: the sum, mean or max of each channel over
    the points whose mask is True. Any reordering of the points gives the same
    result, and padded points have no effect at all. A set with no real point
    pools to zeros (not -inf or NaN), so an empty request cannot poison a batch.

    Args:
        mode: ``"max"``, ``"mean"`` or ``"sum"``.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Input: ``(batch, N, C)`` (N may be ``None``) and an optional boolean mask
    ``(batch, N)``. Output: ``(batch, C)``, with no mask (the point axis is gone).

    Example:

    >>> import numpy as np
    >>> from setnet.layers import MaskedGlobalPooling
    >>> x = np.array([[[1.0], [5.0], [-9.0]]], dtype="float32")
    >>> mask = np.array([[True, True, False]])
    >>> MaskedGlobalPooling("max")(x, mask=mask).numpy().tolist()
    [[5.0]]
    >>> MaskedGlobalPooling("mean")(x, mask=mask).numpy().tolist()
    [[3.0]]
    """

    def __init__(self, mode="max", **kwargs):
        super().__init__(**kwargs)
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.mode = mode
        self.supports_masking = True

    def build(self, input_shape):
        set_ops.input_channels(self, input_shape)

    @set_ops.accepts_ragged
    def call(self, inputs, mask=None):
        return ops.cast(set_ops.masked_pool(inputs, set_ops.float_mask(mask, inputs), self.mode), inputs.dtype)

    def compute_mask(self, inputs, mask=None):
        return None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], input_shape[-1])

    def get_config(self):
        return {**super().get_config(), "mode": self.mode}
