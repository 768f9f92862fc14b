"""Tests of the invariance checks with plain numpy predict functions (no TensorFlow)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet import invariance as inv

RNG = np.random.default_rng(1)
W = RNG.normal(size=(3, 5))


def _softmax(z):
    z = z - z.max(-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(-1, keepdims=True)


def deep_sets(points):
    """An invariant classifier: pointwise map, sum + max pooling, softmax."""
    h = np.tanh(points @ W)
    return _softmax(h.sum(1) + h.max(1))


def deep_sets_masked(points, mask):
    h = np.tanh(points @ W) * mask[..., None]
    big = np.where(mask[..., None], np.tanh(points @ W), -np.inf).max(1)
    return _softmax(h.sum(1) + big)


def position_weighted(points):
    """Not invariant: the i-th point gets weight i / N (tanh keeps softmax off saturation)."""
    n = points.shape[1]
    weights = (np.arange(n, dtype=np.float64) / n)[None, :, None]
    return _softmax(np.tanh((points * weights).mean(1)) @ W)


def clouds_strategy():
    return st.tuples(st.integers(2, 40), st.integers(1, 4), st.integers(0, 2**31 - 1))


@settings(max_examples=30, deadline=None)
@given(clouds_strategy())
def test_invariant_function_passes(args):
    n, k, seed = args
    clouds = np.random.default_rng(seed).normal(size=(k, n, 3)).astype(np.float32)
    result = inv.check_invariance(deep_sets, clouds, permutations=5, seed=seed)
    assert result["passed"], result
    assert result["clouds"] == k and result["permutations"] == 5
    assert result["max_abs_deviation"] < 1e-9 + 1e-6
    assert result["class_changes"] == 0


@settings(max_examples=60, deadline=None)
@given(clouds_strategy())
def test_position_dependent_function_fails(args):
    n, k, seed = args
    clouds = np.random.default_rng(seed).normal(size=(k, n, 3)).astype(np.float32) * 5
    result = inv.check_invariance(position_weighted, clouds, permutations=6, seed=seed)
    assert not result["passed"]
    assert result["max_abs_deviation"] > inv.DEFAULT_ATOL


def test_permutations_are_never_the_identity():
    # With two points every non-identity permutation is the swap, so it must always show.
    cloud = np.array([[[0.0, 0, 0], [1, 2, 3]]], np.float32)
    for seed in range(20):
        assert not inv.check_invariance(position_weighted, cloud, permutations=1,
                                        seed=seed)["passed"]


def test_clouds_of_different_sizes_and_dict_outputs():
    clouds = [RNG.normal(size=(n, 3)) for n in (1, 7, 33)]
    result = inv.check_invariance(lambda p: {"probabilities": deep_sets(p)}, clouds,
                                  permutations=3)
    assert result["passed"] and result["clouds"] == 3 and len(result["per_cloud"]) == 3


def test_tolerance_is_float32_rounding_not_zero():
    # Summing in another order changes float32 results in the last bits; that must pass,
    # while a change of 1e-3 must not.
    def noisy(points, scale):
        base = deep_sets(points.astype(np.float64))
        return base + scale * np.random.default_rng().uniform(-1, 1, size=base.shape)

    clouds = RNG.normal(size=(2, 20, 3))
    assert inv.check_invariance(lambda p: noisy(p, 1e-7), clouds)["passed"]
    assert not inv.check_invariance(lambda p: noisy(p, 1e-3), clouds)["passed"]


def test_batch_independence():
    clouds = RNG.normal(size=(4, 16, 3)).astype(np.float32)
    assert inv.check_batch_independence(deep_sets, clouds)["passed"]

    def batch_normalised(points):  # uses statistics of the whole batch: depends on the others
        return deep_sets(points - points.mean(axis=(0, 1), keepdims=True))

    result = inv.check_batch_independence(batch_normalised, clouds)
    assert not result["passed"] and result["max_abs_deviation"] > 1e-4


def test_masked_padding():
    clouds = [RNG.normal(size=(n, 3)).astype(np.float32) for n in (3, 10, 25)]
    assert inv.check_masked_padding(deep_sets, deep_sets_masked, clouds)["passed"]

    def ignores_mask(points, mask):
        return deep_sets(points)

    result = inv.check_masked_padding(deep_sets, ignores_mask, clouds)
    assert not result["passed"]


def test_pad_clouds():
    clouds = [np.ones((2, 3)), np.ones((4, 3))]
    points, mask = inv.pad_clouds(clouds)
    assert points.shape == (2, 4, 3) and points.dtype == np.float32
    assert mask.tolist() == [[True, True, False, False], [True] * 4]
    assert np.all(points[0, 2:] == 0)
    with pytest.raises(ValueError, match="smaller than the largest cloud"):
        inv.pad_clouds(clouds, num_points=3)


def test_bad_arguments_have_clear_errors():
    with pytest.raises(ValueError, match="shape"):
        inv.as_clouds(np.zeros((2, 3, 4, 5)))
    with pytest.raises(ValueError, match="N >= 1"):
        inv.as_clouds([np.zeros((0, 3))])
    with pytest.raises(ValueError, match="no clouds"):
        inv.as_clouds([])
    with pytest.raises(ValueError, match="permutations"):
        inv.check_invariance(deep_sets, RNG.normal(size=(1, 4, 3)), permutations=0)
    with pytest.raises(KeyError, match="probabilities"):
        inv.check_invariance(lambda p: {"logits": p}, RNG.normal(size=(1, 4, 3)))
    with pytest.raises(ValueError, match="rows"):
        inv.check_invariance(lambda p: deep_sets(p)[:1], RNG.normal(size=(1, 4, 3)))


def test_summary_combines_checks():
    lines = []
    summary = inv.summarize({"a": {"clouds": 2, "permutations": 3, "max_abs_deviation": 1e-7,
                                   "passed": True},
                             "b": {"clouds": 1, "max_abs_deviation": 2e-6, "passed": True}},
                            printer=lines.append)
    assert summary["passed"] and summary["max_abs_deviation"] == 2e-6
    assert "largest deviation 2.000e-06" in lines[0]
    failed = inv.summarize({"a": {"max_abs_deviation": 1.0, "passed": False}}, printer=None)
    assert not failed["passed"]
