"""Symmetry teleportation: move the weights along an exact symmetry to a steeper point.

Zhao, Dehmamy, Walters, Yu, "Symmetry Teleportation for Accelerated Optimization"
(NeurIPS 2022). For a group G acting on the weights with L(g·θ) = L(θ) for every
input, `teleport` maximises ‖∇_θ L(g·θ)‖² over g by gradient ascent on the Lie
algebra: for positive scaling g = diag(e^t) per channel symmetry, for GL(h)
g = exp(T). Each step takes the gradient of the objective at the identity of the
current point (t = 0, T = 0), moves by `learning_rate` times it, and applies the
group element exactly: e^{±t}, and for GL the matrix exponential with its exact
inverse (never the first-order U(I − T) stand-in, which changes the function).
The accumulated element is always applied to the starting weights in float64, so
rounding does not build up over the steps.

A step is accepted only if the gradient norm on the batch does not decrease, the
loss on the batch stays within `loss_tolerance` (a guard against ill-conditioned
GL elements) and the norm stays under `max_grad_norm`; otherwise the step is
halved (at most `max_backtracks` times) and the ascent stops when no halving
helps. So ``grad_norm_after >= grad_norm_before`` always holds.

Optimizer state (``optimizer_state``):

- ``"transform"`` (default): every slot is mapped as if the optimizer had seen
  the same gradients at the teleported point. Gradients transform
  contragrediently (producer columns ×e^{-t}, consumer rows ×e^{+t}; for GL by
  M^{-T} and M^T), so first-moment slots (momentum, Adam m, RMSprop mean) follow
  that law and second-moment slots (Adam v, AdaGrad, RMSprop accumulators) follow
  its square, which is exact for scaling. For GL the square of a non-diagonal map
  has no exact law on elementwise squares; second moments are mapped by the
  elementwise-squared matrix (exact when gradient coordinates are uncorrelated,
  and always non-negative).
- ``"keep"``: slots are left as they are (state stays in the old coordinates).

Weight regularisers (L2 and the like) are not invariant under these groups; the
data loss is. `teleport` optimises and reports the data loss only.
"""

from __future__ import annotations

import time
import weakref

import keras
import numpy as np
import scipy.linalg
import tensorflow as tf

from setnet.teleport.symmetries import GL, SCALING, find_symmetries, matrix_roles, scale_roles

GROUPS = ("scaling", "gl", "auto")
OPTIMIZER_STATE_POLICIES = ("transform", "keep")

# Slot lists of Keras optimizers and how they transform: 1 like a gradient, 2 like its square.
_SLOT_LAWS = {
    "SGD": {"momentums": 1},
    "Adam": {"_momentums": 1, "_velocities": 2, "_velocity_hats": 2},
    "AdamW": {"_momentums": 1, "_velocities": 2, "_velocity_hats": 2},
    "Nadam": {"_momentums": 1, "_velocities": 2},
    "Adagrad": {"_accumulators": 2},
    "RMSprop": {"_velocities": 2, "_momentums": 1, "_average_gradients": 1},
}

_COMPILED = weakref.WeakKeyDictionary()  # model -> {key: compiled objective}


def _select(report, group):
    if group not in GROUPS:
        raise ValueError(f"group must be one of {', '.join(GROUPS)}; got {group!r}")
    chosen = []
    for s in report.symmetries:
        if group in ("gl", "auto") and GL in s.groups:
            chosen.append((s, GL))
        elif group in ("scaling", "auto") and SCALING in s.groups:
            chosen.append((s, SCALING))
    if not chosen:
        raise ValueError(f"the model has no channel symmetry for group={group!r}.\n{report}\n"
                         "Scaling needs ReLU/LeakyReLU/linear between two Dense or setnet layers; "
                         "GL needs a linear activation and only sum/mean pooling in between.")
    return chosen


