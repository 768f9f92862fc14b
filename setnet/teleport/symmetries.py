"""Exact parameter symmetries of a Keras model, read from its layer graph.

A *channel symmetry* ties the output channels of one layer (the producer) to the
input channels of the layers that read them (the consumers). A group element g
acts on the weights so that the model computes the same function for every
input:

- positive scaling, g = diag(e^t): the producer's output columns (Λ, Γ, bias, and
  for a quadratic producer its quadratic kernel) are multiplied by e^{t_c}; every
  consumer's input rows are multiplied by e^{-t_c}, a quadratic consumer's
  quadratic kernel by e^{-(t_a + t_b)}. Exact across positively homogeneous
  activations (ReLU, LeakyReLU, linear) and everything in between that commutes
  with positive per-channel scaling (max, mean and sum pooling, dropout).
- GL(h), g = M invertible: producer columns w ↦ w M, consumer rows w ↦ M^{-1} w
  (a quadratic consumer's kernel ↦ M^{-1} Q M^{-T}). Exact only when nothing
  between producer and consumers is nonlinear: linear activation and sum/mean
  pooling (max pooling does not commute with channel mixing).
- channel permutations, g = P: exact across any elementwise activation.

Anything else between producer and consumer breaks the symmetry and the pair is
skipped, with the reason kept in ``SymmetryReport.skipped``. In particular a
normalisation layer (SetNormalization, BatchNormalization, LayerNormalization)
between two layers is never crossed: with batch statistics it divides a channel
scale out (the function of the *next* layer's input is then invariant, not
equivariant, so dividing the consumer's weights would change the output), and
with moving statistics at inference it does not adapt at all. Skip connections,
concatenations and a producer whose output is also a model output are skipped
for the same reason: some reader of the channels would not be compensated.

>>> import keras
>>> from setnet.teleport import find_symmetries
>>> inputs = keras.Input((4,))
>>> h = keras.layers.Dense(8, activation="relu", name="hidden")(inputs)
>>> model = keras.Model(inputs, keras.layers.Dense(3, name="head")(h))
>>> report = find_symmetries(model)
>>> [(s.producer, s.consumers, sorted(s.groups)) for s in report.symmetries]
[('hidden', ('head',), ['permutation', 'scaling'])]
"""

from __future__ import annotations

import dataclasses

import keras
import numpy as np

PERMUTATION, SCALING, GL = "permutation", "scaling", "gl"
ALL_GROUPS = frozenset({PERMUTATION, SCALING, GL})
_ELEMENTWISE_ONLY = frozenset({PERMUTATION})
_HOMOGENEOUS = frozenset({PERMUTATION, SCALING})

# Elementwise activations that commute with channel permutations but not with
# scaling (their Keras names). Anything not listed (softmax, ...) breaks all.
_ELEMENTWISE_ACTIVATIONS = {
    "tanh", "sigmoid", "gelu", "elu", "selu", "softplus", "softsign", "swish", "silu",
    "hard_sigmoid", "hard_silu", "hard_swish", "exponential", "mish", "relu6", "celu", "glu",
    "log_sigmoid", "tanh_shrink", "hard_tanh", "sparse_plus", "squareplus", "soft_shrink",
    "hard_shrink", "threshold",
}
_NORMALISATION_NAMES = {
    "SetNormalization", "BatchNormalization", "LayerNormalization", "GroupNormalization",
    "UnitNormalization", "RMSNormalization", "SyncBatchNormalization", "Normalization",
}


@dataclasses.dataclass(frozen=True)
class WeightRole:
    """Where a symmetry's channel index sits in one trainable variable.

    Attributes:
        index: position of the variable in ``model.trainable_variables``.
        axes: the variable's axes indexed by the symmetry's channels.
        name: the variable's path, for messages.
    """

    index: int
    axes: tuple[int, ...]
    name: str


