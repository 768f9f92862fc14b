"""Finite orthogonal groups acting on R^d, closed into their element lists.

A group is given by generator matrices (permutation matrices from the
symmetry engine, signed permutations, rotations) and closed by breadth-first
multiplication into an explicit list of d x d matrices with a Cayley table.
Everything downstream (subgroups, conjugacy, cosets, projections) works on
element indices into that list, so it is exact once the table is built.
Groups of a few hundred elements are the intended size.

Element 0 is always the identity. Subgroups are sorted tuples of element
indices, which makes them hashable and canonical.
"""

from __future__ import annotations

import itertools

import numpy as np

from setnet.symmetry import GRAMMAR, PermGroup, build, parse_spec, permutation_matrix, quaternion, symmetric
from setnet.symmetry.groups import MATRIX_ATOMS, GroupSpecError, atoms, degree

# Matrices are compared after rounding to this grid; entries of the orthogonal
# matrices of a finite group are algebraic numbers far further apart than this.
_GRID = 1e7
DEFAULT_LIMIT = 2000
DEFAULT_MAX_MEMORY = 8 << 30
# Every element is stored as a dense d x d matrix; beyond this the generators alone are large.
MAX_DIMENSION = 1024

Subgroup = tuple  # sorted tuple of element indices


class FiniteGroup:
    """A finite group of orthogonal d x d matrices, listed element by element.

    Args:
        generators: array-like of shape ``(k, d, d)``, each an orthogonal matrix;
            ``k`` may be 0 together with ``degree`` (the trivial group).
        name: a readable name such as ``"D4"`` or ``"rot6"``.
        degree: the dimension d, needed only when there are no generators.
        limit: refuse groups with more elements than this.
        max_memory: refuse, before allocating, a group whose element list and
            Cayley-table products (2 x order x d^2 float64) would exceed this
            many bytes; checked as the closure grows.

    Example:
        >>> from setnet.symmetry import dihedral
        >>> g = FiniteGroup.from_perm_group(dihedral(4))
        >>> g.order, g.degree, len(g.subgroup_classes())
        (8, 4, 8)
    """

    def __init__(self, generators, name: str = "G", degree: int | None = None, limit: int = DEFAULT_LIMIT,
                 max_memory: int = DEFAULT_MAX_MEMORY):
        gens = np.asarray(generators, dtype=np.float64)
        if gens.size == 0:
            if degree is None:
                raise ValueError(f"{name}: a group without generators needs its degree (the dimension d)")
            gens = np.zeros((0, degree, degree))
        if gens.ndim != 3 or gens.shape[1] != gens.shape[2]:
            raise ValueError(f"{name}: generators must have shape (k, d, d), got {gens.shape}")
        d = gens.shape[1]
        for i, g in enumerate(gens):
            err = np.abs(g @ g.T - np.eye(d)).max()
            if err > 1e-8:
                raise ValueError(
                    f"{name}: generator {i} is not orthogonal (|g g^T - I| = {err:.2g}); "
                    "G-SNNs are classified for finite orthogonal groups only"
                )
        self.name = name
        self.degree = d
        self.limit = limit
        self.max_memory = max_memory
        self._close(gens)
        self._subgroup_cache: dict = {}

    # ----- construction ---------------------------------------------------------------

    @classmethod
    def from_perm_group(cls, group: PermGroup, name: str | None = None, **kwargs) -> "FiniteGroup":
        """Permutation matrices of a ``setnet.symmetry.PermGroup``: (P x)[g[i]] = x[i]."""
        return cls([permutation_matrix(g) for g in group.generators], name or group.name, degree=group.degree,
                   **kwargs)

    def _key(self, m: np.ndarray) -> bytes:
        return np.round(m * _GRID).astype(np.int64).tobytes()

    def _close(self, gens: np.ndarray) -> None:
        d = self.degree
        elements = [np.eye(d)]
        index = {self._key(elements[0]): 0}
        frontier = [0]
        # The element list and one row of Cayley-table products each hold order x d^2 floats.
        most = self.max_memory // (16 * d * d)
        while frontier:
            nxt = []
            for e in frontier:
                for g in gens:
                    p = g @ elements[e]
                    k = self._key(p)
                    if k not in index:
                        if len(elements) >= most:
                            raise ValueError(
                                f"{self.name} acts on R^{d}: listing more than {most} of its elements as "
                                f"{d} x {d} matrices needs more than {self.max_memory / 2**30:.1f} GiB; "
                                "this classifier is meant for groups of a few hundred elements on small spaces"
                            )
                        index[k] = len(elements)
                        elements.append(p)
                        nxt.append(index[k])
                        if len(elements) > self.limit:
                            raise ValueError(
                                f"{self.name} has more than {self.limit} elements; this classifier lists every "
                                "element and every subgroup, so it is meant for groups of a few hundred elements"
                            )
            frontier = nxt
        self.elements = np.stack(elements)
        n = len(elements)
        self._index = index
        table = np.empty((n, n), dtype=np.int64)
        for i in range(n):
            prods = np.round(np.einsum("ab,nbc->nac", self.elements[i], self.elements) * _GRID).astype(np.int64)
            try:
                table[i] = [index[p.tobytes()] for p in prods]
            except KeyError:  # pragma: no cover - would mean the closure above is wrong
                raise RuntimeError(f"{self.name}: closure is not closed under multiplication") from None
        self.table = table
        self.inverse = np.argmax(table == 0, axis=1)
        self.generators = np.array([index[self._key(g)] for g in gens], dtype=np.int64)

    # ----- basic structure --------------------------------------------------------------

    @property
    def order(self) -> int:
        return len(self.elements)

    def __repr__(self):
        return f"FiniteGroup({self.name}, order={self.order}, degree={self.degree})"

    def index_of(self, matrix) -> int:
        """The index of a matrix in the element list (KeyError if it is not an element)."""
        return self._index[self._key(np.asarray(matrix, dtype=np.float64))]

    def element_order(self, g: int) -> int:
        k, x = 1, g
        while x != 0:
            x = self.table[x, g]
            k += 1
        return k

    def generate(self, gens) -> Subgroup:
        """The subgroup generated by the element indices ``gens`` (breadth-first closure)."""
        gens = np.unique(np.asarray(list(gens), dtype=np.int64))
        mask = np.zeros(self.order, dtype=bool)
        mask[0] = True
        frontier = np.array([0])
        while frontier.size and gens.size:
            fresh = np.zeros(self.order, dtype=bool)
            fresh[self.table[frontier[:, None], gens[None, :]].ravel()] = True
            fresh &= ~mask
            mask |= fresh
            frontier = np.flatnonzero(fresh)
        return tuple(np.flatnonzero(mask).tolist())

    def conjugate(self, g: int, subgroup) -> Subgroup:
        """g A g^-1 as a sorted tuple."""
        a = np.asarray(subgroup, dtype=np.int64)
        return tuple(np.sort(self.table[self.table[g, a], self.inverse[g]]).tolist())

    def conjugacy_class(self, subgroup) -> set:
        """{g A g^-1 : g in G}."""
        a = np.asarray(subgroup, dtype=np.int64)
        conj = np.sort(self.table[self.table[:, a], self.inverse[:, None]], axis=1)
        return {tuple(row) for row in np.unique(conj, axis=0).tolist()}

    def normaliser(self, subgroup) -> Subgroup:
        """N_G(A) = {g : g A g^-1 = A}."""
        a = np.asarray(subgroup, dtype=np.int64)
        inside = np.zeros(self.order, dtype=bool)
        inside[a] = True
        conj = self.table[self.table[:, a], self.inverse[:, None]]
        return tuple(np.flatnonzero(inside[conj].all(axis=1)).tolist())

    def left_cosets(self, subgroup) -> list[int]:
        """One representative t per left coset tA, the first in element order (t = 0 for A itself)."""
        a = np.asarray(subgroup, dtype=np.int64)
        seen = np.zeros(self.order, dtype=bool)
        reps = []
        for g in range(self.order):
            if not seen[g]:
                reps.append(g)
                seen[self.table[g, a]] = True
        return reps

    def projection(self, subgroup) -> np.ndarray:
        """P_A = mean of the matrices of A: the orthogonal projection onto the vectors A fixes."""
        return self.elements[np.asarray(subgroup)].mean(axis=0)

    def is_subgroup(self, subset) -> bool:
        s = np.asarray(subset, dtype=np.int64)
        return bool(s.size) and 0 in set(s.tolist()) and set(self.table[np.ix_(s, s)].ravel().tolist()) <= set(
            s.tolist()
        )

    # ----- subgroups --------------------------------------------------------------------

    def cyclic_generators(self) -> list[int]:
        """One generator for each cyclic subgroup."""
        return list(self._cyclic()[0])

    def _cyclic(self):
        """(generators, cyc_id): one generator per cyclic subgroup, and the id of <e> for every element e."""
        if "cyclic" not in self._subgroup_cache:
            ids: dict = {}
            gens, cyc_id = [], np.empty(self.order, dtype=np.int64)
            for g in range(self.order):
                c = self.generate([g])
                if c not in ids:
                    ids[c] = len(gens)
                    gens.append(g)
                cyc_id[g] = ids[c]
            self._subgroup_cache["cyclic"] = (gens, cyc_id)
        return self._subgroup_cache["cyclic"]

    def subgroup_classes(self) -> list[list[Subgroup]]:
        """Every subgroup, grouped into conjugacy classes.

        Joins class representatives with cyclic subgroups until nothing new
        appears: if B = <A, g> and A = cA'c^-1 then c^-1 B c = <A', c^-1 g c>,
        so joining only representatives still reaches every class, and for a
        representative A one g per N_G(A)-orbit of cyclic subgroups suffices
        (n <A, g> n^-1 = <A, n g n^-1> for n in N_G(A)).
        Classes are sorted by decreasing order (G first); within a class the
        representative (first entry) is the lexicographically smallest.
        """
        if "classes" in self._subgroup_cache:
            return self._subgroup_cache["classes"]
        cyc, cyc_id = self._cyclic()
        cyc = np.asarray(cyc, dtype=np.int64)
        seen: set = set()
        classes: list[list[Subgroup]] = []
        gens_of: dict = {}

        def add(sub, gens):
            if sub in seen:
                return None
            cls = sorted(self.conjugacy_class(sub))
            seen.update(cls)
            classes.append(cls)
            gens_of[cls[0]] = self._conjugate_gens(gens, sub, cls[0])
            return cls[0]

        frontier = [add((0,), [])]
        while frontier:
            nxt = []
            for rep in frontier:
                norm = np.asarray(self.normaliser(rep), dtype=np.int64)
                # Orbits of N_G(rep) on the cyclic subgroups: keep the smallest id of each.
                images = cyc_id[self.table[self.table[norm[:, None], cyc[None, :]], self.inverse[norm][:, None]]]
                keep = images.min(axis=0) == np.arange(len(cyc))
                inside = np.zeros(self.order, dtype=bool)
                inside[list(rep)] = True
                for g in cyc[keep & ~inside[cyc]]:
                    gens = gens_of[rep] + [int(g)]
                    new_rep = add(self.generate(gens), gens)
                    if new_rep is not None:
                        nxt.append(new_rep)
            frontier = nxt
        classes.sort(key=lambda c: (-len(c[0]), c[0]))
        self._subgroup_cache["classes"] = classes
        self._subgroup_cache["gens"] = gens_of
        return classes

    def _conjugate_gens(self, gens, sub, rep):
        """Generators of ``rep`` from generators of its conjugate ``sub``."""
        if sub == rep:
            return list(gens)
        for c in range(self.order):
            if self.conjugate(c, sub) == rep:
                return [int(self.table[self.table[c, g], self.inverse[c]]) for g in gens]
        raise AssertionError("rep is not conjugate to sub")  # pragma: no cover

    def subgroups(self) -> list[Subgroup]:
        """All subgroups (every member of every class)."""
        return [s for cls in self.subgroup_classes() for s in cls]

    def subgroup_generators(self, rep) -> list[int]:
        """A small generating set for a class representative."""
        self.subgroup_classes()
        return list(self._subgroup_cache["gens"][tuple(rep)])

    def index2_subgroups(self, subgroup) -> list[Subgroup]:
        """Every subgroup K of H with [H:K] = 2, i.e. the kernels of the homomorphisms H -> {+1, -1}.

        H / <h^2 : h in H> is an elementary abelian 2-group (Z_2)^r; its
        2^r - 1 nonzero functionals give the index-2 subgroups.
        """
        h = tuple(subgroup)
        phi = self.generate([int(self.table[x, x]) for x in h])
        basis, span = [], phi
        for x in h:
            if x not in set(span):
                basis.append(x)
                span = self.generate(list(span) + [x])
        out = []
        for bits in itertools.product([0, 1], repeat=len(basis)):
            if not any(bits):
                continue
            # The kernel is generated by phi and, for each basis element, itself
            # if its bit is 0, or its product with the first basis element whose bit is 1.
            first = basis[bits.index(1)]
            gens = list(phi)
            for b, x in zip(bits, basis):
                gens.append(x if b == 0 else int(self.table[x, first]) if x != first else 0)
            out.append(self.generate(gens))
        return sorted(set(out))

    def pairs(self) -> list[tuple[Subgroup, Subgroup]]:
        """Pairs (H, K), K <= H, [H:K] <= 2, one per class under simultaneous conjugation.

        H runs over subgroup class representatives; for fixed H the remaining
        freedom is conjugation by the normaliser N_G(H), which permutes the
        index-2 subgroups of H. K runs over one representative per N_G(H)-orbit.
        """
        out = []
        for cls in self.subgroup_classes():
            h = cls[0]
            out.append((h, h))
            ks = self.index2_subgroups(h)
            if not ks:
                continue
            norm = self.normaliser(h)
            done = set()
            for k in ks:
                if k in done:
                    continue
                orbit = {self.conjugate(n, k) for n in norm}
                done |= orbit
                out.append((h, min(orbit)))
        return out

    def canonical_pair(self, H, K) -> tuple[Subgroup, Subgroup]:
        """The representative in ``pairs()`` of the simultaneous conjugacy class of (H, K)."""
        h = np.asarray(H, dtype=np.int64)
        conj = np.sort(self.table[self.table[:, h], self.inverse[:, None]], axis=1)
        for cls in self.subgroup_classes():
            rep = cls[0]
            if len(rep) != len(h):
                continue
            hits = np.flatnonzero((conj == np.asarray(rep)).all(axis=1))
            if hits.size:
                k1 = self.conjugate(int(hits[0]), K)
                return rep, min(self.conjugate(n, k1) for n in self.normaliser(rep))
        raise ValueError("H is not a subgroup of this group")

    # ----- labels -----------------------------------------------------------------------

    def element_label(self, g: int) -> str:
        """Cycle notation for permutation matrices (``(0 1 2)``), else ``g<index>``."""
        m = self.elements[g]
        if np.allclose(np.abs(m).sum(axis=0), 1) and np.allclose(np.abs(m).max(axis=0), 1) and (m > -0.5).all():
            img = np.argmax(m, axis=0)  # column i has its 1 in row img[i]
            cycles, seen = [], set()
            for i in range(len(img)):
                if i in seen or img[i] == i:
                    continue
                c, j = [], i
                while j not in seen:
                    seen.add(j)
                    c.append(j)
                    j = int(img[j])
                cycles.append("(" + " ".join(map(str, c)) + ")")
            return "".join(cycles) or "e"
        return "e" if g == 0 else f"g{g}"

    def subgroup_label(self, rep) -> str:
        if len(rep) == 1:
            return "1"
        if len(rep) == self.order:
            return "G"
        gens = self.small_generating_set(rep)
        return "<" + ", ".join(self.element_label(g) for g in gens) + ">"

    def small_generating_set(self, subgroup) -> list[int]:
        """A few element indices that generate ``subgroup``, for labels such as ``<(0 1), (2 3)>``.

        One element when the subgroup is cyclic; otherwise its elements in
        order, each kept when it is not yet in the span of those kept before.
        Not necessarily a minimum generating set.

        Example:
            >>> g = parse_group("C2+C2")
            >>> [g.element_label(x) for x in g.small_generating_set(range(g.order))]
            ['(0 1)', '(2 3)']
        """
        target = tuple(subgroup)
        for x in target:  # one generator when the subgroup is cyclic
            if self.element_order(x) == len(target):
                return [x]
        gens, span = [], (0,)
        for x in target:
            if x not in set(span):
                gens.append(x)
                span = self.generate(gens)
        return gens


