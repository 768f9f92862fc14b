"""SavedModel export in TensorFlow Serving's layout, checked before it becomes a version.

`export_model(model, "exports", "setnet", class_names)` writes
`exports/setnet/<version>/` with two signatures:

- `serving_default(points float32 [batch, N, F])`: every point is real, so TF Serving's
  plain row format works: `{"instances": [cloud, cloud, ...]}` with clouds of one size.
- `serving_masked(points float32 [batch, N, F], mask bool [batch, N])`: padded batches of
  clouds of different sizes; padded points (mask False) do not change the answer.

F is the model's features per point (3 for x, y, z). In process, the loaded SavedModel also
takes sets of different sizes as one `tf.RaggedTensor` (batch, None, F):
`tf.saved_model.load(path).predict_ragged(sets)` pads and masks them inside and returns what
`serving_masked` returns (a function, not a signature: TF Serving's APIs carry dense tensors).
A classifier's signatures return
`probabilities` and `class_id` (below); a regressor's (``task="regression"``) return
`prediction` float32 `(batch, T)`, with the target names in `assets/target_names.txt`.

Both return `probabilities` float32 `(batch, K)` and `class_id` int64 `(batch,)`, whatever
the model computes in: a model built under a mixed-precision policy (bfloat16 or float16
compute, float32 variables) is exported as it is and cast at the signature boundary. Class
names go to `assets/class_names.txt` (one per line, line i is class i), a summary of the
checks to `assets.extra/export.json`, and one warm-up request to
`assets.extra/tf_serving_warmup_requests`, which TF Serving replays before it marks the
version AVAILABLE.

The version is written to a hidden temporary folder beside the versions, loaded back and
checked there (permutation invariance, and padded+masked equal to unpadded), and only then
renamed to its integer name. A rename is atomic on one file system, so a server polling
the folder never sees a half-written version, and a model that fails the checks never
becomes a version at all.

Example:

>>> # model: a trained Keras classifier, e.g. built by setnet.models.build_classifier
>>> path = export_model(model, "/tmp/exports", "demo", ["a", "b", "c"])  # doctest: +SKIP
>>> path.name  # doctest: +SKIP
'1'
"""

from __future__ import annotations

import datetime as _dt
import errno
import json
import os
import pathlib
import shutil
import tempfile
import uuid
from typing import Sequence

import numpy as np

from setnet import invariance as inv

CLASS_NAMES_FILE = "class_names.txt"
TARGET_NAMES_FILE = "target_names.txt"
SUMMARY_FILE = "export.json"
WARMUP_FILE = "tf_serving_warmup_requests"
TMP_PREFIX = ".tmp-export-"

__all__ = ["export_model", "next_version", "list_versions", "read_class_names",
           "read_export_summary", "InvarianceError", "ExportError"]

InvarianceError = inv.InvarianceError

# The checks' tolerance per compute dtype. A permuted or padded cloud reaches the pooled sums in
# another order, and a result can round the other way: by float32's epsilon in float32, by the
# compute dtype's (2^-8 in bfloat16, 2^-11 in float16) in a mixed-precision model, amplified by
# the layers after the pooling.
TOLERANCES = {"float32": (inv.DEFAULT_ATOL, inv.DEFAULT_RTOL), "float16": (2e-3, 2e-2), "bfloat16": (1e-2, 5e-2)}


class ExportError(ValueError):
    """The model or the arguments cannot be exported as asked."""


def list_versions(model_dir) -> list[int]:
    """Integer version folders under `model_dir` (the names TF Serving would load), sorted."""
    model_dir = pathlib.Path(model_dir)
    if not model_dir.is_dir():
        return []
    return sorted(int(p.name) for p in model_dir.iterdir()
                  if p.is_dir() and p.name.isdigit())


def next_version(model_dir) -> int:
    """One more than the highest existing version, or 1."""
    versions = list_versions(model_dir)
    return versions[-1] + 1 if versions else 1


def read_class_names(version_dir) -> list[str]:
    """The class names stored with an exported version."""
    path = pathlib.Path(version_dir) / "assets" / CLASS_NAMES_FILE
    return path.read_text(encoding="utf-8").splitlines()