@dataclasses.dataclass(frozen=True)
class ChannelSymmetry:
    """One producer → consumers pair and the groups acting on its channels.

    Attributes:
        producer: name of the layer whose output channels are acted on.
        consumers: names of the layers that read those channels.
        width: number of channels h.
        groups: subset of {"permutation", "scaling", "gl"} that is exact here.
        path: names of the layers between producer and consumers.
        outgoing: producer weights (channel on their last axis).
        incoming: consumer weights (channel on their input axes).
    """

    producer: str
    consumers: tuple[str, ...]
    width: int
    groups: frozenset
    path: tuple[str, ...]
    outgoing: tuple[WeightRole, ...]
    incoming: tuple[WeightRole, ...]

    @property
    def roles(self):
        return self.outgoing + self.incoming


@dataclasses.dataclass
class SymmetryReport:
    """What `find_symmetries` found, and why the other layers were skipped.

    Attributes:
        symmetries: the exact channel symmetries.
        skipped: (layer name, reason) for every candidate producer left out.
    """

    symmetries: list[ChannelSymmetry]
    skipped: list[tuple[str, str]]

    def for_group(self, group: str) -> list[ChannelSymmetry]:
        return [s for s in self.symmetries if group in s.groups]

    def __str__(self):
        lines = [f"{len(self.symmetries)} channel symmetries"]
        for s in self.symmetries:
            via = f" via {' → '.join(s.path)}" if s.path else ""
            lines.append(f"  {s.producer} → {', '.join(s.consumers)}{via}: h={s.width}, "
                         f"groups={sorted(s.groups)}")
        for name, why in self.skipped:
            lines.append(f"  skipped {name}: {why}")
        return "\n".join(lines)


def _activation_groups(activation) -> frozenset | None:
    """Groups exact across an activation function (None if it is not elementwise)."""
    if activation is None:
        return ALL_GROUPS
    if isinstance(activation, keras.layers.Layer):
        return _layer_passthrough(activation, None)[0]
    name = getattr(activation, "__name__", None) or type(activation).__name__
    name = name.lower()
    if name == "linear":
        return ALL_GROUPS
    if name in ("relu", "leaky_relu"):
        return _HOMOGENEOUS
    if name in _ELEMENTWISE_ACTIVATIONS:
        return _ELEMENTWISE_ONLY
    return None


def _setnet_class(name):
    try:
        import setnet.layers as layers
    except ImportError:
        return None
    return getattr(layers, name, None)


def _is(layer, class_name):
    cls = _setnet_class(class_name)
    return cls is not None and isinstance(layer, cls)


def _variables_by_name(layer):
    return {v.name: v for v in layer.trainable_variables}


def _layer_roles(layer, var_index, as_producer):
    """Weight roles of a supported Dense-like layer, or (None, reason).

    Each variable is listed with its input-channel axes (where a consumer's weights
    meet the symmetry's channels) and whether its last axis is an output channel.
    """
    variables = _variables_by_name(layer)
    if not layer.trainable or not layer.trainable_variables:
        return None, "its weights are frozen"
    if isinstance(layer, keras.layers.Dense):
        spec = {"kernel": ((0,), True), "bias": ((), True)}
    elif _is(layer, "PermEquivariantLinear"):
        spec = {"lambda_kernel": ((0,), True), "gamma_kernel": ((0,), True), "bias": ((), True)}
    elif _is(layer, "PermEquivariantQuadratic"):
        spec = {"lambda_kernel": ((0,), True), "gamma_kernel": ((0,), True), "bias": ((), True)}
        if getattr(layer, "rank", None) is None:
            # (n_orbits, C_in, C_in, units): x_a x_b meets Q[:, a, b, :], so Q ↦ e^{-(t_a+t_b)} Q.
            spec["quadratic_kernel"] = ((1, 2), True)
        else:
            # Factorised: a = x U, b = x V feed (n_orbits, rank, units); channels meet U and V only.
            spec.update(quadratic_left=((0,), False), quadratic_right=((0,), False),
                        quadratic_kernel=((), True))
    else:
        return None, (f"{type(layer).__name__} is not a supported layer "
                      "(Dense, PermEquivariantLinear, PermEquivariantQuadratic)")
    unknown = set(variables) - set(spec)
    if unknown:
        return None, f"unexpected variables {sorted(unknown)}"
    roles = []
    for name, (in_axes, is_out) in spec.items():
        if name not in variables:
            continue
        v = variables[name]
        axes = ((len(v.shape) - 1,) if is_out else ()) if as_producer else in_axes
        if axes:
            roles.append(WeightRole(var_index[id(v)], axes, v.path))
    return tuple(roles), None


