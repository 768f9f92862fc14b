"""The teleportation config section (`train.teleport` in a training config).

Loads no TensorFlow, so a training config validates before the framework starts.
"""

from __future__ import annotations

import dataclasses

from setnet.config import Section, setting


@dataclasses.dataclass(frozen=True)
class TeleportConfig(Section):
    """Symmetry teleportation (Zhao et al., arXiv:2205.10637) on a schedule during training:
    the section `setnet.teleport.TeleportCallback.from_config_section` reads."""

    enabled: bool = setting(False, "teleport the weights along exact parameter symmetries")
    group: str = setting("scaling", "symmetry group to teleport along", choices=("scaling", "gl", "auto"))
    epochs: tuple[int, ...] = setting((0,), "teleport at the start of these epochs (0-based)", item_min=0)
    steps: tuple[int, ...] = setting((), "... and before these optimizer steps (0-based global step)", item_min=0)
    max_teleports: int = setting(3, "at most this many teleports in the whole run", min=0)
    ascent_steps: int = setting(10, "gradient-ascent steps per teleport", min=1, max=10000)
    learning_rate: float = setting(0.1, "ascent step size on log ‖∇L‖²", min=0.0, min_exclusive=True)
    max_grad_norm: float | None = setting(None, "cap on ‖∇L‖ after a teleport (null: none)", min=0.0,
                                          min_exclusive=True)
    max_grad_growth: float | None = setting(None, "cap on the factor ‖∇L‖ may grow by in a teleport (null: none)",
                                            min=1.0)
    optimizer_state: str = setting("transform", "map the optimizer state along (transform) or keep it",
                                   choices=("transform", "keep"))
