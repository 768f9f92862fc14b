"""TeleportCallback: schedule, budget, logged figures, tf.distribute, config section."""

import dataclasses

import keras
import numpy as np
import pytest
import tensorflow as tf

from setnet.teleport import TeleportCallback, TeleportConfig
from tests.support.teleport import loss as make_loss
from tests.support.teleport import set_batch, set_model

BLOCKS = [("linear", 6, "relu", "sum", "inside"), ("linear", 5, "linear", "mean", "inside")]


def _data(n=32, seed=0):
    x, y = set_batch(n, 6, seed=seed, padded=False)
    return x, y


def test_schedule_budget_and_function_preserved(monkeypatch):
    model = set_model(BLOCKS, head=[5], seed=0)
    model.compile(keras.optimizers.Adagrad(0.05), make_loss(), jit_compile=False)
    x, y = _data()
    probe, _ = _data(8, seed=5)
    outputs = []
    # Record the model's outputs right before and after each teleport.
    from setnet.teleport import callback as callback_module

    real = callback_module.teleport

    def spy(model, *args, **kwargs):
        before = np.asarray(model(probe))
        result = real(model, *args, **kwargs)
        outputs.append((before, np.asarray(model(probe))))
        return result

    monkeypatch.setattr(callback_module, "teleport", spy)
    batches = tf.data.Dataset.from_tensor_slices((x, y)).batch(8)
    cb = TeleportCallback(batches, epochs=[0, 2], steps=[5], max_teleports=2, group="auto", ascent_steps=3)
    model.fit(x, y, batch_size=8, epochs=3, verbose=0, callbacks=[cb])
    # Epoch 0 (step 0), then step 5 (epoch 1); the epoch-2 teleport is over budget.
    assert [(r["epoch"], r["step"]) for r in cb.history] == [(0, 0), (None, 5)]
    for r in cb.history:
        assert r["grad_norm_after"] >= r["grad_norm_before"]
        assert r["optimizer_state"] in ("transform", "none (optimizer not built)")
    for before, after in outputs:
        np.testing.assert_allclose(after, before, rtol=0, atol=1e-4 * max(1.0, np.abs(before).max()))


def test_figures_go_to_log_metrics_at_the_optimizer_step():
    logged = []
    model = set_model(BLOCKS, head=[5], seed=1)
    model.compile(keras.optimizers.SGD(0.05), make_loss(), jit_compile=False)
    x, y = _data()
    cb = TeleportCallback((x, y), epochs=[1], ascent_steps=2,
                          log_metrics=lambda metrics, step=None: logged.append((step, metrics)))
    model.fit(x, y, batch_size=16, epochs=2, verbose=0, callbacks=[cb])
    ((step, metrics),) = logged
    assert step == 2  # two optimizer steps in epoch 0
    for key in ("loss_before", "loss_after", "grad_norm_before", "grad_norm_after", "seconds", "count"):
        assert f"teleport/{key}" in metrics
    assert "teleport/step" not in metrics and "teleport/epoch" not in metrics
    assert metrics["teleport/grad_norm_after"] == pytest.approx(cb.history[0]["grad_norm_after"])
    assert all(isinstance(v, float) for k, v in metrics.items() if k != "teleport/count")


def test_under_mirrored_strategy():
    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = set_model(BLOCKS, head=[5], seed=2)
        model.compile(keras.optimizers.Adam(0.01), make_loss(), jit_compile=False)
    assert isinstance(model.trainable_variables[0].value, tf.distribute.DistributedValues)
    x, y = _data()
    probe, _ = _data(8, seed=6)
    cb = TeleportCallback((x, y), epochs=[0], group="auto", ascent_steps=3)
    model.fit(x, y, batch_size=16, epochs=1, verbose=0, callbacks=[cb])
    (result,) = cb.history
    assert result["accepted_steps"] > 0 and result["grad_norm_after"] > result["grad_norm_before"]
    # Teleport outside fit, in cross-replica context: the function is unchanged.
    before = np.asarray(model(probe))
    weights = [v.numpy().copy() for v in model.trainable_variables]
    cb.max_teleports = None
    cb._teleport()
    assert any(not np.array_equal(w, v.numpy()) for w, v in zip(weights, model.trainable_variables))
    np.testing.assert_allclose(np.asarray(model(probe)), before, rtol=0, atol=1e-4 * max(1, np.abs(before).max()))