def signed_perm_matrix(perm, signs) -> np.ndarray:
    """The signed permutation matrix with e_i -> signs[i] e_{perm[i]}."""
    return permutation_matrix(perm) * np.asarray(signs, dtype=np.float64)[None, :]


def _rotation_generators(n: int) -> list[np.ndarray]:
    t = 2 * np.pi / n
    return [np.array([[np.cos(t), -np.sin(t)], [np.sin(t), np.cos(t)]])] if n > 1 else []


def _signed_generators(n: int) -> list[np.ndarray]:
    return [signed_perm_matrix(np.arange(n), [-1] + [1] * (n - 1))] + [
        permutation_matrix(g) for g in symmetric(n).generators]


def rotation(n: int) -> FiniteGroup:
    """C_n rotating R^2 by multiples of 2 pi / n (the spec ``rot<n>``)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"rot<n> needs an integer n >= 1, got {n!r}")
    return parse_group(f"rot{n}")


def hyperoctahedral_signed(n: int) -> FiniteGroup:
    """B_n: all signed permutations of R^n (order 2^n n!), as signed permutation matrices (the spec ``B<n>``)."""
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"B<n> needs an integer n >= 1, got {n!r}")
    return parse_group(f"B{n}")


def quaternion_regular() -> FiniteGroup:
    """Q_8 = {+-1, +-i, +-j, +-k} by its left regular representation on R^8 (the spec ``Q8``)."""
    return FiniteGroup.from_perm_group(quaternion())


def direct_sum(*groups: FiniteGroup, name: str | None = None, limit: int = DEFAULT_LIMIT) -> FiniteGroup:
    """A_1 x ... x A_m, each factor acting on its own block of R^(d_1 + ... + d_m) (the spec ``A+B``)."""
    d = sum(g.degree for g in groups)
    gens, offset = [], 0
    for g in groups:
        for gi in g.generators:
            m = np.eye(d)
            m[offset:offset + g.degree, offset:offset + g.degree] = g.elements[gi]
            gens.append(m)
        offset += g.degree
    return FiniteGroup(np.array(gens).reshape(-1, d, d), name or "+".join(g.name for g in groups), degree=d,
                       limit=limit)


SPEC_HELP = GRAMMAR


def matrix_generators(tree) -> tuple[list[np.ndarray], int]:
    """Orthogonal generator matrices and the dimension d for a ``setnet.symmetry.parse_spec`` tree.

    A part built only from permutation groups is the symmetry engine's group
    (``setnet.symmetry.build``) as permutation matrices. ``A*B`` acts on
    R^(d_A d_B) by the Kronecker (tensor) product, generated by g (x) I and
    I (x) h; for permutation groups that is the action on the product set.
    ``A+B`` acts block-diagonally on R^(d_A + d_B).
    """
    if all(name not in MATRIX_ATOMS for name, _ in atoms(tree)):
        perm = build(tree)
        return [permutation_matrix(g) for g in perm.generators], perm.degree
    op = tree[0]
    if op in ("*", "+"):
        (ga, da), (gb, db) = matrix_generators(tree[1]), matrix_generators(tree[2])
        if op == "*":
            return [np.kron(g, np.eye(db)) for g in ga] + [np.kron(np.eye(da), h) for h in gb], da * db
        left = [np.block([[g, np.zeros((da, db))], [np.zeros((db, da)), np.eye(db)]]) for g in ga]
        right = [np.block([[np.eye(da), np.zeros((da, db))], [np.zeros((db, da)), h]]) for h in gb]
        return left + right, da + db
    name, n = tree
    return (_rotation_generators(n), 2) if name == "rot" else (_signed_generators(n), n)


def parse_group(spec: str, limit: int = DEFAULT_LIMIT) -> FiniteGroup:
    """The group of a spec in the one grammar of ``setnet.symmetry.GRAMMAR``, as orthogonal matrices.

    Permutation groups (``S<n>``, ``C<n>``, ``D<n>``, ``Q8``, ``Fold<m>``,
    ``Hyp<m>``) permute the coordinates; ``rot<n>`` rotates R^2 and ``B<n>``
    is every signed permutation of R^n. ``A*B`` (also ``AxB``, ``A^k``) is
    the tensor product action (the product set, for permutation groups),
    ``A+B`` lets each factor act on its own block.

    Args:
        spec: e.g. ``"D4"``, ``"C2+C4"`` (on R^6), ``"C2xC4"`` (on R^8), ``"rot6"``, ``"D4+rot3"``.
        limit: refuse groups with more elements than this.

    Raises:
        GroupSpecError: a one-line message for a spec outside the grammar
            (a ``ValueError``; so is the refusal of a group that is too large).

    Example:
        >>> g = parse_group("C2+C4")
        >>> g.order, g.degree, parse_group("C2xC4").degree
        (8, 6, 8)
    """
    tree = parse_spec(spec)
    if degree(tree) > MAX_DIMENSION:
        raise GroupSpecError(f"group {''.join(spec.split())!r} acts on R^{degree(tree)}; the classifier stores every "
                             f"element as a dense matrix and stops at R^{MAX_DIMENSION} (it is meant for groups of "
                             "a few hundred elements on small spaces)")
    gens, d = matrix_generators(tree)
    return FiniteGroup(np.array(gens).reshape(-1, d, d), "".join(spec.split()), degree=d, limit=limit)
