"""The training loop on one device, in process: buckets bound XLA compilations, evaluation counts
every example once, the loss is the per-example mean, and Keras callbacks see the epochs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import loop
from tests.support.training import NUM_CLASSES, build, tiny_arrays


@pytest.mark.parametrize("buckets, sizes", [
    ([8, 16, 32], {1: 8, 5: 8, 8: 8, 9: 16, 16: 16, 17: 32, 32: 32, 33: 64, 65: 96}),
    ([], {1: 1, 2: 2, 3: 4, 5: 8, 8: 8, 9: 16, 17: 32, 1000: 1024, 1024: 1024}),
])
def test_bucket_for(buckets, sizes):
    for n, want in sizes.items():
        assert int(loop.bucket_for(tf.constant(n), buckets)) == want, (n, buckets)


def _ragged_batches(sizes, batch_size, seed=0):
    """Batches whose set size changes from batch to batch (as after per-batch padding)."""
    parts = []
    for i, n in enumerate(sizes):
        x, mask, y = tiny_arrays(batch_size, n, seed=seed + i, variable=True)
        parts.append(tf.data.Dataset.from_tensors(({"points": x, "mask": mask}, y)))
    ds = parts[0]
    for part in parts[1:]:
        ds = ds.concatenate(part)
    return ds


def test_buckets_bound_xla_compilations():
    sizes = [3, 5, 6, 7, 9, 11, 13, 15, 4, 12]  # ten batches, eight different set sizes
    strategy = tf.distribute.get_strategy()
    model, optimizer = build(strategy)
    trainer = loop.Trainer(model, optimizer, strategy, xla=True, verbose=0)
    ds = loop.prepare(_ragged_batches(sizes, 8), batch_size=8, training=True, buckets=[8, 16])
    seen = {tuple(f["points"].shape) for f, _, _ in ds}
    assert seen == {(8, 8, 3), (8, 16, 3)}
    trainer.fit(ds, None, epochs=2, train_steps=len(sizes))
    # One trace (= one XLA compilation of the step) per bucket, however many sizes and epochs.
    assert trainer.compilations["train"] == 2
    assert trainer.train_step.experimental_get_tracing_count() == 2


def test_evaluation_pads_the_last_batch_and_counts_each_example_once():
    strategy = tf.distribute.get_strategy()
    model, optimizer = build(strategy)
    trainer = loop.Trainer(model, optimizer, strategy, xla=True, verbose=0)
    x, mask, y = tiny_arrays(10, 6, seed=3, variable=True)
    ds = tf.data.Dataset.from_tensor_slices(({"points": x, "mask": mask}, y)).batch(4)
    prepared = loop.prepare(ds, batch_size=4, training=False)
    assert [int(w.numpy().sum()) for _, _, w in prepared] == [4, 4, 2]
    out = trainer.evaluate(trainer.distribute(prepared), collect=True)
    logits = model({"points": x, "mask": mask}, training=False).numpy()
    want_loss = float(np.mean(loop.per_example_loss(y, logits).numpy()))
    assert out["examples"] == 10
    np.testing.assert_array_equal(out["labels"], y)
    np.testing.assert_array_equal(out["predictions"], logits.argmax(-1))
    np.testing.assert_allclose(out["loss"], want_loss, rtol=1e-5)
    assert out["accuracy"] == pytest.approx(float(np.mean(logits.argmax(-1) == y)))
    # Only one compiled shape for evaluation, although the last batch is short.
    assert trainer.compilations["eval"] == 1 and trainer.eval_step.experimental_get_tracing_count() == 1


def test_per_example_loss_matches_keras():
    rng = np.random.default_rng(0)
    logits = rng.normal(size=(6, NUM_CLASSES)).astype("float32")
    labels = rng.integers(0, NUM_CLASSES, 6)
    want = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction=None)(labels, logits)
    np.testing.assert_allclose(loop.per_example_loss(labels, logits), want, rtol=1e-5)
    smooth = keras.losses.CategoricalCrossentropy(from_logits=True, label_smoothing=0.2, reduction=None)(
        np.eye(NUM_CLASSES)[labels], logits)
    np.testing.assert_allclose(loop.per_example_loss(labels, logits, 0.2), smooth, rtol=1e-5)


def test_fit_trains_and_drives_keras_callbacks():
    strategy = tf.distribute.get_strategy()
    model, optimizer = build(strategy, normalization=True)
    trainer = loop.Trainer(model, optimizer, strategy, xla=True, verbose=0)
    x, mask, y = tiny_arrays(64, 12, seed=1)
    ds = tf.data.Dataset.from_tensor_slices(({"points": x, "mask": mask}, y)).batch(16)
    train_ds = loop.prepare(ds, batch_size=16, training=True)
    val_ds = loop.prepare(ds, batch_size=16, training=False)
    seen = []

    class Record(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            seen.append((epoch, dict(logs)))

    class StopAfterTwo(keras.callbacks.Callback):  # what EarlyStopping does when it triggers
        def on_epoch_end(self, epoch, logs=None):
            self.model.stop_training = epoch == 1

    keras.utils.set_random_seed(0)
    stop = StopAfterTwo()
    history = trainer.fit(train_ds, val_ds, epochs=6, train_steps=4, callbacks=[Record(), stop])
    assert [e for e, _ in seen] == [0, 1] and len(history) == 2
    assert history[-1]["loss"] < history[0]["loss"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr", "epoch_seconds", "examples_per_second"} <= \
        set(seen[0][1])
    assert history[0]["lr"] == pytest.approx(1e-2)
    # Normalisation statistics moved (the non-trainable state goes through the XLA step too).
    moving = [v for v in model.non_trainable_variables if "mean" in v.path]
    assert moving and any(float(np.abs(v.numpy()).max()) > 0 for v in moving)
