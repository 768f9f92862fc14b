"""The classification of G-invariant shallow ReLU networks (G-SNNs) of Agrawal & Ostrowski,
"A Classification of G-invariant Shallow Neural Networks", NeurIPS 2022, arXiv:2205.09219.

Every irreducible G-SNN comes from a pair (H, K): K <= H <= G, [H:K] <= 2,
taken up to simultaneous conjugation, or equivalently from H with a sign
character chi: H -> {+1, -1} whose kernel is K. One hidden neuron per coset
gH of G/H, with weight g.w, where w lies in the weight space

    V = {w in R^d : h.w = chi(h) w for every h in H}
      = image of P_K - tau P_H,   tau = [H:K] - 1,

(fixed by H for type 1, K = H; fixed by K and negated by H \\ K for type 2).
G permutes the neurons with signs: g t_i = t_j h gives g.w_i = chi(h) w_j,
the signed permutation representation of G on G/H induced from chi.

The function. Type 1 neurons are ordinary ReLUs; the network
    f(x) = a * sum_{gH} ReLU(<g.w, x> + b)
is invariant because G only permutes the neurons. A type 2 neuron is defined
up to sign (h in H \\ K negates w), so it must be an even function of its
pre-activation; the neuron is the pair
    ReLU(<g.w, x> + b) + ReLU(-<g.w, x> + b)     (= |<g.w, x>| when b = 0),
i.e. the ReLUs of the orbit G/K. Both cases are one formula: a times the sum
of ReLU(<g.w, x> + b) over g in G/K.

When is a pair an architecture of its own? For a generic w in V, S = the
elements fixing w and L = the elements fixing the line R w. If S = K and
L = H the neurons are pairwise distinct up to sign and (H, K) is read back
from the weights; otherwise the network equals that of the pair (L, S).
The paper's test is st_G(P_K - tau P_H) = K, i.e. S = K (an element fixes
every vector of V iff it fixes a generic one). For type 2 that already forces
L = H (if g outside H negated V, g h would fix it for h in H \\ K), but for
type 1 an element outside H may act as -1 on Fix(H) (-I in rot<2m>, B<n>):
then the neurons come in +-pairs, the network is the type 2 network of (L, H),
and we reject the pair as a duplicate; ``paper_condition`` keeps the paper's
test alone so both counts can be compared.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np
from setnet.gsnn.groups import FiniteGroup

_TOL = 1e-8


@dataclasses.dataclass(frozen=True, eq=False)
class Pair:
    """One class of pairs (H, K) with everything the classification derives from it.

    Attributes:
        group: the group G.
        index: position in ``classify(G)``.
        H, K: class representatives, sorted tuples of element indices.
        basis: (k, d) orthonormal rows spanning the weight space V.
        cosets: representatives t_i of the left cosets t_i H (t_0 = identity).
        stabiliser: elements that fix every weight in V, st_G(P_K - tau P_H).
        line_stabiliser: elements that map every weight in V to +-itself.
        reason: why the pair is not an architecture, or None when it is.
        duplicates: for a rejected pair with V != 0, the index of the pair (L, S) it equals.
    """

    group: FiniteGroup
    index: int
    H: tuple
    K: tuple
    basis: np.ndarray
    cosets: tuple
    stabiliser: tuple
    line_stabiliser: tuple
    reason: str | None
    duplicates: int | None = None

    @property
    def kind(self) -> int:
        """1 when K = H, 2 when [H:K] = 2."""
        return 1 if len(self.K) == len(self.H) else 2

    @property
    def width(self) -> int:
        """Hidden width [G:H] (a type 2 neuron is a +-pair of ReLUs)."""
        return self.group.order // len(self.H)

    @property
    def dim(self) -> int:
        """Dimension of the weight space V."""
        return int(self.basis.shape[0])

    @property
    def ok(self) -> bool:
        return self.reason is None

    @property
    def paper_condition(self) -> bool:
        """The paper's test alone: V != 0 and st_G(P_K - tau P_H) = K."""
        return self.dim > 0 and len(self.stabiliser) == len(self.K)

    @property
    def label(self) -> str:
        g = self.group
        return f"H={g.subgroup_label(self.H)} K={_kernel_label(g, self.H, self.K)}"

    def chi(self, h: int) -> int:
        """The sign character chi: H -> {+1, -1} with kernel K."""
        if h in self._k_set:
            return 1
        if h in self._h_set:
            return -1
        raise ValueError(f"element {h} is not in H")

    @functools.cached_property
    def _h_set(self):
        return frozenset(self.H)

    @functools.cached_property
    def _k_set(self):
        return frozenset(self.K)

    def signed_rep(self, g: int) -> np.ndarray:
        """rho(g): the signed permutation matrix of g on the neurons G/H.

        g t_i = t_j h with h in H gives rho(g)[j, i] = chi(h); rho is a homomorphism
        and the pre-activations obey z(g x) = rho(g) z(x).
        """
        G = self.group
        m = len(self.cosets)
        coset_of = self._coset_of()
        rho = np.zeros((m, m))
        for i, t in enumerate(self.cosets):
            gt = int(G.table[g, t])
            j = coset_of[gt]
            h = int(G.table[G.inverse[self.cosets[j]], gt])
            rho[j, i] = self.chi(h)
        return rho

    def _coset_of(self) -> np.ndarray:
        G = self.group
        out = np.empty(G.order, dtype=np.int64)
        for i, t in enumerate(self.cosets):
            out[G.table[t, np.asarray(self.H)]] = i
        return out

    def weight(self, coeffs) -> np.ndarray:
        """w = coeffs @ basis, a vector of V."""
        return np.asarray(coeffs, dtype=np.float64) @ self.basis

    def weight_matrix(self, coeffs) -> np.ndarray:
        """The ([G:H], d) first-layer weights: row i is t_i . w."""
        w = self.weight(coeffs)
        return self.group.elements[np.asarray(self.cosets)] @ w

    def pattern_basis(self) -> np.ndarray:
        """(k, [G:H], d): the weight matrix of each basis vector; the layer's fixed tensor."""
        return np.einsum("kd,mcd->kmc", self.basis, self.group.elements[np.asarray(self.cosets)])

    def __call__(self, x, coeffs, a=1.0, b=0.0) -> np.ndarray:
        """The network a * sum_i phi(<w_i, x> + b) in numpy (the reference for the Keras layer)."""
        z = np.asarray(x, dtype=np.float64) @ self.weight_matrix(coeffs).T
        h = np.maximum(z + b, 0.0)
        if self.kind == 2:
            h = h + np.maximum(-z + b, 0.0)
        return a * h.sum(axis=-1)


