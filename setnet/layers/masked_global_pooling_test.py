import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.layers import MaskedGlobalPooling

REDUCE = {"sum": np.sum, "mean": np.mean, "max": np.max}


@settings(max_examples=10, deadline=None)
@given(n=st.integers(1, 8), mode=st.sampled_from(["sum", "mean", "max"]), seed=st.integers(0, 2**31 - 1),
       data=st.data())
def test_invariant_and_equal_to_pooling_the_real_points(n, mode, seed, data):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(3, n, 2)).astype("float32")
    mask = rng.random((3, n)) < 0.6
    mask[0] = True
    layer = MaskedGlobalPooling(mode)
    perm = np.array(data.draw(st.permutations(range(n))))
    y = np.asarray(layer(x, mask=mask))
    np.testing.assert_allclose(layer(x[:, perm], mask=mask[:, perm]), y, atol=1e-5)
    for b in range(3):
        expected = REDUCE[mode](x[b, mask[b]], axis=0) if mask[b].any() else np.zeros(2)
        np.testing.assert_allclose(y[b], expected, atol=1e-5)
    np.testing.assert_allclose(layer(x), REDUCE[mode](x, axis=1), atol=1e-5)


def test_padding_values_have_no_effect_and_empty_sets_pool_to_zero():
    x = np.array([[[1.0, -2.0], [3.0, -4.0], [1e30, 1e30]], [[7.0, 7.0], [8.0, 8.0], [9.0, 9.0]]], "float32")
    mask = np.array([[True, True, False], [False, False, False]])
    assert MaskedGlobalPooling("max")(x, mask=mask).numpy().tolist() == [[3.0, -2.0], [0.0, 0.0]]
    assert MaskedGlobalPooling("mean")(x, mask=mask).numpy().tolist() == [[2.0, -3.0], [0.0, 0.0]]
    assert MaskedGlobalPooling("sum")(x, mask=mask).numpy().tolist() == [[4.0, -6.0], [0.0, 0.0]]


def test_config_output_shape_and_errors():
    layer = MaskedGlobalPooling("mean", name="pool")
    assert MaskedGlobalPooling.from_config(layer.get_config()).get_config() == layer.get_config()
    assert layer.compute_output_shape((None, None, 5)) == (None, 5)
    assert layer.compute_mask(None, np.ones((1, 2), bool)) is None
    with pytest.raises(ValueError, match="mode"):
        MaskedGlobalPooling("median")