def _loss_fn(loss, model):
    if loss is None:
        loss = getattr(model, "loss", None)
        if loss is None:
            raise ValueError("teleport needs a loss: pass loss=... or compile the model with one")
    if isinstance(loss, str):
        loss = keras.losses.get(loss)
    if not callable(loss):
        raise TypeError(f"loss must be a Keras loss, a callable (y_true, y_pred) or a name; got {loss!r}")
    return loss


def _loss_key(loss_fn):
    """Equal Keras losses share one compiled objective (tracing it costs seconds)."""
    if isinstance(loss_fn, keras.losses.Loss):
        try:
            return type(loss_fn).__name__, repr(sorted(loss_fn.get_config().items()))
        except (NotImplementedError, TypeError):
            pass
    return id(loss_fn)


def _tangent_action(params, chosen, xi):
    """g(ξ)·θ with the same derivative at ξ = 0 as the exact action.

    For GL, exp(T) and exp(−T)ᵀ have derivative ±dT at T = 0, exactly as I + T and
    I − Tᵀ, so the Lie-algebra gradient is exact; the applied element is exp(T).
    """
    for (sym, kind), x in zip(chosen, xi):
        if kind == SCALING:
            params = scale_roles(params, sym, x, keras.ops)
        else:
            eye = tf.eye(sym.width, dtype=x.dtype)
            params = matrix_roles(params, sym, eye + x, eye - tf.transpose(x), keras.ops)
    return params


def _compile(model, chosen, loss_fn, training, key):
    cache = _COMPILED.setdefault(model, {})
    if key in cache:
        return cache[key]
    shapes = [(s.width,) if kind == SCALING else (s.width, s.width) for s, kind in chosen]

    def _reduce(value):
        return tf.reduce_mean(tf.cast(value, tf.float32))

    @tf.function(reduce_retracing=True)
    def evaluate(params, non_trainable, x, y):
        xi = [tf.zeros(shape, tf.float32) for shape in shapes]
        with tf.GradientTape() as outer:
            outer.watch(xi)
            moved = _tangent_action(list(params), chosen, xi)
            with tf.GradientTape() as inner:
                inner.watch(moved)
                out, _ = model.stateless_call(moved, non_trainable, x, training=training)
                loss = _reduce(loss_fn(y, out))
            grads = inner.gradient(loss, moved)
            objective = tf.add_n([tf.reduce_sum(tf.square(g)) for g in grads if g is not None])
        dxi = outer.gradient(objective, xi)
        dxi = [tf.zeros_like(x) if d is None else d for x, d in zip(xi, dxi)]
        return loss, objective, dxi

    cache[key] = evaluate
    return evaluate


class _Element:
    """The accumulated group element, one entry per chosen symmetry (float64)."""

    def __init__(self, chosen):
        self.chosen = chosen
        self.parts = [np.zeros(s.width) if k == SCALING else np.eye(s.width) for s, k in chosen]

    def moved(self, step):
        new = _Element.__new__(_Element)
        new.chosen = self.chosen
        new.parts = [p + d if k == SCALING else p @ scipy.linalg.expm(d)
                     for p, d, (_, k) in zip(self.parts, step, self.chosen)]
        return new

    def act(self, weights, law=0):
        """law 0: on weights; 1: on gradients; 2: on squared gradients."""
        for part, (sym, kind) in zip(self.parts, self.chosen):
            if kind == SCALING:
                sign = {0: 1.0, 1: -1.0, 2: -2.0}[law]
                weights = scale_roles(weights, sym, part, np, sign=sign)
            else:
                inv = np.linalg.inv(part)
                out_map, in_map = (part, inv.T) if law == 0 else (inv.T, part)
                if law == 2:
                    out_map, in_map = out_map ** 2, in_map ** 2
                weights = matrix_roles(weights, sym, out_map, in_map, np)
        return weights

    def summary(self):
        scales = [np.abs(p).max() for p, (_, k) in zip(self.parts, self.chosen) if k == SCALING]
        conds = [np.linalg.cond(p) for p, (_, k) in zip(self.parts, self.chosen) if k == GL]
        return {"max_abs_log_scale": float(max(scales)) if scales else 0.0,
                "max_condition_number": float(max(conds)) if conds else 1.0}


