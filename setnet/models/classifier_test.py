import keras
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.config import ConfigError
from setnet.models import ModelConfig, QuadraticBlock, build_classifier, build_pointnet

# One model per block kind, tiny; built once (Keras model construction costs seconds on 2 cores).
CONFIGS = {
    "linear": [{"kind": "linear", "units": 6}, {"kind": "linear", "units": 6, "pooling": "max"}],
    "quadratic": [{"kind": "quadratic", "units": 5, "symmetric": False, "pooling": "sum"},
                  {"kind": "quadratic", "units": 4, "rank": 2}],
    "folded": [{"kind": "linear", "units": 4}, {"kind": "folded", "units": 5, "order": "quadratic"},
               {"kind": "folded", "units": 4, "group": "pairs", "pooling": "sum"}],
}


def _trained_like(model, rng):
    """Random weights, and moving statistics away from their initial 0/1, so that inference mode
    exercises every parameter."""
    model.set_weights([rng.normal(scale=0.5, size=w.shape).astype(w.dtype) if "variance" not in v.path
                       else rng.uniform(0.5, 2.0, size=w.shape).astype(w.dtype)
                       for v, w in zip(model.weights, model.get_weights())])
    return model


@pytest.fixture(scope="module")
def models():
    rng = np.random.default_rng(0)
    keras.utils.set_random_seed(0)
    out = {kind: _trained_like(build_classifier({"num_classes": 3, "blocks": blocks, "head": [6], "head_dropout": 0.0,
                                                 "global_pool": pool}), rng)
           for (kind, blocks), pool in zip(CONFIGS.items(), ("max", "mean", "sum"))}
    out["pointnet"] = _trained_like(build_pointnet(3), rng)
    return out


def _predict(model, points, mask, training=False):
    return np.asarray(model({"points": points, "mask": mask}, training=training))


@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(["linear", "quadratic", "folded", "pointnet"]), n=st.integers(2, 9),
       seed=st.integers(0, 2**31 - 1), data=st.data())
def test_permutation_invariant(models, kind, n, seed, data):
    model = models[kind]
    rng = np.random.default_rng(seed)
    points = rng.normal(size=(2, n, 3)).astype("float32")
    mask = np.ones((2, n), bool)
    perm = np.array(data.draw(st.permutations(range(n))))
    np.testing.assert_allclose(_predict(model, points[:, perm], mask), _predict(model, points, mask),
                               rtol=1e-4, atol=1e-4)


@settings(max_examples=8, deadline=None)
@given(kind=st.sampled_from(["linear", "quadratic", "folded", "pointnet"]), sizes=st.lists(
    st.integers(1, 7), min_size=2, max_size=3), pad=st.integers(0, 4), seed=st.integers(0, 2**31 - 1))
def test_padded_and_masked_equals_unpadded(models, kind, sizes, pad, seed):
    """Sets of different sizes padded into one batch (padding holding garbage, not zeros) give
    each set's unpadded answer."""
    model = models[kind]
    rng = np.random.default_rng(seed)
    width = max(sizes) + pad
    sets = [rng.normal(size=(k, 3)).astype("float32") for k in sizes]
    points = rng.normal(size=(len(sizes), width, 3)).astype("float32") * 10
    mask = np.zeros((len(sizes), width), bool)
    for i, s in enumerate(sets):
        points[i, : len(s)] = s
        mask[i, : len(s)] = True
    batched = _predict(model, points, mask)
    for i, s in enumerate(sets):
        alone = _predict(model, s[None], np.ones((1, len(s)), bool))
        np.testing.assert_allclose(batched[i : i + 1], alone, rtol=1e-4, atol=1e-4)


def test_padding_is_inert_in_training_mode_too(models):
    # Batch statistics are taken over real points only, so padding changes nothing when training.
    model = models["quadratic"]
    rng = np.random.default_rng(1)
    points = rng.normal(size=(3, 5, 3)).astype("float32")
    padded = np.concatenate([points, rng.normal(size=(3, 3, 3)).astype("float32")], axis=1)
    mask = np.concatenate([np.ones((3, 5), bool), np.zeros((3, 3), bool)], axis=1)
    np.testing.assert_allclose(_predict(model, padded, mask, training=True),
                               _predict(model, points, np.ones((3, 5), bool), training=True), rtol=1e-4, atol=1e-4)


def test_permutation_changes_answer_of_a_non_invariant_control():
    # The invariance tests above can fail: a model reading the first point is caught by them.
    points = keras.Input((None, 3), name="points")
    mask = keras.Input((None,), dtype="bool", name="mask")
    first = keras.layers.Dense(3)(keras.layers.Lambda(lambda p: p[:, 0])(points))
    model = keras.Model({"points": points, "mask": mask}, first)
    x = np.random.default_rng(0).normal(size=(1, 4, 3)).astype("float32")
    m = np.ones((1, 4), bool)
    assert not np.allclose(_predict(model, x[:, ::-1], m), _predict(model, x, m), atol=1e-4)


def test_config_errors_name_the_key():
    with pytest.raises(ConfigError, match=r"blocks\[0\]: unknown key 'unit'.*did you mean 'units'"):
        build_classifier({"num_classes": 3, "blocks": [{"kind": "linear", "unit": 4}]})
    with pytest.raises(ConfigError, match="num_classes: must be an integer >= 2, got None"):
        build_classifier({"blocks": [{"kind": "linear", "units": 4}]})
    with pytest.raises(ConfigError, match=r"blocks\[0\]: a folded block .* cannot be the first block"):
        build_classifier({"num_classes": 3, "blocks": [{"kind": "folded", "units": 4}]})
    with pytest.raises(ConfigError, match=r"blocks\[0\].pooling: a quadratic block pools with sum or mean"):
        build_classifier({"num_classes": 3, "blocks": [{"kind": "quadratic", "units": 4, "pooling": "max"}]})
    with pytest.raises(ConfigError, match=r"head_dropout: must be < 1.0, got 1.0"):
        ModelConfig(head_dropout=1.0)
    with pytest.raises(ConfigError, match=r"blocks\[0\]: unknown key 'rank' for a 'linear' block.*"
                                          r"it belongs to 'quadratic' blocks"):
        ModelConfig.from_dict({"blocks": [{"units": 4, "rank": 2}]})


def test_model_config_is_typed_and_round_trips():
    cfg = ModelConfig.from_dict({"blocks": [{"kind": "quadratic", "units": 4, "rank": 2}], "head": [4],
                                 "l2": 0})
    assert isinstance(cfg.blocks[0], QuadraticBlock) and cfg.blocks[0].pooling == "mean"
    assert cfg.head == (4,) and cfg.l2 == 0.0 and isinstance(cfg.l2, float)
    assert cfg.to_dict()["blocks"][0] == {"kind": "quadratic", "units": 4, "pooling": "mean", "activation": "relu",
                                          "normalization": True, "dropout": 0.0, "symmetric": True, "rank": 2}
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg
    model = build_classifier(cfg, num_classes=5)
    assert model.output.shape[-1] == 5
    assert {t.name for t in model.inputs} == {"points", "mask"}


def test_pointnet_is_the_published_architecture():
    model = build_pointnet(40)
    dense = [layer.units for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    assert dense == [64, 64, 64, 128, 1024, 512, 256, 40]
    # Shared MLP + head parameters of PointNet without T-Nets (plus normalisation scale/offset).
    assert 800_000 < model.count_params() < 850_000
