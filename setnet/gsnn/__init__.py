"""G-invariant shallow ReLU networks: Agrawal & Ostrowski, "A Classification of G-invariant Shallow
Neural Networks", NeurIPS 2022, arXiv:2205.09219.

Enumerate the irreducible G-SNN architectures of a finite orthogonal group,
build them in Keras, and grow one into another without changing its function.

>>> from setnet.gsnn import parse_group, count
>>> count(parse_group("C6"))
{'type1': 4, 'type2': 2, 'total': 6}

``GInvariantShallow`` and ``build_model`` live in ``setnet.gsnn.model``, which
imports Keras; they are loaded on first access so that the rest (and the CLI)
stays light.
"""

from setnet.gsnn.classify import Pair, classify, count, enumerate_architectures, weight_space
from setnet.gsnn.groups import (
    FiniteGroup,
    direct_sum,
    hyperoctahedral_signed,
    matrix_generators,
    parse_group,
    quaternion_regular,
    rotation,
    signed_perm_matrix,
)
from setnet.gsnn.morphisms import Morphism, find_conjugator, grow, morphisms

__all__ = [
    "FiniteGroup", "GInvariantShallow", "Morphism", "Pair", "build_model", "classify", "count", "direct_sum",
    "enumerate_architectures", "find_conjugator", "grow", "hyperoctahedral_signed", "matrix_generators", "morphisms",
    "parse_group", "quaternion_regular", "rotation", "signed_perm_matrix", "weight_space",
]


def __getattr__(name):
    if name in ("GInvariantShallow", "build_model"):
        from setnet.gsnn import model

        return getattr(model, name)
    raise AttributeError(f"module 'setnet.gsnn' has no attribute {name!r}")
