"""Spectral reading of equivariant networks: isotypic decompositions, interaction graphs of
pointwise activations, and layer-by-layer spectra of trained networks, after Gibson, Tubbenhauer &
Williamson, "Equivariant neural networks and piecewise linear representation theory" (arXiv:2408.00949).

>>> from setnet.spectral import decompose
>>> decompose("C8").labels
['k=0', 'k=1', 'k=2', 'k=3', 'k=4']
"""

from setnet.spectral.interaction import (
    ACTIVATIONS,
    InteractionGraph,
    PLFit,
    cyclic_rule,
    kernel_bound,
    kernel_rule,
    measure_graph,
    pl_map_fit,
)
from setnet.spectral.isotypic import (
    Component,
    Isotypic,
    cyclic_fourier,
    decompose,
    numerical,
    torus_fourier,
    two_transitive,
)
from setnet.spectral.spectrum import (
    network_spectrum,
    plot_spectrum,
    spectrum_metrics,
    spectrum_table,
    write_spectrum_artifacts,
)

__all__ = [
    "ACTIVATIONS", "InteractionGraph", "PLFit", "cyclic_rule", "kernel_bound", "kernel_rule", "measure_graph",
    "pl_map_fit",
    "Component", "Isotypic", "cyclic_fourier", "decompose", "numerical",
    "torus_fourier", "two_transitive", "network_spectrum", "plot_spectrum",
    "spectrum_metrics", "spectrum_table", "write_spectrum_artifacts",
]
