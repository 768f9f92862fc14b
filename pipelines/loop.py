"""One custom training loop for the one-device, mirrored and multi-worker strategies.

Keras 3's ``model.fit`` fails under MultiWorkerMirroredStrategy
(keras-team/keras#20585) and turns XLA off under tf.distribute, so the loop
is written against tf.distribute directly: ``experimental_distribute_dataset``,
``strategy.run`` of a per-replica step, ``strategy.reduce`` of the sums, with
the Keras model and a built Keras optimizer (which all-reduces gradients
across replicas itself). Keras callbacks (``keras.callbacks.Callback``) get
the usual ``on_epoch_end(epoch, logs)``; checkpointing and MLflow logging are
such callbacks (pipelines/train.py).

XLA. The model's forward and backward pass is one pure function of the
variable values, ``model.stateless_call``: it returns the loss sums, the
gradients and the updated non-trainable values (normalisation statistics,
dropout seeds) without touching a variable. On one device the whole step
(that function plus the optimizer update) is a ``tf.function(jit_compile=True)``.
Under a mirrored strategy the function itself is the jit-compiled unit, called
per replica inside ``strategy.run``; the cross-replica parts (gradient
all-reduce in the optimizer, averaging of the normalisation statistics) stay
outside it, where tf.distribute's collectives live. Either way the equivariant
layers' compute is XLA-compiled (tests/training/test_distributed.py checks
XLA's own dumps). XLA compiles once per input shape, so set sizes are padded
up to a few buckets and the last partial evaluation batch is padded to a full
one (with zero weights): the number of compilations in a run is bounded by
the number of buckets.

Exactness. The loss a replica differentiates is its share of the global mean,
``sum_local / n_global`` (n_global all-reduced), so the summed gradients equal
single-device gradients on the same global batch, whatever the split.
"""

from __future__ import annotations

import collections
import math
import sys
import time
from typing import Iterable

import keras
import numpy as np
import tensorflow as tf

from pipelines.distribute import is_distributed, task
from pipelines.tasks import Classification, cross_entropy

SUM = tf.distribute.ReduceOp.SUM
MEAN = tf.distribute.ReduceOp.MEAN


# --------------------------------------------------------------------------- input


def bucket_for(n, buckets: Iterable[int] = ()):
    """The padded set size for a batch whose largest set has n points (a scalar int32 tensor).

    With ``buckets`` (increasing), the first bucket >= n, else n rounded up to a multiple of the
    largest bucket; without, the next power of two.
    """
    n = tf.cast(n, tf.int32)
    buckets = list(buckets)
    if buckets:
        table = tf.constant(buckets, tf.int32)
        fits = tf.boolean_mask(table, table >= n)
        top = buckets[-1]
        over = ((n + top - 1) // top) * top
        return tf.cond(tf.size(fits) > 0, lambda: fits[0], lambda: over)
    # 2^ceil(log2 n) in integers: smear the bits of n - 1.
    m = tf.maximum(n, 1) - 1
    for shift in (1, 2, 4, 8, 16):
        m = tf.bitwise.bitwise_or(m, tf.bitwise.right_shift(m, shift))
    return m + 1


def prepare(ds: tf.data.Dataset, *, batch_size: int, training: bool, buckets=(), steps: int | None = None,
            strategy: tf.distribute.Strategy | None = None) -> tf.data.Dataset:
    """Batches of ``(features, labels, weights)`` with bounded shapes, ready to distribute.

    Set sizes are padded up to a bucket (`bucket_for`). Training keeps full batches only (every
    replica and worker then steps the same number of times, and the batch dimension never
    changes); evaluation pads the last batch to full size with zero-weight empty sets, so that no
    example is dropped and no new shape is compiled.
    """
    def pad_sets(features, labels):
        points, mask = features["points"], features["mask"]
        n = tf.shape(points)[1]
        target = bucket_for(n, buckets)
        points = tf.pad(points, [[0, 0], [0, target - n], [0, 0]])
        mask = tf.pad(mask, [[0, 0], [0, target - n]])
        # Class ids as int64; regression targets (B, T) stay float.
        return points, mask, labels if labels.dtype.is_floating else tf.cast(labels, tf.int64)

    def pad_batch(points, mask, labels):
        b = tf.shape(labels)[0]
        extra = batch_size - b
        weights = tf.concat([tf.ones([b]), tf.zeros([extra])], 0)
        points = tf.pad(points, [[0, extra], [0, 0], [0, 0]])
        mask = tf.pad(mask, [[0, extra], [0, 0]])
        labels = tf.pad(labels, [[0, extra]] + [[0, 0]] * (labels.shape.rank - 1))
        return points, mask, labels, weights

    ds = ds.map(pad_sets, num_parallel_calls=tf.data.AUTOTUNE)
    if training:
        ds = ds.filter(lambda points, mask, labels: tf.shape(labels)[0] == batch_size)
        ds = ds.map(lambda p, m, y: (p, m, y, tf.ones([batch_size])))
    else:
        ds = ds.map(pad_batch)
    ds = ds.map(lambda p, m, y, w: ({"points": p, "mask": m}, y, w))
    if steps is not None:
        ds = ds.take(steps)
    if strategy is not None and isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy):
        # Every worker reads the same batches and keeps its slice of each: the global batch of a
        # step is the single-device batch, and every worker takes the same number of steps.
        options = tf.data.Options()
        options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
        ds = ds.with_options(options)
    return ds.prefetch(tf.data.AUTOTUNE)


