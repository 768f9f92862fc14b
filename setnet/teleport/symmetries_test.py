"""Exactness of the discovered symmetries: every group element leaves every output unchanged."""

import keras
import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.teleport import find_symmetries, mix_channels, permute_channels, scale_channels
from setnet.teleport.symmetries import ChannelSymmetry, WeightRole, _assign, _weights64, scale_roles
from tests.support.teleport import set_batch, set_model


def _outputs(model, x, training=False):
    return np.asarray(model(x, training=training))


def _close(a, b, rtol=2e-5):
    scale = max(1.0, float(np.abs(a).max()))
    np.testing.assert_allclose(a, b, rtol=0, atol=rtol * scale * 10)


def _random_element(model, rng):
    """Applies a random element of every exact group of every symmetry; returns what was applied."""
    applied = []
    for sym in find_symmetries(model).symmetries:
        for group in sorted(sym.groups):
            if group == "scaling":
                scale_channels(model, sym, rng.normal(0, 1.0, sym.width))
            elif group == "gl":
                mix_channels(model, sym, scipy.linalg.expm(rng.normal(0, 0.5 / np.sqrt(sym.width),
                                                                      (sym.width, sym.width))))
            else:
                permute_channels(model, sym, rng.permutation(sym.width))
            applied.append((sym.producer, group))
    return applied


def test_dense_chain_pairs_and_groups():
    inputs = keras.Input((5,))
    h = keras.layers.Dense(7, activation="relu", name="a")(inputs)
    h = keras.layers.Dense(6, name="lin")(h)
    h = keras.layers.LeakyReLU(name="leaky")(h)
    h = keras.layers.Dense(4, activation="tanh", name="t")(h)
    out = keras.layers.Dense(2, name="out")(h)
    report = find_symmetries(keras.Model(inputs, out))
    found = {s.producer: (s.consumers, s.groups, s.path) for s in report.symmetries}
    assert found == {
        "a": (("lin",), {"permutation", "scaling"}, ()),
        "lin": (("t",), {"permutation", "scaling"}, ("leaky",)),  # LeakyReLU after: no GL
        "t": (("out",), {"permutation"}, ()),  # tanh: permutations only
    }
    assert dict(report.skipped) == {"out": "its channels reach a model output"}


def test_scaling_across_tanh_or_normalisation_would_change_the_function():
    # The negative controls: what discovery refuses really is not a symmetry.
    for placement, activation in (("layer", "tanh"), ("batchnorm", "relu"), ("norm", "relu")):
        model = set_model([("linear", 6, activation, "sum", placement), ("linear", 5, "relu", "mean", "inside")])
        x, _ = set_batch(4, 6, seed=1)
        report = find_symmetries(model)
        block0 = [s for s in report.symmetries if s.producer == "block0"]
        if placement in ("batchnorm", "norm"):
            assert not block0
            assert f"normalisation layer block0_{placement}" in dict(report.skipped)["block0"]
        else:
            assert block0[0].groups == {"permutation"}
        # Batch statistics (training mode): fresh moving statistics would make the layer ~identity.
        training = placement in ("batchnorm", "norm")
        before = _outputs(model, x, training)
        # Force the scaling law on the pair anyway, bypassing the check.
        v = {w.path: i for i, w in enumerate(model.trainable_variables)}
        out = tuple(WeightRole(v[f"block0/{n}"], (1,) if n != "bias" else (0,), n)
                    for n in ("lambda_kernel", "gamma_kernel", "bias"))
        inc = tuple(WeightRole(v[f"block1/{n}"], (0,), n) for n in ("lambda_kernel", "gamma_kernel"))
        forced = ChannelSymmetry("block0", ("block1",), 6, frozenset({"scaling"}), (), out, inc)
        _assign(model, forced, scale_roles(_weights64(model), forced, np.linspace(-1, 1, 6), np))
        assert np.abs(_outputs(model, x, training) - before).max() > 1e-3


@st.composite
def architectures(draw):
    n = draw(st.integers(1, 3))
    blocks = []
    for _ in range(n):
        activation = draw(st.sampled_from(["relu", "leaky_relu", "linear", "linear", "tanh"]))
        kind = draw(st.sampled_from(["linear", "linear", "quadratic", "quadratic_sym", "quadratic_rank2"]))
        pooling = draw(st.sampled_from(["sum", "mean"] + (["max"] if kind == "linear" else [])))
        placement = draw(st.sampled_from(["inside", "layer", "dropout", "batchnorm", "norm"]))
        blocks.append((kind, draw(st.integers(2, 5)), activation, pooling, placement))
    head = draw(st.lists(st.integers(2, 5), min_size=0, max_size=2))
    head_activation = draw(st.sampled_from(["relu", "linear"]))
    global_pool = draw(st.sampled_from(["max", "mean", "sum"]))
    return blocks, head, head_activation, global_pool


@settings(max_examples=15, deadline=None)
@given(architectures(), st.integers(0, 2**16))
def test_random_group_elements_leave_outputs_unchanged(arch, seed):
    blocks, head, head_activation, global_pool = arch
    model = set_model(blocks, head=head, head_activation=head_activation, global_pool=global_pool, seed=seed % 97)
    x, _ = set_batch(5, 7, seed=seed)
    before = _outputs(model, x)
    applied = _random_element(model, np.random.default_rng(seed))
    _close(before, _outputs(model, x))
    report = find_symmetries(model)
    # Every Dense-like layer that does not feed the logits directly is either used or explained.
    named = {s.producer for s in report.symmetries} | {n for n, _ in report.skipped}
    assert named == {f"block{i}" for i in range(len(blocks))} | {f"head{j}" for j in range(len(head))} | {"logits"}
    assert len(applied) == sum(len(s.groups) for s in report.symmetries)


