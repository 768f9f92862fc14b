"""Mask-aware per-channel normalisation of sets."""

from __future__ import annotations

import keras
from keras import initializers, ops, regularizers

from setnet.layers import set_ops


@keras.saving.register_keras_serializable(package="setnet")
class SetNormalization(keras.layers.Layer):
    """Batch normalisation for sets: per-channel statistics over the batch and the real points.

    In training, each channel is normalised by the mean and variance taken
    over every real point of every set in the batch (padded points do not
    count), and moving averages of those statistics are kept for inference,
    exactly like ``keras.layers.BatchNormalization``. The statistics are
    invariant under permutations of the points, so the layer is equivariant,
    and in inference it is a per-point affine map. Outputs at padded points
    are zero, so padding stays inert downstream.

    With a ``tf.distribute`` strategy the statistics are per replica (as in
    ``BatchNormalization(synchronized=False)``).

    Args:
        momentum: momentum of the moving averages.
        epsilon: added to the variance before the square root.
        center: learn an offset ``beta``.
        scale: learn a scale ``gamma``.
        beta_initializer, gamma_initializer, moving_mean_initializer,
            moving_variance_initializer: initializers.
        beta_regularizer, gamma_regularizer: optional regularizers.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Call arguments: ``inputs`` ``(batch, N, C)``; ``training`` (bool);
    ``mask`` optional boolean ``(batch, N)``, passed on.

    Example:

    >>> import numpy as np
    >>> from setnet.layers import SetNormalization
    >>> x = np.array([[[1.0], [3.0], [100.0]]], dtype="float32")
    >>> mask = np.array([[True, True, False]])
    >>> y = SetNormalization(epsilon=0.0)(x, mask=mask, training=True)
    >>> np.round(np.asarray(y), 3).ravel().tolist()
    [-1.0, 1.0, 0.0]
    """

    def __init__(
        self,
        momentum=0.99,
        epsilon=1e-3,
        center=True,
        scale=True,
        beta_initializer="zeros",
        gamma_initializer="ones",
        moving_mean_initializer="zeros",
        moving_variance_initializer="ones",
        beta_regularizer=None,
        gamma_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not 0.0 <= float(momentum) <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum!r}")
        if float(epsilon) < 0:
            raise ValueError(f"epsilon must be >= 0, got {epsilon!r}")
        self.momentum = float(momentum)
        self.epsilon = float(epsilon)
        self.center = center
        self.scale = scale
        self.beta_initializer = initializers.get(beta_initializer)
        self.gamma_initializer = initializers.get(gamma_initializer)
        self.moving_mean_initializer = initializers.get(moving_mean_initializer)
        self.moving_variance_initializer = initializers.get(moving_variance_initializer)
        self.beta_regularizer = regularizers.get(beta_regularizer)
        self.gamma_regularizer = regularizers.get(gamma_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        shape = (set_ops.input_channels(self, input_shape),)
        self.gamma = (
            self.add_weight(name="gamma", shape=shape, initializer=self.gamma_initializer,
                            regularizer=self.gamma_regularizer, autocast=False)
            if self.scale else None
        )
        self.beta = (
            self.add_weight(name="beta", shape=shape, initializer=self.beta_initializer,
                            regularizer=self.beta_regularizer, autocast=False)
            if self.center else None
        )
        self.moving_mean = self.add_weight(
            name="moving_mean", shape=shape, initializer=self.moving_mean_initializer, trainable=False,
            autocast=False,
        )
        self.moving_variance = self.add_weight(
            name="moving_variance", shape=shape, initializer=self.moving_variance_initializer, trainable=False,
            autocast=False,
        )

    def call(self, inputs, training=None, mask=None):
        # Statistics in at least float32: half-precision sums over many points overflow.
        dtype = keras.backend.result_type(inputs.dtype, "float32")
        x = ops.cast(inputs, dtype)
        m = set_ops.float_mask(mask, x)
        if training and self.trainable:
            count = ops.maximum(ops.sum(set_ops.set_size(x, m)), 1.0)
            mean = ops.sum(set_ops.mask_points(x, m), axis=(0, 1)) / count
            centred = set_ops.mask_points(x - mean, m)
            variance = ops.sum(centred * centred, axis=(0, 1)) / count
            self.moving_mean.assign(
                self.moving_mean * self.momentum + ops.cast(mean, self.moving_mean.dtype) * (1.0 - self.momentum)
            )
            self.moving_variance.assign(
                self.moving_variance * self.momentum
                + ops.cast(variance, self.moving_variance.dtype) * (1.0 - self.momentum)
            )
        else:
            mean = ops.cast(self.moving_mean, dtype)
            variance = ops.cast(self.moving_variance, dtype)
        # Fold the statistics, gamma and beta into one per-channel scale and shift first: on wide
        # layers (PointNet's 1024 channels) the passes over the (batch, N, C) tensor are what costs.
        scale = ops.rsqrt(variance + self.epsilon)
        if self.gamma is not None:
            scale = scale * ops.cast(self.gamma, dtype)
        shift = -mean * scale
        if self.beta is not None:
            shift = shift + ops.cast(self.beta, dtype)
        return ops.cast(set_ops.mask_points(x * scale + shift, m), self.compute_dtype)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {
            **super().get_config(),
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
            "beta_initializer": initializers.serialize(self.beta_initializer),
            "gamma_initializer": initializers.serialize(self.gamma_initializer),
            "moving_mean_initializer": initializers.serialize(self.moving_mean_initializer),
            "moving_variance_initializer": initializers.serialize(self.moving_variance_initializer),
            "beta_regularizer": regularizers.serialize(self.beta_regularizer),
            "gamma_regularizer": regularizers.serialize(self.gamma_regularizer),
        }
