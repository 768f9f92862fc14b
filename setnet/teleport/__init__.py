"""Symmetry teleportation (seed 002): exact parameter symmetries and gradient-norm ascent on them.

- `find_symmetries(model)`: channel symmetries read from the layer graph (positive
  scaling across ReLU/LeakyReLU/linear, GL(h) across linear, channel permutations).
- `teleport(model, x, y, loss, ...)`: moves the weights in place along those
  symmetries to a point of larger gradient norm; the function is unchanged.
- `TeleportCallback`: teleports during `model.fit` on a schedule, logging to MLflow.

docs/teleport.md has the maths, the optimizer-state policy and the measured results.
"""

from setnet.teleport.callback import CONFIG_DEFAULTS, TeleportCallback
from setnet.teleport.symmetries import (
    ChannelSymmetry, SymmetryReport, WeightRole, find_symmetries, mix_channels, permute_channels,
    scale_channels,
)
from setnet.teleport.teleport import GROUPS, OPTIMIZER_STATE_POLICIES, teleport

__all__ = [
    "CONFIG_DEFAULTS", "GROUPS", "OPTIMIZER_STATE_POLICIES", "ChannelSymmetry", "SymmetryReport",
    "TeleportCallback", "WeightRole", "find_symmetries", "mix_channels", "permute_channels",
    "scale_channels", "teleport",
]
