"""A layer that keeps chosen isotypic components of a signal and drops the rest."""

from __future__ import annotations

import keras
import numpy as np
from keras import ops


@keras.saving.register_keras_serializable(package="setnet")
class IsotypicFilter(keras.layers.Layer):
    """Project ``(batch, N, C)`` onto a sum of isotypic components along the N axis.

    The projector Σ_{ρ kept} P_ρ commutes with the group, so the layer is
    equivariant; it has no weights. Used to prune the high-frequency channels
    of a C_n network (``docs/spectral.md``) or to build a network that never
    carries them.

    Args:
        group: a group spec for ``setnet.symmetry.parse`` (e.g. ``"C16"``).
        keep: the components to keep: names (``"k3"``), labels (``"k=3"``)
            or indices into the decomposition's components.
        **kwargs: base ``keras.layers.Layer`` arguments.

    Example:

    >>> import numpy as np
    >>> from setnet.spectral.isotypic_filter import IsotypicFilter
    >>> low = IsotypicFilter("C8", keep=["k0", "k1"])
    >>> x = np.cos(2 * np.pi * 3 * np.arange(8) / 8)[None, :, None].astype("float32")
    >>> float(np.abs(low(x)).max()) < 1e-6  # frequency 3 is removed
    True
    """

    def __init__(self, group, keep, **kwargs):
        super().__init__(**kwargs)
        from setnet.spectral.isotypic import decompose

        if not isinstance(group, str):
            raise ValueError(f"group must be a spec string such as 'C16' (it is saved in the config), got {group!r}")
        self.group = group
        self.keep = [k if isinstance(k, str) else int(k) for k in keep]
        decomp = decompose(group)
        idx = sorted({k if isinstance(k, int) else decomp.index(k) for k in self.keep})
        if any(i < 0 or i >= len(decomp) for i in idx):
            raise ValueError(f"component index out of range: {self.keep}; {group} has {len(decomp)} components")
        basis = np.concatenate([decomp.components[i].basis for i in idx], axis=1) if idx else np.zeros((decomp.degree, 0))
        self.degree = decomp.degree
        self._projector = (basis @ basis.T).astype("float32")
        self.supports_masking = True

    def build(self, input_shape):
        if input_shape[1] is not None and input_shape[1] != self.degree:
            raise ValueError(f"IsotypicFilter for {self.group} needs {self.degree} points, the input has {input_shape[1]}")

    def call(self, inputs):
        p = ops.convert_to_tensor(self._projector, dtype=inputs.dtype)
        return ops.einsum("ij,bjc->bic", p, inputs)

    def compute_output_shape(self, input_shape):
        return input_shape

    def get_config(self):
        return {**super().get_config(), "group": self.group, "keep": self.keep}