def teleport(model, x, y, loss=None, steps=10, learning_rate=0.1, group="scaling", max_grad_norm=None, *,
             symmetries=None, optimizer=None, optimizer_state="transform", max_step=1.0, max_backtracks=4,
             loss_tolerance=1e-4, max_grad_growth=None, training=False):
    """Teleports `model` in place to a point of larger gradient norm on the batch (x, y).

    Args:
        model: a built Functional or Sequential Keras model.
        x: the batch's inputs, as the model takes them (tensor or dict).
        y: the batch's targets.
        loss: Keras loss, name or callable(y_true, y_pred); default the model's compiled loss.
        steps: gradient-ascent steps on the Lie algebra.
        learning_rate: ascent step size (ξ ← ξ + learning_rate · ∇_ξ ‖∇_θ L‖²).
        group: "scaling" (positive per-channel scaling), "gl" (GL(h) where the
            activation is linear) or "auto" (GL where exact, scaling elsewhere).
        max_grad_norm: if set, steps that would make ‖∇_θ L‖ exceed it are shrunk or
            refused (a very steep point can be too steep for the optimizer's step size).
        max_grad_growth: if set, like `max_grad_norm` but relative: ‖∇_θ L‖ may grow at most
            by this factor (the cap then scales with wherever training happens to be).
        symmetries: a `SymmetryReport` from `find_symmetries(model)` (found if None).
        optimizer: optimizer whose state to map (default ``model.optimizer``).
        optimizer_state: "transform" (default) or "keep"; see the module docstring.
        max_step: cap on the global norm of one Lie-algebra step.
        max_backtracks: halvings tried before the ascent stops.
        loss_tolerance: largest relative change of the batch loss a step may cause.
        training: run the model in training mode while measuring (dropout etc.).

    Returns:
        dict with loss_before, loss_after, grad_norm_before, grad_norm_after,
        seconds, group, steps, accepted_steps, evaluations, symmetries, dimension,
        max_abs_log_scale, max_condition_number, max_loss_drift, optimizer_state.

    Example:
    >>> import keras, numpy as np
    >>> keras.utils.set_random_seed(0)
    >>> inputs = keras.Input((4,))
    >>> h = keras.layers.Dense(8, activation="relu")(inputs)
    >>> model = keras.Model(inputs, keras.layers.Dense(3)(h))
    >>> x, y = np.random.rand(16, 4).astype("float32"), np.arange(16) % 3
    >>> loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    >>> r = teleport(model, x, y, loss, steps=5)
    >>> r["grad_norm_after"] >= r["grad_norm_before"]
    True
    """
    if optimizer_state not in OPTIMIZER_STATE_POLICIES:
        raise ValueError(f"optimizer_state must be one of {', '.join(OPTIMIZER_STATE_POLICIES)}; "
                         f"got {optimizer_state!r}")
    if steps < 0 or learning_rate <= 0:
        raise ValueError(f"need steps >= 0 and learning_rate > 0; got steps={steps}, "
                         f"learning_rate={learning_rate}")
    start = time.perf_counter()
    report = symmetries if symmetries is not None else find_symmetries(model)
    chosen = _select(report, group)
    loss_fn = _loss_fn(loss, model)
    key = (tuple((s.producer, k) for s, k in chosen), _loss_key(loss_fn), bool(training))
    evaluate = _compile(model, chosen, loss_fn, training, key)

    variables = model.trainable_variables
    theta0 = [np.asarray(keras.ops.convert_to_numpy(v.value), dtype=np.float64) for v in variables]
    dtypes = [v.dtype for v in variables]
    non_trainable = [v.value for v in model.non_trainable_variables]

    def run(element):
        weights = element.act(list(theta0))
        tensors = [tf.constant(w, dtype=d) for w, d in zip(weights, dtypes)]
        loss_v, obj, dxi = evaluate(tensors, non_trainable, x, y)
        obj = float(obj)
        # Ascent on log ‖∇L‖²: same maximisers, and a step size independent of the loss's scale.
        return weights, float(loss_v), obj, [d.numpy().astype(np.float64) / max(obj, 1e-30) for d in dxi]

    element = _Element(chosen)
    weights, loss0, obj0, grad = run(element)
    current_obj, current_loss, evaluations, accepted, drift = obj0, loss0, 1, 0, 0.0
    rate = float(learning_rate)
    limits = [float(max_grad_norm) ** 2] if max_grad_norm is not None else []
    if max_grad_growth is not None:
        if max_grad_growth < 1:
            raise ValueError(f"max_grad_growth must be >= 1; got {max_grad_growth}")
        limits.append(obj0 * float(max_grad_growth) ** 2)
    limit = min(limits) if limits else None
    for _ in range(steps):
        step = [rate * g for g in grad]
        norm = np.sqrt(sum(float(np.sum(s ** 2)) for s in step))
        if norm == 0.0:
            break
        if max_step is not None and norm > max_step:
            step = [s * (max_step / norm) for s in step]
        for _ in range(max_backtracks + 1):
            candidate = element.moved(step)
            c_weights, c_loss, c_obj, c_grad = run(candidate)
            evaluations += 1
            c_drift = abs(c_loss - loss0) / max(abs(loss0), 1e-12)
            if (np.isfinite(c_obj) and c_obj >= current_obj and c_drift <= loss_tolerance
                    and (limit is None or c_obj <= limit)):
                element, weights, current_obj, current_loss, grad = candidate, c_weights, c_obj, c_loss, c_grad
                drift = max(drift, c_drift)
                accepted += 1
                break
            step = [s / 2 for s in step]
            rate /= 2
        else:
            break

    changed = sorted({r.index for s, _ in chosen for r in s.roles})
    if accepted:
        for i in changed:
            variables[i].assign(weights[i].astype(dtypes[i]))
        policy = _map_optimizer_state(optimizer or getattr(model, "optimizer", None), model, element,
                                      changed, optimizer_state)
    else:
        policy = "unchanged (no step accepted)"
    return {
        "loss_before": loss0,
        "loss_after": current_loss,
        "grad_norm_before": float(np.sqrt(obj0)),
        "grad_norm_after": float(np.sqrt(current_obj)),
        "seconds": time.perf_counter() - start,
        "group": group,
        "steps": steps,
        "accepted_steps": accepted,
        "evaluations": evaluations,
        "symmetries": len(chosen),
        "dimension": int(sum(s.width if k == SCALING else s.width ** 2 for s, k in chosen)),
        **element.summary(),
        "max_loss_drift": drift,
        "optimizer_state": policy,
    }


