"""A dense layer whose weights are tied by orbit colors from the symmetry engine."""

from __future__ import annotations

import keras
import numpy as np
from keras import activations, initializers, ops, regularizers

from setnet.layers import set_ops


@keras.saving.register_keras_serializable(package="setnet")
class TiedEquivariantDense(keras.layers.Layer):
    """Equivariant dense map for any permutation group, with weights tied by color.

    ``colors`` (from ``setnet.symmetry.colors``) assigns every entry of the
    map's index space an orbit id. The layer holds one variable per color per
    channel pair and gathers the full kernel from them on each call, so every
    entry of one color is literally the same weight: its gradient is the sum of
    the gradients of the entries (the chain rule through the gather; this is
    the parameter sharing of Ravanbakhsh, Schneider & Póczos, ICML 2017,
    arXiv:1702.08389).

    - ``colors`` of shape ``(N_out, N_in)`` (kind ``"linear"``):
      ``y[k, o] = Σ_{i,c} W[colors[k, i], c, o] x[i, c]``; variable ``kernel``
      of shape ``(n_colors, C_in, units)``.
    - ``colors`` of shape ``(N_out, N_in, N_in)`` (kinds ``"quadratic"`` and
      ``"quadratic-sym"``): ``y[k, o] = Σ_{i,j,c,d} W[colors[k, i, j], c, d, o]
      x[i, c] x[j, d]``; ``kernel`` of shape ``(n_colors, C_in, C_in, units)``.

    N is fixed (that of ``colors``) and the gathered kernel has
    ``N_out·N_in·C_in·units`` (linear) or ``N_out·N_in²·C_in²·units``
    (quadratic) entries, built on every call. That makes this the slow
    reference the closed forms are tested against, and the layer to use for
    small groups with no closed form (C_n signals, C_n x C_m periodic grids,
    D_n); ``max_kernel_entries`` refuses sizes that would not fit in memory.

    Args:
        units: number of output channels.
        colors: int array of color ids 0..n-1, shape ``(N_out, N_in)`` or
            ``(N_out, N_in, N_in)`` (nested lists are accepted, for configs).
        use_bias: whether to add a bias.
        bias_colors: int array of shape ``(N_out,)`` (``colors(group, kind="bias")``)
            giving one bias per output orbit; ``None`` means one bias per unit
            shared by all outputs, which is equivariant for every group.
        activation: activation applied to the output.
        kernel_initializer, bias_initializer, kernel_regularizer,
            bias_regularizer: as for ``keras.layers.Dense``.
        max_kernel_entries: refuse to build when the gathered kernel would have
            more entries than this (default 2**28, i.e. 1 GiB of float32).
        **kwargs: base ``keras.layers.Layer`` arguments.

    Input: ``(batch, N_in, C_in)`` and an optional boolean mask ``(batch, N_in)``;
    padded points are zeroed before the map. When ``N_out == N_in`` the mask is
    passed on and padded outputs are zero; otherwise (e.g. folds) no mask is
    passed on. Output: ``(batch, N_out, units)``.

    Example:

    >>> import numpy as np
    >>> from setnet.symmetry import colors, cyclic
    >>> from setnet.layers import TiedEquivariantDense
    >>> layer = TiedEquivariantDense(2, colors=colors(cyclic(6)))
    >>> x = np.random.rand(1, 6, 3).astype("float32")
    >>> shift = np.roll(np.arange(6), 1)
    >>> bool(np.allclose(layer(x[:, shift]), np.asarray(layer(x))[:, shift], atol=1e-5))
    True
    >>> layer.count_params() == 6 * 3 * 2 + 2  # 6 colors of C6, 3 x 2 channel pairs, bias
    True
    """

    def __init__(
        self,
        units,
        colors,
        use_bias=True,
        bias_colors=None,
        activation=None,
        kernel_initializer="glorot_uniform",
        bias_initializer="zeros",
        kernel_regularizer=None,
        bias_regularizer=None,
        max_kernel_entries=2**28,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if not isinstance(units, int) or units < 1:
            raise ValueError(f"units must be a positive integer, got {units!r}")
        self.colors = _color_array(colors, "colors", (2, 3))
        self.bias_colors = None if bias_colors is None else _color_array(bias_colors, "bias_colors", (1,))
        if self.bias_colors is not None and self.bias_colors.shape[0] != self.colors.shape[0]:
            raise ValueError(
                f"bias_colors has {self.bias_colors.shape[0]} entries but colors has {self.colors.shape[0]} "
                "output points; use colors(group_in, group_out, kind='bias') for the same output action"
            )
        if self.colors.ndim == 3 and self.colors.shape[1] != self.colors.shape[2]:
            raise ValueError(f"quadratic colors must have shape (N_out, N_in, N_in), got {self.colors.shape}")
        self.order = "linear" if self.colors.ndim == 2 else "quadratic"
        self.units = units
        self.use_bias = use_bias
        self.activation = activations.get(activation)
        self.kernel_initializer = initializers.get(kernel_initializer)
        self.bias_initializer = initializers.get(bias_initializer)
        self.kernel_regularizer = regularizers.get(kernel_regularizer)
        self.bias_regularizer = regularizers.get(bias_regularizer)
        self.max_kernel_entries = int(max_kernel_entries)
        self.supports_masking = True

    @property
    def n_out(self):
        return int(self.colors.shape[0])

    @property
    def n_in(self):
        return int(self.colors.shape[1])

    @property
    def n_colors(self):
        return int(self.colors.max()) + 1

    def dense_kernel_entries(self, channels):
        """Entries of the gathered kernel for ``channels`` input channels."""
        per_pair = self.colors.size
        return per_pair * channels ** (1 if self.order == "linear" else 2) * self.units

    def build(self, input_shape):
        channels = set_ops.input_channels(self, input_shape)
        if input_shape[1] is not None and input_shape[1] != self.n_in:
            raise ValueError(
                f"TiedEquivariantDense '{self.name}' was given colors for {self.n_in} input points but the input "
                f"has {input_shape[1]}; build the colors for the group acting on these points"
            )
        entries = self.dense_kernel_entries(channels)
        if entries > self.max_kernel_entries:
            raise ValueError(
                f"TiedEquivariantDense '{self.name}': the gathered kernel would have {entries:,} entries "
                f"(> max_kernel_entries={self.max_kernel_entries:,}); use a closed-form layer "
                "(PermEquivariantLinear, PermEquivariantQuadratic, FoldedEquivariant) or raise max_kernel_entries"
            )
        shape = (self.n_colors, channels, self.units)
        if self.order == "quadratic":
            shape = (self.n_colors, channels, channels, self.units)
        self.kernel = self.add_weight(
            name="kernel", shape=shape, initializer=self.kernel_initializer, regularizer=self.kernel_regularizer
        )
        n_bias = 1 if self.bias_colors is None else int(self.bias_colors.max()) + 1
        self.bias = (
            self.add_weight(name="bias", shape=(n_bias, self.units), initializer=self.bias_initializer,
                            regularizer=self.bias_regularizer)
            if self.use_bias else None
        )

    def dense_kernel(self):
        """The full kernel gathered from the tied variables: ``(N_out, N_in, C_in, units)`` or
        ``(N_out, N_in, N_in, C_in, C_in, units)``."""
        return ops.take(self.kernel, ops.convert_to_tensor(self.colors), axis=0)

    def call(self, inputs, mask=None):
        m = set_ops.float_mask(mask, inputs)
        x = set_ops.mask_points(inputs, m)
        y = self.apply_kernel(x, self.dense_kernel())
        if self.bias is not None:
            if self.bias_colors is None:
                y = y + self.bias[0]
            else:
                y = y + ops.take(self.bias, ops.convert_to_tensor(self.bias_colors), axis=0)
        y = self.activation(y)
        return set_ops.mask_points(y, m) if self.n_out == self.n_in else y

    def apply_kernel(self, x, kernel):
        """The map with an explicit dense kernel (also used to check tied gradients)."""
        if self.order == "linear":
            return ops.einsum("bic,kico->bko", x, kernel)
        n, c = self.n_in, ops.shape(x)[-1]
        # One contraction over the flattened (i, c, j, d) index: kernel laid out as (k, i, c, j, d, o).
        outer = ops.reshape(ops.einsum("bic,bjd->bicjd", x, x), (-1, n * c * n * c))
        flat = ops.reshape(ops.transpose(kernel, (0, 1, 3, 2, 4, 5)), (self.n_out, n * c * n * c, self.units))
        return ops.einsum("bf,kfo->bko", outer, flat)

    def compute_mask(self, inputs, mask=None):
        return mask if self.n_out == self.n_in else None

    def compute_output_shape(self, input_shape):
        return (input_shape[0], self.n_out, self.units)

    def get_config(self):
        return {
            **super().get_config(),
            "units": self.units,
            "colors": self.colors.tolist(),
            "use_bias": self.use_bias,
            "bias_colors": None if self.bias_colors is None else self.bias_colors.tolist(),
            "activation": activations.serialize(self.activation),
            "kernel_initializer": initializers.serialize(self.kernel_initializer),
            "bias_initializer": initializers.serialize(self.bias_initializer),
            "kernel_regularizer": regularizers.serialize(self.kernel_regularizer),
            "bias_regularizer": regularizers.serialize(self.bias_regularizer),
            "max_kernel_entries": self.max_kernel_entries,
        }


def _color_array(values, what, ndims):
    arr = np.asarray(values)
    if arr.ndim not in ndims or arr.size == 0 or not np.issubdtype(arr.dtype, np.integer):
        raise ValueError(
            f"{what} must be a non-empty integer array with {' or '.join(map(str, ndims))} dimensions "
            f"(from setnet.symmetry.colors), got dtype {arr.dtype} and shape {arr.shape}"
        )
    ids = np.unique(arr)
    if ids[0] != 0 or ids[-1] != ids.size - 1:
        raise ValueError(f"{what} must use every color id 0..n-1 (canonical colors); got ids {ids.tolist()[:10]}...")
    return arr.astype(np.int64)