def read_export_summary(version_dir) -> dict:
    """The checks and facts recorded at export time (`assets.extra/export.json`)."""
    path = pathlib.Path(version_dir) / "assets.extra" / SUMMARY_FILE
    return json.loads(path.read_text(encoding="utf-8"))


def _model_input_names(model) -> list[str]:
    return [t.name.split(":")[0] for t in model.inputs]


def num_features_of(model) -> int:
    """F: the features per point of the model's `points` input."""
    for t in model.inputs:
        if t.name.split(":")[0] == "points" and t.shape[-1] is not None:
            return int(t.shape[-1])
    raise ExportError("the model's 'points' input must have a known last dimension (F, the features "
                      "per point), e.g. keras.Input((None, 3), name='points')")


def _check_model(model, class_names):
    names = _model_input_names(model)
    if sorted(names) != ["mask", "points"]:
        raise ExportError(
            f"the model must have two named inputs 'points' (float32 [batch, N, F]) and 'mask' "
            f"(bool [batch, N]); it has {names}. Build it with setnet.models.build_classifier "
            f"or name the keras.Input layers 'points' and 'mask'.")
    num_classes = model.output_shape[-1]
    if not class_names:
        raise ExportError("class_names is empty: pass one name per output class")
    for name in class_names:
        if not isinstance(name, str) or not name or "\n" in name or "\r" in name:
            raise ExportError(f"class names must be non-empty one-line strings; got {name!r}")
    if num_classes is not None and num_classes != len(class_names):
        raise ExportError(f"the model has {num_classes} outputs but {len(class_names)} class "
                          f"names were given")


def _call_model(model, points, mask):
    if isinstance(model.input, dict):
        return model({"points": points, "mask": mask}, training=False)
    by_name = {"points": points, "mask": mask}
    return model([by_name[n] for n in _model_input_names(model)], training=False)


def _build_module(model, class_names_src, task: str = "classification"):
    import tensorflow as tf

    def outputs(logits):
        logits = tf.cast(logits, tf.float32)
        if task == "regression":
            return {"prediction": logits}
        return {"probabilities": tf.nn.softmax(logits, axis=-1),
                "class_id": tf.argmax(logits, axis=-1, output_type=tf.int64)}

    points_spec = tf.TensorSpec([None, None, num_features_of(model)], tf.float32, name="points")
    mask_spec = tf.TensorSpec([None, None], tf.bool, name="mask")

    @tf.function(input_signature=[points_spec])
    def serving_default(points):
        mask = tf.ones(tf.shape(points)[:2], dtype=tf.bool)
        return outputs(_call_model(model, points, mask))

    @tf.function(input_signature=[points_spec, mask_spec])
    def serving_masked(points, mask):
        return outputs(_call_model(model, points, mask))

    @tf.function(input_signature=[tf.RaggedTensorSpec([None, None, num_features_of(model)], tf.float32,
                                                       ragged_rank=1)])
    def predict_ragged(sets):
        from setnet.layers.set_ops import ragged_to_masked

        points, mask = ragged_to_masked(sets)
        return outputs(_call_model(model, points, mask))

    module = tf.Module()
    # Variables are tracked as a list (as keras.export.ExportArchive does) rather than the
    # Keras model itself, so the SavedModel holds only what the signatures use.
    module.model_variables = list(model.variables)
    module.class_names_file = tf.saved_model.Asset(str(class_names_src))
    module.serving_default = serving_default
    module.serving_masked = serving_masked
    module.predict_ragged = predict_ragged
    signatures = {"serving_default": serving_default.get_concrete_function(),
                  "serving_masked": serving_masked.get_concrete_function()}
    return module, signatures


def _default_check_clouds(seed: int, num_features: int = 3):
    rng = np.random.default_rng(seed)
    clouds = inv.shape_clouds(seed, sizes=(5, 64, 257)) + [rng.normal(size=(100, 3)).astype(np.float32)]
    return [inv.with_features(c, num_features, seed=seed + i) for i, c in enumerate(clouds)]