def _consumer_groups(layer):
    """Groups a consumer layer admits on its input channels."""
    pooling = getattr(layer, "pooling", None)
    if pooling == "max":
        return _HOMOGENEOUS  # max over points commutes with positive scaling, not with mixing
    return ALL_GROUPS


def _layer_passthrough(layer, node):
    """(groups, reason) for a layer that sits between producer and consumers."""
    cls = type(layer).__name__
    if cls in _NORMALISATION_NAMES or _is(layer, "SetNormalization"):
        return None, (f"normalisation layer {layer.name} ({cls}) in between: it rescales each channel "
                      "by data statistics, so a channel scale cannot be moved across it")
    if isinstance(layer, keras.layers.ReLU):
        if layer.max_value is None and float(layer.threshold) == 0.0:
            return _HOMOGENEOUS, None
        return _ELEMENTWISE_ONLY, None
    if isinstance(layer, keras.layers.LeakyReLU):
        return _HOMOGENEOUS, None
    if isinstance(layer, keras.layers.Activation):
        groups = _activation_groups(layer.activation)
        if groups is None:
            return None, f"activation {layer.name} is not elementwise"
        return groups, None
    if isinstance(layer, (keras.layers.Dropout, keras.layers.GaussianDropout)):
        # Elementwise multiplicative noise (identity at inference).
        return _HOMOGENEOUS, None
    if isinstance(layer, keras.layers.Identity):
        return ALL_GROUPS, None
    if isinstance(layer, (keras.layers.GlobalAveragePooling1D,)):
        return ALL_GROUPS, None
    if isinstance(layer, (keras.layers.GlobalMaxPooling1D,)):
        return _HOMOGENEOUS, None
    if _is(layer, "MaskedGlobalPooling"):
        mode = getattr(layer, "mode", None)
        if mode in ("mean", "sum"):
            return ALL_GROUPS, None
        if mode == "max":
            return _HOMOGENEOUS, None
        return None, f"pooling {layer.name} has unknown mode {mode!r}"
    return None, f"{layer.name} ({cls}) in between is not known to commute with channel scaling"


def _functional_graph(model):
    if isinstance(model, keras.Sequential):
        if getattr(model, "_functional", None) is None:
            raise ValueError(f"Sequential model {model.name!r} is not built; call it on data or give it "
                             "an Input layer before looking for its symmetries")
        return model._functional
    if isinstance(model, keras.Model) and hasattr(model, "_nodes_by_depth"):
        return model
    raise TypeError(f"{type(model).__name__} {getattr(model, 'name', '')!r} has no readable layer graph; "
                    "symmetry discovery needs a Functional or Sequential Keras model")


