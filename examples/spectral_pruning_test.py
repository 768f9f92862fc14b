"""The worked example end to end on a tiny budget, and the pruning machinery it relies on."""

import json

import numpy as np
import pytest

from examples.spectral_pruning import (
    build_network, main, make_signals, mixed_input_check, pruned_copy, pruning_plans, run,
)
from setnet.spectral import decompose


def test_signals_have_a_flat_spectrum_and_low_frequency_labels():
    x, y = make_signals(4000, 16, seed=0)
    frac = decompose("C16").energy(x, axis=1) / (x ** 2).sum()
    dims = np.array([c.dim for c in decompose("C16").components])
    np.testing.assert_allclose(frac, dims / 16, atol=0.01)  # same energy per real dimension
    assert set(np.unique(y)) == {0, 1, 2} and np.bincount(y).min() > 1200
    # the label ignores the high frequencies: removing them leaves it unchanged
    x_low = decompose("C16").filter(x, ["k0", "k1", "k2", "k3"], axis=1)
    spec = np.abs(np.fft.rfft(x_low[:, :, 0], axis=1))[:, 1:4]
    np.testing.assert_array_equal(np.argmax(spec, axis=1), y)


@pytest.mark.slow
def test_tiny_run(tmp_path):
    results = run(tmp_path, n=8, channels=4, depth=2, train_size=256, test_size=128, epochs=1, seeds=(0,),
                  verbose=False)
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["runs"][0]["pruned"].keys() == pruning_plans(8, 2, 3).keys()
    assert 0 <= saved["runs"][0]["accuracy"] <= 1
    assert [r["layer"] for r in saved["runs"][0]["spectrum"]] == ["input", "conv1", "relu1", "conv2", "relu2"]
    for name in ("spectrum.png", "c8_relu_graph.png"):
        assert (tmp_path / name).read_bytes()[:4] == b"\x89PNG"
    assert "| trained, unpruned |" in (tmp_path / "report.md").read_text()
    assert results["mixed_input_check"] == mixed_input_check(8)


def test_pruning_keeps_invariance_and_full_keep_is_identity():
    import keras

    keras.utils.set_random_seed(0)
    model = build_network(8, 4, 2)
    x, _ = make_signals(32, 8, seed=1)
    all_k = [f"k{k}" for k in range(5)]
    same = pruned_copy(model, 8, 4, 2, [all_k, all_k])
    np.testing.assert_allclose(same.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    low = pruned_copy(model, 8, 4, 2, [["k0", "k1"], None])
    rng = np.random.default_rng(0)
    for _ in range(3):  # the pruned network is still C_8-invariant
        shift = np.roll(np.arange(8), int(rng.integers(1, 8)))
        np.testing.assert_allclose(low.predict(x[:, shift], verbose=0), low.predict(x, verbose=0), atol=1e-5)


def test_mixed_inputs_interact():
    # The interaction graph is about one component at a time: with a second component or a bias present,
    # the energy landing at k=1 depends on it.
    rows = {(r["b"], r["c"]): r["energy_k1"] for r in mixed_input_check(16)}
    assert rows[(0.3, 0)] != pytest.approx(rows[(0, 0)], rel=1e-3)
    assert rows[(0, 0.3)] > rows[(0, 0)] > rows[(0, -0.3)]


def test_cli_rejects_bad_sizes(capsys):
    assert main(["--n", "4"]) == 2
    assert "--n >= 8" in capsys.readouterr().err
