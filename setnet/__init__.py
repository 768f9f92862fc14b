"""setnet: permutation-equivariant Keras layers for set and point-cloud data.

Subpackages:
  symmetry  permutation groups and the orbit "colors" that tie weights
  layers    equivariant Keras layers built on those colors
"""

__version__ = "0.1.0"
