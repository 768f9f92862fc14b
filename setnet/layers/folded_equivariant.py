"""Folded equivariant maps: N points in, N/2 out, point i folded onto i mod N/2.

The weight tying is that of parameter sharing (Ravanbakhsh, Schneider & Póczos, "Equivariance Through
Parameter-Sharing", ICML 2017, arXiv:1702.08389) for a group that moves the pairs (i, i + N/2) as wholes.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import activations, initializers, ops, regularizers

from setnet.layers import set_ops

GROUPS = ("pairs", "hyperoctahedral")
ORDERS = ("linear", "quadratic")
POOLINGS = ("sum", "mean")

# Which variable slice serves each (input half a, [input half b,] S_m orbit t), in
# the symmetry engine's canonical color order for m >= 3 (colors(Fold<m>, fold, kind)
# and colors(Hyp<m>, fold, kind)). S_m orbits t as in set_ops: linear 0: k = i,
# 1: k != i; quadratic 0: k=i=j, 1: k=i!=j, 2: k=j!=i, 3: i=j!=k, 4: all distinct
# (indices taken mod m). Derived from the engine and checked in the tests.
LINEAR_SLOTS = {
    "pairs": np.array([[0, 1], [2, 3]]),  # [a][t]
    "hyperoctahedral": np.array([[0, 1], [0, 1]]),  # swapping within a pair makes both halves alike
}
QUADRATIC_SLOTS = {
    "pairs": np.array([  # [a][b][t]: the 5 S_m orbits for each of the 4 (half, half) combinations
        [[0, 1, 4, 5, 6], [2, 3, 7, 8, 9]],
        [[10, 11, 14, 15, 16], [12, 13, 17, 18, 19]],
    ]),
    # Orbits whose two inputs share their pair index (t = 0, 3) split into "same half" and
    # "other half"; the others do not see the halves at all.
    "hyperoctahedral": np.array([
        [[0, 1, 3, 4, 5], [2, 1, 3, 6, 5]],
        [[2, 1, 3, 6, 5], [0, 1, 3, 4, 5]],
    ]),
}
N_COLORS = {("pairs", "linear"): 4, ("pairs", "quadratic"): 20,
            ("hyperoctahedral", "linear"): 2, ("hyperoctahedral", "quadratic"): 7}


@keras.saving.register_keras_serializable(package="setnet")
class FoldedEquivariant(keras.layers.Layer):
    """Equivariant map from N points onto N/2 points, folding point i onto i mod N/2.

    Point i and point i + N/2 form pair i; the output has one point per pair.
    The symmetry is the largest group for which folding is equivariant:

    - ``group="pairs"`` (engine: ``fold_pairs(m)``, spec ``Fold<m>``): S_{N/2}
      permutes the pairs, acting on both halves alike. Linear: 4 colors
      ``[αI + β(11ᵀ-I) | γI + δ(11ᵀ-I)]``; quadratic: the 5 S_{N/2} orbits
      for each of the 4 (half, half) combinations of the two inputs, 20 colors.
    - ``group="hyperoctahedral"`` (``hyperoctahedral(m)``, ``Hyp<m>``): also
      swaps the two points of any pair. Linear: 2 colors; quadratic: 7 (the
      orbits whose inputs share a pair index split into "same half" and
      "other half").

    The folded quadratic case was left open by an earlier hand derivation;
    the orbit computation gives the counts above. One variable per color per channel pair (triple, for the
    quadratic term), in the engine's canonical color order for N/2 >= 3, so
    the layer equals ``TiedEquivariantDense(colors=colors(G, fold(G,
    halves_fold(m)), kind))`` with the same weights. It is computed in closed
    form: a fold is the S_{N/2} map on the pairs z_k = [x_k, x_{k+N/2}] (2·C_in
    channels) with the weights laid out per half, so the cost is that of
    ``PermEquivariantLinear``/``PermEquivariantQuadratic`` with 2·C_in channels on
    N/2 points (the hyperoctahedral weights are tied, not cheaper). For
    N/2 < 3 some orbits are empty and their weights have no effect.

    Masks: a pair is real when both of its points are real; the output mask is
    ``mask[:, :N/2] & mask[:, N/2:]``, and the output for a padded batch equals
    the output for the set of its real pairs. A point whose partner is padded
    is ignored, so pad both halves alike (lay the data out as ``[first points,
    padding | partners, padding]``).

    Args:
        units: number of output channels.
        group: ``"pairs"`` or ``"hyperoctahedral"``.
        order: ``"linear"`` (``y = Lx + b``) or ``"quadratic"``
            (``y = (Ax)·x + Lx + b``, the quadratic form of ``PermEquivariantQuadratic``).
        pooling: ``"sum"`` (orbit sums; the exact tied map) or ``"mean"``
            (each orbit sum divided by its size over the real pairs).
        activation: activation applied to the output.
        use_bias: whether to add a per-channel bias (1 bias color: both groups
            are transitive on the outputs).
        kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer: as for ``keras.layers.Dense``.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Variables: ``linear_kernel`` ``(4 or 2, C_in, units)``; for
    ``order="quadratic"`` also ``quadratic_kernel`` ``(20 or 7, C_in, C_in,
    units)``; ``bias`` ``(units,)``.

    Input ``(batch, N, C_in)`` with N even (possibly ``None``) and an optional
    boolean mask ``(batch, N)``. Output ``(batch, N/2, units)``, with the
    folded mask.

    Example:

    >>> import numpy as np
    >>> from setnet.layers import FoldedEquivariant
    >>> layer = FoldedEquivariant(4, group="hyperoctahedral", order="quadratic")
    >>> x = np.random.rand(2, 6, 3).astype("float32")
    >>> y = np.asarray(layer(x))
    >>> y.shape
    (2, 3, 4)
    >>> swapped = x[:, [3, 1, 2, 0, 4, 5]]  # swap the two points of pair 0
    >>> bool(np.allclose(layer(swapped), y, atol=1e-5))
    True
    """

    def __init__(
        self,
        units,
        group="pairs",
        order="linear",
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
        for name, value, allowed in (("group", group, GROUPS), ("order", order, ORDERS),
                                     ("pooling", pooling, POOLINGS)):
            if value not in allowed:
                raise ValueError(f"{name} must be one of {allowed}, got {value!r}")
        self.units = units
        self.group = group
        self.order = order
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
        if input_shape[1] is not None and input_shape[1] % 2:
            raise ValueError(
                f"FoldedEquivariant '{self.name}' folds point i onto i mod N/2 and needs an even N; got "
                f"N = {input_shape[1]}. Pad each half to the same length."
            )

        def kernel(name, shape):
            return self.add_weight(
                name=name, shape=shape, initializer=self.kernel_initializer, regularizer=self.kernel_regularizer
            )

        self.linear_kernel = kernel("linear_kernel", (N_COLORS[self.group, "linear"], channels, self.units))
        self.quadratic_kernel = None
        if self.order == "quadratic":
            self.quadratic_kernel = kernel(
                "quadratic_kernel", (N_COLORS[self.group, "quadratic"], channels, channels, self.units)
            )
        self.bias = (
            self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer,
                            regularizer=self.bias_regularizer)
            if self.use_bias else None
        )

    def pair_weights(self):
        """The weights as S_{N/2} maps on the pairs' 2·C_in channels: ``(2, 2C, units)`` and
        ``(5, 2C, 2C, units)`` (or None), channel a·C + c being channel c of half a."""
        c = self.linear_kernel.shape[1]
        lin = ops.take(self.linear_kernel, LINEAR_SLOTS[self.group], axis=0)  # (a, t, c, o)
        lin = ops.reshape(ops.transpose(lin, (1, 0, 2, 3)), (2, 2 * c, self.units))
        if self.quadratic_kernel is None:
            return lin, None
        quad = ops.take(self.quadratic_kernel, QUADRATIC_SLOTS[self.group], axis=0)  # (a, b, t, c, d, o)
        quad = ops.reshape(ops.transpose(quad, (2, 0, 3, 1, 4, 5)), (5, 2 * c, 2 * c, self.units))
        return lin, quad

    def call(self, inputs, mask=None):
        n = ops.shape(inputs)[1]
        if isinstance(n, int) and n % 2:  # with a dynamic N, the split below fails instead
            raise ValueError(f"FoldedEquivariant '{self.name}' needs an even number of points, got {n}")
        m = self.compute_mask(inputs, mask)
        m = None if m is None else set_ops.float_mask(m, inputs)
        z = ops.concatenate(ops.split(inputs, 2, axis=1), axis=-1)  # pair k: [x_k, x_{k+N/2}]
        z = set_ops.mask_points(z, m)
        lin, quad = self.pair_weights()
        y = set_ops.orbit_linear(z, lin, m, self.pooling)
        if quad is not None:
            y = y + set_ops.orbit_quadratic(z, quad, m, self.pooling)
        if self.bias is not None:
            y = y + self.bias
        return set_ops.mask_points(self.activation(y), m)

    def compute_mask(self, inputs, mask=None):
        if mask is None:
            return None
        first, second = ops.split(ops.cast(mask, "bool"), 2, axis=1)
        return ops.logical_and(first, second)

    def compute_output_shape(self, input_shape):
        n = input_shape[1]
        return (input_shape[0], None if n is None else n // 2, self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "group": self.group,
            "order": self.order,
            "pooling": self.pooling,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
        }
