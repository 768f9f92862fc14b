"""Every layer under Keras' mixed-precision policies: compute dtype in and out, float32 variables, per-set
sums in float32, equivariance to the compute dtype's tolerance, and a model that trains."""

import keras
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from setnet.layers import (
    FoldedEquivariant,
    MaskedGlobalPooling,
    PermEquivariantLinear,
    PermEquivariantQuadratic,
    SetNormalization,
    TiedEquivariantDense,
)
from setnet.symmetry import colors, cyclic

POLICIES = ("mixed_bfloat16", "mixed_float16")
# Several units in the last place of the compute dtype, relative to the largest output: bfloat16 keeps 8
# significant bits, float16 11.
TOLERANCE = {"mixed_bfloat16": 6 * 2.0**-8, "mixed_float16": 6 * 2.0**-11}

# name -> (factory(**dtype kwargs), how points move: "perm" (S_N), "pairs" (S_N/2 on both halves),
# "invariant" (pooling) or "cyclic" (C_N, fixed N))
LAYERS = {
    "linear-sum": (lambda **k: PermEquivariantLinear(3, bias_initializer="random_normal", **k), "perm"),
    "linear-mean": (lambda **k: PermEquivariantLinear(3, pooling="mean", activation="tanh", **k), "perm"),
    "linear-max": (lambda **k: PermEquivariantLinear(3, pooling="max", **k), "perm"),
    "quadratic-sum": (lambda **k: PermEquivariantQuadratic(3, **k), "perm"),
    "quadratic-mean-sym": (lambda **k: PermEquivariantQuadratic(3, symmetric=True, pooling="mean", **k), "perm"),
    "quadratic-rank-sum": (lambda **k: PermEquivariantQuadratic(3, rank=2, **k), "perm"),
    "quadratic-rank-mean": (lambda **k: PermEquivariantQuadratic(3, rank=2, pooling="mean", **k), "perm"),
    "folded-linear": (lambda **k: FoldedEquivariant(3, **k), "pairs"),
    "folded-quadratic-mean": (lambda **k: FoldedEquivariant(3, group="hyperoctahedral", order="quadratic",
                                                            pooling="mean", **k), "pairs"),
    "pool-sum": (lambda **k: MaskedGlobalPooling("sum", **k), "invariant"),
    "pool-mean": (lambda **k: MaskedGlobalPooling("mean", **k), "invariant"),
    "pool-max": (lambda **k: MaskedGlobalPooling("max", **k), "invariant"),
    "normalization": (lambda **k: SetNormalization(gamma_initializer="random_normal", **k), "perm"),
}
TIED_N = 6


@pytest.fixture(autouse=True)
def restore_policy():
    # The policy is global: whatever a test sets (or leaves after a failure) must not reach other tests.
    before = keras.mixed_precision.global_policy()
    yield
    keras.mixed_precision.set_global_policy(before)


def _call(layer, x, mask):
    if isinstance(layer, SetNormalization):
        return layer(x, mask=mask, training=True)
    return layer(x, mask=mask)


def _scaled_error(got, want):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-6)


def _check_dtypes(layer, y, policy):
    compute = keras.mixed_precision.Policy(policy).compute_dtype
    assert keras.backend.standardize_dtype(y.dtype) == compute
    assert layer.weights == [] or {v.dtype for v in layer.weights} == {"float32"}


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(m=st.integers(1, 24), seed=st.integers(0, 2**31 - 1), masked=st.booleans(), data=st.data())
@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", [*LAYERS, "tied-cyclic"])
def test_equivariant_in_the_compute_dtype_with_float32_variables(name, policy, m, seed, masked, data):
    keras.mixed_precision.set_global_policy(policy)
    rng = np.random.default_rng(seed)
    compute = keras.mixed_precision.Policy(policy).compute_dtype
    if name == "tied-cyclic":
        layer, action, n = TiedEquivariantDense(3, colors=colors(cyclic(TIED_N))), "cyclic", TIED_N
    else:
        (make, action), n = LAYERS[name], 2 * m
    real = rng.random((2, m if action == "pairs" else n)) < (0.7 if masked else 1.0)
    real[:, 0] = True
    mask = np.concatenate([real, real], 1) if action == "pairs" else real
    if action == "cyclic":
        shift = data.draw(st.integers(0, n - 1))
        move = out_move = np.roll(np.arange(n), shift)
    elif action == "pairs":
        out_move = np.array(data.draw(st.permutations(range(m))))
        move = np.concatenate([out_move, out_move + m])
    else:
        move = out_move = np.array(data.draw(st.permutations(range(n))))
    if name != "tied-cyclic":
        layer = make()
    x = rng.normal(1.0, 1.0, (2, n, 4)).astype(compute)
    y = _call(layer, x, mask)
    _check_dtypes(layer, y, policy)
    y_moved = _call(layer, x[:, move], mask[:, move])
    expected = np.asarray(y) if action == "invariant" else np.asarray(y)[:, out_move]
    assert _scaled_error(y_moved, expected) <= TOLERANCE[policy]
    if action != "invariant":
        out_mask = real if action == "pairs" else mask
        assert np.all(np.asarray(y)[~out_mask] == 0), "padded outputs are exactly zero"