def _run_checks(version_dir, clouds, permutations, seed, atol, rtol):
    import tensorflow as tf
    loaded = tf.saved_model.load(str(version_dir))
    default = loaded.signatures["serving_default"]
    masked = loaded.signatures["serving_masked"]

    def predict(points):
        return default(points=tf.constant(points, tf.float32))

    def predict_masked(points, mask):
        return masked(points=tf.constant(points, tf.float32), mask=tf.constant(mask, tf.bool))

    invariance = inv.check_invariance(predict, clouds, permutations=permutations, seed=seed, atol=atol, rtol=rtol)
    padding = inv.check_masked_padding(predict, predict_masked, clouds, seed=seed, atol=atol, rtol=rtol)
    return invariance, padding


def _write_warmup(version_dir, model_name, cloud):
    """One PredictionLog record that TF Serving replays at load time (skipped if the
    tensorflow-serving-api protos are not installed)."""
    try:
        from tensorflow_serving.apis import predict_pb2, prediction_log_pb2
    except ImportError:
        return False
    import tensorflow as tf
    request = predict_pb2.PredictRequest()
    request.model_spec.name = model_name
    request.model_spec.signature_name = "serving_default"
    request.inputs["points"].CopyFrom(tf.make_tensor_proto(cloud[None].astype(np.float32)))
    log = prediction_log_pb2.PredictionLog(
        predict_log=prediction_log_pb2.PredictLog(request=request))
    extra = pathlib.Path(version_dir) / "assets.extra"
    extra.mkdir(exist_ok=True)
    with tf.io.TFRecordWriter(str(extra / WARMUP_FILE)) as writer:
        writer.write(log.SerializeToString())
    return True


