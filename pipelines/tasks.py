"""What a model is trained to do with a set: name a class, or predict real numbers.

The training loop (`pipelines.loop.Trainer`) asks its task for the per-example loss, the
per-example figure its running metric sums, and what counts as the prediction; everything else
(distribution, XLA, the running sums, checkpoints) is the same for both tasks (the Trainer's
``objective``).

- `Classification`: softmax cross-entropy on the logits (with label smoothing); metric
  ``accuracy``; the prediction is the class id.
- `Regression`: mean squared error (``mse``) or Huber loss on the ``prediction`` (B, T), averaged
  over the T targets; metric ``mae`` (mean absolute error), and in evaluation also ``rmse``; the
  prediction is the output itself.

Example:

>>> import numpy as np
>>> task = make_task("regression", loss="huber", huber_delta=1.0)
>>> task.metric, task.loss_name
('mae', 'huber')
>>> [round(float(v), 3) for v in task.per_example_loss(np.array([[0.0], [0.0]]), np.array([[0.5], [3.0]]))]
[0.125, 2.5]
"""

from __future__ import annotations

import tensorflow as tf

TASKS = ("classification", "regression")


def cross_entropy(labels, logits, label_smoothing: float = 0.0):
    """Softmax cross-entropy per example, with optional label smoothing (no one-hot needed)."""
    logp = tf.nn.log_softmax(tf.cast(logits, tf.float32), axis=-1)
    nll = -tf.gather(logp, labels, axis=-1, batch_dims=1)
    if not label_smoothing:
        return nll
    return (1.0 - label_smoothing) * nll - label_smoothing * tf.reduce_mean(logp, axis=-1)


class Classification:
    """Class ids from logits (B, K); labels int64 (B,)."""

    name = "classification"
    metric = "accuracy"
    extra_metrics = ()
    loss_name = "cross_entropy"

    def __init__(self, label_smoothing: float = 0.0):
        self.label_smoothing = label_smoothing

    def per_example_loss(self, labels, outputs, training: bool = True):
        return cross_entropy(labels, outputs, self.label_smoothing if training else 0.0)

    def score(self, labels, outputs):
        """1 for a right class, 0 for a wrong one: summed and divided by the examples, accuracy."""
        return tf.cast(tf.equal(tf.argmax(outputs, -1), labels), tf.float32)

    def squared_error(self, labels, outputs):
        return tf.zeros(tf.shape(labels), tf.float32)

    def predict(self, outputs):
        return tf.argmax(outputs, -1)

    def keras_loss(self):
        import keras

        return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


class Regression:
    """Real targets (B, T) from the model's ``prediction`` (B, T)."""

    name = "regression"
    metric = "mae"
    extra_metrics = ("rmse",)

    def __init__(self, loss: str = "mse", huber_delta: float = 1.0):
        if loss not in ("mse", "huber"):
            raise ValueError(f"a regression loss is mse or huber, got {loss!r}")
        self.loss_name = loss
        self.huber_delta = float(huber_delta)

    def _error(self, labels, outputs):
        return tf.cast(outputs, tf.float32) - tf.cast(labels, tf.float32)

    def per_example_loss(self, labels, outputs, training: bool = True):
        err = self._error(labels, outputs)
        if self.loss_name == "mse":
            return tf.reduce_mean(tf.square(err), axis=-1)
        a, d = tf.abs(err), self.huber_delta
        return tf.reduce_mean(tf.where(a <= d, 0.5 * tf.square(err), d * (a - 0.5 * d)), axis=-1)

    def score(self, labels, outputs):
        """The absolute error averaged over the targets: summed and divided, the MAE."""
        return tf.reduce_mean(tf.abs(self._error(labels, outputs)), axis=-1)

    def squared_error(self, labels, outputs):
        return tf.reduce_mean(tf.square(self._error(labels, outputs)), axis=-1)

    def predict(self, outputs):
        return tf.cast(outputs, tf.float32)

    def keras_loss(self):
        import keras

        if self.loss_name == "huber":
            return keras.losses.Huber(delta=self.huber_delta)
        return keras.losses.MeanSquaredError()


def make_task(kind: str, *, loss: str = "auto", label_smoothing: float = 0.0, huber_delta: float = 1.0):
    """The task object for a dataset's task (``classification`` or ``regression``) and the
    training config's ``train.loss`` (``auto``: cross-entropy or mse by task).

    Raises:
        ValueError: a loss that does not fit the task (e.g. mse for classes), naming both.
    """
    if kind == "classification":
        if loss not in ("auto", "cross_entropy"):
            raise ValueError(f"train.loss: {loss} is a regression loss, but the dataset is a classification "
                             "(class labels); use cross_entropy or auto")
        return Classification(label_smoothing)
    if kind == "regression":
        if loss == "cross_entropy":
            raise ValueError("train.loss: cross_entropy needs class labels, but the dataset is a regression "
                             "(real targets); use mse, huber or auto")
        return Regression("mse" if loss == "auto" else loss, huber_delta)
    raise ValueError(f"unknown task {kind!r}; expected one of {', '.join(TASKS)}")