def find_symmetries(model) -> SymmetryReport:
    """Finds the exact channel symmetries of a Functional or Sequential model.

    Args:
        model: a built ``keras.Model`` (Functional or Sequential) made of
            ``Dense``, setnet layers, activations, pooling and dropout.

    Returns:
        A `SymmetryReport`; ``report.symmetries`` lists one `ChannelSymmetry`
        per producer layer whose output channels may be acted on.
    """
    graph = _functional_graph(model)
    var_index = {id(v): i for i, v in enumerate(model.trainable_variables)}
    nodes = [n for depth in graph._nodes_by_depth.values() for n in depth]
    consumers = {}  # id(KerasTensor) -> list of (node, position-ok)
    for node in nodes:
        for kt in node.input_tensors:
            consumers.setdefault(id(kt), []).append(node)
    output_ids = {id(t) for t in graph.outputs}

    symmetries, skipped = [], []
    for node in sorted(nodes, key=lambda n: -_depth_of(graph, n)):
        layer = node.operation
        if not isinstance(layer, keras.layers.Layer) or isinstance(layer, keras.layers.InputLayer):
            continue
        if not (isinstance(layer, keras.layers.Dense) or _is(layer, "PermEquivariantLinear")
                or _is(layer, "PermEquivariantQuadratic")):
            continue
        if len(layer._inbound_nodes) != 1:
            skipped.append((layer.name, "the layer is shared (called more than once)"))
            continue
        out_roles, why = _layer_roles(layer, var_index, as_producer=True)
        if out_roles is None:
            skipped.append((layer.name, why))
            continue
        groups = _activation_groups(getattr(layer, "activation", None))
        if groups is None:
            skipped.append((layer.name, f"its activation {layer.activation} is not elementwise"))
            continue
        found = _follow(node.outputs[0], consumers, output_ids, var_index)
        if isinstance(found, str):
            skipped.append((layer.name, found))
            continue
        path_groups, path, in_roles, consumer_names = found
        groups = groups & path_groups
        if not groups:
            skipped.append((layer.name, "no group is exact across " + " → ".join(path)))
            continue
        width = int(model.trainable_variables[out_roles[0].index].shape[-1])
        symmetries.append(ChannelSymmetry(layer.name, consumer_names, width, frozenset(groups),
                                          path, out_roles, in_roles))
    return SymmetryReport(symmetries, skipped)


def _depth_of(graph, node):
    for depth, depth_nodes in graph._nodes_by_depth.items():
        if node in depth_nodes:
            return depth
    return 0


def _only_main_input(node, tensor):
    """True when `tensor` enters `node` exactly once, as its first positional argument."""
    args = node.arguments.args
    if not args or args[0] is not tensor:
        return False
    return sum(kt is tensor for kt in node.input_tensors) == 1


def _follow(tensor, consumers, output_ids, var_index):
    """Walks from a producer's output to every consumer; a reason string on failure."""
    groups, path, roles, names = ALL_GROUPS, [], [], []
    stack = [tensor]
    while stack:
        t = stack.pop()
        if id(t) in output_ids:
            return "its channels reach a model output" + (f" (via {' → '.join(path)})" if path else "")
        readers = consumers.get(id(t), [])
        if not readers:
            return "its output is not used"
        for node in readers:
            op = node.operation
            if not isinstance(op, keras.layers.Layer):
                return f"operation {op.name} ({type(op).__name__}) reads the channels"
            if not _only_main_input(node, t):
                return f"{op.name} reads the channels other than as its single main input"
            if len(op._inbound_nodes) != 1:
                return f"{op.name} is shared (called more than once)"
            if (isinstance(op, keras.layers.Dense) or _is(op, "PermEquivariantLinear")
                    or _is(op, "PermEquivariantQuadratic")):
                in_roles, why = _layer_roles(op, var_index, as_producer=False)
                if in_roles is None:
                    return f"consumer {op.name}: {why}"
                roles.extend(in_roles)
                names.append(op.name)
                groups = groups & _consumer_groups(op)
                continue
            g, why = _layer_passthrough(op, node)
            if g is None:
                return why
            groups = groups & g
            path.append(op.name)
            stack.append(node.outputs[0])
    return groups, tuple(path), tuple(roles), tuple(names)


# --- group actions --------------------------------------------------------------------------------
# Weights are numpy/TF arrays listed like model.trainable_variables. `along(w, A, axis)` applies a
# channel map on one axis: w'[..., j, ...] = Σ_i w[..., i, ...] A[i, j].


def along(w, a, axis, xp):
    """Applies the channel matrix `a` on `axis` of `w` (xp: numpy or tf.experimental.numpy)."""
    moved = xp.moveaxis(w, axis, -1)
    return xp.moveaxis(xp.matmul(moved, a), -1, axis)