def export_model(model, export_root, model_name: str, class_names: Sequence[str],
                 version: int | None = None, check_invariance: bool = True, *,
                 check_clouds=None, permutations: int = 8, seed: int = 0,
                 task: str = "classification") -> pathlib.Path:
    """Exports a set classifier (or regressor) as `<export_root>/<model_name>/<version>/` for TF Serving.

    Args:
        model: Keras model with inputs `points` float32 `(batch, N, F)` and `mask` bool
            `(batch, N)`, returning logits `(batch, K)` (a regressor: its predictions `(batch, T)`).
        export_root: folder that holds one subfolder per model name.
        model_name: the TF Serving model name (the folder under `export_root`).
        class_names: K names; line i of `assets/class_names.txt` is class i. A regressor's T
            target names (`assets/target_names.txt`).
        version: integer version; the next free one when None. An existing version is
            never overwritten.
        check_invariance: load the written SavedModel back and check that permuted clouds
            and padded+masked clouds give the same probabilities (to `TOLERANCES` of the
            model's compute dtype) before the version appears; raises `InvarianceError`
            (and writes nothing) if not.
        check_clouds: clouds for the checks (list of `(N_i, F)` arrays); default: a few
            synthetic clouds of different sizes.
        permutations: random permutations per cloud in the check.
        seed: seed of the checks.
        task: "classification" (outputs `probabilities`, `class_id`) or "regression"
            (output `prediction`).

    Returns:
        Path of the new version folder.

    Example:

    >>> # model: a trained two-class Keras classifier with inputs `points` and `mask`
    >>> p = export_model(model, "/tmp/ex", "m", ["no", "yes"])  # doctest: +SKIP
    """
    import keras
    import tensorflow as tf

    if task not in ("classification", "regression"):
        raise ExportError(f"task must be classification or regression; got {task!r}")
    class_names = list(class_names)
    _check_model(model, class_names)
    num_features = num_features_of(model)
    names_file = TARGET_NAMES_FILE if task == "regression" else CLASS_NAMES_FILE
    outputs_doc = ({"prediction": "float32 [-1, T]"} if task == "regression" else
                   {"probabilities": "float32 [-1, K]", "class_id": "int64 [-1]"})
    if not model_name or "/" in model_name or model_name.startswith("."):
        raise ExportError(f"model_name must be a plain folder name; got {model_name!r}")
    if version is not None and (not isinstance(version, (int, np.integer)) or version < 0):
        raise ExportError(f"version must be a non-negative integer or None; got {version!r}")

    compute_dtype = str(getattr(model, "compute_dtype", "float32"))
    atol, rtol = TOLERANCES.get(compute_dtype, TOLERANCES["float32"])
    model_dir = pathlib.Path(export_root) / model_name
    model_dir.mkdir(parents=True, exist_ok=True)
    if version is not None and (model_dir / str(int(version))).exists():
        raise FileExistsError(f"{model_dir / str(int(version))} already exists; versions are "
                              f"never overwritten: pass version=None for the next free one")

    tmp = model_dir / f"{TMP_PREFIX}{uuid.uuid4().hex}"
    with tempfile.TemporaryDirectory() as scratch:
        names_src = pathlib.Path(scratch) / names_file
        names_src.write_text("\n".join(class_names) + "\n", encoding="utf-8")
        try:
            module, signatures = _build_module(model, names_src, task)
            tf.saved_model.save(module, str(tmp), signatures=signatures)
            summary = {
                "model_name": model_name,
                "task": task,
                "num_features": num_features,
                ("target_names" if task == "regression" else "class_names"): class_names,
                "signatures": {
                    "serving_default": {"inputs": {"points": f"float32 [-1, -1, {num_features}]"}},
                    "serving_masked": {"inputs": {"points": f"float32 [-1, -1, {num_features}]",
                                                  "mask": "bool [-1, -1]"}},
                    "outputs": outputs_doc,
                },
                "compute_dtype": compute_dtype,
                "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
                "tensorflow": tf.__version__,
                "keras": keras.__version__,
            }
            clouds = inv.as_clouds(check_clouds if check_clouds is not None
                                   else _default_check_clouds(seed, num_features))
            if any(c.shape[1] != num_features for c in clouds):
                raise ExportError(f"check_clouds must have {num_features} features per point (the "
                                  f"model's F); got {sorted({c.shape[1] for c in clouds})}")
            if check_invariance:
                invariance, padding = _run_checks(tmp, clouds, permutations, seed, atol, rtol)
                summary["invariance"] = invariance
                summary["masked_padding"] = padding
                failed = [k for k, r in (("permutation invariance", invariance),
                                         ("padded+masked equals unpadded", padding))
                          if not r["passed"]]
                if failed:
                    raise InvarianceError(
                        f"not exporting {model_name}: the SavedModel fails "
                        f"{' and '.join(failed)} (largest deviations: permutation "
                        f"{invariance['max_abs_deviation']:.3g}, padding "
                        f"{padding['max_abs_deviation']:.3g}; tolerance atol={atol} rtol={rtol} for "
                        f"{compute_dtype} compute). Check that every layer before the pooling "
                        f"acts on points alike and that pooling honours the mask.")
            _write_warmup(tmp, model_name, clouds[0])
            extra = tmp / "assets.extra"
            extra.mkdir(exist_ok=True)
            (extra / SUMMARY_FILE).write_text(json.dumps(summary, indent=2) + "\n",
                                              encoding="utf-8")
            return _publish(tmp, model_dir, version)
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)


def _publish(tmp: pathlib.Path, model_dir: pathlib.Path, version: int | None) -> pathlib.Path:
    """Renames the finished temporary folder to its version number, atomically."""
    for _ in range(100):
        target = model_dir / str(int(version) if version is not None else next_version(model_dir))
        try:
            # os.rename onto an existing empty folder would succeed on Linux, so refuse
            # explicitly: an existing version is never replaced.
            if target.exists():
                raise FileExistsError(target)
            os.rename(tmp, target)
            return target
        except OSError as err:
            if err.errno not in (errno.EEXIST, errno.ENOTEMPTY) and not isinstance(
                    err, FileExistsError):
                raise
            if version is not None:
                raise FileExistsError(f"{target} already exists; versions are never "
                                      f"overwritten") from err
            # Another exporter took this number between our look and our rename: next one.
            continue
    raise ExportError(f"could not find a free version number under {model_dir}")
