"""teleport(): the function is unchanged, the gradient norm goes up, the optimizer state follows."""

import keras
import numpy as np
import pytest
import tensorflow as tf
from hypothesis import given, settings
from hypothesis import strategies as st

from setnet.teleport import find_symmetries, permute_channels, teleport
from tests.support.teleport import loss as make_loss
from tests.support.teleport import set_batch, set_model

# linear → linear (GL across sum pooling), relu blocks and a relu head: every group occurs.
BLOCKS = [("linear", 6, "linear", "sum", "inside"), ("linear", 5, "relu", "mean", "layer"),
          ("linear", 4, "leaky_relu", "sum", "dropout")]


def _loss_and_grad_norm(model, x, y):
    with tf.GradientTape() as tape:
        value = make_loss()(y, model(x, training=False))
    grads = tape.gradient(value, model.trainable_variables)
    return float(value), float(np.sqrt(sum(float(tf.reduce_sum(g * g)) for g in grads)))


@pytest.mark.parametrize("group", ["scaling", "gl", "auto"])
def test_teleport_keeps_the_function_and_raises_the_gradient_norm(group):
    model = set_model(BLOCKS, head=[5], seed=3)
    x, y = set_batch(8, 6, seed=0)
    others = [set_batch(8, 5 + k, seed=10 + k) for k in range(3)]
    before = [(np.asarray(model(xo)), _loss_and_grad_norm(model, xo, yo)[0]) for xo, yo in others]
    _, norm0 = _loss_and_grad_norm(model, x, y)
    result = teleport(model, x, y, make_loss(), steps=8, learning_rate=0.2, group=group)
    for (xo, yo), (out, value) in zip(others, before):
        after_out = np.asarray(model(xo))
        np.testing.assert_allclose(after_out, out, rtol=0, atol=1e-5 * max(1.0, np.abs(out).max()) * 10)
        assert abs(_loss_and_grad_norm(model, xo, yo)[0] - value) <= 1e-5 * abs(value)
    value1, norm1 = _loss_and_grad_norm(model, x, y)
    assert norm1 >= norm0 and result["grad_norm_after"] >= result["grad_norm_before"]
    assert norm1 > 1.05 * norm0  # it really moved somewhere steeper
    assert result["grad_norm_after"] == pytest.approx(norm1, rel=1e-3)
    assert result["grad_norm_before"] == pytest.approx(norm0, rel=1e-3)
    assert result["loss_after"] == pytest.approx(result["loss_before"], rel=1e-5)
    assert result["accepted_steps"] > 0 and result["seconds"] > 0
    if group == "gl":
        assert result["max_condition_number"] > 1.0 and result["max_abs_log_scale"] == 0.0


@settings(max_examples=3, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from(["scaling", "auto"]), st.floats(0.05, 1.0))
def test_teleport_on_random_models_never_lowers_the_gradient_norm(seed, group, rate):
    rng = np.random.default_rng(seed)
    blocks = [("linear", int(rng.integers(2, 6)), str(rng.choice(["relu", "linear", "leaky_relu"])),
               str(rng.choice(["sum", "mean", "max"])), "inside") for _ in range(int(rng.integers(1, 3)))]
    model = set_model(blocks, head=[int(rng.integers(2, 6))], seed=seed % 31)
    x, y = set_batch(6, 5, seed=seed)
    xo, _ = set_batch(6, 4, seed=seed + 1)
    out = np.asarray(model(xo))
    result = teleport(model, x, y, make_loss(), steps=3, learning_rate=rate, group=group)
    assert result["grad_norm_after"] >= result["grad_norm_before"]
    np.testing.assert_allclose(np.asarray(model(xo)), out, rtol=0, atol=1e-4 * max(1.0, np.abs(out).max()))