def test_gl_exact_across_linear_and_mean_pooling_but_not_max():
    mean = set_model([("linear", 5, "linear", "sum", "inside"), ("linear", 4, "relu", "mean", "inside")],
                     global_pool="mean")
    groups = {s.producer: s.groups for s in find_symmetries(mean).symmetries}
    assert "gl" in groups["block0"]
    maxed = set_model([("linear", 5, "linear", "sum", "inside"), ("linear", 4, "relu", "max", "inside")])
    groups = {s.producer: s.groups for s in find_symmetries(maxed).symmetries}
    assert groups["block0"] == {"permutation", "scaling"}  # block1 max-pools its input: no mixing
    with pytest.raises(ValueError, match="GL\\(h\\) is not exact"):
        mix_channels(maxed, find_symmetries(maxed).symmetries[0], np.eye(5))
    pooled = set_model([("linear", 5, "linear", "sum", "inside")], global_pool="max")
    (sym,) = [s for s in find_symmetries(pooled).symmetries if s.producer == "block0"]
    assert sym.groups == {"permutation", "scaling"} and sym.path == ("pool",)
    # Negative control: GL forced across the max pooling changes the logits.
    x, _ = set_batch(4, 6, seed=2)
    before = _outputs(pooled, x)
    m = scipy.linalg.expm(np.random.default_rng(0).normal(0, 0.3, (5, 5)))
    forced = ChannelSymmetry(sym.producer, sym.consumers, 5, frozenset({"gl"}), sym.path, sym.outgoing, sym.incoming)
    mix_channels(pooled, forced, m)
    assert np.abs(_outputs(pooled, x) - before).max() > 1e-3


def test_unbuilt_or_subclassed_models_get_a_clear_error():
    with pytest.raises(ValueError, match="not built"):
        find_symmetries(keras.Sequential([keras.layers.Dense(3)]))

    class Sub(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(TypeError, match="Functional or Sequential"):
        find_symmetries(Sub())


def test_sequential_models_and_shared_layers():
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(4, activation="relu"), keras.layers.Dense(2)])
    assert len(find_symmetries(model).symmetries) == 1
    inputs = keras.Input((3,))
    shared = keras.layers.Dense(3, activation="relu", name="shared")
    out = keras.layers.Dense(2, name="out")(shared(shared(inputs)))
    report = find_symmetries(keras.Model(inputs, out))
    assert not report.symmetries
    assert "shared" in dict(report.skipped)["shared"]


@pytest.mark.parametrize("kind", ["quadratic", "quadratic_sym", "quadratic_rank2"])
def test_quadratic_layers_as_producer_and_consumer(kind):
    # linear → quadratic (GL and scaling enter the quadratic kernel as M^{-1} Q M^{-T}, e^{-(t_a+t_b)})
    # → quadratic (its outputs scale through its own quadratic kernel) → relu head.
    model = set_model([("linear", 4, "linear", "sum", "inside"), (kind, 3, "relu", "mean", "inside"),
                       (kind, 3, "leaky_relu", "sum", "layer")], head=[4], seed=7)
    groups = {s.producer: s.groups for s in find_symmetries(model).symmetries}
    assert groups == {"block0": {"permutation", "scaling", "gl"}, "block1": {"permutation", "scaling"},
                      "block2": {"permutation", "scaling"}, "head0": {"permutation", "scaling"}}
    x, _ = set_batch(5, 6, seed=3)
    before = _outputs(model, x)
    _random_element(model, np.random.default_rng(kind.__len__()))
    _close(before, _outputs(model, x))


def test_quadratic_consumer_weights_scale_by_e_to_minus_ta_plus_tb():
    # linear (relu) → quadratic: the quadratic kernel Q[o, a, b, u] meets x_a x_b, so scaling the
    # producer's channels by e^t must divide it by e^{t_a + t_b}; dividing by e^{t_a} alone (the law
    # of a linear consumer) is not a symmetry.
    model = set_model([("linear", 4, "relu", "sum", "inside"), ("quadratic", 3, "relu", "mean", "inside")],
                      head=[], seed=11)
    (sym,) = [s for s in find_symmetries(model).symmetries if s.producer == "block0"]
    x, _ = set_batch(5, 6, seed=4)
    before = _outputs(model, x)
    (q,) = [v for v in model.trainable_variables if v.path == "block1/quadratic_kernel"]
    q0 = q.numpy().astype(np.float64)
    t = np.array([0.7, -0.4, 0.2, -1.1])
    scale_channels(model, sym, t)
    expected = q0 * np.exp(-(t[None, :, None, None] + t[None, None, :, None]))
    np.testing.assert_allclose(q.numpy(), expected, rtol=1e-6)
    _close(before, _outputs(model, x))
    # Negative control: the linear law on the quadratic kernel changes the outputs.
    q.assign((q0 * np.exp(-t[None, :, None, None])).astype("float32"))
    assert np.abs(_outputs(model, x) - before).max() > 1e-3
