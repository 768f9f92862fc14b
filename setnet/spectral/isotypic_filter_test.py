"""IsotypicFilter: equivariant under random group elements, a projector, serializable."""

import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.spectral import decompose
from setnet.spectral.isotypic_filter import IsotypicFilter
from setnet.symmetry import parse


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(["C8", "C7", "D6", "C3*C4", "S5"]), st.integers(0, 2**16), st.data())
def test_equivariant_under_random_elements(spec, seed, data):
    d = decompose(spec)
    keep = data.draw(st.lists(st.integers(0, len(d) - 1), unique=True))
    layer = IsotypicFilter(spec, keep)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(2, d.degree, 3)).astype("float32")
    g = parse(spec).random_element(rng)
    np.testing.assert_allclose(np.asarray(layer(x[:, g])), np.asarray(layer(x))[:, g], atol=1e-5)
    np.testing.assert_allclose(np.asarray(layer(x)), d.filter(x, keep, axis=1), atol=1e-5)


def test_projector_and_config():
    layer = IsotypicFilter("C8", ["k0", "k=1", 4])
    x = np.random.default_rng(0).normal(size=(3, 8, 2)).astype("float32")
    once = np.asarray(layer(x))
    np.testing.assert_allclose(np.asarray(layer(once)), once, atol=1e-5)
    d = decompose("C8")
    np.testing.assert_allclose(d.energy(once, axis=1)[[2, 3]], 0, atol=1e-8)
    clone = IsotypicFilter.from_config(layer.get_config())
    np.testing.assert_allclose(np.asarray(clone(x)), once, atol=1e-6)
    inputs = keras.Input((8, 2))
    model = keras.Model(inputs, IsotypicFilter("C8", ["k1"])(inputs))
    assert model.count_params() == 0


def test_bad_input():
    with pytest.raises(KeyError, match="no isotypic component 'k9'"):
        IsotypicFilter("C8", ["k9"])
    with pytest.raises(ValueError, match="spec string"):
        IsotypicFilter(parse("C8"), ["k1"])
    with pytest.raises(ValueError, match="needs 8 points"):
        IsotypicFilter("C8", ["k1"])(np.zeros((1, 6, 1), "float32"))
