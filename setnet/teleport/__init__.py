"""Symmetry teleportation: exact parameter symmetries and gradient-norm ascent on them.

After Zhao, Dehmamy, Walters & Yu, "Symmetry Teleportation for Accelerated Optimization",
NeurIPS 2022 (arXiv:2205.10637), and Zhao, Gower, Walters & Yu, "Improving Convergence and
Generalization Using Parameter Symmetries", ICLR 2024 (arXiv:2305.13404).

- `find_symmetries(model)`: channel symmetries read from the layer graph (positive
  scaling across ReLU/LeakyReLU/linear, GL(h) across linear, channel permutations).
- `teleport(model, x, y, loss, ...)`: moves the weights in place along those
  symmetries to a point of larger gradient norm; the function is unchanged.
- `TeleportCallback`: teleports during `model.fit` on a schedule; its figures go to an optional
  `log_metrics` callable (e.g. `mlflow.log_metrics`), `teleport_figures` builds them.

docs/teleport.md has the maths, the optimizer-state policy and the measured results.
"""

from setnet.teleport.config import TeleportConfig

__all__ = [
    "GROUPS", "OPTIMIZER_STATE_POLICIES", "ChannelSymmetry", "SymmetryReport", "TeleportCallback",
    "TeleportConfig", "WeightRole", "find_symmetries", "mix_channels", "permute_channels",
    "scale_channels", "teleport", "teleport_figures",
]

_LAZY = {
    "TeleportCallback": "callback", "teleport_figures": "callback",
    "ChannelSymmetry": "symmetries", "SymmetryReport": "symmetries", "WeightRole": "symmetries",
    "find_symmetries": "symmetries", "mix_channels": "symmetries", "permute_channels": "symmetries",
    "scale_channels": "symmetries",
    "GROUPS": "ascent", "OPTIMIZER_STATE_POLICIES": "ascent", "teleport": "ascent",
}


def __getattr__(name):
    # TensorFlow loads when teleporting, not when a training config reads `TeleportConfig`.
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"setnet.teleport.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'setnet.teleport' has no attribute {name!r}")
