"""Isotypic decomposition of a permutation representation R^X.

A finite group G acting on points X makes R^X a representation. Grouping its
simple summands by isomorphism type gives R^X = ⊕_ρ V_ρ (the *isotypic*
components); the orthogonal projectors onto the V_ρ are the generalised
Fourier transform that Gibson, Tubbenhauer & Williamson (arXiv:2408.00949)
read equivariant networks with. By Schur's
lemma every G-equivariant linear map R^X -> R^X maps each V_ρ into itself,
so an equivariant layer is block-diagonal in this basis.

Closed forms:
  * C_n (rotations i -> i+1): the real Fourier basis. Frequencies k and n-k
    carry the same real simple representation (rotation by 2πk/n), so the
    components are k = 0 .. ⌊n/2⌋, of dimension 1 (k = 0, and k = n/2 for
    even n) or 2.
  * C_n1 × ... × C_nr on the grid (index in C order, as
    ``setnet.symmetry.product`` numbers it): the r-dimensional Fourier basis;
    the component of frequency κ also holds -κ.
  * Any 2-transitive group (S_n, A_n, ...): trivial ⊕ standard, because its
    commutant has exactly 2 colors.
Anything else is decomposed numerically from the commutant (the matrices
constant on the linear orbit colors of ``setnet.symmetry.colors``): the
eigenspaces of a random symmetric element of the commutant are simple
summands, and two of them are isomorphic exactly when a random element of
the commutant connects them.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from setnet.symmetry import GroupSpecError, PermGroup, colors, cyclic, parse, parse_spec, permutation_matrix, product
from setnet.symmetry.groups import atoms

MAX_NUMERICAL_DEGREE = 2048


@dataclasses.dataclass(frozen=True, eq=False)
class Component:
    """One isotypic component V_ρ of R^X.

    Args:
        name: a short id safe for metric names, e.g. ``"k3"`` or ``"trivial"``.
        label: a readable label, e.g. ``"k=3"``.
        copies: orthonormal bases (|X|, d) of the simple summands that make up
            the component; all are isomorphic to ρ, and mutually orthogonal.
        key: the frequency for Fourier components (``(k,)`` or ``(k, l, ...)``),
            else ``(index,)``.
        endo_dim: dim End_G(ρ): 1 (real type), 2 (complex type, e.g. a
            rotation by 2πk/n) or 4 (quaternionic type).
    """

    name: str
    label: str
    copies: tuple
    key: tuple
    endo_dim: int = 1

    @property
    def basis(self) -> np.ndarray:
        """An orthonormal basis (|X|, dim) of the whole component."""
        return np.concatenate(self.copies, axis=1)

    @property
    def projector(self) -> np.ndarray:
        b = self.basis
        return b @ b.T

    @property
    def irrep_dim(self) -> int:
        return int(self.copies[0].shape[1])

    @property
    def multiplicity(self) -> int:
        return len(self.copies)

    @property
    def dim(self) -> int:
        return self.irrep_dim * self.multiplicity


@dataclasses.dataclass(frozen=True, eq=False)
class Isotypic:
    """The isotypic decomposition of R^X for a permutation group.

    Args:
        group: the group acting on X.
        components: the isotypic components, the trivial one first.
        method: ``"cyclic-fourier"``, ``"torus-fourier"``, ``"two-transitive"``
            or ``"numerical"``.

    Example:
    >>> from setnet.symmetry import cyclic
    >>> from setnet.spectral import decompose
    >>> d = decompose(cyclic(6))
    >>> [c.label for c in d.components], [c.dim for c in d.components]
    (['k=0', 'k=1', 'k=2', 'k=3'], [1, 2, 2, 1])
    """

    group: PermGroup
    components: tuple
    method: str

    @property
    def degree(self) -> int:
        return self.group.degree

    @property
    def labels(self) -> list[str]:
        return [c.label for c in self.components]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.components]

    def __len__(self):
        return len(self.components)

    def __getitem__(self, i) -> Component:
        return self.components[i]

    def index(self, key) -> int:
        """The position of the component with this key, name or label."""
        for i, c in enumerate(self.components):
            if key in (c.key, c.name, c.label) or (isinstance(key, (int, np.integer)) and c.key == (int(key),)):
                return i
        raise KeyError(f"{self.group.name} has no isotypic component {key!r}; it has {', '.join(self.labels)}")

    def projectors(self) -> np.ndarray:
        """All projectors, shape (n_components, |X|, |X|)."""
        return np.stack([c.projector for c in self.components])

    def basis(self) -> np.ndarray:
        """An orthogonal matrix (|X|, |X|) whose columns run through the components in order."""
        return np.concatenate([c.basis for c in self.components], axis=1)

    def segments(self) -> np.ndarray:
        """For each column of ``basis()``, the index of its component."""
        return np.repeat(np.arange(len(self.components)), [c.dim for c in self.components])

    def energy(self, x, axis: int = -1) -> np.ndarray:
        """Squared norm of x in each component, summed over every other axis.

        Args:
            x: array whose ``axis`` has length |X| (e.g. activations (B, N, C) with axis=1).
            axis: the axis that indexes the points X.

        Returns:
            float64 array (n_components,); it sums to ``(x ** 2).sum()``.
        """
        x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
        if x.shape[-1] != self.degree:
            raise ValueError(
                f"axis {axis} has length {x.shape[-1]} but {self.group.name} acts on {self.degree} points"
            )
        coeff = x.reshape(-1, self.degree) @ self.basis()
        return np.bincount(self.segments(), weights=(coeff ** 2).sum(axis=0), minlength=len(self.components))

    def filter(self, x, keep, axis: int = -1) -> np.ndarray:
        """x with every component not in ``keep`` (indices, keys, names or labels) removed."""
        idx = sorted({k if isinstance(k, (int, np.integer)) else self.index(k) for k in keep})
        if not idx:
            return np.zeros_like(np.asarray(x, dtype=np.float64))
        b = np.concatenate([self.components[i].basis for i in idx], axis=1)
        x = np.moveaxis(np.asarray(x, dtype=np.float64), axis, -1)
        return np.moveaxis(x @ b @ b.T, -1, axis)

    def representation(self, i: int, g, copy: int = 0) -> np.ndarray:
        """The matrix of the permutation g on copy ``copy`` of component i (in that copy's basis)."""
        u = self.components[i].copies[copy]
        return u.T @ permutation_matrix(g) @ u

    def table(self) -> str:
        """A markdown table of the components."""
        rows = ["| component | irrep dim | multiplicity | dim |", "|---|---|---|---|"]
        rows += [f"| {c.label} | {c.irrep_dim} | {c.multiplicity} | {c.dim} |" for c in self.components]
        return "\n".join(rows)


# --- closed forms -------------------------------------------------------------------------------


def cyclic_fourier(n: int) -> Isotypic:
    """C_n acting by i -> i+1: the real Fourier basis, frequencies k = 0 .. ⌊n/2⌋."""
    i = np.arange(n)
    comps = []
    for k in range(n // 2 + 1):
        angle = 2 * np.pi * k * i / n
        if k == 0 or 2 * k == n:
            copy = (np.cos(angle) / np.sqrt(n))[:, None]
        else:
            copy = np.stack([np.cos(angle), np.sin(angle)], axis=1) * np.sqrt(2.0 / n)
        comps.append(Component(f"k{k}", f"k={k}", (copy,), (k,), 1 if copy.shape[1] == 1 else 2))
    return Isotypic(cyclic(n), tuple(comps), "cyclic-fourier")


def torus_fourier(sizes) -> Isotypic:
    """C_n1 × ... × C_nr on the grid: the real r-dimensional Fourier basis.

    A component is a frequency vector κ (entries in (-n_i/2, n_i/2]) together
    with -κ; the representative shown has its first nonzero entry positive.
    Components are ordered by sum |κ_i|, then by κ.
    """
    sizes = tuple(int(s) for s in sizes)
    grids = np.meshgrid(*[np.arange(s) for s in sizes], indexing="ij")
    seen, reps = set(), []
    for kappa in np.ndindex(*sizes):
        signed = tuple(_signed(k, s) for k, s in zip(kappa, sizes))
        neg = tuple(_signed(-k, s) for k, s in zip(kappa, sizes))
        rep = max(signed, neg)
        if rep not in seen:
            seen.add(rep)
            reps.append(rep)
    reps.sort(key=lambda r: (sum(abs(k) for k in r), tuple(-k for k in r)))
    total = int(np.prod(sizes))
    comps = []
    for rep in reps:
        angle = 2 * np.pi * sum(k * g / s for k, g, s in zip(rep, grids, sizes)).reshape(-1)
        self_conjugate = all((2 * k) % s == 0 for k, s in zip(rep, sizes))
        if self_conjugate:
            copy = (np.cos(angle) / np.sqrt(total))[:, None]
        else:
            copy = np.stack([np.cos(angle), np.sin(angle)], axis=1) * np.sqrt(2.0 / total)
        name = "k" + "_".join(str(k).replace("-", "m") for k in rep)
        comps.append(Component(name, "k=(" + ",".join(map(str, rep)) + ")", (copy,), rep,
                               1 if self_conjugate else 2))
    group = cyclic(sizes[0])
    for s in sizes[1:]:
        group = product(group, cyclic(s))
    return Isotypic(group, tuple(comps), "torus-fourier")


def two_transitive(group: PermGroup) -> Isotypic:
    """trivial ⊕ standard, for any group whose linear commutant has 2 colors (S_n, A_n, ...)."""
    n = group.degree
    ones = np.full((n, 1), 1.0 / np.sqrt(n))
    comps = [Component("trivial", "trivial", (ones,), (0,), 1)]
    if n > 1:
        # Columns of a Helmert matrix: an explicit orthonormal basis of the sum-zero vectors.
        std = np.zeros((n, n - 1))
        for j in range(1, n):
            std[:j, j - 1] = 1.0
            std[j, j - 1] = -j
            std[:, j - 1] /= np.sqrt(j * (j + 1))
        comps.append(Component("standard", "standard", (std,), (1,), 1))
    return Isotypic(group, tuple(comps), "two-transitive")


def _signed(k, s):
    k %= s
    return k - s if 2 * k > s else k


# --- numerical decomposition -------------------------------------------------------------------


def numerical(group: PermGroup, seed: int = 0, tol: float = 1e-8, attempts: int = 4) -> Isotypic:
    """Isotypic decomposition of any permutation group from its commutant.

    The commutant End_G(R^X) is the set of matrices constant on the linear
    orbit colors. A random symmetric element A of it splits R^X into
    eigenspaces that are simple summands (for generic A; a coincidence of
    eigenvalues is detected and the draw repeated). Two summands are
    isomorphic iff Hom_G between them is nonzero, i.e. iff a random element B
    of the commutant has a nonzero block between them; connected summands
    form one isotypic component.

    Args:
        group: any ``PermGroup`` on up to 2048 points.
        seed: seed of the random commutant elements.
        tol: relative tolerance for equal eigenvalues and nonzero blocks.
        attempts: how many random draws to try before giving up.
    """
    n = group.degree
    if n > MAX_NUMERICAL_DEGREE:
        raise ValueError(
            f"{group.name} acts on {n} points; the numerical decomposition is dense linear algebra and "
            f"stops at {MAX_NUMERICAL_DEGREE}. Use a closed form (C<n>, C<n>*C<m>, S<n>) or fewer points."
        )
    c = colors(group)
    n_colors = int(c.max()) + 1
    gens = [permutation_matrix(g) for g in group.generators]
    rng = np.random.default_rng(seed)
    last_error = None
    for _ in range(attempts):
        a = rng.standard_normal(n_colors)[c]
        a = a + a.T
        b = rng.standard_normal(n_colors)[c]
        # Two more commutant elements: with b they span a quaternionic End_G(rho) (dimension 4).
        extra = [rng.standard_normal(n_colors)[c] for _ in range(2)]
        try:
            comps = _components_from(a, b, gens, tol, extra)
        except _Degenerate as err:
            last_error = err
            continue
        return Isotypic(group, tuple(comps), "numerical")
    raise RuntimeError(f"numerical decomposition of {group.name} failed after {attempts} draws: {last_error}")


class _Degenerate(Exception):
    pass


def _components_from(a, b, gens, tol, extra=()):
    n = a.shape[0]
    evals, evecs = np.linalg.eigh(a)
    scale = max(1.0, float(np.abs(evals).max()))
    # Eigenvalues within tol*scale of each other are one eigenspace.
    breaks = np.flatnonzero(np.diff(evals) > tol * scale) + 1
    spaces = np.split(np.arange(n), breaks)
    copies = [evecs[:, s] for s in spaces]
    for u in copies:
        for p in gens:
            # A G-invariant subspace: P_g U stays in span U.
            if np.linalg.norm(p @ u - u @ (u.T @ p @ u)) > 1e3 * tol * math.sqrt(u.shape[1]):
                raise _Degenerate("an eigenspace is not invariant (near-coincident eigenvalues)")
    # Union-find over "a random G-map connects the two summands".
    parent = list(range(len(copies)))

    def find(i):
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    bscale = np.linalg.norm(b, 2)
    for i in range(len(copies)):
        for j in range(i + 1, len(copies)):
            if copies[i].shape[1] == copies[j].shape[1] and find(i) != find(j):
                if np.linalg.norm(copies[j].T @ b @ copies[i]) > 1e3 * tol * bscale:
                    parent[find(j)] = find(i)
    groups = {}
    for i in range(len(copies)):
        groups.setdefault(find(i), []).append(copies[i])
    ones = np.full(n, 1.0 / np.sqrt(n))
    roughness = sum((p - np.eye(n)).T @ (p - np.eye(n)) for p in gens) if gens else np.zeros((n, n))
    found = []
    for members in groups.values():
        basis = np.concatenate(members, axis=1)
        trivial_part = float(np.linalg.norm(basis.T @ ones))
        rough = float(np.trace(basis.T @ roughness @ basis)) / basis.shape[1]
        found.append((-round(trivial_part, 6), round(rough, 9), members[0].shape[1], members))
    # Trivial first, then by how much the generators move the vectors (the analogue of frequency).
    found.sort(key=lambda t: t[:3])
    comps = []
    for idx, (_, _, _, members) in enumerate(found):
        u = members[0]
        endo = _endo_dim(u, [a, b, *extra])
        name = "trivial" if idx == 0 else f"rho{idx}"
        comps.append(Component(name, name if idx == 0 else f"ρ{idx}", tuple(members), (idx,), endo))
    return comps


def _endo_dim(u, commutant):
    # dim End_G(ρ) = 1, 2 or 4: U^T M U over the commutant spans End_G(ρ). The identity and a few random
    # elements reach all of it; a quaternionic End_G(ρ) (e.g. in Q_8's regular action) needs three besides I.
    blocks = [np.eye(u.shape[1])] + [u.T @ m @ u for m in commutant]
    flat = np.stack([x.reshape(-1) for x in blocks])
    return int(np.linalg.matrix_rank(flat, tol=1e-6 * max(1.0, np.abs(flat).max())))


# --- dispatch ----------------------------------------------------------------------------------


def decompose(group, method: str = "auto", seed: int = 0) -> Isotypic:
    """The isotypic decomposition of R^X for ``group`` (a ``PermGroup`` or a spec such as ``"C8"``).

    Args:
        group: the permutation group, or a spec for ``setnet.symmetry.parse``.
        method: ``"auto"`` uses a closed form when the group is C_n, a product
            of cyclic groups, or 2-transitive (checked on the generators, not
            the name alone), else ``"numerical"``; ``"numerical"`` forces the
            numerical decomposition (the slow reference for the closed forms).
        seed: seed for the numerical method.
    """
    if isinstance(group, str):
        group = parse(group)
    if method == "numerical":
        return numerical(group, seed=seed)
    if method != "auto":
        raise ValueError(f"unknown method {method!r}; expected 'auto' or 'numerical'")
    n = group.degree
    if _is_full_cyclic(group):
        return dataclasses.replace(cyclic_fourier(n), group=group)
    sizes = _torus_sizes(group)
    if sizes is not None:
        return dataclasses.replace(torus_fourier(sizes), group=group)
    if n <= 1 or (n <= 4096 and int(colors(group).max()) + 1 == 2):
        return dataclasses.replace(two_transitive(group), group=group)
    return numerical(group, seed=seed)


def _is_full_cyclic(group: PermGroup) -> bool:
    # Generated by rotations i -> i+s whose steps generate Z_n: the group is C_n itself.
    n = group.degree
    if n == 1:
        return True
    steps = []
    for g in group.generators:
        s = int(g[0])
        if not np.array_equal(g, (np.arange(n) + s) % n):
            return False
        steps.append(s)
    return bool(steps) and math.gcd(n, *steps) == 1


def _torus_sizes(group: PermGroup):
    # The name says which product of cyclic groups to compare with; the generators decide.
    try:
        tree = parse_spec(group.name)
    except GroupSpecError:
        return None
    leaves = atoms(tree)
    if len(leaves) < 2 or any(name != "C" for name, _ in leaves):
        return None
    sizes = [n for _, n in leaves]
    ref = cyclic(sizes[0])
    for s in sizes[1:]:
        ref = product(ref, cyclic(s))
    if ref.generators.shape != group.generators.shape or not np.array_equal(ref.generators, group.generators):
        return None
    return sizes