def _map_optimizer_state(optimizer, model, element, changed, policy):
    if optimizer is None or not getattr(optimizer, "built", False):
        return "none (optimizer not built)"
    if policy == "keep":
        return "keep"
    inner = getattr(optimizer, "inner_optimizer", None)  # LossScaleOptimizer
    if inner is not None:
        optimizer = inner
    laws = _SLOT_LAWS.get(type(optimizer).__name__)
    if laws is None:
        raise ValueError(f"optimizer_state='transform' does not know the slots of {type(optimizer).__name__}; "
                         f"supported: {', '.join(sorted(_SLOT_LAWS))}. Pass optimizer_state='keep' to "
                         "leave its state as it is.")
    variables = model.trainable_variables
    for attr, law in laws.items():
        slots = getattr(optimizer, attr, None) or []
        if not slots:
            continue
        per_var = [None] * len(variables)
        for i in changed:
            per_var[i] = np.asarray(keras.ops.convert_to_numpy(
                slots[optimizer._get_variable_index(variables[i])].value), dtype=np.float64)
        full = [p if p is not None else np.zeros(variables[i].shape) for i, p in enumerate(per_var)]
        mapped = element.act(full, law=law)
        for i in changed:
            slot = slots[optimizer._get_variable_index(variables[i])]
            slot.assign(mapped[i].astype(slot.dtype))
    return "transform"
