"""The model section: which blocks, which head, and every default, defined once.

`ModelConfig` is what `build_classifier` builds and what the ``model`` section of a training
config (`pipelines.config`) holds. Blocks are `LinearBlock`, `QuadraticBlock` or `FoldedBlock`;
in a mapping the ``kind`` key picks one. Every value is checked when the config is built, so a
`ModelConfig` that exists describes a model that can be built.

This module imports no TensorFlow: configs validate before the framework loads.

Example:

>>> cfg = ModelConfig.from_dict({"blocks": [{"kind": "linear", "units": 8},
...                                         {"kind": "quadratic", "units": 8, "rank": 2}], "head": [8]})
>>> [type(b).__name__ for b in cfg.blocks], cfg.blocks[1].symmetric, cfg.head
(['LinearBlock', 'QuadraticBlock'], True, (8,))
>>> ModelConfig(head_dropout=1.0)
Traceback (most recent call last):
...
setnet.config.ConfigError: head_dropout: must be < 1.0, got 1.0
"""

from __future__ import annotations

import dataclasses
from typing import Any, Mapping

from setnet.config import ConfigError, Section, apply, setting

BLOCK_KINDS = ("linear", "quadratic", "folded")


@dataclasses.dataclass(frozen=True)
class Block(Section):
    """Keys every block has: ``layer -> SetNormalization -> activation -> dropout``."""

    kind: str = setting("linear", "equivariant layer type", choices=BLOCK_KINDS)
    units: int = setting(64, "output channels", min=1, max=1 << 16)
    pooling: str = setting("mean", "pool used inside the layer", choices=("sum", "mean", "max"))
    activation: str = setting("relu", "activation after normalisation", choices=("relu", "gelu", "tanh", "linear"))
    normalization: bool = setting(True, "SetNormalization after the layer")
    dropout: float = setting(0.0, "dropout rate after the block", min=0.0, max=1.0, max_exclusive=True)

    def summary(self) -> str:
        return f"{self.kind} {self.units}"

    def check(self):
        own = _KIND_OF.get(type(self))
        if own is not None and self.kind != own:
            raise ConfigError(f"kind: a {type(self).__name__} has kind {own!r}, got {self.kind!r}")
        if self.kind in ("quadratic", "folded") and self.pooling == "max":
            raise ConfigError(f"pooling: a {self.kind} block pools with sum or mean, got 'max'")


@dataclasses.dataclass(frozen=True)
class LinearBlock(Block):
    """`PermEquivariantLinear`: y = xΛ + pool(x)Γ + b (Zaheer et al., "Deep Sets", arXiv:1703.06114)."""


@dataclasses.dataclass(frozen=True)
class QuadraticBlock(Block):
    """`PermEquivariantQuadratic`: an orbit-tied quadratic term plus the linear one."""

    kind: str = setting("quadratic", "equivariant layer type", choices=BLOCK_KINDS)
    symmetric: bool = setting(True, "identify x_i x_j with x_j x_i (4 orbits instead of 5)")
    rank: int | None = setting(None, "factorised quadratic kernel rank (null: full kernel)", min=1)


@dataclasses.dataclass(frozen=True)
class FoldedBlock(Block):
    """`FoldedEquivariant` over the block's input stacked with the previous block's input."""

    kind: str = setting("folded", "equivariant layer type", choices=BLOCK_KINDS)
    group: str = setting("hyperoctahedral", "fold group", choices=("pairs", "hyperoctahedral"))
    order: str = setting("linear", "folded map order", choices=("linear", "quadratic"))


BLOCKS: dict[str, type[Block]] = {"linear": LinearBlock, "quadratic": QuadraticBlock, "folded": FoldedBlock}
_KIND_OF = {cls: kind for kind, cls in BLOCKS.items()}


@dataclasses.dataclass(frozen=True)
class ModelConfig(Section):
    """The classifier: input features, equivariant blocks in order, invariant pooling, dense head.

    Build one from keyword arguments (``ModelConfig(head=(64,))``) or from a mapping with
    `from_dict`; `setnet.models.build_classifier` accepts either.
    """

    type: str = setting("setnet", "architecture (pointnet: PointNet with SetNormalization, exact under padding; "
                        "pointnet_bn: with Keras' BatchNormalization, for fixed-size sets)",
                        choices=("setnet", "pointnet", "pointnet_bn"))
    blocks: tuple[Block, ...] = setting((LinearBlock(units=64), LinearBlock(units=128)),
                                        "equivariant blocks, in order", variants=BLOCKS)
    global_pool: str = setting("max", "masked invariant pooling over the set", choices=("max", "mean", "sum"))
    head: tuple[int, ...] = setting((128,), "hidden units of the classification head", item_min=1)
    head_dropout: float = setting(0.3, "dropout rate in the head", min=0.0, max=1.0, max_exclusive=True)
    l2: float = setting(0.0, "L2 weight regularisation", min=0.0, max=1.0)
    input_norm: str = setting("center_scale", "per-set input normalisation", choices=("none", "center", "center_scale"))
    radius_feature: bool = setting(True, "append each point's distance to the centroid as a 4th channel")
    norm_momentum: float = setting(0.9, "momentum of SetNormalization's moving statistics", min=0.0, max=1.0,
                                   max_exclusive=True)

    def check(self):
        if self.type == "setnet" and self.blocks[0].kind == "folded":
            raise ConfigError("blocks[0]: a folded block pairs its input with the previous block's input, "
                              "so it cannot be the first block; put a linear or quadratic block before it")

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> ModelConfig:
        """The defaults updated by `data` (keys of this class; ``blocks`` as a list of mappings).

        Raises:
            ConfigError: unknown key (naming the nearest), wrong type or value, naming `source`.
        """
        return apply(cls(), data, source=source)
