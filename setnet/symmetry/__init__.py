"""The symmetry engine: permutation groups and the orbit colors that tie weights.

>>> from setnet.symmetry import parse, colors, count
>>> count(parse("S5"), kind="quadratic")
5

Groups are written in one grammar (``GRAMMAR``), shared with ``setnet.spectral``
and ``setnet.gsnn``: ``S5``, ``C2xC4`` (= ``C2*C4``), ``S3+C4``, ``Q8``, ``C2^3``.
"""

from setnet.symmetry.colors import (
    DEFAULT_MAX_MEMORY,
    MAPS,
    MemoryLimitError,
    colors,
    count,
    memory_estimate,
    orbits,
    output_action,
    tuple_moves,
)
from setnet.symmetry.groups import (
    GRAMMAR,
    FoldError,
    GroupSpecError,
    PermGroup,
    build,
    cyclic,
    dihedral,
    disjoint_union,
    fold,
    fold_pairs,
    halves_fold,
    hyperoctahedral,
    parse,
    parse_spec,
    permutation_matrix,
    product,
    quaternion,
    restrict,
    seed_fold_group,
    symmetric,
    trivial,
)
from setnet.symmetry.nullspace import dimension

__all__ = [
    "DEFAULT_MAX_MEMORY", "GRAMMAR", "MAPS", "FoldError", "GroupSpecError", "MemoryLimitError", "PermGroup",
    "build", "colors", "count", "cyclic", "dihedral", "dimension", "disjoint_union", "fold", "fold_pairs",
    "halves_fold", "hyperoctahedral", "memory_estimate", "orbits", "output_action", "parse", "parse_spec",
    "permutation_matrix", "product", "quaternion", "resolve_map", "restrict", "seed_fold_group", "symmetric",
    "trivial", "tuple_moves",
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
