"""Tests of pipelines.export: layout, signatures, checks before publishing, atomic versions."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from pipelines import export as ex
from tests.support.serving import tiny_classifier, train_tiny

CLASSES = ["alpha", "beta", "gamma"]


@pytest.fixture(scope="module")
def model():
    return train_tiny(tiny_classifier(len(CLASSES), seed=3), steps=4, seed=3)


@pytest.fixture(scope="module")
def exported(model, tmp_path_factory):
    root = tmp_path_factory.mktemp("exports")
    first = ex.export_model(model, root, "tiny", CLASSES)
    second = ex.export_model(model, root, "tiny", CLASSES)
    return root, first, second


def test_layout_and_versions(exported):
    root, first, second = exported
    assert first == root / "tiny" / "1" and second == root / "tiny" / "2"
    assert ex.list_versions(root / "tiny") == [1, 2]
    assert ex.next_version(root / "tiny") == 3
    # Nothing but the versions is left beside them (the temporary folders are gone).
    assert sorted(p.name for p in (root / "tiny").iterdir()) == ["1", "2"]
    for name in ("saved_model.pb", "variables", "assets/class_names.txt",
                 "assets.extra/export.json", "assets.extra/tf_serving_warmup_requests"):
        assert (first / name).exists(), name
    assert ex.read_class_names(first) == CLASSES
    summary = ex.read_export_summary(first)
    assert summary["invariance"]["passed"] and summary["masked_padding"]["passed"]
    assert summary["invariance"]["max_abs_deviation"] <= 1e-5
    assert summary["class_names"] == CLASSES


def test_signatures_match_the_keras_model(exported, model):
    _, first, _ = exported
    loaded = tf.saved_model.load(str(first))
    assert set(loaded.signatures) == {"serving_default", "serving_masked"}
    default = loaded.signatures["serving_default"]
    masked = loaded.signatures["serving_masked"]
    spec = default.structured_input_signature[1]
    assert set(spec) == {"points"}
    assert spec["points"].shape.as_list() == [None, None, 3]
    assert spec["points"].dtype == tf.float32
    mspec = masked.structured_input_signature[1]
    assert mspec["mask"].dtype == tf.bool and mspec["mask"].shape.as_list() == [None, None]

    rng = np.random.default_rng(0)
    points = rng.normal(size=(5, 40, 3)).astype(np.float32)
    mask = np.ones((5, 40), dtype=bool)
    logits = keras.ops.convert_to_numpy(model({"points": points, "mask": mask}))
    want = tf.nn.softmax(logits).numpy()
    got = default(points=tf.constant(points))
    assert got["probabilities"].dtype == tf.float32 and got["class_id"].dtype == tf.int64
    np.testing.assert_allclose(got["probabilities"].numpy(), want, atol=1e-6)
    np.testing.assert_array_equal(got["class_id"].numpy(), logits.argmax(-1))
    got_masked = masked(points=tf.constant(points), mask=tf.constant(mask))
    np.testing.assert_allclose(got_masked["probabilities"].numpy(), want, atol=1e-6)


def test_warmup_record_is_a_predict_log(exported):
    from tensorflow_serving.apis import prediction_log_pb2
    _, first, _ = exported
    records = list(tf.data.TFRecordDataset(str(first / "assets.extra" /
                                               "tf_serving_warmup_requests")))
    assert len(records) == 1
    log = prediction_log_pb2.PredictionLog.FromString(records[0].numpy())
    assert log.predict_log.request.model_spec.signature_name == "serving_default"
    points = tf.make_ndarray(log.predict_log.request.inputs["points"])
    assert points.ndim == 3 and points.shape[-1] == 3


def _custom_model(pool):
    points = keras.Input(shape=(None, 3), name="points")
    mask = keras.Input(shape=(None,), name="mask", dtype="bool")

    class Pool(keras.layers.Layer):
        def call(self, inputs):
            return pool(*inputs)

    h = keras.layers.Dense(8, activation="tanh")(points)
    out = keras.layers.Dense(2)(Pool()([h, mask]))
    return keras.Model({"points": points, "mask": mask}, out)


def test_non_invariant_model_is_refused_and_leaves_nothing(tmp_path):
    first_point = _custom_model(lambda h, mask: h[:, 0, :])
    with pytest.raises(ex.InvarianceError, match="permutation invariance"):
        ex.export_model(first_point, tmp_path, "bad", ["a", "b"])
    assert list((tmp_path / "bad").iterdir()) == []


def test_model_ignoring_the_mask_is_refused(tmp_path):
    unmasked_mean = _custom_model(lambda h, mask: keras.ops.mean(h, axis=1))
    with pytest.raises(ex.InvarianceError, match="padded"):
        ex.export_model(unmasked_mean, tmp_path, "bad", ["a", "b"])
    assert ex.list_versions(tmp_path / "bad") == []


def test_bad_arguments(model, tmp_path, exported):
    root, _, _ = exported
    with pytest.raises(ex.ExportError, match="3 outputs but 2 class names"):
        ex.export_model(model, tmp_path, "m", ["a", "b"])
    with pytest.raises(ex.ExportError, match="one-line"):
        ex.export_model(model, tmp_path, "m", ["a", "b\nc", "d"])
    with pytest.raises(FileExistsError, match="never overwritten"):
        ex.export_model(model, root, "tiny", CLASSES, version=1)
    with pytest.raises(ex.ExportError, match="plain folder name"):
        ex.export_model(model, tmp_path, "../m", CLASSES)
    x = keras.Input(shape=(None, 3), name="xyz")
    wrong_inputs = keras.Model(x, keras.layers.Dense(3)(keras.ops.mean(x, axis=1)))
    with pytest.raises(ex.ExportError, match="'points'"):
        ex.export_model(wrong_inputs, tmp_path, "m", CLASSES)


def test_publish_takes_the_next_number_when_raced(tmp_path, monkeypatch):
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    tmp = model_dir / (ex.TMP_PREFIX + "x")
    tmp.mkdir()
    (tmp / "saved_model.pb").write_bytes(b"")
    # Another exporter published 2 after we looked: our stale answer is 2, then 3.
    (model_dir / "2").mkdir()
    answers = iter([2, 3])
    monkeypatch.setattr(ex, "next_version", lambda d: next(answers))
    assert ex._publish(tmp, model_dir, None) == model_dir / "3"
    assert (model_dir / "3" / "saved_model.pb").exists() and not tmp.exists()
    assert list((model_dir / "2").iterdir()) == []
