"""One loaded SavedModel version: its signatures, warm-up replay and metadata document.

`LoadedVersion(name, version, path)` loads `path` (tag `serve`), reads the signature defs
from saved_model.pb (for input checks and for the metadata answer), replays
`assets.extra/tf_serving_warmup_requests` as TF Serving does before a version becomes
AVAILABLE, and calls a signature on numpy arrays.

Example (needs an export, e.g. from `make train`)::

    v = LoadedVersion("setnet", 1, pathlib.Path("exports/setnet-default/1"))
    sig = v.signatures[DEFAULT_SIGNATURE]
    v.call(sig, {"points": np.zeros((1, 8, 3), np.float32)})["class_id"]
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
from typing import Any

import numpy as np

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: Any          # numpy dtype
    dtype_name: str     # TF's DataTypeString: float, bool, int64, ...
    shape: tuple | None  # None for unknown rank; -1 for unknown dims


@dataclasses.dataclass(frozen=True)
class Signature:
    name: str
    method_name: str
    inputs: dict         # name -> TensorSpec
    outputs: tuple       # output names, sorted
    fn: Any


_DTYPES = {1: (np.float32, "float"), 2: (np.float64, "double"), 3: (np.int32, "int32"),
           9: (np.int64, "int64"), 10: (np.bool_, "bool"), 7: (np.object_, "string")}


def _tensor_spec(name, info) -> TensorSpec:
    dtype, dtype_name = _DTYPES.get(info.dtype, (None, f"type {info.dtype}"))
    shape = None if info.tensor_shape.unknown_rank else tuple(
        d.size for d in info.tensor_shape.dim)
    return TensorSpec(name, dtype, dtype_name, shape)


class LoadedVersion:
    """One loaded SavedModel version: its signatures, metadata and class names."""

    def __init__(self, model_name: str, version: int, path: pathlib.Path):
        import tensorflow as tf
        from tensorflow.core.protobuf import saved_model_pb2

        self.model_name, self.version, self.path = model_name, version, pathlib.Path(path)
        self.batcher = None  # set by `batching.Batcher.loader` once loaded
        saved = saved_model_pb2.SavedModel()
        saved.ParseFromString((self.path / "saved_model.pb").read_bytes())
        graphs = [g for g in saved.meta_graphs if "serve" in g.meta_info_def.tags]
        if not graphs:
            raise ValueError(f"{self.path} has no MetaGraph tagged 'serve'")
        self.signature_defs = graphs[0].signature_def
        self._loaded = tf.saved_model.load(str(self.path), tags=["serve"])
        self.signatures = {}
        for name, sig in self.signature_defs.items():
            fn = self._loaded.signatures.get(name)
            self.signatures[name] = Signature(
                name, sig.method_name,
                {k: _tensor_spec(k, v) for k, v in sig.inputs.items()},
                tuple(sorted(sig.outputs)), fn)
        names_file = self.path / "assets" / "class_names.txt"
        self.class_names = (names_file.read_text(encoding="utf-8").splitlines()
                            if names_file.exists() else None)
        self._metadata_json = None
        self.warmup()

    def call(self, signature: Signature, arrays: dict) -> dict:
        """The signature's outputs for `arrays`, through the server's `Batcher` when
        batching is on (`--enable_batching`)."""
        if self.batcher is not None:
            return self.batcher.run(self, signature, arrays)
        return self.run(signature, arrays)

    def run(self, signature: Signature, arrays: dict) -> dict:
        """One call of the model itself."""
        import tensorflow as tf
        out = signature.fn(**{k: tf.constant(v) for k, v in arrays.items()})
        return {k: v.numpy() for k, v in out.items()}

    def warmup(self):
        """Replays assets.extra/tf_serving_warmup_requests, as TF Serving does at load."""
        path = self.path / "assets.extra" / "tf_serving_warmup_requests"
        if not path.exists():
            return 0
        import tensorflow as tf
        from tensorflow_serving.apis import prediction_log_pb2
        count = 0
        for record in tf.data.TFRecordDataset(str(path)):
            entry = prediction_log_pb2.PredictionLog.FromString(record.numpy())
            if entry.WhichOneof("log_type") != "predict_log":
                continue
            request = entry.predict_log.request
            sig = self.signatures.get(request.model_spec.signature_name or DEFAULT_SIGNATURE)
            if sig is None or sig.fn is None:
                raise ValueError(f"warm-up request names an unknown signature "
                                 f"{request.model_spec.signature_name!r}")
            self.call(sig, {k: tf.make_ndarray(v) for k, v in request.inputs.items()})
            count += 1
        return count

    def metadata_json(self) -> str:
        """GET .../metadata, rendered like TF Serving (protobuf JSON, proto field names)."""
        if self._metadata_json is None:
            from google.protobuf import json_format
            from tensorflow_serving.apis import get_model_metadata_pb2, model_pb2

            opts = dict(preserving_proto_field_name=True,
                        always_print_fields_with_no_presence=True)
            spec = model_pb2.ModelSpec(name=self.model_name)
            spec.version.value = self.version
            sigmap = get_model_metadata_pb2.SignatureDefMap()
            for name, sig in self.signature_defs.items():
                sigmap.signature_def[name].CopyFrom(sig)
            self._metadata_json = json.dumps({
                "model_spec": json_format.MessageToDict(spec, **opts),
                "metadata": {"signature_def": json_format.MessageToDict(sigmap, **opts)},
            }, indent=1)
        return self._metadata_json
