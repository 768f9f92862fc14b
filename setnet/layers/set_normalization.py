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
    ``BatchNormalization(synchronized=False)``). A training batch without a
    single real point leaves the moving statistics as they were.

    Cost: a training step (forward and backward) takes at most the time of
    ``BatchNormalization`` on the same padded tensor. Without a mask it runs
    TensorFlow's fused batch-norm kernel; with a mask, the statistics are
    mask-weighted matrix-vector products and the gradient is batch norm's
    closed form rather than autodiff of the composed ops. Both shift the data
    by one real point first, so float32 statistics of data far from zero
    (1e3 +- 1) keep float32 accuracy.

    Mixed precision: inputs and outputs are in the policy's compute dtype
    (float16, bfloat16); statistics, ``gamma``, ``beta`` and the moving
    averages are float32, and the map is applied in float32.

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

    @set_ops.accepts_ragged
    def call(self, inputs, training=None, mask=None):
        # Statistics and the affine map in at least float32 (as keras.layers.BatchNormalization): half-precision
        # sums over many points overflow or lose digits, and x * scale + shift cancels at large offsets.
        dtype = set_ops.accumulation_dtype(inputs.dtype)
        channels = inputs.shape[-1]
        gamma = ops.ones((channels,), dtype) if self.gamma is None else ops.cast(self.gamma, dtype)
        beta = ops.zeros((channels,), dtype) if self.beta is None else ops.cast(self.beta, dtype)
        m = None if mask is None else ops.cast(mask, dtype)
        if training and self.trainable:
            if m is None and _fused_kernel_applies(inputs):
                y, mean, variance, count = _fused_training(inputs, gamma, beta, self.epsilon)
            else:
                y, mean, variance, count = _training(ops.cast(inputs, dtype), m, gamma, beta, self.epsilon)
            # A batch without a single real point says nothing about the statistics.
            seen = count > 0
            for moving, value in ((self.moving_mean, mean), (self.moving_variance, variance)):
                value = ops.cast(value, moving.dtype)
                moving.assign(ops.where(seen, moving * self.momentum + value * (1.0 - self.momentum), moving))
        else:
            scale = ops.rsqrt(ops.cast(self.moving_variance, dtype) + self.epsilon) * gamma
            y = ops.cast(inputs, dtype) * scale + (beta - ops.cast(self.moving_mean, dtype) * scale)
            if m is not None:
                y = y * ops.expand_dims(m, -1)
        return ops.cast(y, self.compute_dtype)

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


# Both training paths shift the data by one real point k before taking statistics: mean(x) = k + mean(x - k)
# and var(x) = var(x - k) exactly, but x - k is of the order of the spread of x, not of its offset, so float32
# sums keep their digits (a one-pass variance of data at 1e3 +- 1 is off by 30% in float32; XLA computes the
# fused kernel's variance that way).


def _fused_kernel_applies(inputs):
    return keras.backend.backend() == "tensorflow" and keras.backend.standardize_dtype(inputs.dtype) in (
        "float16", "bfloat16", "float32")


def _fused_training(x, gamma, beta, epsilon):
    """Unmasked training on TensorFlow: TensorFlow's fused batch-norm kernel over the (batch * N) points.

    One kernel for the statistics and the output and one for all the gradients, in the input's dtype with
    float32 statistics: several times faster than composing the same map from elementwise ops.
    """
    import tensorflow as tf

    channels = x.shape[-1]
    flat = tf.reshape(x, (-1, channels))
    shift = tf.stop_gradient(tf.reduce_sum(flat[:1], axis=0))  # the first point; zeros for an empty batch
    y, mean, variance = tf.compat.v1.nn.fused_batch_norm(
        tf.reshape(flat - shift, (-1, 1, 1, channels)), gamma, beta, epsilon=epsilon, is_training=True)
    count = tf.cast(tf.shape(flat)[0], tf.float32)
    # The kernel reports the unbiased variance (for moving averages); BatchNormalization keeps the biased one.
    variance = variance * tf.where(count > 1, (count - 1.0) / tf.maximum(count, 1.0), 1.0)
    return tf.reshape(y, tf.shape(x)), mean + tf.cast(shift, mean.dtype), variance, count


def _point_sum(t, m):
    """Per-channel sum over the real points of every set: ``(batch, n, c) -> (c,)``.

    With a mask this is one matrix-vector product that weights each point by its mask entry, so padded values
    never reach the sum and no masked copy of ``t`` is made.
    """
    if m is None:
        return ops.sum(t, axis=(0, 1))
    return ops.einsum("bn,bnc->c", m, t)


def _training(x, m, gamma, beta, epsilon):
    """Training statistics and output over the real points, with the gradient written out.

    Autodiff of the composed map walks every intermediate of the forward pass back; batch norm's gradient
    has a closed form that needs two per-channel sums and one elementwise pass, as in the fused kernel:
    with y_hat = (x - mean) * rstd, dbeta = sum(dy), dgamma = sum(dy * y_hat) and
    dx = gamma * rstd * (dy - (dbeta + y_hat * dgamma) / count), all over the real points.
    """
    channels = x.shape[-1]
    flat = ops.reshape(x, (-1, channels))
    if m is None:
        count = ops.cast(ops.shape(flat)[0], x.dtype)
        first = ops.convert_to_tensor(0, "int32")
    else:
        count = ops.sum(m)
        # The first real point (one past the end, i.e. no shift, when there is none).
        first = ops.argmax(ops.concatenate([ops.reshape(m, (-1,)), ops.ones((1,), m.dtype)]))
    # The shift point picked by a one-hot product, not a slice at a computed offset: XLA on CPU
    # compiled the dynamic slice's gradient into a step that took seconds (5-9 s vs 0.02 s).
    flat_padded = ops.concatenate([flat, ops.zeros((1, channels), flat.dtype)], axis=0)
    pick = ops.one_hot(first, ops.shape(flat_padded)[0], dtype=flat.dtype)
    shift = ops.stop_gradient(ops.matmul(ops.expand_dims(pick, 0), flat_padded)[0])
    xk = x - shift
    points = ops.maximum(count, 1.0)
    held = ops.stop_gradient(xk)
    mean_k = _point_sum(held, m) / points
    variance = _point_sum(ops.square(held - mean_k), m) / points
    rstd = ops.rsqrt(variance + epsilon)
    mask = None if m is None else ops.expand_dims(m, -1)

    @ops.custom_gradient
    def normalise(xk, gamma, beta):
        scale = gamma * rstd
        y = xk * scale + (beta - mean_k * scale)
        y = y if mask is None else y * mask

        def grad(*args, upstream=None):
            dy = args[0] if upstream is None else upstream
            dbeta = _point_sum(dy, m)
            dgamma = (_point_sum(dy * xk, m) - mean_k * dbeta) * rstd
            # dx = scale * dy + a * xk + b, folded per channel from the closed form above.
            a = -scale * rstd * dgamma / points
            b = -scale * dbeta / points - a * mean_k
            dx = dy * scale + (xk * a + b)
            return (dx if mask is None else dx * mask), dgamma, dbeta

        return y, grad

    return normalise(xk, gamma, beta), mean_k + shift, variance, count
