"""PNG figures of a run (learning curves, confusion matrix) and of an experiment (run comparison)."""

from __future__ import annotations

import pathlib
from typing import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curves(history: Sequence[dict], path: str | pathlib.Path, title: str = "") -> pathlib.Path:
    """Loss and accuracy per epoch, training and validation, side by side."""
    epochs = np.arange(1, len(history) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, key in zip(axes, ("loss", "accuracy")):
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
    plt.close(fig)
    return path


def confusion_matrix(labels, predictions, class_names: Sequence[str], path: str | pathlib.Path,
                     title: str = "") -> pathlib.Path:
    """Row-normalised confusion matrix (rows: true class), with counts in the cells when few classes."""
    k = len(class_names)
    counts = np.zeros((k, k), dtype=np.int64)
    np.add.at(counts, (np.asarray(labels, np.int64), np.asarray(predictions, np.int64)), 1)
    rates = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    size = max(5.0, 0.28 * k + 2)
    fig, ax = plt.subplots(figsize=(size + 1, size))
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
    plt.close(fig)
    return path


def comparison(rows: Sequence[dict], curves: dict[str, Sequence[float]], path: str | pathlib.Path,
               title: str = "") -> pathlib.Path:
    """Left: validation accuracy per epoch of each run. Right: test accuracy against training
    examples/s (rows as made by `pipelines.compare.collect`: ``run``, ``test_accuracy``,
    ``examples_per_second``; runs without both are left out of the right panel)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for name, values in curves.items():
        if values:
            left.plot(np.arange(1, len(values) + 1), values, "o-", ms=3, label=name)
    left.set_xlabel("epoch")
    left.set_ylabel("validation accuracy")
    left.grid(alpha=0.3)
    if curves:
        left.legend(fontsize=8)
    for row in rows:
        x, y = row.get("examples_per_second"), row.get("test_accuracy")
        if x is None or y is None:
            continue
        right.scatter([x], [y], s=40)
        right.annotate(row["run"], (x, y), fontsize=8, xytext=(4, 4), textcoords="offset points")
    right.set_xlabel("training examples/s")
    right.set_ylabel("test accuracy")
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = pathlib.Path(path)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
