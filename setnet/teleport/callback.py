"""`TeleportCallback`: symmetry teleportation on a schedule during `model.fit`."""

from __future__ import annotations

from typing import Any, Mapping

import keras
import tensorflow as tf

from setnet.config import ConfigError, apply
from setnet.teleport.config import TeleportConfig
from setnet.teleport.symmetries import find_symmetries
from setnet.teleport.ascent import GROUPS, OPTIMIZER_STATE_POLICIES, _select, teleport

class TeleportCallback(keras.callbacks.Callback):
    """Teleports the model at chosen epochs or steps of `model.fit` (at most K times).

    Each teleport takes the next batch of `data`, moves the weights in place along
    the model's exact symmetries to a point of larger gradient norm on that batch
    (`setnet.teleport.teleport`) and maps the optimizer state (see its
    ``optimizer_state``). The results are kept in ``callback.history`` and, when
    ``log_metrics`` is given, sent to it as ``teleport/<figure>`` metrics.

    Under ``tf.distribute`` the callback runs in cross-replica context: the
    teleport is computed once from the (mirrored) variables and assigned to all
    replicas. `data` must be a plain (not distributed) dataset or an (x, y) pair.
    Under ``MultiWorkerMirroredStrategy`` every worker teleports on its own copy of
    the data, which need not match across workers (unseeded augmentation), so the
    weights and optimizer slots are then broadcast from replica 0 (one all-reduce
    per teleport): the workers' replicas never drift apart.

    Args:
        data: an ``(x, y)`` batch, or an iterable of such batches (e.g. a
            ``tf.data.Dataset``; it is cycled). Extra tuple items are ignored.
        epochs: epochs (0-based) at whose start to teleport.
        steps: optimizer steps (0-based, ``optimizer.iterations``) before which to
            teleport. With ``steps_per_execution > 1`` a teleport happens at the first
            batch boundary at or after the step.
        max_teleports: at most this many teleports (None: no limit).
        group: "scaling", "gl" or "auto" (see `teleport`).
        ascent_steps: gradient-ascent steps per teleport.
        learning_rate: ascent step size.
        max_grad_norm: optional cap on the gradient norm after a teleport.
        max_grad_growth: optional cap on the factor by which a teleport may grow it.
        loss: loss to teleport on (default: the model's compiled loss). A custom loop that
            does not compile the model passes its per-example loss here.
        optimizer_state: "transform" or "keep" (see `teleport`).
        optimizer: the optimizer whose state is mapped and whose ``iterations`` drive the
            ``steps`` schedule (default: ``model.optimizer``; a custom loop passes its own).
        verbose: 1 prints one line per teleport.
        log_metrics: optional ``log_metrics(metrics, step=...)`` called after each teleport with
            ``teleport/<figure>`` values (losses, gradient norms, seconds, ``teleport/count``) at
            the optimizer step, e.g. ``mlflow.log_metrics``. The library itself logs nowhere.

    Example:
    >>> import keras, numpy as np
    >>> inputs = keras.Input((4,))
    >>> model = keras.Model(inputs, keras.layers.Dense(3)(keras.layers.Dense(8, activation="relu")(inputs)))
    >>> model.compile("sgd", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    >>> x, y = np.random.rand(32, 4).astype("float32"), np.arange(32) % 3
    >>> cb = TeleportCallback((x[:16], y[:16]), epochs=[0, 1], max_teleports=2)
    >>> _ = model.fit(x, y, epochs=2, verbose=0, callbacks=[cb])
    >>> len(cb.history)
    2
    """

    def __init__(self, data, epochs=(0,), steps=(), max_teleports=None, group="scaling", ascent_steps=10,
                 learning_rate=0.1, max_grad_norm=None, max_grad_growth=None, loss=None, optimizer_state="transform",
                 optimizer=None, verbose=0, log_metrics=None):
        super().__init__()
        if group not in GROUPS:
            raise ValueError(f"TeleportCallback: group must be one of {', '.join(GROUPS)}; got {group!r}")
        if optimizer_state not in OPTIMIZER_STATE_POLICIES:
            raise ValueError(f"TeleportCallback: optimizer_state must be one of "
                             f"{', '.join(OPTIMIZER_STATE_POLICIES)}; got {optimizer_state!r}")
        for name, values in (("epochs", epochs), ("steps", steps)):
            if any(not isinstance(v, int) or v < 0 for v in values):
                raise ValueError(f"TeleportCallback: {name} must be non-negative integers; got {list(values)}")
        if max_teleports is not None and max_teleports < 0:
            raise ValueError(f"TeleportCallback: max_teleports must be >= 0 or None; got {max_teleports}")
        if isinstance(data, tuple) and len(data) >= 2 and not hasattr(data, "element_spec"):
            self._batches = None
            self._fixed = data
        else:
            self._batches, self._fixed = data, None
        self._iterator = None
        self.epochs = sorted(set(epochs))
        self.steps = sorted(set(steps))
        self.max_teleports = max_teleports
        self.kwargs = dict(group=group, steps=ascent_steps, learning_rate=learning_rate,
                           max_grad_norm=max_grad_norm, max_grad_growth=max_grad_growth, loss=loss,
                           optimizer_state=optimizer_state)
        self.optimizer = optimizer
        self.verbose = verbose
        self.log_metrics = log_metrics
        self.history: list[dict] = []
        self._batches_seen = 0
        self._symmetries = None
        self._pending_steps = list(self.steps)

    @classmethod
    def from_config_section(cls, section: TeleportConfig | Mapping[str, Any] | None, data, loss=None,
                            optimizer=None, verbose=0):
        """The callback for a ``train.teleport`` config section, or None when disabled.

        Args:
            section: a `TeleportConfig`, or a mapping of its keys (omitted keys take the default).
            data: batches to teleport on (see the class docstring).
            loss: loss callable (default: the model's compiled loss).
            optimizer: the training optimizer (default: ``model.optimizer``).
        """
        if not isinstance(section, TeleportConfig):
            try:
                section = apply(TeleportConfig(), dict(section or {}), path="train.teleport")
            except ConfigError as e:
                raise ValueError(str(e)) from None
        cfg = section.to_dict()
        if not cfg["enabled"]:
            return None
        return cls(data, epochs=list(cfg["epochs"]), steps=list(cfg["steps"]),
                   max_teleports=cfg["max_teleports"], group=cfg["group"], ascent_steps=cfg["ascent_steps"],
                   learning_rate=cfg["learning_rate"], max_grad_norm=cfg["max_grad_norm"],
                   max_grad_growth=cfg["max_grad_growth"],
                   optimizer_state=cfg["optimizer_state"], loss=loss, optimizer=optimizer, verbose=verbose)

    def resume_at(self, teleports_done: int, *, epoch: int, step_in_epoch: int, global_step: int) -> None:
        """Continue a run restored from a checkpoint instead of starting the schedule afresh.

        Args:
            teleports_done: teleports made before the checkpoint (they count against
                ``max_teleports``; ``data`` should be positioned after the batches they used).
            epoch: the epoch in progress (0-based); its start-of-epoch teleport was made
                already when ``step_in_epoch`` > 0.
            step_in_epoch: steps of ``epoch`` done.
            global_step: optimizer steps done; scheduled ``steps`` before it are past.
        """
        self.history = [{"restored": True}] * teleports_done
        if step_in_epoch:
            self.epochs = [e for e in self.epochs if e != epoch]
        self._pending_steps = [s for s in self.steps if s >= global_step]

    def on_train_begin(self, logs=None):
        # Fails at the start of training (not mid-run) when the model has no usable symmetry.
        self._symmetries = find_symmetries(self.model)
        _select(self._symmetries, self.kwargs["group"])

    def _next_batch(self):
        if self._fixed is not None:
            return self._fixed[0], self._fixed[1]
        if self._iterator is None:
            self._iterator = iter(self._batches)
        try:
            batch = next(self._iterator)
        except StopIteration:
            self._iterator = iter(self._batches)
            batch = next(self._iterator)
        return batch[0], batch[1]

    def _budget_left(self):
        return self.max_teleports is None or len(self.history) < self.max_teleports

    def on_epoch_begin(self, epoch, logs=None):
        if epoch in self.epochs and self._budget_left():
            self._teleport(epoch=epoch)

    def _optimizer(self):
        return self.optimizer if self.optimizer is not None else getattr(self.model, "optimizer", None)

    def _global_step(self):
        optimizer = self._optimizer()
        if optimizer is None or not getattr(optimizer, "built", False):
            return self._batches_seen
        return int(keras.ops.convert_to_numpy(optimizer.iterations))

    def on_train_batch_end(self, batch, logs=None):
        self._batches_seen += 1

    def on_train_batch_begin(self, batch, logs=None):
        if not self._pending_steps:
            return
        step = self._global_step()
        if step >= self._pending_steps[0]:
            while self._pending_steps and self._pending_steps[0] <= step:
                self._pending_steps.pop(0)
            if self._budget_left():
                self._teleport(step=step)

    def _teleport(self, epoch=None, step=None):
        x, y = self._next_batch()
        result = teleport(self.model, x, y, symmetries=self._symmetries, optimizer=self._optimizer(), **self.kwargs)
        strategy = tf.distribute.get_strategy()
        if isinstance(strategy, tf.distribute.MultiWorkerMirroredStrategy) and \
                strategy.extended._num_workers > 1:
            # Called on every worker at the same schedule point, accepted steps or not, so the
            # collective always has all its participants.
            broadcast_from_first_replica(strategy, _state_variables(self.model, self._optimizer()))
        global_step = self._global_step()
        result.update(epoch=epoch, step=global_step)
        self.history.append(result)
        if self.verbose:
            print(f"teleport {len(self.history)} at step {global_step}: ‖∇L‖ {result['grad_norm_before']:.4g} → "
                  f"{result['grad_norm_after']:.4g}, loss {result['loss_before']:.5g} → "
                  f"{result['loss_after']:.5g}, {result['seconds']:.2f} s")
        if self.log_metrics is not None:
            self.log_metrics(teleport_figures(result, len(self.history)), step=global_step)