def _kernel_label(g: FiniteGroup, h, k) -> str:
    if len(k) == len(h):
        return "H"
    if len(k) == 1:
        return "1"
    return "<" + ", ".join(g.element_label(x) for x in g.small_generating_set(k)) + ">"


def weight_space(group: FiniteGroup, H, K) -> np.ndarray:
    """Orthonormal rows spanning V = image of P_K - tau P_H."""
    tau = len(H) // len(K) - 1
    m = group.projection(K) - tau * group.projection(H)
    vals, vecs = np.linalg.eigh((m + m.T) / 2)
    return vecs[:, vals > 0.5].T.copy()


def _stabilisers(group: FiniteGroup, basis: np.ndarray):
    if basis.shape[0] == 0:
        return tuple(range(group.order)), tuple(range(group.order))
    moved = np.einsum("gab,kb->gka", group.elements, basis)  # g applied to each basis vector
    plus = np.abs(moved - basis[None]).max(axis=(1, 2)) < _TOL
    minus = np.abs(moved + basis[None]).max(axis=(1, 2)) < _TOL
    return tuple(np.flatnonzero(plus).tolist()), tuple(np.flatnonzero(plus | minus).tolist())


def classify(group: FiniteGroup) -> list[Pair]:
    """Every pair class (H, K) of G, with its weight space and whether it is an architecture."""
    # Cached on the group itself (its subgroup cache), so it is freed with the group.
    if "gsnn_pairs" in group._subgroup_cache:
        return group._subgroup_cache["gsnn_pairs"]
    raw = []
    pairs = group.pairs()
    for H, K in pairs:
        basis = weight_space(group, H, K)
        st, line = _stabilisers(group, basis)
        raw.append((H, K, basis, st, line))
    index_of = {(H, K): i for i, (H, K, *_rest) in enumerate(raw)}
    out = []
    for i, (H, K, basis, st, line) in enumerate(raw):
        reason, dup = None, None
        if basis.shape[0] == 0:
            what = "fixed by H" if len(K) == len(H) else "fixed by K and negated by H \\ K"
            reason = f"weight space is zero: no nonzero w is {what}, so the network is constant"
        elif len(st) != len(K) or len(line) != len(H):
            dup = index_of[group.canonical_pair(line, st)]
            if len(st) != len(K):
                who = group.element_label(next(g for g in st if g not in set(K)))
                reason = (f"stabiliser condition fails: st_G(P_K - tau P_H) has order {len(st)} > |K| = {len(K)} "
                          f"({who} outside K fixes every admissible weight), so neurons coincide; "
                          f"same networks as pair #{dup}")
            else:
                who = group.element_label(next(g for g in line if g not in set(H)))
                reason = (f"passes st_G(P_K - tau P_H) = K, but {who} outside H negates every admissible weight, "
                          f"so the neurons come in +- pairs; same networks as the type 2 pair #{dup}")
        out.append(Pair(group, i, H, K, basis, tuple(group.left_cosets(H)), st, line, reason, dup))
    group._subgroup_cache["gsnn_pairs"] = out
    return out


def enumerate_architectures(group: FiniteGroup) -> list[Pair]:
    """The pairs that give architectures: V != 0, st_G(P_K - tau P_H) = K, and no duplicate up to sign."""
    return [p for p in classify(group) if p.ok]


def count(group: FiniteGroup, paper_condition: bool = False, up_to_normaliser: bool = True) -> dict:
    """{"type1": a, "type2": b, "total": a + b} over the architectures of G.

    Args:
        paper_condition: apply the paper's test st_G(P_K - tau P_H) = K alone (it
            also admits the +- duplicates described in the module docstring).
        up_to_normaliser: count (H, K) and (H, nKn^-1), n in N_G(H), once, as
            they are the same architecture (conjugation by n relabels the
            neurons). False counts every index-2 subgroup of each class
            representative H separately, as a per-H enumeration would.
    """
    a = b = 0
    for p in classify(group):
        if not (p.paper_condition if paper_condition else p.ok):
            continue
        n = 1 if up_to_normaliser else len({group.conjugate(g, p.K) for g in group.normaliser(p.H)})
        if p.kind == 1:
            a += n
        else:
            b += n
    return {"type1": a, "type2": b, "total": a + b}
