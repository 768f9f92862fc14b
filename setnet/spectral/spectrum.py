"""Network spectra: the energy of each layer's activations in each isotypic component.

For a layer whose output is a set or signal ``(batch, N, C)`` on which G acts
through the N axis, the energy in component V_ρ is Σ_{batch, channel}
||P_ρ x[b, :, c]||², summed over a dataset. Reading this table layer by layer
is the generalised Fourier view of a network of Gibson, Tubbenhauer &
Williamson, "Equivariant neural networks and piecewise linear representation
theory" (arXiv:2408.00949): linear equivariant layers keep each component's
energy where it is (Schur), activations move it.

Two kinds of group:
  * a fixed group on N points (``"C16"``, a ``PermGroup`` or an ``Isotypic``):
    layers whose N axis has that length are read with its decomposition;
  * ``"S"`` (the default for set classifiers): S_n on the real points of each
    set, with the mask, so N may vary. Then R^n = trivial ⊕ standard, and the
    trivial energy of a set is n·||mean||², computed without any n×n matrix.

>>> import numpy as np, keras
>>> from setnet.layers import TiedEquivariantDense
>>> from setnet.symmetry import colors, cyclic
>>> inputs = keras.Input((8, 1))
>>> h = TiedEquivariantDense(4, colors=colors(cyclic(8)), name="conv")(inputs)
>>> model = keras.Model(inputs, keras.layers.Activation("relu", name="relu")(h))
>>> rows = network_spectrum(model, np.random.default_rng(0).normal(size=(32, 8, 1)), "C8")
>>> [r["layer"] for r in rows], sorted(rows[0]["fraction"])
(['input', 'conv', 'relu'], ['k0', 'k1', 'k2', 'k3', 'k4'])
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np

from setnet.spectral.isotypic import Isotypic, decompose

SET_GROUP = "S"


class _SetDecomposition:
    """trivial ⊕ standard of S_n on the real points of every set (mask aware, any n)."""

    names = ["trivial", "standard"]
    labels = ["trivial", "standard"]

    @staticmethod
    def energy(x, mask=None):
        x = np.asarray(x, dtype=np.float64)
        m = np.ones(x.shape[:2]) if mask is None else np.asarray(mask, dtype=np.float64)
        x = x * m[:, :, None]
        n = np.maximum(m.sum(axis=1), 1.0)  # (B,)
        s = x.sum(axis=1)  # (B, C)
        trivial = float(((s ** 2).sum(axis=1) / n).sum())
        total = float((x ** 2).sum())
        return np.array([trivial, max(total - trivial, 0.0)])


def resolve_group(group):
    """An ``Isotypic`` for a fixed group, or the set decomposition for ``"S"`` / ``None``."""
    if group is None or (isinstance(group, str) and group.upper() in (SET_GROUP, "SET")):
        return _SetDecomposition()
    if isinstance(group, Isotypic):
        return group
    return decompose(group)


def activation_energy(x, decomposition, mask=None) -> np.ndarray:
    """Energy per component of activations ``x`` of shape (batch, N, C), summed over batch and channels."""
    if isinstance(decomposition, _SetDecomposition):
        return decomposition.energy(x, mask)
    return decomposition.energy(x, axis=1)


def _batches(dataset, max_batches, batch_size=256):
    """(inputs, mask) per batch from a tf.data.Dataset / iterable of batches, or an array of examples."""
    if isinstance(dataset, np.ndarray) or (isinstance(dataset, dict) and "points" in dataset):
        arr = dataset
        size = len(arr["points"] if isinstance(arr, dict) else arr)
        source = ({k: v[i:i + batch_size] for k, v in arr.items()} if isinstance(arr, dict)
                  else arr[i:i + batch_size] for i in range(0, size, batch_size))
    else:
        source = iter(dataset)
    for b, item in enumerate(source):
        if max_batches is not None and b >= max_batches:
            return
        x = item[0] if isinstance(item, tuple) else item
        mask = x.get("mask") if isinstance(x, dict) else None
        yield x, (None if mask is None else np.asarray(mask))


def _probe_layers(model, decomp, layers):
    """The layers to read: outputs of rank 3 whose N axis fits the group (any N for sets)."""
    import keras

    fixed_n = None if isinstance(decomp, _SetDecomposition) else decomp.degree
    chosen = []
    for layer in model.layers:
        if layers is not None and layer.name not in layers:
            continue
        try:
            out = layer.output
        except (AttributeError, ValueError):  # shared layer or not built into a graph
            continue
        if isinstance(out, (list, tuple)) or len(out.shape) != 3:
            continue
        if fixed_n is not None and out.shape[1] != fixed_n:
            continue
        chosen.append(layer)
    if layers is not None:
        missing = set(layers) - {layer.name for layer in chosen}
        if missing:
            raise ValueError(
                f"layers {sorted(missing)} have no (batch, N, C) output on which the group acts; "
                f"candidates: {[layer.name for layer in model.layers]}"
            )
    if not chosen:
        raise ValueError(
            f"{model.name} has no layer with a (batch, {fixed_n or 'N'}, C) output; give the group that acts on "
            "the set/signal axis of this model"
        )
    # model.input keeps the model's own input structure (a tensor, or a dict of named inputs).
    probe = keras.Model(model.input, [layer.output for layer in chosen])
    return chosen, probe


def network_spectrum(model, dataset, group=SET_GROUP, layers=None, max_batches=None,
                     progress: bool | None = None) -> list[dict]:
    """Energy of each layer's activations in each isotypic component, over a dataset.

    Args:
        model: a functional Keras model (e.g. ``setnet.models.build_classifier``
            or a C_n network of ``TiedEquivariantDense`` layers).
        dataset: a ``tf.data.Dataset`` (or any iterable) of batches ``x`` or
            ``(x, y[, w])``, or an array / dict of arrays of examples. With dict
            inputs a ``"mask"`` entry marks the real points of each set.
        group: ``"S"`` (permutations of the real points; the default), or a
            fixed group: a spec such as ``"C16"``, a ``PermGroup`` or an ``Isotypic``.
        layers: names of the layers to read (default: every layer with a
            ``(batch, N, C)`` output on which the group acts, inputs included).
        max_batches: stop after this many batches.
        progress: show a batch counter on stderr (default: when stderr is a terminal).

    Returns:
        One dict per layer, in model order: ``layer`` (name), ``class``,
        ``channels``, ``energy`` and ``fraction`` (dicts from component name,
        e.g. ``"k3"`` or ``"trivial"``, to float), ``labels`` (component name
        -> readable label) and ``total``. Input layers appear as ``"input"``
        when the model has a single input, else under their names.
    """
    decomp = resolve_group(group)
    chosen, probe = _probe_layers(model, decomp, layers)
    sums = [np.zeros(len(decomp.names)) for _ in chosen]
    show = sys.stderr.isatty() if progress is None else progress
    for done, (x, mask) in enumerate(_batches(dataset, max_batches), start=1):
        if show:  # one self-overwriting line, erased at the end
            print(f"\rspectrum: batch {done}", end="", file=sys.stderr, flush=True)
        outs = probe(x, training=False)
        outs = outs if isinstance(outs, (list, tuple)) else [outs]
        for s, out in zip(sums, outs):
            out = np.asarray(out)
            m = mask if (mask is not None and mask.shape == out.shape[:2]) else None
            s += activation_energy(out, decomp, m)
    if show:
        print("\r" + " " * 40 + "\r", end="", file=sys.stderr, flush=True)
    if not any(s.sum() for s in sums):
        raise ValueError("the dataset gave no batches (or only zeros); nothing to measure")
    rows = []
    single_input = len(model.inputs) == 1
    for layer, s in zip(chosen, sums):
        total = float(s.sum())
        is_input = type(layer).__name__ == "InputLayer"
        rows.append({
            "layer": "input" if is_input and single_input else layer.name,
            "class": type(layer).__name__,
            "channels": int(layer.output.shape[-1]),
            "energy": dict(zip(decomp.names, map(float, s))),
            "fraction": dict(zip(decomp.names, map(float, s / total if total > 0 else s))),
            "labels": dict(zip(decomp.names, decomp.labels)),
            "total": total,
        })
    return rows


def spectrum_table(spectrum: list[dict], digits: int = 2) -> str:
    """A markdown table: one row per layer, the percentage of its energy in each component."""
    names = list(spectrum[0]["fraction"])
    labels = [spectrum[0]["labels"][n] for n in names]
    out = ["| layer | " + " | ".join(labels) + " |", "|---|" + "---:|" * len(names)]
    for row in spectrum:
        cells = [_pct(row["fraction"][n], digits) for n in names]
        out.append(f"| {row['layer']} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def _pct(f, digits):
    if f == 0:
        return "0"
    if f < 10 ** -digits / 100:
        return f"{100 * f:.0e}"
    return f"{100 * f:.{digits}f}"


def plot_spectrum(spectrum: list[dict], path, title: str = "energy per isotypic component") -> None:
    """Heat map of the energy fractions (log scale), one row per layer."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm

    names = list(spectrum[0]["fraction"])
    labels = [spectrum[0]["labels"][n] for n in names]
    frac = np.array([[row["fraction"][n] for n in names] for row in spectrum])
    floor = 1e-6
    fig, ax = plt.subplots(figsize=(1.0 + 0.75 * len(names), 1.0 + 0.45 * len(spectrum)))
    im = ax.imshow(np.maximum(frac, floor), cmap="viridis", norm=LogNorm(vmin=floor, vmax=1.0), aspect="auto")
    for (i, j), v in np.ndenumerate(frac):
        ax.text(j, i, f"{100 * v:.0f}" if v >= 0.005 else "", ha="center", va="center", fontsize=7,
                color="white" if v < 0.1 else "black")
    ax.set_xticks(range(len(names)), labels, rotation=45 if len(names) > 8 else 0, fontsize=8)
    ax.set_yticks(range(len(spectrum)), [r["layer"] for r in spectrum], fontsize=8)
    fig.colorbar(im, ax=ax, label="fraction of the layer's energy")
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def spectrum_metrics(spectrum: list[dict], prefix: str = "spectrum") -> dict[str, float]:
    """Flat metrics ``<prefix>/<layer>/<component>`` -> energy fraction (valid MLflow metric names)."""
    return {f"{prefix}/{row['layer']}/{name}": value for row in spectrum for name, value in row["fraction"].items()}


def write_spectrum_artifacts(spectrum: list[dict], folder, title: str = "energy per isotypic component") -> list:
    """Write ``spectrum.md`` (table), ``spectrum.json`` (rows) and ``spectrum.png`` (heat map) into folder."""
    os.makedirs(folder, exist_ok=True)
    paths = [os.path.join(folder, name) for name in ("spectrum.md", "spectrum.json", "spectrum.png")]
    with open(paths[0], "w") as f:
        f.write(spectrum_table(spectrum) + "\n")
    with open(paths[1], "w") as f:
        json.dump(spectrum, f, indent=1)
    plot_spectrum(spectrum, paths[2], title)
    return paths