def test_config_section():
    x, y = _data(8)
    assert TeleportCallback.from_config_section(None, (x, y)) is None
    assert TeleportCallback.from_config_section({"enabled": False}, (x, y)) is None
    cb = TeleportCallback.from_config_section({"enabled": True, "group": "gl", "epochs": [1, 3],
                                               "max_teleports": 1}, (x, y))
    assert cb.epochs == [1, 3] and cb.max_teleports == 1 and cb.kwargs["group"] == "gl"
    assert TeleportCallback.from_config_section({"enabled": True, "max_grad_growth": 8.0}, (x, y)).kwargs[
        "max_grad_growth"] == 8.0
    assert {f.name for f in dataclasses.fields(TeleportConfig)} >= {"enabled", "group", "epochs", "steps",
                                                                     "max_teleports"}
    with pytest.raises(ValueError, match="did you mean 'max_teleports'"):
        TeleportCallback.from_config_section({"enabled": True, "max_teleport": 2}, (x, y))
    with pytest.raises(ValueError, match="train.teleport.group: must be one of scaling, gl, auto"):
        TeleportCallback.from_config_section({"enabled": True, "group": "so3"}, (x, y))
    with pytest.raises(ValueError, match="non-negative integers"):
        TeleportCallback((x, y), epochs=[-1])


def test_model_without_symmetry_fails_at_train_begin():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.compile("sgd", make_loss(), jit_compile=False)
    x, y = np.zeros((4, 3), "float32"), np.zeros(4, "int64")
    with pytest.raises(ValueError, match="no channel symmetry"):
        model.fit(x, y, epochs=1, verbose=0, callbacks=[TeleportCallback((x, y))])


def test_custom_loop_with_its_own_optimizer_and_loss():
    # The shape of pipelines.loop.Trainer: an uncompiled model, the optimizer and loss held by the loop.
    model = set_model(BLOCKS, head=[5], seed=3)
    optimizer = keras.optimizers.Adam(0.01)
    optimizer.build(model.trainable_variables)
    x, y = _data(16)
    cb = TeleportCallback((x, y), epochs=[], steps=[1], loss=make_loss(), optimizer=optimizer, ascent_steps=2)
    callbacks = keras.callbacks.CallbackList([cb], model=model)
    callbacks.on_train_begin()
    callbacks.on_epoch_begin(0)
    for batch in range(3):
        callbacks.on_train_batch_begin(batch)
        with tf.GradientTape() as tape:
            value = make_loss()(y, model(x))
        optimizer.apply_gradients(zip(tape.gradient(value, model.trainable_variables), model.trainable_variables))
        callbacks.on_train_batch_end(batch)
    (result,) = cb.history
    assert result["step"] == 1 and result["optimizer_state"] == "transform"


def test_broadcast_from_first_replica_keeps_replica_zero():
    # The multi-worker sync after a teleport, under a one-replica MirroredStrategy: it must leave
    # replica 0's values (weights and Adam slots) exactly as they are.
    from setnet.teleport.callback import _state_variables, broadcast_from_first_replica

    strategy = tf.distribute.MirroredStrategy(["/cpu:0"])
    with strategy.scope():
        model = set_model(BLOCKS, head=[5], seed=9)
        optimizer = keras.optimizers.Adam(0.01)
        optimizer.build(model.trainable_variables)
    for m in optimizer._momentums:
        m.assign(tf.random.normal(m.shape))
    variables = _state_variables(model, optimizer)
    assert len(variables) == 3 * len(model.trainable_variables)  # weights, m, v
    before = [v.numpy().copy() for v in variables]
    broadcast_from_first_replica(strategy, variables)
    for v, b in zip(variables, before):
        np.testing.assert_array_equal(v.numpy(), b)


@pytest.mark.slow
def test_broadcast_makes_two_disagreeing_replicas_agree_on_replica_zero():
    # Two replicas (2 logical CPUs, so a fresh process) whose weights and Adam slots differ, as after
    # teleports on different batches: afterwards every replica holds replica 0's values exactly.
    import pathlib
    import subprocess
    import sys

    root = pathlib.Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-m", "tests.support.teleport_broadcast"], cwd=root,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split()[:1] == ["ok"]
