"""The permutation-equivariant linear layer of Zaheer et al., "Deep Sets", NeurIPS 2017, arXiv:1703.06114."""

from __future__ import annotations

import keras
from keras import activations, initializers, regularizers

from setnet.layers import set_ops

POOLINGS = ("sum", "mean", "max")


@keras.saving.register_keras_serializable(package="setnet")
class PermEquivariantLinear(keras.layers.Layer):
    """Permutation-equivariant linear map of sets: ``y = x Λ + pool(x) Γ + b``.

    For one input and one output channel the only S_N-equivariant linear maps
    R^N -> R^N are ``αI + β11ᵀ`` (two orbit colors: the diagonal and the rest).
    With ``C_in`` input and ``units`` output channels that is one such pair per
    channel pair, i.e. ``y_k = x_k Λ + (Σ_i x_i) Γ + b``. The variables hold
    only these tied parameters (2·C_in·units, plus the bias); no N x N matrix
    is ever built, so N may differ from call to call.

    Relation to the symmetry engine: with ``pooling="sum"`` this is
    ``TiedEquivariantDense(colors=colors(symmetric(N)))`` with color weights
    ``w0 = Λ + Γ`` (diagonal) and ``w1 = Γ`` (off-diagonal); with
    ``pooling="mean"`` it is ``w0 = Λ + Γ/n, w1 = Γ/n`` for a set of n points.

    Args:
        units: number of output channels.
        pooling: how the set is summarised for the Γ term: ``"sum"`` (the exact
            αI + β11ᵀ family), ``"mean"`` (the same family rescaled by the set
            size, stable across very different N) or ``"max"`` (a nonlinear but
            still equivariant variant, as in PointNet-style DeepSets).
        activation: activation applied to the output (``keras.activations``).
        use_bias: whether to add a per-channel bias (the one bias color of a
            transitive group).
        kernel_initializer: initializer for ``lambda_kernel`` and ``gamma_kernel``.
        bias_initializer: initializer for ``bias``.
        kernel_regularizer: regularizer for both kernels.
        bias_regularizer: regularizer for ``bias``.
        **kwargs: base ``keras.layers.Layer`` arguments (``name``, ``dtype``...).

    Input: ``(batch, N, C_in)`` with N possibly ``None``, and an optional
    boolean mask ``(batch, N)``: padded points do not change the outputs of
    real points (they are left out of the pooling) and their outputs are zero.
    Output: ``(batch, N, units)``; the mask is passed on.

    Example:

    >>> import numpy as np
    >>> from setnet.layers import PermEquivariantLinear
    >>> layer = PermEquivariantLinear(4, pooling="mean")
    >>> x = np.random.rand(2, 5, 3).astype("float32")
    >>> y = layer(x)
    >>> tuple(y.shape)
    (2, 5, 4)
    >>> perm = np.random.permutation(5)
    >>> bool(np.allclose(layer(x[:, perm]), np.asarray(y)[:, perm], atol=1e-5))
    True
    """

    def __init__(
        self,
        units,
        pooling="sum",
        activation=None,
        use_bias=True,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        if pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {pooling!r}")
        self.units = units
        self.pooling = pooling
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.supports_masking = True

    def build(self, input_shape):
        channels = set_ops.input_channels(self, input_shape)
        self.lambda_kernel = self.add_weight(
            name="lambda_kernel", shape=(channels, self.units),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
        )
        self.gamma_kernel = self.add_weight(
            name="gamma_kernel", shape=(channels, self.units),
            initializer=self.kernel_initializer, regularizer=self.kernel_regularizer,
        )
        self.bias = (
            self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer,
                            regularizer=self.bias_regularizer)
            if self.use_bias else None
        )

    @set_ops.accepts_ragged
    def call(self, inputs, mask=None):
        m = set_ops.float_mask(mask, inputs)
        x = set_ops.mask_points(inputs, m)
        pooled = set_ops.masked_pool(x, m, self.pooling)
        y = set_ops.point_matmul(x, self.lambda_kernel) + set_ops.set_term(pooled, self.gamma_kernel, x.dtype)
        if self.bias is not None:
            y = y + self.bias
        return set_ops.mask_points(self.activation(y), m)

    def compute_mask(self, inputs, mask=None):
        return mask

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "pooling": self.pooling,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
        }