# Sum-pooled quadratic outputs grow like N² (here ~10⁶), beyond float16's range (65504) whatever the
# accumulation: that configuration is for float32 or bfloat16.
BEYOND_FLOAT16 = {"quadratic-sum", "quadratic-rank-sum"}


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("name", list(LAYERS))
def test_sums_over_many_points_keep_the_compute_dtype_accuracy(name, policy):
    # 1,024 points: a float16 sum of the squared set sums overflows at a few hundred points, and bfloat16
    # differences of such sums cancel; the layers keep them in float32 and stay at compute-dtype rounding
    # of a float64 evaluation with the same (rounded) inputs and weights.
    if policy == "mixed_float16" and name in BEYOND_FLOAT16:
        policy = "mixed_bfloat16"
    make, action = LAYERS[name]
    rng = np.random.default_rng(1)
    n = 1024
    keras.mixed_precision.set_global_policy(policy)
    layer = make()
    compute = layer.compute_dtype
    x = rng.normal(1.0, 1.0, (2, n, 4)).astype(compute)
    lengths = np.array([[n], [3 * n // 4]]) if action != "pairs" else np.array([[n // 2], [3 * n // 8]])
    half = np.arange(n // 2 if action == "pairs" else n)[None] < lengths
    mask = np.concatenate([half, half], 1) if action == "pairs" else half
    y = _call(layer, x, mask)
    _check_dtypes(layer, y, policy)
    keras.mixed_precision.set_global_policy("float32")
    reference = make(dtype="float64")
    reference.build(x.shape)
    for ref_weight, weight in zip(reference.weights, layer.weights):
        # The layer computed with its weights rounded to the compute dtype; so does the reference.
        ref_weight.assign(np.asarray(weight).astype(compute).astype(np.float64))
    want = _call(reference, x.astype(np.float64), mask)
    assert np.all(np.isfinite(np.asarray(y, np.float64)))
    assert _scaled_error(y, want) <= TOLERANCE[policy]


@pytest.mark.parametrize("policy", POLICIES)
def test_a_model_built_under_the_policy_trains_a_step(policy):
    keras.mixed_precision.set_global_policy(policy)
    points = keras.Input((None, 3), name="points")
    mask = keras.Input((None,), dtype="bool", name="mask")
    h = PermEquivariantLinear(16, pooling="mean", activation="relu")(points, mask=mask)
    h = SetNormalization()(h)
    h = PermEquivariantQuadratic(8, pooling="mean", rank=4, activation="relu")(h)
    h = FoldedEquivariant(8, group="hyperoctahedral", pooling="mean")(h)
    h = MaskedGlobalPooling("mean")(h)
    logits = keras.layers.Dense(3, dtype="float32")(h)  # logits in float32 for the loss, as Keras advises
    model = keras.Model({"points": points, "mask": mask}, logits)
    model.compile(keras.optimizers.Adam(1e-2), keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    rng = np.random.default_rng(0)
    real = rng.random((8, 16)) < 0.7
    real[:, 0] = True
    inputs = {"points": rng.normal(size=(8, 32, 3)).astype("float32"),
              "mask": np.concatenate([real, real], 1)}  # the fold pairs point i with point i + 16
    labels = rng.integers(0, 3, 8)
    before = [keras.ops.convert_to_numpy(w).copy() for w in model.trainable_weights]
    # Under mixed_float16 Keras scales the loss and skips a step whose float16 gradients overflowed (halving
    # the scale), so one step may legitimately change nothing; a few must.
    losses = [model.train_on_batch(inputs, labels) for _ in range(4)]
    assert np.all(np.isfinite(losses))
    assert {w.dtype for w in model.weights} == {"float32"}
    after = [keras.ops.convert_to_numpy(w) for w in model.trainable_weights]
    assert all(not np.array_equal(b, a) for b, a in zip(before, after))