def scale_roles(weights, symmetry, t, xp, sign=1.0):
    """Positive scaling by e^{sign·t}: producer columns ×e^{t}, consumer rows ×e^{-t}.

    With sign=-1 this is the law by which *gradients* (and first moments) transform.
    """
    weights = list(weights)
    for role, direction in _roles_with_direction(symmetry):
        w = weights[role.index]
        for axis in role.axes:
            shape = [1] * len(w.shape)
            shape[axis] = -1
            w = w * xp.reshape(xp.exp(sign * direction * t), shape)
        weights[role.index] = w
    return weights


def matrix_roles(weights, symmetry, out_map, in_map, xp):
    """General channel map: producer columns w ↦ w·out_map, consumer rows w ↦ in_mapᵀ·w.

    For a group element M: out_map = M, in_map = M^{-T}. For gradients: out_map = M^{-T},
    in_map = M. Permutations are M = P (P^{-T} = P).
    """
    weights = list(weights)
    for role in symmetry.outgoing:
        weights[role.index] = along(weights[role.index], out_map, role.axes[0], xp)
    for role in symmetry.incoming:
        w = weights[role.index]
        for axis in role.axes:
            w = along(w, in_map, axis, xp)
        weights[role.index] = w
    return weights


def _roles_with_direction(symmetry):
    return [(r, 1.0) for r in symmetry.outgoing] + [(r, -1.0) for r in symmetry.incoming]


def _assign(model, symmetry, new):
    for role in symmetry.roles:
        variable = model.trainable_variables[role.index]
        variable.assign(new[role.index].astype(variable.dtype))


def _weights64(model):
    return [np.asarray(keras.ops.convert_to_numpy(v.value), dtype=np.float64) for v in model.trainable_variables]


def permute_channels(model, symmetry: ChannelSymmetry, permutation) -> None:
    """Permutes the channels of one symmetry in place (the model's function is unchanged).

    Args:
        model: the model `symmetry` was found in.
        symmetry: a `ChannelSymmetry` of that model.
        permutation: int array of length ``symmetry.width``; new channel j is old
            channel ``permutation[j]``.
    """
    perm = np.asarray(permutation)
    if sorted(perm.tolist()) != list(range(symmetry.width)):
        raise ValueError(f"permutation must rearrange 0..{symmetry.width - 1}; got {perm.tolist()}")
    p = np.eye(symmetry.width)[:, perm]  # (w P)[:, j] = w[:, perm[j]]
    _assign(model, symmetry, matrix_roles(_weights64(model), symmetry, p, p, np))


def scale_channels(model, symmetry: ChannelSymmetry, log_scales) -> None:
    """Applies positive scaling diag(e^t) to one symmetry in place (needs "scaling" in its groups)."""
    if SCALING not in symmetry.groups:
        raise ValueError(f"scaling is not exact for {symmetry.producer} → {', '.join(symmetry.consumers)} "
                         f"(exact groups: {sorted(symmetry.groups)})")
    t = np.asarray(log_scales, dtype=np.float64).reshape(symmetry.width)
    _assign(model, symmetry, scale_roles(_weights64(model), symmetry, t, np))


def mix_channels(model, symmetry: ChannelSymmetry, matrix) -> None:
    """Applies an invertible channel map M (GL(h)) to one symmetry in place, with the exact inverse.

    Producer columns become w M and consumer rows M^{-1} w (quadratic: M^{-1} Q M^{-T}).
    """
    if GL not in symmetry.groups:
        raise ValueError(f"GL(h) is not exact for {symmetry.producer} → {', '.join(symmetry.consumers)} "
                         f"(exact groups: {sorted(symmetry.groups)}); it needs a linear activation and "
                         "only sum/mean pooling in between")
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (symmetry.width, symmetry.width):
        raise ValueError(f"matrix must be {symmetry.width}x{symmetry.width}; got shape {m.shape}")
    inv = np.linalg.inv(m)
    _assign(model, symmetry, matrix_roles(_weights64(model), symmetry, m, inv.T, np))