def test_channel_permutations_leave_the_gradient_norm_unchanged():
    model = set_model(BLOCKS, head=[5], seed=4)
    x, y = set_batch(8, 6, seed=1)
    value0, norm0 = _loss_and_grad_norm(model, x, y)
    rng = np.random.default_rng(0)
    before = [v.numpy().copy() for v in model.trainable_variables]
    for sym in find_symmetries(model).symmetries:
        permute_channels(model, sym, rng.permutation(sym.width))
    assert any(not np.array_equal(a, v.numpy()) for a, v in zip(before, model.trainable_variables))
    value1, norm1 = _loss_and_grad_norm(model, x, y)
    assert norm1 == pytest.approx(norm0, rel=1e-5)
    assert value1 == pytest.approx(value0, rel=1e-6)


def test_teleported_model_saves_and_reloads(tmp_path):
    model = set_model(BLOCKS, head=[5], seed=5)
    x, y = set_batch(8, 6, seed=2)
    teleport(model, x, y, make_loss(), steps=4, group="auto")
    path = tmp_path / "teleported.keras"
    model.save(path)
    reloaded = keras.models.load_model(path)
    xo, _ = set_batch(5, 7, seed=9)
    np.testing.assert_array_equal(np.asarray(reloaded(xo)), np.asarray(model(xo)))


def _moment_model():
    inputs = keras.Input((4,))
    h = keras.layers.Dense(6, name="lin")(inputs)  # linear: GL
    h = keras.layers.Dense(5, activation="relu", name="relu")(h)
    model = keras.Model(inputs, keras.layers.Dense(3, name="out")(h))
    x = np.random.default_rng(0).normal(size=(16, 4)).astype("float32")
    return model, x, np.arange(16) % 3


def _gradients(model, x, y):
    with tf.GradientTape() as tape:
        value = make_loss()(y, model(x))
    return [g.numpy() for g in tape.gradient(value, model.trainable_variables)]


@pytest.mark.parametrize("group", ["scaling", "auto"])
def test_optimizer_state_transforms_like_the_gradient(group):
    # Put g(θ) into every first-moment slot and g(θ)² into every second-moment slot: after a
    # teleport with optimizer_state="transform" they must equal g(g·θ) and, for scaling, g(g·θ)².
    keras.utils.set_random_seed(1)
    model, x, y = _moment_model()
    optimizer = keras.optimizers.Adam()
    optimizer.build(model.trainable_variables)
    grads = _gradients(model, x, y)
    for m, v, g in zip(optimizer._momentums, optimizer._velocities, grads):
        m.assign(g)
        v.assign(g * g)
    result = teleport(model, x, y, make_loss(), steps=5, group=group, optimizer=optimizer)
    assert result["optimizer_state"] == "transform" and result["accepted_steps"] > 0
    new = _gradients(model, x, y)
    for m, v, g in zip(optimizer._momentums, optimizer._velocities, new):
        np.testing.assert_allclose(m.numpy(), g, rtol=2e-3, atol=1e-6)
        if group == "scaling":
            np.testing.assert_allclose(v.numpy(), g * g, rtol=4e-3, atol=1e-7)
        assert np.all(v.numpy() >= 0)


def test_optimizer_state_keep_and_unknown_optimizers():
    keras.utils.set_random_seed(2)
    model, x, y = _moment_model()
    optimizer = keras.optimizers.Adagrad()
    optimizer.build(model.trainable_variables)
    before = [a.numpy().copy() for a in optimizer._accumulators]
    teleport(model, x, y, make_loss(), steps=3, optimizer=optimizer, optimizer_state="keep")
    for a, b in zip(optimizer._accumulators, before):
        np.testing.assert_array_equal(a.numpy(), b)
    lion = keras.optimizers.Lion()
    lion.build(model.trainable_variables)
    with pytest.raises(ValueError, match="optimizer_state='keep'"):
        teleport(model, x, y, make_loss(), steps=3, optimizer=lion)


