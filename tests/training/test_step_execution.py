"""Several steps per compiled call and device-side metrics give the one-step-per-call training:
the same weights, losses and step count, with the progress bar and the batch hooks still moving."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import loop
from tests.support.training import build, tiny_arrays


def _data(batches: int, batch_size: int = 8):
    x, mask, y = tiny_arrays(batches * batch_size, 12, seed=5, variable=True)
    ds = tf.data.Dataset.from_tensor_slices(({"points": x, "mask": mask}, y)).batch(batch_size)
    return loop.prepare(ds, batch_size=batch_size, training=True, buckets=[12])


def _train(steps_per_execution, *, train_steps, batches=10, input_device=None, callbacks=(), log_every=1):
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(0)
    model, optimizer = build(strategy, normalization=True)
    trainer = loop.Trainer(model, optimizer, strategy, xla=True, verbose=0,
                           steps_per_execution=steps_per_execution, input_device=input_device)
    history = trainer.fit(_data(batches), _data(3), epochs=2, train_steps=train_steps, callbacks=list(callbacks),
                          log_every=log_every)
    return model, optimizer, history


@pytest.mark.parametrize("train_steps", [10, None])
def test_four_steps_per_call_give_the_one_step_figures(train_steps):
    ref_model, ref_opt, ref_hist = _train(1, train_steps=train_steps)
    # 10 steps in calls of 4: the last call of each epoch is short (2 steps). The batches go
    # through prefetch_to_device (onto the CPU here), the transformation used on a GPU.
    model, opt, hist = _train(4, train_steps=train_steps, input_device="/CPU:0")
    assert int(opt.iterations.numpy()) == int(ref_opt.iterations.numpy()) == 20
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        np.testing.assert_allclose([h[key] for h in hist], [h[key] for h in ref_hist], rtol=1e-6, atol=1e-7,
                                   err_msg=key)
    for got, want in zip(model.get_weights(), ref_model.get_weights()):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert ref_hist[1]["loss"] < ref_hist[0]["loss"]


def test_batch_hooks_run_once_per_call_and_metrics_are_read_every_log_every_steps(monkeypatch):
    ends, begins = [], []

    class Hooks(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            begins.append(batch)

        def on_train_batch_end(self, batch, logs=None):
            ends.append((batch, dict(logs or {})))

    reads = []
    original = loop.Trainer._read_logs

    def counted(self):
        reads.append(int(self.running.numpy()[3]))
        return original(self)

    monkeypatch.setattr(loop.Trainer, "_read_logs", counted)
    _, _, history = _train(4, train_steps=10, callbacks=[Hooks()], log_every=8)
    # Per epoch: calls of 4, 4 and 2 steps; hooks numbered as Keras numbers them.
    assert begins == [0, 4, 8] * 2
    assert [b for b, _ in ends] == [3, 7, 9] * 2
    # The running sums are read where a call crosses a multiple of 8 and at the epoch's last step.
    assert reads == [8, 10] * 2
    # Before the first read the hooks get no figures; afterwards the last figures read.
    assert ends[0][1] == {} and set(ends[1][1]) == {"loss", "accuracy"}
    assert ends[2][1]["loss"] == pytest.approx(history[0]["loss"])


def test_the_progress_bar_moves_with_every_call(monkeypatch):
    updates = []

    class Spy(keras.utils.Progbar):
        def update(self, current, values=None, finalize=None):
            updates.append((current, dict(values or [])))
            super().update(current, values, finalize)

    monkeypatch.setattr(keras.utils, "Progbar", Spy)
    strategy = tf.distribute.get_strategy()
    model, optimizer = build(strategy)
    trainer = loop.Trainer(model, optimizer, strategy, xla=False, verbose=2, steps_per_execution=3)
    trainer.train_epoch(_data(7), 7, log_every=6)
    assert [c for c, _ in updates] == [3, 6, 7]
    assert updates[0][1] == {} and set(updates[1][1]) == set(updates[2][1]) == {"loss", "accuracy"}


def test_steps_per_execution_must_be_positive():
    strategy = tf.distribute.get_strategy()
    model, optimizer = build(strategy)
    with pytest.raises(ValueError, match="steps_per_execution must be >= 1"):
        loop.Trainer(model, optimizer, strategy, steps_per_execution=0)
