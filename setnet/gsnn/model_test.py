import doctest

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.gsnn import model as model_module
from setnet.gsnn.classify import classify, enumerate_architectures
from setnet.gsnn.groups import parse_group
from setnet.gsnn.model import GInvariantShallow, build_model
from setnet.gsnn.morphisms import grow, morphisms


def randomise(layer, rng):
    layer.set_weights([rng.normal(size=w.shape).astype("float32") for w in layer.get_weights()])


@settings(max_examples=5, deadline=None)
@given(st.sampled_from(["C6", "D4", "Q8", "C2+C4", "rot4", "D3"]), st.integers(0, 10**6))
def test_layer_is_invariant_for_every_generator(spec, seed):
    g = parse_group(spec)
    rng = np.random.default_rng(seed)
    layer = GInvariantShallow(g, channels=2)
    x = rng.normal(size=(6, g.degree)).astype("float32")
    layer(x)
    randomise(layer, rng)
    y = keras.ops.convert_to_numpy(layer(x))
    for gen in [*g.generators, int(rng.integers(g.order))]:
        moved = (x @ g.elements[gen].T).astype("float32")
        np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(moved)), y, rtol=1e-4, atol=1e-4)


def test_layer_matches_the_numpy_reference():
    g = parse_group("D4")
    rng = np.random.default_rng(0)
    layer = GInvariantShallow(g, channels=2)
    x = rng.normal(size=(5, 4))
    layer(x.astype("float32"))
    randomise(layer, rng)
    expected = float(layer.out_bias.numpy()[0])
    for p in layer.pairs:
        for ch in range(2):
            c, a, b = layer.get_params(p.index, ch)
            expected = expected + p(x, c, a, b)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(layer(x.astype("float32")))[:, 0], expected, rtol=1e-4,
                               atol=1e-4)


def test_grown_model_computes_the_same_function():
    g = parse_group("D6")
    pairs = classify(g)
    m = next(m for m in morphisms(enumerate_architectures(g)) if pairs[m.source].kind == 2 and m.covering)
    src, tgt = pairs[m.source], pairs[m.target]
    small, big = build_model(g, [src.index]), build_model(g, [tgt.index])
    rng = np.random.default_rng(1)
    c, a, b = rng.normal(size=src.dim), 0.7, -0.2
    small.layers[-1].set_params(src.index, c, a, b)
    big.layers[-1].set_params(tgt.index, *grow(src, tgt, c, a, b))
    x = rng.normal(size=(32, 6)).astype("float32")
    np.testing.assert_allclose(big.predict(x, verbose=0), small.predict(x, verbose=0), rtol=1e-4, atol=1e-5)
    assert big.layers[-1].pairs[0].width > small.layers[-1].pairs[0].width


def test_config_round_trip_and_training_step():
    model = build_model("C2+C4", architectures=None, channels=2)
    layer = model.layers[-1]
    clone = GInvariantShallow.from_config(layer.get_config())
    x = np.random.default_rng(2).normal(size=(64, 6)).astype("float32")
    clone(x)
    clone.set_weights(layer.get_weights())
    # Eager call vs compiled predict round differently in float32: values near 0 need an absolute floor.
    np.testing.assert_allclose(keras.ops.convert_to_numpy(clone(x)), model.predict(x, verbose=0), rtol=1e-5,
                               atol=1e-6)
    assert clone.architectures == layer.architectures
    # Gradients reach every weight, and one plain gradient step lowers the loss (eager: no tracing cost).
    import tensorflow as tf

    y = np.abs(x[:, :2]).sum(axis=1, keepdims=True) + np.abs(x[:, 2:]).max(axis=1, keepdims=True)

    def loss():
        return tf.reduce_mean((layer(x) - y) ** 2)

    with tf.GradientTape() as tape:
        before = loss()
    grads = tape.gradient(before, layer.trainable_weights)
    assert len(grads) == len(layer.trainable_weights) == 3 * len(layer.pairs) + 1
    assert all(np.isfinite(g.numpy()).all() and np.abs(g.numpy()).max() > 0 for g in grads)
    for v, g in zip(layer.trainable_weights, grads):
        v.assign(v - 1e-3 * g)
    assert float(loss()) < float(before)


def test_bad_input_is_clear():
    with pytest.raises(ValueError, match="not an architecture"):
        GInvariantShallow("D4", architectures=[1])
    with pytest.raises(ValueError, match="out of range"):
        GInvariantShallow("D4", architectures=[99])
    with pytest.raises(ValueError, match="channels"):
        GInvariantShallow("D4", channels=0)
    layer = GInvariantShallow("D4")
    with pytest.raises(ValueError, match="R\\^4"):
        layer(np.zeros((2, 5), dtype="float32"))
    with pytest.raises(TypeError, match="SPEC string"):
        GInvariantShallow(42)


def test_docstring_examples_run():
    result = doctest.testmod(model_module, optionflags=doctest.ELLIPSIS)
    assert result.attempted >= 2 and result.failed == 0
