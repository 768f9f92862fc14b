"""Keras layer for G-SNN architectures (Agrawal & Ostrowski, arXiv:2205.09219), G-invariant by construction.

Importing this module imports Keras; ``setnet.gsnn`` itself and its CLI do
not, and load this module only when ``GInvariantShallow`` or ``build_model``
is first used.
"""

from __future__ import annotations

import keras
import numpy as np
from keras import ops

from setnet.gsnn.classify import Pair, classify
from setnet.gsnn.groups import FiniteGroup, parse_group


def _resolve_group(group) -> FiniteGroup:
    if isinstance(group, FiniteGroup):
        return group
    if isinstance(group, str):
        return parse_group(group)
    if isinstance(group, dict):
        return FiniteGroup(np.asarray(group["generators"], dtype=np.float64), group.get("name", "G"),
                           degree=int(group["degree"]))
    raise TypeError(f"group must be a SPEC string, a FiniteGroup or a config dict, got {type(group).__name__}")


@keras.saving.register_keras_serializable(package="setnet")
class GInvariantShallow(keras.layers.Layer):
    """A sum of irreducible G-SNN architectures: one hidden ReLU layer, invariant under G.

    For each chosen architecture (pair class (H, K)) and each of ``channels``
    copies, the layer holds coefficients c in R^k of the weight space basis,
    an output weight a and a hidden bias b, and adds

        a * sum_{i < [G:H]} phi(<t_i . w, x> + b),   w = c @ basis,

    with phi = ReLU for type 1 and phi(z + b) = ReLU(z + b) + ReLU(-z + b) for
    type 2 (a neuron defined up to sign). G permutes the neurons with signs,
    so the output is invariant for every value of the weights.

    Args:
        group: a group SPEC string (``"D4"``, ``"C2+C4"``, ``"rot6"``), a
            ``FiniteGroup``, or the dict ``get_config`` writes.
        architectures: indices into ``classify(group)`` of the pairs to sum
            (each must be an architecture); None takes every architecture.
        channels: independent copies of each architecture.
        use_bias: learn the hidden biases b and an output bias.
        coeff_initializer: initializer of the weight-space coefficients.

    Example:
        >>> import numpy as np
        >>> layer = GInvariantShallow("C4", channels=2)
        >>> x = np.random.default_rng(0).normal(size=(3, 4)).astype("float32")
        >>> y, y_rot = layer(x), layer(np.roll(x, 1, axis=1))
        >>> bool(np.allclose(y, y_rot, atol=1e-5)), tuple(y.shape)
        (True, (3, 1))
    """

    def __init__(self, group, architectures=None, channels: int = 1, use_bias: bool = True,
                 coeff_initializer="random_normal", **kwargs):
        super().__init__(**kwargs)
        self.group = _resolve_group(group)
        pairs = classify(self.group)
        if architectures is None:
            architectures = [p.index for p in pairs if p.ok]
        self.architectures = [int(i) for i in architectures]
        for i in self.architectures:
            if not 0 <= i < len(pairs):
                raise ValueError(f"{self.group.name} has {len(pairs)} pair classes; architecture index {i} is out of "
                                 "range (see `python -m setnet.gsnn list --group ...`)")
            if not pairs[i].ok:
                raise ValueError(f"pair #{i} of {self.group.name} ({pairs[i].label}) is not an architecture: "
                                 f"{pairs[i].reason}")
        if not self.architectures:
            raise ValueError(f"no architectures chosen for {self.group.name}")
        if int(channels) < 1:
            raise ValueError(f"channels must be >= 1, got {channels}")
        self.channels = int(channels)
        self.use_bias = bool(use_bias)
        self.coeff_initializer = keras.initializers.get(coeff_initializer)
        self.pairs: list[Pair] = [pairs[i] for i in self.architectures]

    def build(self, input_shape):
        d = input_shape[-1]
        if d != self.group.degree:
            raise ValueError(f"{self.group.name} acts on R^{self.group.degree}, but the input has {d} features")
        self._patterns, self._coeffs, self._a, self._b = [], [], [], []
        for p in self.pairs:
            # Fixed (k, width, d) tensor: the weight matrix of each basis vector of V.
            self._patterns.append(p.pattern_basis().astype("float32"))
            self._coeffs.append(self.add_weight(shape=(self.channels, p.dim), initializer=self.coeff_initializer,
                                                name=f"coeffs_{p.index}"))
            scale = 1.0 / np.sqrt(p.width * self.channels * len(self.pairs))
            self._a.append(self.add_weight(shape=(self.channels,), name=f"a_{p.index}",
                                           initializer=keras.initializers.RandomNormal(stddev=scale)))
            self._b.append(self.add_weight(shape=(self.channels,), name=f"b_{p.index}", initializer="zeros")
                           if self.use_bias else None)
        self.out_bias = self.add_weight(shape=(1,), name="out_bias", initializer="zeros") if self.use_bias else None

    def call(self, x):
        out = 0.0
        for p, pattern, c, a, b in zip(self.pairs, self._patterns, self._coeffs, self._a, self._b):
            w = ops.einsum("ck,kmd->cmd", c, ops.convert_to_tensor(pattern, dtype=x.dtype))
            z = ops.einsum("...d,cmd->...cm", x, w)
            bias = 0.0 if b is None else b[:, None]
            h = ops.relu(z + bias)
            if p.kind == 2:
                h = h + ops.relu(-z + bias)
            out = out + ops.einsum("...cm,c->...", h, a)
        out = ops.expand_dims(out, -1)
        return out if self.out_bias is None else out + self.out_bias

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 1)

    def get_params(self, architecture: int, channel: int = 0):
        """(coeffs, a, b) of one copy of architecture ``architecture`` (a pair index), as numpy."""
        j = self._position(architecture)
        b = 0.0 if self._b[j] is None else float(self._b[j].numpy()[channel])
        return self._coeffs[j].numpy()[channel], float(self._a[j].numpy()[channel]), b

    def set_params(self, architecture: int, coeffs, a, b=0.0, channel: int = 0):
        """Set one copy of an architecture, e.g. to the output of ``morphisms.grow``."""
        j = self._position(architecture)
        c = self._coeffs[j].numpy()
        c[channel] = coeffs
        self._coeffs[j].assign(c)
        av = self._a[j].numpy()
        av[channel] = a
        self._a[j].assign(av)
        if self._b[j] is not None:
            bv = self._b[j].numpy()
            bv[channel] = b
            self._b[j].assign(bv)
        elif b != 0:
            raise ValueError("this layer has use_bias=False; b must be 0")

    def _position(self, architecture: int) -> int:
        if architecture not in self.architectures:
            raise ValueError(f"architecture #{architecture} is not in this layer (it has {self.architectures})")
        return self.architectures.index(architecture)

    def get_config(self):
        config = super().get_config()
        g = self.group
        config.update({
            "group": {"name": g.name, "degree": g.degree, "generators": g.elements[g.generators].tolist()},
            "architectures": list(self.architectures),
            "channels": self.channels,
            "use_bias": self.use_bias,
            "coeff_initializer": keras.initializers.serialize(self.coeff_initializer),
        })
        return config


def build_model(group, architectures=None, channels: int = 1, use_bias: bool = True, name: str = "gsnn") -> keras.Model:
    """A Keras model x (d features) -> f(x) (one output) made of the chosen G-SNN architectures.

    Args and defaults as for ``GInvariantShallow``.

    Example:
        >>> model = build_model("D4", architectures=[0, 6], channels=3)
        >>> model.output_shape
        (None, 1)
    """
    layer = GInvariantShallow(group, architectures, channels=channels, use_bias=use_bias, name=f"{name}_layer")
    inputs = keras.Input(shape=(layer.group.degree,), name="x")
    return keras.Model(inputs, layer(inputs), name=name)
