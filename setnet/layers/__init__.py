"""Equivariant Keras layers for sets, built on the orbit colors of `setnet.symmetry`.

Every layer takes sets ``(batch, N, C_in)`` with N dynamic and an optional
boolean mask ``(batch, N)``; padded points never change the outputs of real
points and padded outputs are zero. `PermEquivariantLinear`,
`PermEquivariantQuadratic`, `SetNormalization` and `MaskedGlobalPooling` also
take a ``tf.RaggedTensor`` of sets ``(batch, None, C_in)``: padded and masked
inside (`set_ops.accepts_ragged`), with the answers of the padded-and-masked
form; `RaggedSets` turns one into the ``{"points", "mask"}`` inputs of a set
model. (`FoldedEquivariant` and `TiedEquivariantDense` pair or index points by
position and take dense sets.) See docs/layers.md.
"""

from setnet.layers.folded_equivariant import FoldedEquivariant
from setnet.layers.masked_global_pooling import MaskedGlobalPooling
from setnet.layers.perm_equivariant_linear import PermEquivariantLinear
from setnet.layers.perm_equivariant_quadratic import PermEquivariantQuadratic
from setnet.layers.ragged_sets import RaggedSets
from setnet.layers.set_normalization import SetNormalization
from setnet.layers.tied_equivariant_dense import TiedEquivariantDense

__all__ = [
    "FoldedEquivariant", "MaskedGlobalPooling", "PermEquivariantLinear", "PermEquivariantQuadratic",
    "RaggedSets", "SetNormalization", "TiedEquivariantDense",
]