def test_max_grad_norm_caps_the_ascent():
    model = set_model(BLOCKS, head=[5], seed=6)
    x, y = set_batch(8, 6, seed=3)
    _, norm0 = _loss_and_grad_norm(model, x, y)
    cap = norm0 * 1.2
    result = teleport(model, x, y, make_loss(), steps=10, learning_rate=2.0, group="auto", max_grad_norm=cap)
    assert result["grad_norm_before"] <= result["grad_norm_after"] <= cap * (1 + 1e-6)


def test_bad_arguments_get_clear_errors():
    model = set_model([("linear", 4, "relu", "sum", "inside")], head=[], seed=0)
    x, y = set_batch(4, 5)
    with pytest.raises(ValueError, match="group must be one of"):
        teleport(model, x, y, make_loss(), group="lorentz")
    with pytest.raises(ValueError, match="no channel symmetry for group='gl'"):
        teleport(model, x, y, make_loss(), group="gl")
    with pytest.raises(ValueError, match="needs a loss"):
        teleport(model, x, y)
    with pytest.raises(ValueError, match="optimizer_state"):
        teleport(model, x, y, make_loss(), optimizer_state="reset")


def test_gl_uses_the_exact_inverse_not_the_first_order_stand_in():
    # The papers' code moves producer columns by U(I + T) and consumer rows by (I - T)U, treating
    # I - T as the inverse of I + T. That changes the function by O(|T|^2); exp(T) with its exact
    # inverse (mix_channels, and what teleport applies) does not.
    import scipy.linalg

    from setnet.teleport.symmetries import _assign, _weights64, matrix_roles

    model = set_model(BLOCKS, head=[5], seed=8)
    (sym,) = [s for s in find_symmetries(model).symmetries if "gl" in s.groups]
    others = [set_batch(8, 5 + k, seed=20 + k) for k in range(2)]
    before = [_loss_and_grad_norm(model, xo, yo)[0] for xo, yo in others]
    start = [v.numpy().copy() for v in model.trainable_variables]
    t = np.random.default_rng(0).normal(0, 0.3, (sym.width, sym.width))
    eye = np.eye(sym.width)
    _assign(model, sym, matrix_roles(_weights64(model), sym, eye + t, (eye - t).T, np))
    stand_in = [_loss_and_grad_norm(model, xo, yo)[0] for xo, yo in others]
    assert max(abs(a - b) / abs(b) for a, b in zip(stand_in, before)) > 1e-3
    for v, w in zip(model.trainable_variables, start):
        v.assign(w)
    from setnet.teleport import mix_channels

    mix_channels(model, sym, scipy.linalg.expm(t))
    exact = [_loss_and_grad_norm(model, xo, yo)[0] for xo, yo in others]
    for a, b in zip(exact, before):
        assert abs(a - b) <= 1e-5 * abs(b)


@pytest.mark.parametrize("kind", ["adagrad", "sgd-momentum"])
def test_optimizer_state_of_adagrad_and_sgd_momentum(kind):
    # AdaGrad's accumulator is a sum of squared gradients: under scaling it maps exactly like g².
    # SGD's momentum is a sum of gradients: it maps like g. Checked against the gradients at the
    # teleported point, as for Adam above.
    keras.utils.set_random_seed(3)
    model, x, y = _moment_model()
    optimizer = keras.optimizers.Adagrad() if kind == "adagrad" else keras.optimizers.SGD(momentum=0.9)
    optimizer.build(model.trainable_variables)
    slots, law = (optimizer._accumulators, 2) if kind == "adagrad" else (optimizer.momentums, 1)
    for s, g in zip(slots, _gradients(model, x, y)):
        s.assign(g * g if law == 2 else g)
    result = teleport(model, x, y, make_loss(), steps=5, group="scaling", optimizer=optimizer)
    assert result["optimizer_state"] == "transform" and result["accepted_steps"] > 0
    assert result["max_abs_log_scale"] > 0.01
    for s, g in zip(slots, _gradients(model, x, y)):
        np.testing.assert_allclose(s.numpy(), g * g if law == 2 else g, rtol=4e-3, atol=1e-7)
