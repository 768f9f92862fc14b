"""The teleport callback inside pipelines.loop.Trainer, the loop `make train` uses."""

import keras
import numpy as np
import tensorflow as tf

from pipelines.loop import Trainer
from setnet.teleport import TeleportCallback
from tests.support.teleport import loss as make_loss
from tests.support.teleport import set_batch, set_model

BLOCKS = [("linear", 6, "relu", "sum", "inside"), ("linear", 5, "linear", "mean", "inside")]


def _data(n=32, seed=0):
    return set_batch(n, 6, seed=seed, padded=False)


def test_in_the_pipelines_training_loop():
    # pipelines.loop.Trainer (the loop `make train` uses: uncompiled model, its own optimizer and
    # loss, XLA step reading the variables' values). A teleport at epoch 0 must be what the first
    # optimizer step starts from: with plain SGD, w1 = w_teleported - lr * grad(w_teleported).
    model = set_model(BLOCKS, head=[5], seed=4)
    strategy = tf.distribute.get_strategy()
    optimizer = keras.optimizers.SGD(0.1)
    optimizer.build(model.trainable_variables)
    x, y = _data(16)
    weights = np.ones(16, "float32")
    train = tf.data.Dataset.from_tensors((x, y.astype("int64"), weights)).repeat(2)
    cb = TeleportCallback(train, epochs=[0], loss=make_loss(), optimizer=optimizer, ascent_steps=3)
    seen = {}

    class Spy(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            if batch == 0:
                seen["teleported"] = [v.numpy().copy() for v in self.model.trainable_variables]
                with tf.GradientTape() as tape:
                    value = make_loss()(y, self.model(x))
                seen["grads"] = [g.numpy() for g in tape.gradient(value, self.model.trainable_variables)]

        def on_train_batch_end(self, batch, logs=None):
            if batch == 0:
                seen["stepped"] = [v.numpy().copy() for v in self.model.trainable_variables]

    start = [v.numpy().copy() for v in model.trainable_variables]
    Trainer(model, optimizer, strategy, xla=True, verbose=0).fit(train, None, epochs=1, train_steps=2,
                                                                  callbacks=[cb, Spy()])
    (result,) = cb.history
    assert result["accepted_steps"] > 0 and result["optimizer_state"] == "transform"
    assert any(not np.allclose(a, b) for a, b in zip(start, seen["teleported"]))
    for w, g, w1 in zip(seen["teleported"], seen["grads"], seen["stepped"]):
        np.testing.assert_allclose(w1, w - 0.1 * g, rtol=1e-4, atol=1e-6)
