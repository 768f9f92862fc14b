"""The symmetry engine: permutation groups and the orbit colors that tie weights.

>>> from setnet.symmetry import parse, colors, count
>>> count(parse("S5"), kind="quadratic")
5
"""

from setnet.symmetry.colors import MAPS, colors, count, orbits
from setnet.symmetry.groups import (
    FoldError,
    PermGroup,
    cyclic,
    dihedral,
    disjoint_union,
    fold,
    fold_pairs,
    halves_fold,
    hyperoctahedral,
    parse,
    product,
    restrict,
    seed_fold_group,
    symmetric,
    trivial,
)
from setnet.symmetry.nullspace import dimension

__all__ = [
    "MAPS", "FoldError", "PermGroup", "colors", "count", "cyclic", "dihedral", "dimension",
    "disjoint_union", "fold", "fold_pairs", "halves_fold", "hyperoctahedral", "orbits", "parse",
    "product", "resolve_map", "restrict", "seed_fold_group", "symmetric", "trivial",
]


FOLDED_MAPS = ("folded-linear", "folded-quadratic", "folded-quadratic-sym")


def resolve_map(group: PermGroup, map_name: str):
    """(group_out, kind) for a CLI map name; folded maps take Y = X / (i ~ i + n/2)."""
    if map_name in MAPS:
        return None, map_name
    if map_name in FOLDED_MAPS:
        if group.degree % 2:
            raise FoldError(f"{group.name} acts on {group.degree} points; a fold onto halves needs an even number")
        return fold(group, halves_fold(group.degree // 2)), map_name[len("folded-"):]
    raise ValueError(f"unknown map {map_name!r}; expected one of {', '.join(MAPS + FOLDED_MAPS)}")
