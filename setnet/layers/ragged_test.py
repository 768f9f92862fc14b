"""RaggedTensor sets through the layers, a model and an export: the answers of the padded-and-masked form."""

import numpy as np
import pytest
import tensorflow as tf

from setnet.layers import (MaskedGlobalPooling, PermEquivariantLinear, PermEquivariantQuadratic,
                           SetNormalization)

SIZES = (3, 9, 1, 6)


def _sets(channels=5, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(size=(n, channels)).astype(np.float32) for n in SIZES]


def _ragged(sets):
    return tf.RaggedTensor.from_row_lengths(np.concatenate(sets), [len(s) for s in sets])


def _padded(sets, fill=0.0):
    n = max(len(s) for s in sets)
    points = np.full((len(sets), n, sets[0].shape[1]), fill, np.float32)
    mask = np.zeros((len(sets), n), bool)
    for i, s in enumerate(sets):
        points[i, :len(s)], mask[i, :len(s)] = s, True
    return points, mask


@pytest.mark.parametrize("make", [
    lambda: PermEquivariantLinear(4, pooling="mean"),
    lambda: PermEquivariantQuadratic(4, pooling="sum"),
    lambda: PermEquivariantQuadratic(4, rank=2),
    lambda: SetNormalization(),
    lambda: MaskedGlobalPooling("max"),
    lambda: MaskedGlobalPooling("mean"),
], ids=["linear", "quadratic", "quadratic_rank2", "set_normalization", "max_pool", "mean_pool"])
def test_a_layer_answers_ragged_sets_as_their_padded_masked_form(make):
    sets = _sets()
    layer = make()
    # Padding with large values: a layer that let padding in would show it.
    points, mask = _padded(sets, fill=50.0)
    dense = np.asarray(layer(points, mask=mask))
    out = layer(_ragged(sets))
    if dense.ndim == 2:  # pooled: one row per set, dense either way
        assert not isinstance(out, tf.RaggedTensor)
        np.testing.assert_allclose(np.asarray(out), dense, rtol=1e-5, atol=1e-5)
    else:
        assert isinstance(out, tf.RaggedTensor) and out.row_lengths().numpy().tolist() == list(SIZES)
        for i, n in enumerate(SIZES):
            np.testing.assert_allclose(out[i].numpy(), dense[i, :n], rtol=1e-5, atol=1e-5)


def test_set_normalization_trains_on_ragged_sets_as_on_masked_ones():
    sets = _sets(seed=1)
    a, b = SetNormalization(momentum=0.5), SetNormalization(momentum=0.5)
    points, mask = _padded(sets)
    a(points, mask=mask, training=True)
    b(_ragged(sets), training=True)
    np.testing.assert_allclose(a.moving_mean.numpy(), b.moving_mean.numpy(), rtol=1e-6)
    np.testing.assert_allclose(a.moving_variance.numpy(), b.moving_variance.numpy(), rtol=1e-6)


def test_a_ragged_input_with_a_mask_is_refused():
    with pytest.raises(ValueError, match="RaggedTensor carries its own set sizes"):
        PermEquivariantLinear(2)(_ragged(_sets()), mask=tf.ones((4, 9), tf.bool))
