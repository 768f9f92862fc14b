"""Every layer inside real Keras models: N = None, masks, .keras files, XLA and SavedModel."""

import doctest
import keras
import numpy as np
import pytest
import tensorflow as tf

import setnet.layers
from setnet.layers import (
    FoldedEquivariant,
    MaskedGlobalPooling,
    PermEquivariantLinear,
    PermEquivariantQuadratic,
    SetNormalization,
    TiedEquivariantDense,
    folded_equivariant,
    masked_global_pooling,
    perm_equivariant_linear,
    perm_equivariant_quadratic,
    set_normalization,
    tied_equivariant_dense,
)
from setnet.symmetry import colors, cyclic


def _set_model(num_classes=3):
    """A small classifier over padded sets that uses every N-dynamic layer."""
    points = keras.Input((None, 3), name="points")
    mask = keras.Input((None,), dtype="bool", name="mask")
    h = PermEquivariantLinear(8, activation="relu")(points, mask=mask)
    h = SetNormalization()(h)
    h = PermEquivariantQuadratic(8, pooling="mean", activation="relu")(h)
    h = FoldedEquivariant(8, group="hyperoctahedral", order="quadratic", pooling="mean", activation="relu")(h)
    h = PermEquivariantLinear(8, pooling="max")(h)
    logits = keras.layers.Dense(num_classes)(MaskedGlobalPooling("mean")(h))
    return keras.Model({"points": points, "mask": mask}, logits)


def _batch(rng, batch, n):
    x = rng.normal(size=(batch, n, 3)).astype("float32")
    real = rng.integers(1, n // 2 + 1, size=batch)
    half = np.arange(n // 2)[None, :] < real[:, None]
    return {"points": x, "mask": np.concatenate([half, half], axis=1)}, rng.integers(0, 3, size=batch)


def _predict(model, features):
    # An eager call: model.predict would trace a new function for every shape.
    return np.asarray(model(features, training=False))


@pytest.fixture(scope="module")
def trained():
    """The model after a few XLA-compiled training steps at N = 8."""
    keras.utils.set_random_seed(0)
    model = _set_model()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        jit_compile=True,
    )
    features, labels = _batch(np.random.default_rng(0), 16, 8)
    before = [w.numpy().copy() for w in model.trainable_weights]
    history = model.fit(features, labels, batch_size=8, epochs=1, verbose=0)
    return model, before, history


def test_trains_under_xla(trained):
    model, before, history = trained
    assert model.jit_compile is True
    assert all(np.isfinite(history.history["loss"]))
    changed = [not np.allclose(b, w.numpy()) for b, w in zip(before, model.trainable_weights)]
    assert all(changed), "every trainable variable gets a gradient"
    norm = next(layer for layer in model.layers if isinstance(layer, SetNormalization))
    assert np.any(norm.moving_mean.numpy() != 0), "SetNormalization updates its statistics under XLA"


def test_invariant_padding_inert_and_dynamic_n(trained):
    model, _, _ = trained
    rng = np.random.default_rng(1)
    features, _ = _batch(rng, 4, 12)  # not the N used in training
    y = _predict(model, features)
    g = rng.permutation(6)  # permute the pairs (the fold group) and swap within some of them
    order = np.concatenate([g, g + 6])
    order[[0, 6]] = order[[6, 0]]
    permuted = {k: v[:, order] for k, v in features.items()}
    np.testing.assert_allclose(_predict(model, permuted), y, atol=1e-4)
    noisy = {"points": np.where(features["mask"][..., None], features["points"], 1e3).astype("float32"),
             "mask": features["mask"]}
    np.testing.assert_allclose(_predict(model, noisy), y, atol=1e-4)


def test_xla_compiled_forward_equals_eager_at_several_n(trained):
    model, _, _ = trained
    compiled = tf.function(lambda f: model(f, training=False), jit_compile=True)
    for n in (8, 12):
        features, _ = _batch(np.random.default_rng(n), 3, n)
        np.testing.assert_allclose(compiled(features), _predict(model, features), rtol=1e-5, atol=1e-5)


def test_keras_file_round_trip(trained, tmp_path):
    model, _, _ = trained
    features, _ = _batch(np.random.default_rng(2), 3, 10)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # registered classes: no custom_objects needed
    np.testing.assert_allclose(_predict(loaded, features), _predict(model, features), atol=1e-6)
    assert [type(layer).__name__ for layer in loaded.layers] == [type(layer).__name__ for layer in model.layers]


def test_saved_model_keeps_n_dynamic(trained, tmp_path):
    model, _, _ = trained

    class Exported(tf.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        @tf.function(input_signature=[tf.TensorSpec([None, None, 3], tf.float32), tf.TensorSpec([None, None], tf.bool)])
        def serve(self, points, mask):
            return {"logits": self.model({"points": points, "mask": mask}, training=False)}

    tf.saved_model.save(Exported(model), str(tmp_path / "sm"))
    reloaded = tf.saved_model.load(str(tmp_path / "sm"))
    for n in (6, 14):  # trained at N = 8
        features, _ = _batch(np.random.default_rng(n), 2, n)
        got = reloaded.serve(tf.constant(features["points"]), tf.constant(features["mask"]))["logits"]
        np.testing.assert_allclose(got, _predict(model, features), rtol=1e-5, atol=1e-5)


def test_tied_dense_and_low_rank_train_under_xla_and_serialize():
    keras.utils.set_random_seed(0)
    x_in = keras.Input((6, 2))
    h = TiedEquivariantDense(4, colors=colors(cyclic(6)), activation="relu")(x_in)
    h = TiedEquivariantDense(4, colors=colors(cyclic(6), kind="quadratic"))(h)
    h = PermEquivariantQuadratic(2, symmetric=True, rank=2)(h)
    model = keras.Model(x_in, MaskedGlobalPooling("sum")(h))
    model.compile(optimizer="adam", loss="mse", jit_compile=True)
    rng = np.random.default_rng(0)
    x, target = rng.normal(size=(8, 6, 2)).astype("float32"), rng.normal(size=(8, 2)).astype("float32")
    losses = model.fit(x, target, epochs=3, verbose=0).history["loss"]
    assert np.all(np.isfinite(losses))
    clone = keras.Model.from_config(model.get_config())
    clone.set_weights(model.get_weights())
    np.testing.assert_allclose(clone(x), model(x), atol=1e-6)


@pytest.mark.parametrize("module", [
    folded_equivariant, masked_global_pooling, perm_equivariant_linear, perm_equivariant_quadratic,
    set_normalization, tied_equivariant_dense,
])
def test_docstring_examples_run(module):
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0 and result.failed == 0


def test_exports():
    assert sorted(setnet.layers.__all__) == [
        "FoldedEquivariant", "MaskedGlobalPooling", "PermEquivariantLinear", "PermEquivariantQuadratic",
        "RaggedSets", "SetNormalization", "TiedEquivariantDense",
    ]
    for name in setnet.layers.__all__:
        assert keras.saving.get_registered_name(getattr(setnet.layers, name)) == f"setnet>{name}"
