"""The permutation-equivariant quadratic layer, y = (Ax)·x + Bx + C.

Its 5 weight orbits are the S_N orbits on (out, in1, in2) index triples: the quadratic case of the
equivariant maps of Maron, Ben-Hamu, Shamir & Lipman, "Invariant and Equivariant Graph Networks",
ICLR 2019 (arXiv:1812.09902).
"""

from __future__ import annotations

import keras
from keras import activations, initializers, ops, regularizers

from setnet.layers import set_ops

POOLINGS = ("sum", "mean")
# The symmetric form's 4 orbits in the general form's 5 slots: k=i!=j and k=j!=i share a weight.
SYMMETRIC_SLOTS = (0, 1, 1, 2, 3)


@keras.saving.register_keras_serializable(package="setnet")
class PermEquivariantQuadratic(keras.layers.Layer):
    """Permutation-equivariant quadratic map of sets, in closed form.

    ``y_k = Σ_{i,j} A[k,i,j] x_i x_j + x_k Λ + pool(x) Γ + b`` where the
    N x N x N tensor A is constant on the orbits of S_N on (output k, input i,
    input j) index triples (the symmetry engine's colors): 5 orbits, in the
    engine's canonical order

        0: k = i = j    1: k = i != j    2: k = j != i    3: i = j != k    4: all distinct

    with one weight per orbit per channel triple (c1, c2, unit), variable
    ``quadratic_kernel`` of shape ``(5, C_in, C_in, units)``. The output is
    exactly ``TiedEquivariantDense(colors=colors(symmetric(N), kind="quadratic"))``
    with the same weights (plus the linear term of ``PermEquivariantLinear``),
    but computed from per-set sums S_c = Σ_i x_ic and Q_cd = Σ_i x_ic x_id in
    O(N·C_in²·units) time: only the per-point outer product x_k ⊗ x_k meets a
    C_in² x units weight, never an N² or N³ array. For N = 2 the all-distinct
    orbit is empty (its weight has no effect) and for N = 1 only orbit 0 exists.

    ``symmetric=True`` uses the engine's ``"quadratic-sym"`` colors: 4 orbits
    (k = i != j and k = j != i share a weight, ``quadratic_kernel`` of shape
    ``(4, C_in, C_in, units)``). With one channel this loses nothing, because
    x_i x_j = x_j x_i. With C_in > 1 it spans a strictly smaller family than
    the general form (the term x_k1 S_2 - S_1 x_k2, antisymmetric in the
    channel pair, is lost): see docs/layers.md.

    ``rank=r`` factorises the channel mixing: ``a = x U``, ``b = x V`` with U, V
    of shape ``(C_in, r)``, the orbit sums of the r products ``a_s b_s``, then
    a ``(n_orbits, r, units)`` map; the effective weight is
    ``w[o, c1, c2, u] = Σ_s U[c1, s] V[c2, s] Z[o, s, u]``. Cost O(N·r·(C_in +
    n_orbits·units)) time and O(N·r) memory instead of O(N·C_in²·units) and
    O(N·C_in²), with ``2·C_in·r + n_orbits·r·units`` quadratic weights; it gives
    up every channel interaction outside that rank-r, orbit-shared subspace.

    Args:
        units: number of output channels.
        symmetric: use the 4-orbit symmetric form.
        pooling: ``"sum"`` (orbit sums; the exact tied map) or ``"mean"``
            (each orbit sum divided by its size: 1, n-1, n-1, n-1,
            (n-1)(n-2) for a set of n real points; the pooled linear term is
            the mean). Mean keeps magnitudes stable across set sizes, which
            matters here because the all-distinct orbit sum grows like n².
        rank: ``None`` for the full form, or the rank r of the factorised form.
        activation: activation applied to the output.
        use_bias: whether to add a per-channel bias.
        kernel_initializer: initializer for every kernel.
        bias_initializer: initializer for ``bias``.
        kernel_regularizer: regularizer for every kernel.
        bias_regularizer: regularizer for ``bias``.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Variables: ``quadratic_kernel`` (and, with ``rank``, ``quadratic_left`` and
    ``quadratic_right`` of shape ``(C_in, rank)``; then ``quadratic_kernel`` is
    ``(n_orbits, rank, units)``), ``lambda_kernel`` and ``gamma_kernel``
    ``(C_in, units)``, ``bias`` ``(units,)``.

    Input ``(batch, N, C_in)`` with N possibly ``None`` and an optional boolean
    mask ``(batch, N)``: the output for a padded set equals the output for the
    set of its real points, and padded outputs are zero. Output
    ``(batch, N, units)``; the mask is passed on.

    Example:

    >>> import numpy as np
    >>> from setnet.layers import PermEquivariantQuadratic
    >>> layer = PermEquivariantQuadratic(4, pooling="mean")
    >>> x = np.random.rand(2, 6, 3).astype("float32")
    >>> y = np.asarray(layer(x))
    >>> perm = np.random.permutation(6)
    >>> bool(np.allclose(layer(x[:, perm]), y[:, perm], atol=1e-5))
    True
    >>> tuple(layer.quadratic_kernel.shape)
    (5, 3, 3, 4)
    """

    def __init__(
        self,
        units,
        symmetric=False,
        pooling="sum",
        rank=None,
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
            raise ValueError(
                f"pooling must be one of {POOLINGS}, got {pooling!r} (a max over orbits is not a quadratic map)"
            )
        if rank is not None and (not isinstance(rank, int) or rank < 1):
            raise ValueError(f"rank must be None or a positive integer, got {rank!r}")
        self.units = units
        self.symmetric = bool(symmetric)
        self.pooling = pooling
        self.rank = rank
        self.activation = activations.get(activation)
        self.use_bias = use_bias
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.supports_masking = True

    @property
    def n_orbits(self):
        return 4 if self.symmetric else 5

    def build(self, input_shape):
        channels = set_ops.input_channels(self, input_shape)

        def kernel(name, shape):
            return self.add_weight(
                name=name, shape=shape, initializer=self.kernel_initializer, regularizer=self.kernel_regularizer
            )

        if self.rank is None:
            self.quadratic_kernel = kernel("quadratic_kernel", (self.n_orbits, channels, channels, self.units))
        else:
            self.quadratic_left = kernel("quadratic_left", (channels, self.rank))
            self.quadratic_right = kernel("quadratic_right", (channels, self.rank))
            self.quadratic_kernel = kernel("quadratic_kernel", (self.n_orbits, self.rank, self.units))
        self.lambda_kernel = kernel("lambda_kernel", (channels, self.units))
        self.gamma_kernel = kernel("gamma_kernel", (channels, self.units))
        self.bias = (
            self.add_weight(name="bias", shape=(self.units,), initializer=self.bias_initializer,
                            regularizer=self.bias_regularizer)
            if self.use_bias else None
        )

    def orbit_weights(self):
        """The full-rank weights in the general 5-orbit layout ``(5, C_in, C_in, units)``.

        For the symmetric form the shared weight is repeated; for the
        factorised form the rank-r product is expanded (tests and inspection;
        the forward pass never expands it).
        """
        if self.rank is None:
            w = self.quadratic_kernel
        else:
            w = ops.einsum("cs,ds,rso->rcdo", self.quadratic_left, self.quadratic_right, self.quadratic_kernel)
        return ops.take(w, SYMMETRIC_SLOTS, axis=0) if self.symmetric else w

    @set_ops.accepts_ragged
    def call(self, inputs, mask=None):
        m = set_ops.float_mask(mask, inputs)
        x = set_ops.mask_points(inputs, m)
        if self.rank is None:
            y = set_ops.orbit_quadratic(x, self.orbit_weights(), m, self.pooling)
        else:
            a = set_ops.point_matmul(x, self.quadratic_left)
            b = set_ops.point_matmul(x, self.quadratic_right)
            t = set_ops.orbit_quadratic_features(a, b, m, self.pooling)  # (batch, n, 5, rank)
            z = ops.take(self.quadratic_kernel, SYMMETRIC_SLOTS, axis=0) if self.symmetric else self.quadratic_kernel
            t = ops.reshape(t, (ops.shape(t)[0], ops.shape(t)[1], 5 * self.rank))
            y = set_ops.point_matmul(t, ops.reshape(z, (5 * self.rank, self.units)))
        pooled = set_ops.masked_pool(x, m, self.pooling)
        y = y + set_ops.point_matmul(x, self.lambda_kernel) + set_ops.set_term(pooled, self.gamma_kernel, x.dtype)
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
            "symmetric": self.symmetric,
            "pooling": self.pooling,
            "rank": self.rank,
            "activation": activations.serialize(self.activation),
            "use_bias": self.use_bias,
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
        }