def _state_variables(model, optimizer):
    """The float variables a teleport may change: weights and optimizer slots."""
    found = list(model.trainable_variables)
    if optimizer is not None and getattr(optimizer, "built", False):
        found += [v for v in optimizer.variables if "float" in str(v.dtype) and v is not
                  getattr(optimizer, "_learning_rate", None) and "learning_rate" not in v.path]
    return found


def broadcast_from_first_replica(strategy, variables):
    """Sets every replica's copy of `variables` to replica 0's (an all-reduce of value · [id == 0])."""
    variables = list(variables)

    @tf.function
    def gather():
        ctx = tf.distribute.get_replica_context()
        first = tf.equal(ctx.replica_id_in_sync_group, 0)
        return [ctx.all_reduce(tf.distribute.ReduceOp.SUM,
                               tf.where(first, v.value, tf.zeros(v.shape, v.dtype))) for v in variables]

    values = strategy.run(gather)
    for v, value in zip(variables, values):
        v.assign(strategy.experimental_local_results(value)[0])


def teleport_figures(result: Mapping[str, Any], count: int) -> dict[str, float]:
    """The numeric figures of one teleport result as ``teleport/<figure>`` metrics, plus
    ``teleport/count`` (how many teleports so far); the schedule fields epoch and step are left out.

    Example:
    >>> teleport_figures({"grad_norm_before": 1.0, "grad_norm_after": 2.5, "step": 7, "group": "gl"}, 1)
    {'teleport/grad_norm_before': 1.0, 'teleport/grad_norm_after': 2.5, 'teleport/count': 1}
    """
    figures = {f"teleport/{k}": float(v) for k, v in result.items()
               if isinstance(v, (int, float)) and not isinstance(v, bool) and k not in ("epoch", "step")}
    figures["teleport/count"] = count
    return figures
