"""PNG figures of a run (learning curves, confusion matrix or predicted vs true) and of an experiment
(run comparison)."""

from __future__ import annotations

import pathlib
from typing import Sequence

import numpy as np
# Figures made directly (not through pyplot) render with Agg on any machine, need no display and
# no global backend choice, and are freed with the object instead of by plt.close.
from matplotlib.figure import Figure


def _subplots(figsize, *grid):
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*grid)


def learning_curves(history: Sequence[dict], path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """Loss and accuracy (a regression: mae) per epoch, training and validation, and the learning
    rate, side by side."""
    from matplotlib.ticker import MaxNLocator

    epochs = np.arange(1, len(history) + 1)
    with_lr = bool(history) and all("lr" in h for h in history)
    fig, axes = _subplots((15 if with_lr else 10, 4), 1, 3 if with_lr else 2)
    if with_lr:
        axes[2].plot(epochs, [h["lr"] for h in history], "o-", color="C2")
        axes[2].set_xlabel("epoch")
        axes[2].set_ylabel("learning rate (start of epoch)")
        axes[2].xaxis.set_major_locator(MaxNLocator(integer=True))
        axes[2].grid(alpha=0.3)
    metric = "mae" if history and "mae" in history[0] else "accuracy"
    for ax, key in zip(axes, ("loss", metric)):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.plot(epochs, [h[key] for h in history], "o-", label=f"train {key}")
        if all(f"val_{key}" in h for h in history):
            ax.plot(epochs, [h[f"val_{key}"] for h in history], "s-", label=f"validation {key}")
        ax.set_xlabel("epoch")
        ax.set_ylabel(key)
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def predicted_vs_true(targets, predictions, target_names: Sequence[str], path: str | pathlib.Path,
                      title: str = "") -> pathlib.Path:
    """A regression's predictions against the true targets, one panel per target, with the
    diagonal (perfect predictions) and each target's MAE and RMSE in its title.

    Args:
        targets, predictions: arrays (examples, T) (or (examples,) for one target).
        target_names: T names.
        path: the PNG to write.
        title: the figure's title.

    Example:

    >>> import numpy as np, tempfile, os
    >>> out = predicted_vs_true(np.arange(4.0), np.arange(4.0) + 0.5, ["y"],
    ...                         os.path.join(tempfile.mkdtemp(), "pvt.png"))
    >>> out.name
    'pvt.png'
    """
    targets = np.asarray(targets, np.float64).reshape(len(targets), -1)
    predictions = np.asarray(predictions, np.float64).reshape(len(predictions), -1)
    if targets.shape != predictions.shape:
        raise ValueError(f"targets {targets.shape} and predictions {predictions.shape} differ in shape")
    count = targets.shape[1]
    names = list(target_names) if len(target_names) == count else [f"target {i}" for i in range(count)]
    fig, axes = _subplots((4.5 * count, 4.5), 1, count)
    axes = np.atleast_1d(axes)
    for i, ax in enumerate(axes):
        t, p = targets[:, i], predictions[:, i]
        lo, hi = float(min(t.min(), p.min())), float(max(t.max(), p.max()))
        ax.plot([lo, hi], [lo, hi], "--", color="0.5", linewidth=1, label="predicted = true")
        ax.scatter(t, p, s=12, alpha=0.7)
        mae, rmse = float(np.mean(np.abs(p - t))), float(np.sqrt(np.mean((p - t) ** 2)))
        ax.set_title(f"{names[i]}: MAE {mae:.3g}, RMSE {rmse:.3g}", fontsize=10)
        ax.set_xlabel("true")
        ax.set_ylabel("predicted")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="upper left")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def confusion_counts(labels, predictions, num_classes: int) -> np.ndarray:
    """counts[i, j]: examples of true class i predicted as j."""
    labels, predictions = np.asarray(labels, np.int64).ravel(), np.asarray(predictions, np.int64).ravel()
    if labels.shape != predictions.shape:
        raise ValueError(f"{labels.size} labels but {predictions.size} predictions")
    for name, v in (("label", labels), ("prediction", predictions)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"a {name} ({v.min() if v.min() < 0 else v.max()}) is outside the "
                             f"{num_classes} class names")
    counts = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def confusion_matrix(labels, predictions, class_names: Sequence[str], path: str | pathlib.Path,
                     title: str = "") -> pathlib.Path:
    """Row-normalised confusion matrix (rows: true class), with counts in the cells when few classes."""
    k = len(class_names)
    counts = confusion_counts(labels, predictions, k)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(5.0, 0.28 * k + 2)
    fig, ax = _subplots((size + 1, size))
    im = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(k), class_names, rotation=90, fontsize=8 if k > 12 else 10)
    ax.set_yticks(range(k), class_names, fontsize=8 if k > 12 else 10)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    if k <= 12:
        for i in range(k):
            for j in range(k):
                if counts[i, j]:
                    ax.text(j, i, str(counts[i, j]), ha="center", va="center",
                            color="white" if rates[i, j] > 0.5 else "black", fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of true class")
    acc = np.trace(counts) / max(counts.sum(), 1)
    ax.set_title(f"{title} accuracy {acc:.3f}".strip())
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path


def comparison(rows: Sequence[dict], curves: dict[str, Sequence[float]], path: str | pathlib.Path,
               title: str = "", metric: str = "accuracy") -> pathlib.Path:
    """Left: validation accuracy per epoch of each run. Right: test accuracy against training
    examples/s. Rows as made by `pipelines.compare.collect` (``run``, ``model``, ``test_accuracy``,
    ``examples_per_second``), in table order: run i has the same colour and number in both panels
    and in the table; runs without a test accuracy are left out of the right panel. ``metric="mae"``
    (regression runs): validation MAE per epoch and test MAE (``test_mae``) instead."""
    from matplotlib.ticker import MaxNLocator

    ncol = 2 if len(rows) > 4 else 1
    legend_inches = 0.2 * -(-len(rows) // ncol) + 0.25
    height = 4.5 + legend_inches
    fig, (left, right) = _subplots((12, height), 1, 2)
    handles = []
    for i, row in enumerate(rows):
        color = f"C{i % 10}"
        label = f"{i + 1}. {row['run']}" + (f" ({row['model']})" if row.get("model") else "")
        values = curves.get(row["run"]) or []
        (line,) = left.plot(np.arange(1, len(values) + 1), values, "o-", ms=3, color=color, label=label)
        handles.append(line)
        x, y = row.get("examples_per_second"), row.get(f"test_{metric}")
        if x is not None and y is not None:
            right.scatter([x], [y], s=40, color=color)
            right.annotate(str(i + 1), (x, y), fontsize=9, xytext=(4, 4), textcoords="offset points")
    left.set_xlabel("epoch")
    name = "MAE" if metric == "mae" else metric
    left.set_ylabel(f"validation {name}")
    left.xaxis.set_major_locator(MaxNLocator(integer=True))
    left.grid(alpha=0.3)
    right.set_xlabel("training examples/s (median epoch)")
    right.set_ylabel(f"test {name}")
    right.margins(0.15)
    right.grid(alpha=0.3)
    if handles:
        fig.legend(handles=handles, loc="lower center", ncol=ncol, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, legend_inches / height, 1, 1))
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    return path
