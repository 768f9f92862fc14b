"""train.mixed_precision: the Keras policy during training, loss scaling for float16, float32
losses and metrics, and exports with float32 signatures that pass their checks under each policy."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import export as ex
from pipelines import loop
from pipelines.config import load_config
from pipelines.build import make_optimizer
from pipelines.train import train
from tests.support.training import NUM_CLASSES, build, tiny_dataset

POLICIES = ["mixed_bfloat16", "mixed_float16"]


@pytest.fixture
def policy(request):
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(request.param)
    yield request.param
    keras.config.set_dtype_policy(previous)


def _trained(optimizer_wrapper=None):
    strategy = tf.distribute.get_strategy()
    keras.utils.set_random_seed(1)
    model, optimizer = build(strategy, normalization=True)
    if optimizer_wrapper is not None:
        optimizer = optimizer_wrapper(optimizer)
        optimizer.build(model.trainable_variables)
    trainer = loop.Trainer(model, optimizer, strategy, xla=True, verbose=0)
    ds = loop.prepare(tiny_dataset(16, examples=64), batch_size=16, training=True)
    history = trainer.fit(ds, None, epochs=3, train_steps=4)
    return model, optimizer, history


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_a_mixed_precision_model_trains_with_float32_variables_loss_and_metrics(policy):
    wrap = keras.optimizers.LossScaleOptimizer if policy == "mixed_float16" else None
    model, optimizer, history = _trained(wrap)
    assert model.compute_dtype == policy.removeprefix("mixed_")
    assert {v.dtype for v in model.trainable_variables} == {"float32"}
    losses = [h["loss"] for h in history]
    assert all(np.isfinite(losses)) and losses[-1] < losses[0]
    if wrap is not None:
        # The loss scale is live: it starts at 2^15 and halves on steps whose gradients overflow.
        assert 0 < float(optimizer.dynamic_scale.numpy()) <= 2.0 ** 15
    logits = model({"points": np.zeros((2, 5, 3), "float32"), "mask": np.ones((2, 5), bool)})
    assert logits.dtype == policy.removeprefix("mixed_")
    # The loop's loss is float32 whatever the logits' dtype.
    assert loop.per_example_loss(tf.constant([0, 1], tf.int64), logits).dtype == tf.float32


@pytest.mark.parametrize("policy", POLICIES, indirect=True)
def test_an_export_under_each_policy_has_float32_signatures_and_passes_its_checks(policy, tmp_path):
    model, _, _ = _trained(keras.optimizers.LossScaleOptimizer if policy == "mixed_float16" else None)
    names = [f"class{i}" for i in range(NUM_CLASSES)]
    path = ex.export_model(model, tmp_path, "mixed", names, check_invariance=True, permutations=4)
    summary = ex.read_export_summary(path)
    dtype = policy.removeprefix("mixed_")
    assert summary["compute_dtype"] == dtype
    assert summary["invariance"]["passed"] and summary["masked_padding"]["passed"]
    loaded = tf.saved_model.load(str(path))
    for name in ("serving_default", "serving_masked"):
        fn = loaded.signatures[name]
        assert fn.structured_input_signature[1]["points"].dtype == tf.float32
        assert fn.structured_outputs["probabilities"].dtype == tf.float32
    points = np.random.default_rng(0).normal(size=(3, 20, 3)).astype("float32")
    out = loaded.signatures["serving_default"](points=tf.constant(points))
    assert out["probabilities"].dtype == tf.float32
    np.testing.assert_allclose(out["probabilities"].numpy().sum(-1), 1.0, rtol=1e-5)
    # The SavedModel computes in the policy's dtype: its answers are the Keras model's, to that
    # dtype's rounding (the graph's kernels are not the eager ones).
    want = tf.nn.softmax(tf.cast(model({"points": points, "mask": np.ones((3, 20), bool)}), tf.float32))
    atol, rtol = ex.TOLERANCES[dtype]
    np.testing.assert_allclose(out["probabilities"].numpy(), want.numpy(), atol=atol, rtol=rtol)


def test_float16_gets_a_loss_scale_optimizer_and_bfloat16_does_not():
    for precision, scaled in (("float16", True), ("bfloat16", False), ("none", False)):
        cfg = load_config(None, [f"train.mixed_precision={precision}"])
        optimizer = make_optimizer(cfg.train, steps_per_epoch=10)
        assert isinstance(optimizer, keras.optimizers.LossScaleOptimizer) is scaled, precision


@pytest.mark.slow
def test_bfloat16_training_reaches_the_float32_test_accuracy_on_digits(tmp_path):
    accuracy = {}
    for precision in ("none", "bfloat16"):
        cfg = load_config("configs/digits.yaml", [
            f"train.mixed_precision={precision}", f"runs_dir={tmp_path}", "mlflow.enabled=false",
            f"export.root={tmp_path / 'exports'}", f"export.model_name={precision}", "train.resume=never",
            # The precision is what is compared; XLA's compilation of this step takes minutes on a
            # loaded 2-core machine, the 30 epochs themselves about a minute.
            "train.xla=false"])
        result = train(cfg, printer=lambda *_: None)
        accuracy[precision] = result["test_accuracy"]
        # The trained model's export: float32 signatures, its checks passed at its dtype's tolerance.
        summary = ex.read_export_summary(result["export_path"])
        assert summary["compute_dtype"] == ("float32" if precision == "none" else precision)
        assert summary["invariance"]["passed"] and summary["masked_padding"]["passed"]
        # The run leaves the process's policy as it found it.
        assert keras.config.dtype_policy().name == "float32"
    assert accuracy["bfloat16"] >= accuracy["none"] - 0.01, accuracy
