"""Network spectra on C_n signal networks and on the set classifier; table, PNG and metric names."""

import keras
import numpy as np
import pytest

from setnet.layers import TiedEquivariantDense
from setnet.spectral import decompose
from setnet.spectral.spectrum import (
    network_spectrum, plot_spectrum, spectrum_metrics, spectrum_table, write_spectrum_artifacts,
)
from setnet.symmetry import colors, cyclic


def c8_model(use_bias=False):
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 2))
    h = TiedEquivariantDense(4, colors=colors(cyclic(8)), use_bias=use_bias, name="conv")(inputs)
    h = keras.layers.Activation("relu", name="relu")(h)
    h = TiedEquivariantDense(3, colors=colors(cyclic(8)), use_bias=use_bias, name="conv2")(h)
    out = keras.layers.Dense(2, name="head")(keras.layers.GlobalAveragePooling1D(name="pool")(h))
    return keras.Model(inputs, out)


def test_spectrum_follows_schur_and_the_interaction_graph():
    # Signals with energy only at frequency 2 of C_8: the linear layer keeps it there (Schur); ReLU sends it
    # to 0, 2 and 4 and never to the odd frequencies (gcd(8, 2*2) = 4 divides j, or j = 2).
    d = decompose("C8")
    rng = np.random.default_rng(0)
    x = d.filter(rng.normal(size=(64, 8, 2)), ["k=2"], axis=1).astype("float32")
    rows = network_spectrum(c8_model(), x, "C8")
    assert [r["layer"] for r in rows] == ["input", "conv", "relu", "conv2"]
    by = {r["layer"]: r["fraction"] for r in rows}
    assert by["input"]["k2"] == pytest.approx(1.0)
    assert by["conv"]["k2"] == pytest.approx(1.0, abs=1e-6)
    assert by["relu"]["k1"] < 1e-9 and by["relu"]["k3"] < 1e-9
    assert by["relu"]["k0"] > 0.05 and by["relu"]["k4"] > 1e-4
    # energies add up to the squared norm of the activations
    for r in rows:
        np.testing.assert_allclose(sum(r["fraction"].values()), 1.0, rtol=1e-9)
    assert rows[0]["total"] == pytest.approx(float((x.astype(np.float64) ** 2).sum()), rel=1e-6)


def test_dataset_batches_and_errors(tmp_path):
    import tensorflow as tf

    x = np.random.default_rng(1).normal(size=(40, 8, 2)).astype("float32")
    ds = tf.data.Dataset.from_tensor_slices((x, np.zeros(40, "int64"))).batch(16)
    model = c8_model(use_bias=True)
    rows = network_spectrum(model, ds, "C8", layers=["relu"], max_batches=2)
    assert [r["layer"] for r in rows] == ["relu"]
    assert spectrum_table(rows).startswith("| layer | k=0 | k=1 | k=2 | k=3 | k=4 |")
    with pytest.raises(ValueError, match="no \\(batch, N, C\\) output"):
        network_spectrum(model, ds, "C8", layers=["head"])
    with pytest.raises(ValueError, match="no layer with a \\(batch, 5, C\\)"):
        network_spectrum(model, ds, "C5")
    with pytest.raises(ValueError, match="no batches"):
        network_spectrum(model, ds, "C8", max_batches=0)


def test_set_classifier_spectrum_ignores_padding():
    from setnet.models import build_classifier

    keras.utils.set_random_seed(2)
    model = build_classifier({"num_classes": 3, "blocks": [{"kind": "linear", "units": 8},
                                                           {"kind": "linear", "units": 8}], "head": [8]})
    rng = np.random.default_rng(2)
    pts = rng.normal(size=(6, 10, 3)).astype("float32")
    full = {"points": pts, "mask": np.ones((6, 10), bool)}
    padded = {"points": np.concatenate([pts, rng.normal(size=(6, 5, 3)).astype("float32")], axis=1),
              "mask": np.concatenate([np.ones((6, 10), bool), np.zeros((6, 5), bool)], axis=1)}
    a = network_spectrum(model, full, "S")
    b = network_spectrum(model, padded, "S")
    assert [r["layer"] for r in a] == [r["layer"] for r in b]
    assert a[0]["layer"] == "points" and len(a) >= 4
    for ra, rb in zip(a, b):
        assert set(ra["fraction"]) == {"trivial", "standard"}
        np.testing.assert_allclose([ra["energy"]["trivial"], ra["energy"]["standard"]],
                                   [rb["energy"]["trivial"], rb["energy"]["standard"]], rtol=1e-4, atol=1e-6)
    # the S_n trivial energy of the input is n * ||mean||^2 per set and channel
    expected = float((pts.astype(np.float64).mean(axis=1) ** 2).sum() * 10)
    assert a[0]["energy"]["trivial"] == pytest.approx(expected, rel=1e-6)


def test_artifacts_and_metrics(tmp_path):
    x = np.random.default_rng(3).normal(size=(16, 8, 2)).astype("float32")
    rows = network_spectrum(c8_model(), x, "C8")
    paths = write_spectrum_artifacts(rows, tmp_path / "art")
    assert open(paths[2], "rb").read(8) == b"\x89PNG\r\n\x1a\n"
    assert open(paths[0]).read().startswith("| layer | k=0")
    plot_spectrum(rows, tmp_path / "s.png")
    metrics = spectrum_metrics(rows)
    assert "spectrum/relu/k0" in metrics and len(metrics) == 4 * 5
    assert sum(v for k, v in metrics.items() if k.startswith("spectrum/relu/")) == pytest.approx(1.0)


def test_progress_line_goes_to_stderr_and_is_erased(capsys):
    x = np.random.default_rng(3).normal(size=(4, 8, 2)).astype("float32")
    network_spectrum(c8_model(), x, "C8", progress=True)
    err = capsys.readouterr().err
    assert "spectrum: batch 1" in err and err.endswith("\r")
    network_spectrum(c8_model(), x, "C8", progress=False)
    assert capsys.readouterr().err == ""
