"""Run and experiment figures: the confusion counts against scikit-learn, and the PNGs are written
for the shapes training and `make compare` produce (including unfinished runs)."""

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion

from pipelines import plots

PNG = b"\x89PNG\r\n\x1a\n"


def test_confusion_counts_match_sklearn():
    rng = np.random.default_rng(0)
    y, p = rng.integers(0, 7, 300), rng.integers(0, 7, 300)
    np.testing.assert_array_equal(plots.confusion_counts(y, p, 7), sk_confusion(y, p, labels=range(7)))
    with pytest.raises(ValueError, match=r"prediction \(7\) is outside the 7 class names"):
        plots.confusion_counts(y, np.where(p == 0, 7, p), 7)
    with pytest.raises(ValueError, match="300 labels but 299 predictions"):
        plots.confusion_counts(y, p[:-1], 7)


def test_pngs(tmp_path):
    history = [{"loss": 2.0 - i / 4, "accuracy": 0.2 + i / 10, "val_loss": 2.1 - i / 5, "val_accuracy": 0.1 + i / 10,
                "lr": 1e-3} for i in range(4)]
    assert plots.learning_curves(history, tmp_path / "lc.png").read_bytes()[:8] == PNG
    no_val = [{"loss": 1.0, "accuracy": 0.5}]  # a run without a validation split, nor lr
    assert plots.learning_curves(no_val, tmp_path / "lc2.png").read_bytes()[:8] == PNG
    names = [f"c{i}" for i in range(40)]  # ModelNet40: no per-cell counts, small ticks
    y = np.arange(200) % 40
    assert plots.confusion_matrix(y, y[::-1], names, tmp_path / "cm.png").read_bytes()[:8] == PNG
    rows = [{"run": "a", "model": "setnet l8", "test_accuracy": 0.5, "examples_per_second": 100.0},
            {"run": "b", "model": "pointnet", "test_accuracy": None, "examples_per_second": None}]  # still running
    png = plots.comparison(rows, {"a": [0.1, 0.3], "b": [0.2]}, tmp_path / "cmp.png", title="t")
    assert png.read_bytes()[:8] == PNG