# --------------------------------------------------------------------------- loss


per_example_loss = cross_entropy  # the classification loss (pipelines.tasks has the regression ones)


# --------------------------------------------------------------------------- trainer


class Trainer:
    """Trains a Keras model with a Keras optimizer under any of the three strategies.

    Args:
        model: Keras model taking ``{"points", "mask"}`` and returning logits; built in ``strategy.scope()``.
        optimizer: Keras optimizer created and built (``optimizer.build(model.trainable_variables)``)
            in ``strategy.scope()``.
        strategy: the default strategy, MirroredStrategy or MultiWorkerMirroredStrategy.
        xla: compile with XLA (the whole step on one device, the replica's compute under mirroring).
        label_smoothing: label smoothing of the training loss (classification).
        objective: a `pipelines.tasks` task: its loss, its metric (``accuracy`` or ``mae``, in the logs
            under that name) and its predictions; default classification with `label_smoothing`.
        steps_per_execution: training steps per call of the compiled function (one
            ``tf.while_loop`` over the input iterator, as Keras' ``steps_per_execution``): fewer
            Python round trips per step; callbacks' batch hooks then run once per call.
        input_device: device to prefetch training and evaluation batches to on one device
            ("auto": the first GPU if there is one, else none; None: none). Distributed strategies
            fetch to their replicas' devices themselves.

    The step never waits for the device: the loss, accuracy and example sums accumulate in a
    device variable (``running``) that the host reads every ``log_every`` steps and at the end of
    the epoch.

    Example (one device, a tiny model)::

        trainer = Trainer(model, optimizer, tf.distribute.get_strategy())
        logs = trainer.fit(train_ds, val_ds, epochs=2, train_steps=10, val_steps=2)
    """

    def __init__(self, model: keras.Model, optimizer: keras.optimizers.Optimizer,
                 strategy: tf.distribute.Strategy, *, xla: bool = True, label_smoothing: float = 0.0,
                 verbose: int | str = "auto", steps_per_execution: int = 1, input_device: str | None = "auto",
                 objective=None):
        if steps_per_execution < 1:
            raise ValueError(f"steps_per_execution must be >= 1, got {steps_per_execution}")
        self.model = model
        self.optimizer = optimizer
        self.strategy = strategy
        self.xla = xla
        self.label_smoothing = label_smoothing
        self.objective = Classification(label_smoothing) if objective is None else objective
        self.metric = self.objective.metric
        self.steps_per_execution = steps_per_execution
        self.distributed = is_distributed(strategy)
        if input_device == "auto":
            gpus = tf.config.list_logical_devices("GPU")
            input_device = gpus[0].name if gpus and not self.distributed else None
        self.input_device = None if self.distributed else input_device
        self.task = task(strategy)
        if verbose == "auto":
            verbose = 1 if sys.stdout.isatty() else 2
        self.verbose = verbose if self.task.chief else 0
        # Traces of the XLA-compiled unit, per kind: each is one XLA compilation.
        self.compilations: collections.Counter = collections.Counter()
        inner_jit = xla and self.distributed
        outer_jit = xla and not self.distributed
        self.replica_grads = tf.function(self._replica_grads, jit_compile=inner_jit) if self.distributed \
            else self._replica_grads
        self.replica_logits = tf.function(self._replica_logits, jit_compile=inner_jit) if self.distributed \
            else self._replica_logits
        self.train_step = tf.function(self._train_step, jit_compile=outer_jit)
        # The loop over the iterator stays outside XLA (an iterator cannot be compiled); each step
        # inside it is the compiled train_step.
        self.train_steps = tf.function(self._train_steps)
        self.eval_step = tf.function(self._eval_step, jit_compile=outer_jit)
        # Loss sum, correct, examples, steps of the epoch so far (float64, as the host sums were),
        # updated in cross-replica context after the reductions, so every replica's copy agrees.
        with tf.init_scope():
            self.running = tf.Variable(tf.zeros([4], tf.float64), trainable=False, name="running_sums")

    # ---- the XLA-compiled units (pure functions of the variable values)

    def _replica_grads(self, trainable, non_trainable, features, labels, weights, global_n, loss_scale):
        self.compilations["train"] += 1
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            logits, new_non_trainable, losses = self.model.stateless_call(
                trainable, non_trainable, features, training=True, return_losses=True)
            per = self.objective.per_example_loss(labels, logits) * weights
            loss_sum = tf.reduce_sum(per)
            loss = loss_sum / global_n
            if losses:
                # Regularisation is added once per replica, and the optimizer sums over replicas.
                loss += tf.add_n([tf.cast(x, tf.float32) for x in losses]) / self.strategy.num_replicas_in_sync
            scaled = loss * loss_scale
        grads = tape.gradient(scaled, trainable)
        correct = tf.reduce_sum(weights * self.objective.score(labels, logits))
        return grads, new_non_trainable, loss_sum, correct

    def _replica_logits(self, trainable, non_trainable, features):
        self.compilations["eval"] += 1
        logits, _ = self.model.stateless_call(trainable, non_trainable, features, training=False)
        return logits

    # ---- per-replica steps and their distribution

    def _values(self):
        return ([tf.convert_to_tensor(v.value) for v in self.model.trainable_variables],
                [tf.convert_to_tensor(v.value) for v in self.model.non_trainable_variables])

    def _train_replica(self, features, labels, weights):
        ctx = tf.distribute.get_replica_context()
        n = tf.reduce_sum(weights)
        global_n = ctx.all_reduce(SUM, n)
        trainable, non_trainable = self._values()
        # 1 unless the optimizer is a keras.optimizers.LossScaleOptimizer (mixed_float16), which
        # unscales the gradients in apply_gradients and skips steps with non-finite ones.
        loss_scale = tf.cast(self.optimizer.scale_loss(tf.constant(1.0)), tf.float32)
        grads, new_values, loss_sum, correct = self.replica_grads(
            trainable, non_trainable, features, labels, weights, global_n, loss_scale)
        self.optimizer.apply_gradients(zip(grads, self.model.trainable_variables))
        for var, value in zip(self.model.non_trainable_variables, new_values):
            if self.distributed and "float" in str(var.dtype):
                # Normalisation statistics: each replica saw its own slice; keep one average
                # (replicas of a mirrored variable would otherwise drift apart silently).
                value = ctx.all_reduce(MEAN, value)
            var.assign(value)
        return loss_sum, correct, n

    def _train_step(self, features, labels, weights):
        out = self.strategy.run(self._train_replica, args=(features, labels, weights))
        sums = [self.strategy.reduce(SUM, t, axis=None) for t in out]
        self.running.assign_add(tf.cast(tf.stack(sums + [tf.ones_like(sums[0])]), tf.float64))
        return sums

    def _train_steps(self, iterator, n):
        """Up to ``n`` steps on batches from ``iterator``; returns how many ran (fewer at its end)."""
        def more(i, batch):
            return tf.logical_and(i < n, batch.has_value())

        def step(i, batch):
            self.train_step(*batch.get_value())
            # No batch is pulled that this call will not use: the next call starts with it.
            following = tf.cond(i + 1 < n, iterator.get_next_as_optional, lambda: batch)
            return i + 1, following

        done, _ = tf.while_loop(more, step, (tf.constant(0), iterator.get_next_as_optional()))
        return done

    def _eval_replica(self, features, labels, weights):
        trainable, non_trainable = self._values()
        logits = self.replica_logits(trainable, non_trainable, features)
        per = self.objective.per_example_loss(labels, logits, training=False) * weights
        pred = self.objective.predict(logits)
        correct = tf.reduce_sum(weights * self.objective.score(labels, logits))
        squared = tf.reduce_sum(weights * self.objective.squared_error(labels, logits))
        return tf.reduce_sum(per), correct, tf.reduce_sum(weights), squared, pred, labels, weights

    def _eval_step(self, features, labels, weights):
        loss_sum, correct, n, squared, pred, y, w = self.strategy.run(self._eval_replica,
                                                                      args=(features, labels, weights))
        sums = [self.strategy.reduce(SUM, t, axis=None) for t in (loss_sum, correct, n, squared)]
        return sums, [self.strategy.gather(t, axis=0) for t in (pred, y, w)]

    # ---- epochs

    def distribute(self, ds: tf.data.Dataset):
        """``ds`` ready for this trainer's steps: split across replicas (tf.distribute fetches each
        replica's slice to its device), or on one device prefetched to ``input_device``."""
        if self.input_device is not None:
            # The copy of batch k+1 overlaps step k; it must be the pipeline's last transformation.
            return ds.apply(tf.data.experimental.prefetch_to_device(self.input_device, buffer_size=2))
        return self.strategy.experimental_distribute_dataset(ds)

    @property
    def epoch_totals(self) -> np.ndarray:
        """Loss sum, correct and examples of the epoch so far (float64; reads the device)."""
        return self.running.numpy()[:3]

    def _read_logs(self) -> dict:
        loss_sum, correct, n, _ = self.running.numpy()
        return {"loss": float(loss_sum / max(n, 1)), self.metric: float(correct / max(n, 1))}

    def train_epoch(self, dist_ds, steps: int | None, callbacks=None, log_every: int = 1, *,
                    start_step: int = 0, totals=None) -> dict:
        """One pass over ``dist_ds``; returns loss, accuracy, epoch_seconds, examples_per_second.

        A resumed epoch passes the steps already done (``start_step``; ``dist_ds`` starts after
        them) and their sums (``totals``: loss sum, correct, examples), so that its figures are
        those of the whole epoch. ``self.epoch_totals`` holds the running sums (float64), which a
        checkpoint taken between steps saves.
        """
        bar = keras.utils.Progbar(steps, verbose=self.verbose, stateful_metrics=["loss", self.metric]) \
            if self.verbose else None
        initial = np.zeros(4)
        if totals is not None:
            initial[:3] = totals
        self.running.assign(initial)
        per_call = self.steps_per_execution
        logs: dict = {}
        start = time.perf_counter()
        step = start_step
        iterator = iter(dist_ds)
        while steps is None or step < steps:
            want = per_call if steps is None else min(per_call, steps - step)
            if callbacks is not None:
                callbacks.on_train_batch_begin(step)
            if per_call == 1:
                batch = next(iterator, None)
                if batch is None:
                    break
                self.train_step(*batch)
                done = 1
            else:
                done = self.train_steps(iterator, tf.constant(want))
                # With a known step count the call's count is not read (that would wait for the
                # device); the epoch's true count is read from `running` at its end.
                done = int(done) if steps is None else want
                if done == 0:
                    break
            step += done
            if step // log_every > (step - done) // log_every or step == steps:
                logs = self._read_logs()
                if bar is not None:
                    bar.update(step, list(logs.items()), finalize=False)
            elif bar is not None:
                bar.update(step, finalize=False)
            if callbacks is not None:
                # As Keras does with steps_per_execution: one begin/end pair per call, the end
                # numbered by the call's last step; logs are the figures last read (no wait).
                callbacks.on_train_batch_end(step - 1, dict(logs))
            if done < want:
                break
        loss_sum, correct, examples, ran = self.running.numpy()  # waits for the device
        seconds = time.perf_counter() - start
        if examples == 0:
            raise RuntimeError("the training split gave no full batch; lower data.batch_size or check the split")
        self._bar = bar
        self._bar_step = start_step + int(ran)
        return {"loss": float(loss_sum / examples), self.metric: float(correct / examples),
                "epoch_seconds": seconds, "examples_per_second": float((examples - initial[2]) / seconds)}

    def evaluate(self, dist_ds, collect: bool = False) -> dict:
        """Mean loss and accuracy over ``dist_ds`` (padding excluded); with ``collect``, also the
        predictions and labels of every example, in order (``predictions``, ``labels`` arrays)."""
        running = None
        gathered = []
        for features, labels, weights in dist_ds:
            sums, out = self.eval_step(features, labels, weights)
            # Summed as device tensors: nothing waits for the device until the end.
            sums = tf.cast(tf.stack(sums), tf.float64)
            running = sums if running is None else running + sums
            if collect:
                gathered.append(out)
        totals = np.zeros(4) if running is None else running.numpy()
        preds, labels_out = [], []
        for pred, y, w in gathered:
            keep = np.asarray(w) > 0
            preds.append(np.asarray(pred)[keep])
            labels_out.append(np.asarray(y)[keep])
        if totals[2] == 0:
            raise RuntimeError("the evaluation split is empty")
        out = {"loss": float(totals[0] / totals[2]), self.metric: float(totals[1] / totals[2]), "examples": int(totals[2])}
        if "rmse" in self.objective.extra_metrics:
            out["rmse"] = float(np.sqrt(totals[3] / totals[2]))
        if collect:
            out["predictions"] = np.concatenate(preds)
            out["labels"] = np.concatenate(labels_out)
        return out

    def fit(self, train_ds, val_ds: tf.data.Dataset | None, *, epochs: int,
            initial_epoch: int = 0, train_steps: int | None = None, callbacks=(), log_every: int = 1,
            learning_rate_fn=None, initial_step: int = 0, initial_totals=None) -> list[dict]:
        """Train from ``initial_epoch`` to ``epochs``; returns the logs of the epochs run here.

        ``train_ds`` and ``val_ds`` come from `prepare`; ``train_ds`` may also be a function
        ``epoch -> dataset`` (each epoch its own batches, `pipelines.input.make_epochs`), which a
        run resumed mid-epoch needs: ``initial_step`` steps of ``initial_epoch`` are done (they are
        skipped in its dataset) with sums ``initial_totals`` (see `train_epoch`).
        Callbacks are Keras callbacks; a callback that sets ``model.stop_training`` (e.g.
        EarlyStopping) ends training after that epoch.
        """
        cbs = keras.callbacks.CallbackList(list(callbacks), model=self.model, add_history=False,
                                           add_progbar=False, epochs=epochs, steps=train_steps)
        per_epoch = callable(train_ds)
        dist_train = None if per_epoch else self.distribute(train_ds)
        dist_val = self.distribute(val_ds) if val_ds is not None else None
        self.model.stop_training = False
        cbs.on_train_begin()
        history = []
        for epoch in range(initial_epoch, epochs):
            if self.verbose:
                print(f"Epoch {epoch + 1}/{epochs}", flush=True)
            cbs.on_epoch_begin(epoch)
            lr = float(learning_rate_fn()) if learning_rate_fn else float(
                keras.ops.convert_to_numpy(self.optimizer.learning_rate))
            resumed = epoch == initial_epoch and initial_step
            if per_epoch:
                epoch_ds = train_ds(epoch)
                dist_train = self.distribute(epoch_ds.skip(initial_step) if resumed else epoch_ds)
            logs = self.train_epoch(dist_train, train_steps, cbs, log_every, start_step=initial_step if resumed else 0,
                                    totals=initial_totals if resumed else None)
            logs["lr"] = lr
            if dist_val is not None:
                val = self.evaluate(dist_val)
                logs.update({f"val_{k}": v for k, v in val.items() if k != "examples"})
            if self._bar is not None:
                shown = [(k, logs[k]) for k in ("loss", self.metric, "val_loss", f"val_{self.metric}") if k in logs]
                self._bar.update(self._bar_step, shown, finalize=True)
            cbs.on_epoch_end(epoch, logs)
            history.append(logs)
            if self.model.stop_training:
                break
        cbs.on_train_end(history[-1] if history else {})
        return history


def steps_for(examples: int, batch_size: int, training: bool, cap: int | None = None) -> int:
    """Batches per pass: full batches only when training, all examples when evaluating."""
    steps = examples // batch_size if training else math.ceil(examples / batch_size)
    return min(steps, cap) if cap else steps
