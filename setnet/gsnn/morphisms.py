"""Network morphisms between G-SNN architectures (the second theorem of Agrawal & Ostrowski, arXiv:2205.09219).

An architecture (H, chi) embeds into (H', chi') when, after conjugating by
some c in G, H' sits inside H and chi' is chi restricted to it:
c H' c^-1 <= H and chi(c h' c^-1) = chi'(h'). Then w in V(H, chi) gives
w' = c^-1 w in V(H', chi'), and since

    f_(H,chi),w(x) = a * sum_{g in G/K} ReLU(<g w, x> + b)

with K = ker chi, each coset gK splitting into [K : c K' c^-1] cosets of the
smaller kernel, the wider network with w' = c^-1 w, b' = b and
a' = a |K'| / |K| computes the same function. Neural architecture search can
use these maps to grow a network from width [G:H] to [G:H'] without changing
what it computes.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from setnet.gsnn.classify import Pair


@dataclasses.dataclass(frozen=True)
class Morphism:
    """An inclusion map from architecture ``source`` into the wider ``target``.

    Attributes:
        source, target: indices into ``classify(G)``.
        conjugator: the element c with c H' c^-1 <= H and chi' = chi(c . c^-1).
        scale: a' / a = |K'| / |K|.
        covering: no architecture lies strictly between source and target.
    """

    source: int
    target: int
    conjugator: int
    scale: float
    covering: bool = True


def find_conjugator(source: Pair, target: Pair) -> int | None:
    """An element c with c H' c^-1 <= H and chi(c h c^-1) = chi'(h) on H', or None."""
    if source.group is not target.group:
        raise ValueError("architectures of different groups")
    G = source.group
    if len(source.H) % len(target.H) or source is target:
        return None
    h_src, k_src = set(source.H), set(source.K)
    h_tgt = np.asarray(target.H)
    k_tgt = set(target.K)
    for c in range(G.order):
        image = G.table[G.table[c, h_tgt], G.inverse[c]]
        if not set(image.tolist()) <= h_src:
            continue
        if all((int(y) in k_src) == (int(x) in k_tgt) for x, y in zip(h_tgt, image)):
            return c
    return None


def morphisms(architectures: list[Pair]) -> list[Morphism]:
    """Every inclusion map between the given architectures, marking the covering ones."""
    found = []
    for s in architectures:
        for t in architectures:
            c = find_conjugator(s, t)
            if c is not None:
                found.append((s.index, t.index, c, len(t.K) / len(s.K)))
    edges = {(s, t) for s, t, _, _ in found}
    mids = {s: {t for a, t in edges if a == s} for s, _, _, _ in found}
    out = []
    for s, t, c, scale in found:
        covering = not any((m, t) in edges for m in mids.get(s, ()) if m != t)
        out.append(Morphism(s, t, c, scale, covering))
    return out


def grow(source: Pair, target: Pair, coeffs, a=1.0, b=0.0, morphism: Morphism | None = None):
    """Parameters of ``target`` that compute the same function as ``source`` with (coeffs, a, b).

    Returns ``(coeffs', a', b')``; raises ValueError when no inclusion map exists.
    """
    c = morphism.conjugator if morphism is not None else find_conjugator(source, target)
    if c is None:
        raise ValueError(
            f"no inclusion map from pair #{source.index} ({source.label}) into pair #{target.index} "
            f"({target.label}): it needs c H' c^-1 <= H with the sign character restricting to chi'"
        )
    w = source.weight(coeffs)
    w_new = source.group.elements[c].T @ w  # c^-1 = c^T for an orthogonal matrix
    new_coeffs = target.basis @ w_new
    residual = np.abs(new_coeffs @ target.basis - w_new).max(initial=0.0)
    if residual > 1e-8 * max(1.0, np.abs(w).max(initial=0.0)):  # pragma: no cover - the algebra guarantees it
        raise AssertionError(f"grown weight left the target weight space (residual {residual:.2g})")
    return new_coeffs, a * len(target.K) / len(source.K), b
