"""An embedded server that speaks TensorFlow Serving's REST API, for development and tests.

Production serving is the `tensorflow/serving` image (see docker-compose.yml); its binary
cannot be installed where this project is built and tested. This server answers the same
requests the same way wherever a client could tell: URLs, the row and columnar JSON
formats, status and metadata documents (rendered from TF Serving's own protos), the error
JSON with TF Serving's HTTP codes and messages, version policies and labels, and picking
up new versions from the model base path without a restart.

    python -m serving.server --model-name setnet --model-base-path exports/setnet --port 8501

On top of TF Serving it checks point clouds before they reach the model (rank, 3
coordinates per point, finite values, no empty sets, configured maxima for points per
cloud, clouds per request and body size) and answers each with a 4xx that says what to
change. See docs/serving.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import gc
import json
import logging
import math
import os
import pathlib
import re
import socket
import sys
import threading
import time
from typing import Any, Callable

import numpy as np
import orjson

log = logging.getLogger("serving.server")

DEFAULT_SIGNATURE = "serving_default"
PREDICT_METHOD = "tensorflow/serving/predict"
MAX_ECHO = 200  # characters of a request value quoted back in an error message

# TF Serving's URL grammar (http_rest_api_util.cc); matched case-insensitively.
PREDICT_RE = re.compile(r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                        r":(classify|regress|predict)", re.IGNORECASE)
STATUS_RE = re.compile(r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?"
                       r"(?:/(metadata))?", re.IGNORECASE)
V1_RE = re.compile(r"/v1/.*", re.IGNORECASE)


# ----------------------------------------------------------------------------- errors

HTTP_OF = {"INVALID_ARGUMENT": 400, "FAILED_PRECONDITION": 400, "OUT_OF_RANGE": 400,
           "NOT_FOUND": 404, "RESOURCE_EXHAUSTED": 429, "UNAVAILABLE": 503, "INTERNAL": 500,
           "UNKNOWN": 500, "UNIMPLEMENTED": 501, "DEADLINE_EXCEEDED": 504,
           "PAYLOAD_TOO_LARGE": 413}


class ServingError(Exception):
    """An error answered as `{"error": message}` with TF Serving's HTTP code for `code`."""

    def __init__(self, code: str, message: str, headers: dict | None = None):
        super().__init__(message)
        self.code = code
        self.message = message
        self.http_status = HTTP_OF[code]
        self.headers = headers or {}

    def status_string(self) -> str:
        # absl::Status::ToString() form, which TF Serving nests in some messages.
        return f"{self.code}: {self.message}"


def invalid(message: str) -> ServingError:
    return ServingError("INVALID_ARGUMENT", message)


class ConfigError(ValueError):
    """A bad model config file or flag; the message names the file and what to change."""


# ----------------------------------------------------------------------------- config

@dataclasses.dataclass
class ModelConfig:
    """One served model: TF Serving's ModelConfig, the fields this server uses."""

    name: str
    base_path: str
    policy: tuple = ("latest", 1)  # ("latest", n) | ("all",) | ("specific", (v, ...))
    labels: dict = dataclasses.field(default_factory=dict)


def parse_policy(text: str) -> tuple:
    """`latest`, `latest:N`, `all` or `specific:V1,V2` (the flag form of a version policy)."""
    kind, _, arg = text.strip().partition(":")
    kind = kind.lower()
    try:
        if kind == "latest":
            n = int(arg) if arg else 1
            if n < 1:
                raise ValueError
            return ("latest", n)
        if kind == "all" and not arg:
            return ("all",)
        if kind == "specific" and arg:
            return ("specific", tuple(sorted(int(v) for v in arg.split(","))))
    except ValueError:
        pass
    raise ConfigError(f"bad version policy {text!r}: use latest, latest:N (N >= 1), all, or "
                      f"specific:V1,V2")


def parse_labels(items) -> dict:
    labels = {}
    for item in items or ():
        name, sep, value = item.partition("=")
        if not sep or not name or not value.strip().isdigit():
            raise ConfigError(f"bad version label {item!r}: use LABEL=VERSION, e.g. stable=1")
        labels[name] = int(value)
    return labels


def load_model_config_file(path) -> list[ModelConfig]:
    """Reads a TF Serving models.config (text-format ModelServerConfig)."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    path = pathlib.Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"cannot read model config file {path}: {err.strerror}") from err
    proto = model_server_config_pb2.ModelServerConfig()
    try:
        text_format.Parse(text, proto)
    except text_format.ParseError as err:
        raise ConfigError(f"{path}: not a valid TF Serving model config ({err}). Expected "
                          f"model_config_list {{ config {{ name: '...' base_path: '...' }} }}; "
                          f"see serving/models.config") from err
    if proto.WhichOneof("config") != "model_config_list":
        raise ConfigError(f"{path}: no model_config_list; this server reads "
                          f"model_config_list {{ config {{ ... }} }} only")
    out, seen = [], set()
    for i, c in enumerate(proto.model_config_list.config):
        if not c.name or not c.base_path:
            raise ConfigError(f"{path}: config #{i + 1} needs both name and base_path")
        if c.name in seen:
            raise ConfigError(f"{path}: model name {c.name!r} appears twice")
        seen.add(c.name)
        if c.model_platform not in ("", "tensorflow"):
            raise ConfigError(f"{path}: model {c.name!r} has model_platform "
                              f"{c.model_platform!r}; only 'tensorflow' is served")
        base = pathlib.Path(c.base_path)
        if not base.is_absolute():
            base = path.parent / base
        which = c.model_version_policy.WhichOneof("policy_choice")
        if which == "all":
            policy = ("all",)
        elif which == "specific":
            if not c.model_version_policy.specific.versions:
                raise ConfigError(f"{path}: model {c.name!r} has a specific version policy "
                                  f"with no versions")
            policy = ("specific", tuple(sorted(c.model_version_policy.specific.versions)))
        else:
            policy = ("latest", max(1, c.model_version_policy.latest.num_versions or 1))
        out.append(ModelConfig(c.name, str(base), policy, dict(c.version_labels)))
    if not out:
        raise ConfigError(f"{path}: the model_config_list is empty")
    return out


# ----------------------------------------------------------------------------- servables

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


@dataclasses.dataclass
class VersionState:
    state: str                 # START, LOADING, AVAILABLE, UNLOADING, END
    error_code: str = "OK"
    error_message: str = ""


def _ready_versions(base: pathlib.Path) -> dict[int, pathlib.Path]:
    """Integer-named subfolders that hold a saved_model.pb (others are ignored, as TF
    Serving ignores non-numeric names such as the exporter's hidden temp folders)."""
    if not base.is_dir():
        return {}
    out = {}
    for p in base.iterdir():
        if p.name.isdigit() and (p / "saved_model.pb").is_file():
            out[int(p.name)] = p
    return out


class ServableManager:
    """Versions of one model: which to load, loading them, and which answers a request.

    Loading never blocks requests: the version map is replaced, not mutated, so a request
    holds on to the version it resolved even while a newer one loads or an older one is
    unloaded (availability-preserving, as TF Serving's default policy).
    """

    def __init__(self, config: ModelConfig,
                 loader: Callable[[str, int, pathlib.Path], LoadedVersion] = LoadedVersion,
                 on_load: Callable[[], None] | None = None):
        self.config = config
        self.loader = loader
        self.on_load = on_load
        self.available: dict[int, LoadedVersion] = {}
        self.states: dict[int, VersionState] = {}
        self._failed: dict[int, float] = {}   # version -> mtime of the saved_model.pb that failed
        self._lock = threading.Lock()
        self._warned_missing = False

    @property
    def name(self) -> str:
        return self.config.name

    def aspired(self, found: dict[int, pathlib.Path]) -> set[int]:
        kind = self.config.policy[0]
        if kind == "all":
            return set(found)
        if kind == "specific":
            return set(self.config.policy[1]) & set(found)
        return set(sorted(found)[-self.config.policy[1]:])

    def poll(self) -> None:
        """Loads new aspired versions (newest first), then unloads versions no longer aspired."""
        base = pathlib.Path(self.config.base_path)
        found = _ready_versions(base)
        if not found and not self.available and not self._warned_missing:
            log.warning("no versions of servable %s found under base path %s", self.name, base)
            self._warned_missing = True
        aspired = self.aspired(found)
        for version in sorted(aspired - set(self.available), reverse=True):
            mtime = (found[version] / "saved_model.pb").stat().st_mtime
            if self._failed.get(version) == mtime:
                continue  # failed before and unchanged on disk: do not retry in a loop
            self._load(version, found[version], mtime)
        loaded_aspired = aspired & set(self.available)
        # Keep serving what we have until at least one aspired version is available.
        if loaded_aspired:
            for version in sorted(set(self.available) - aspired):
                self._unload(version)

    def _load(self, version: int, path: pathlib.Path, mtime: float) -> None:
        with self._lock:
            self.states[version] = VersionState("LOADING")
        start = time.monotonic()
        try:
            servable = self.loader(self.name, version, path)
        except Exception as err:  # a bad version must not take the server down
            log.error("loading servable %s version %d from %s failed: %s", self.name, version,
                      path, err)
            with self._lock:
                self.states[version] = VersionState("END", "UNKNOWN",
                                                    f"Failed to load version {version} from "
                                                    f"{path}: {err}")
                self._failed[version] = mtime
            return
        with self._lock:
            self.available = {**self.available, version: servable}
            self.states[version] = VersionState("AVAILABLE")
            self._failed.pop(version, None)
        log.info("servable %s version %d AVAILABLE (loaded in %.1f s)", self.name, version,
                 time.monotonic() - start)
        if self.on_load is not None:
            self.on_load()

    def _unload(self, version: int) -> None:
        with self._lock:
            self.states[version] = VersionState("UNLOADING")
            self.available = {k: v for k, v in self.available.items() if k != version}
            self.states[version] = VersionState("END")
        log.info("servable %s version %d unloaded", self.name, version)

    def resolve(self, version: int | None, label: str | None) -> LoadedVersion:
        """The servable a request names, or TF Serving's error for it."""
        if label is not None:
            if label not in self.config.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = self.config.labels[label]
        available = self.available
        if version is not None:
            if version in available:
                return available[version]
            state = self.states.get(version)
            if state is not None and state.state == "LOADING":
                raise ServingError("UNAVAILABLE", f"Version {version} of model {self.name} is "
                                   f"still loading; retry shortly.", {"Retry-After": "1"})
            raise ServingError("NOT_FOUND", f"Servable not found for request: "
                               f"Specific({self.name}, {version})")
        if available:
            return available[max(available)]
        if any(s.state == "LOADING" for s in self.states.values()):
            raise ServingError("UNAVAILABLE", f"Model {self.name} has no version available "
                               f"yet: a version is loading; retry shortly.",
                               {"Retry-After": "1"})
        raise ServingError("NOT_FOUND", f"Servable not found for request: Latest({self.name})")

    def status(self, version: int | None, label: str | None) -> list[tuple[int, VersionState]]:
        if label is not None:
            if label not in self.config.labels:
                raise invalid(f"Unrecognized servable version label: {label}")
            version = self.config.labels[label]
        with self._lock:
            states = dict(self.states)
        if version is not None:
            if version not in states:
                raise ServingError("NOT_FOUND", f"Could not find version {version} of model "
                                   f"{self.name}")
            return [(version, states[version])]
        if not states:
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {self.name}")
        return sorted(states.items(), reverse=True)


class ModelRegistry:
    """All served models, and the thread that polls their base paths."""

    def __init__(self, configs: list[ModelConfig], *, poll_seconds: float = 1.0,
                 config_file: str | None = None, config_poll_seconds: float = 0.0,
                 loader=LoadedVersion, on_load: Callable[[], None] | None = None):
        self.loader = loader
        self.on_load = on_load
        self.managers = {c.name: ServableManager(c, loader, on_load) for c in configs}
        self.poll_seconds = poll_seconds
        self.config_file = config_file
        self.config_poll_seconds = config_poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def get(self, name: str) -> ServableManager | None:
        return self.managers.get(name)

    def poll_once(self) -> None:
        for manager in list(self.managers.values()):
            try:
                manager.poll()
            except Exception:  # keep polling the others; the next poll tries again
                log.exception("polling %s failed", manager.name)

    def reload_config(self) -> None:
        try:
            configs = load_model_config_file(self.config_file)
        except ConfigError as err:
            log.error("keeping the current model config: %s", err)
            return
        new = {c.name: c for c in configs}
        for name, config in new.items():
            if name in self.managers:
                self.managers[name].config = config
            else:
                log.info("model %s added by the config file", name)
                self.managers = {**self.managers,
                                 name: ServableManager(config, self.loader, self.on_load)}
        for name in set(self.managers) - set(new):
            log.info("model %s removed by the config file; unloading it", name)
            manager = self.managers[name]
            for version in list(manager.available):
                manager._unload(version)
            self.managers = {k: v for k, v in self.managers.items() if k != name}

    def start(self) -> None:
        if self._thread is not None or (self.poll_seconds <= 0 and self.config_poll_seconds <= 0):
            return
        self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        last_config = time.monotonic()
        interval = min(x for x in (self.poll_seconds, self.config_poll_seconds) if x > 0)
        while not self._stop.wait(interval):
            if (self.config_file and self.config_poll_seconds > 0
                    and time.monotonic() - last_config >= self.config_poll_seconds):
                last_config = time.monotonic()
                self.reload_config()
            if self.poll_seconds > 0:
                self.poll_once()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None


# ----------------------------------------------------------------------------- JSON -> tensors

_RAPIDJSON = [  # Python's json messages -> rapidjson's, which TF Serving prints
    ("Expecting value", "Invalid value."),
    ("Extra data", "The document root must not be followed by other values."),
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string starting at", "Missing a closing quotation mark in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid control character", "Invalid encoding in string."),
]


def _echo(value) -> str:
    """A JSON value quoted in an error message, cut short (TF Serving echoes it whole)."""
    try:
        text = json.dumps(value, separators=(",", ":"), allow_nan=True)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= MAX_ECHO else text[:MAX_ECHO] + "...(truncated)"


def parse_json(body: bytes) -> dict:
    if not body or not body.strip():
        raise invalid("JSON Parse error: The document is empty")
    try:
        # orjson is much faster on large arrays of numbers; whatever it refuses (NaN and
        # Infinity, which TF Serving accepts, or malformed JSON) goes to json for the answer.
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _parse_json_slow(body)
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {_echo(doc)} Is not object")
    return doc


def _parse_json_slow(body: bytes):
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        raise invalid(f"JSON Parse error: Invalid encoding in string. at offset: {err.start}")
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        msg = next((rj for py, rj in _RAPIDJSON if err.msg.startswith(py)), err.msg)
        raise invalid(f"JSON Parse error: {msg} at offset: {err.pos}")
    except RecursionError:
        raise invalid("JSON Parse error: the document is nested too deeply")
    return doc


def _json_type(v) -> str:
    if v is None:
        return "Null"
    if v is True:
        return "True"
    if v is False:
        return "False"
    if isinstance(v, dict):
        return "Object"
    if isinstance(v, list):
        return "Array"
    if isinstance(v, str):
        return "String"
    return "Number"


def _is_b64(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def _is_element_object(v) -> bool:
    return isinstance(v, dict) and not _is_b64(v)


def _type_error(v, spec: TensorSpec) -> ServingError:
    return invalid(f"JSON Value: {_echo(v)} Type: {_json_type(v)} is not of expected type: "
                   f"{spec.dtype_name}")


_F32_MAX_INT = (1 << 24) - 1
_F32_MAX = float(np.finfo(np.float32).max)


def _leaf(v, spec: TensorSpec):
    """One JSON scalar converted for `spec`, with TF Serving's type rules."""
    kind = spec.dtype_name
    if kind in ("float", "double"):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _type_error(v, spec)
        if kind == "float":
            if isinstance(v, int) and abs(v) > _F32_MAX_INT:
                raise invalid(f"Cannot convert JSON value: {v} to float without loss of "
                              f"precision.")
            if isinstance(v, float) and math.isfinite(v) and abs(v) > _F32_MAX:
                raise invalid(f"Cannot convert JSON value: {v} to float without loss of "
                              f"precision.")
        return v
    if kind == "bool":
        if not isinstance(v, bool):
            raise _type_error(v, spec)
        return v
    if kind in ("int32", "int64"):
        if isinstance(v, bool) or not isinstance(v, int):
            raise _type_error(v, spec)
        bits = 31 if kind == "int32" else 63
        if not -(1 << bits) <= v < (1 << bits):
            raise _type_error(v, spec)
        return v
    if kind == "string":
        if isinstance(v, str):
            return v
        if _is_b64(v):
            import base64
            try:
                return base64.b64decode(v["b64"], validate=True)
            except ValueError:
                raise invalid("Unable to base64 decode")
        if isinstance(v, dict):
            raise invalid(f"JSON Value: {_echo(v)} not formatted correctly for base64 data")
        raise _type_error(v, spec)
    raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {_echo(v)} to type: "
                       f"{spec.dtype_name}")


def _dense_shape(v) -> list[int]:
    shape = []
    while isinstance(v, list):
        shape.append(len(v))
        if not v:
            break
        v = v[0]
    return shape


def _fill(v, level: int, shape: list[int], spec: TensorSpec, out: list) -> None:
    rank = len(shape)
    if not isinstance(v, list):
        if level != rank:
            raise invalid(f"JSON Value: {_echo(v)} found at incorrect level: {level + 1} in "
                          f"the JSON DOM. Expected at level: {rank}")
        out.append(_leaf(v, spec))
        return
    if level >= rank:
        raise invalid(f"Encountered list at unexpected level: {level} expected < {rank}")
    if len(v) != shape[level]:
        raise invalid(f"Encountered list at unexpected size: {len(v)} at level: {level} "
                      f"expected size: {shape[level]}")
    for x in v:
        _fill(x, level + 1, shape, spec, out)


def _slow_tensor(v, spec: TensorSpec) -> np.ndarray:
    """JSON value -> array by walking every element: exact TF Serving errors, slower."""
    shape = _dense_shape(v)
    values: list = []
    _fill(v, 0, shape, spec, values)
    return np.array(values, dtype=spec.dtype).reshape(shape)


def _fast_tensor(v, spec: TensorSpec, bools_in_body: bool) -> np.ndarray | None:
    """numpy's nested-list conversion when it provably gives what `_slow_tensor` would;
    None when the slow walk must decide (and word the error)."""
    try:
        a = np.asarray(v)
    except (ValueError, TypeError):  # ragged lists
        return None
    kind = spec.dtype_name
    if kind in ("float", "double"):
        # A JSON true/false mixed into numbers would silently become 1/0 here.
        if bools_in_body or a.dtype.kind not in "fi":
            return None
        if a.size and a.dtype.kind == "i" and kind == "float" and np.abs(a).max() > _F32_MAX_INT:
            return None
        if a.size and a.dtype.kind == "f" and kind == "float":
            finite = a[np.isfinite(a)]
            if finite.size and np.abs(finite).max() > _F32_MAX:
                return None
        return a.astype(spec.dtype)
    if kind == "bool":
        return a if a.dtype == np.bool_ else None
    if kind in ("int32", "int64"):
        if a.dtype.kind != "i":
            return None
        if kind == "int32" and a.size and (a.max() >= 2**31 or a.min() < -2**31):
            return None
        return a.astype(spec.dtype)
    return None


def _tensor(v, spec: TensorSpec, bools_in_body: bool) -> np.ndarray:
    fast = _fast_tensor(v, spec, bools_in_body)
    return fast if fast is not None else _slow_tensor(v, spec)


def _item_shape_check(i, key, arr, first, where):
    if first is None:
        return arr.shape
    size, want = arr.size, int(np.prod(first))
    if size != want:
        err = invalid(f"Expecting tensor size: {want} but got: {size}")
    elif tuple(arr.shape) != tuple(first):
        err = invalid(f"Expecting shape [{','.join(map(str, first))}] but got: "
                      f"[{','.join(map(str, arr.shape))}]")
    else:
        return first
    raise invalid(f"Failed to process element: {i}{where} of 'instances' list. "
                  f"Error: {err.status_string()}")


def tensors_from_instances(instances: list, inputs: dict, bools_in_body: bool) -> dict:
    """Row format: `instances` -> one batched array per input (TF Serving's rules)."""
    names = sorted(inputs)
    if not _is_element_object(instances[0]) and len(inputs) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple "
                      "input tensors required as per tensorinfo_map")
    if _is_element_object(instances[0]):
        for i, elem in enumerate(instances):
            if not _is_element_object(elem):
                raise invalid(f"Expecting object but got list at item {i} of input list")
            for key in elem:
                if key not in inputs:
                    raise invalid(f"Failed to process element: {i} key: {key} of 'instances' "
                                  f"list. Error: INVALID_ARGUMENT: JSON object: does not have "
                                  f"named input: {key}")
            if set(elem) != set(names):
                raise invalid(f"Failed to process element: {i} of 'instances' list. JSON "
                              f"object: {_echo(elem)} keys must be equal to: {','.join(names)}")
        columns = {k: [elem[k] for elem in instances] for k in names}
    else:
        for i, elem in enumerate(instances):
            if _is_element_object(elem):
                raise invalid(f"Expecting value/list but got object at item {i} of input list")
        columns = {names[0]: instances}
    out = {}
    for key, items in columns.items():
        spec = inputs[key]
        fast = _fast_tensor(items, spec, bools_in_body)
        if fast is not None:
            out[key] = fast
            continue
        where = f" key: {key}" if len(columns) > 1 or _is_element_object(instances[0]) else ""
        first, arrays = None, []
        for i, item in enumerate(items):
            try:
                arr = _slow_tensor(item, spec)
            except ServingError as err:
                raise invalid(f"Failed to process element: {i}{where} of 'instances' list. "
                              f"Error: {err.status_string()}")
            first = _item_shape_check(i, key, arr, first, where)
            arrays.append(arr)
        out[key] = np.stack(arrays)
    return out


def tensors_from_inputs(value, inputs: dict, bools_in_body: bool) -> dict:
    """Columnar format: `inputs` -> arrays (a plain value for a single input, else an object)."""
    if not isinstance(value, dict) or _is_b64(value):
        if len(inputs) > 1:
            raise invalid("inputs is a plain value/list, but expecting an object as multiple "
                          "input tensors required as per tensorinfo_map")
        name = next(iter(inputs))
        return {name: _tensor(value, inputs[name], bools_in_body)}
    out = {}
    for name in sorted(inputs):
        if name not in value:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = _tensor(value[name], inputs[name], bools_in_body)
    return out


# ----------------------------------------------------------------------------- validation

@dataclasses.dataclass
class Limits:
    max_points: int = 65536
    max_batch_size: int = 512
    max_body_bytes: int = 64 * 1024 * 1024
    max_inflight: int = 64


def _shape_str(shape) -> str:
    return "[" + ", ".join(("batch" if i == 0 else "N") if d in (-1, None) else str(d)
                           for i, d in enumerate(shape)) + "]"


def validate_inputs(arrays: dict, signature: Signature, limits: Limits) -> None:
    """Shape, dtype and point-cloud checks that TF Serving leaves to the model's kernels,
    answered here with a message that says what to send instead."""
    batch = None
    for name, arr in arrays.items():
        spec = signature.inputs[name]
        if name == "points" and arr.ndim == 2 and arr.shape[1] == 0:
            raise invalid("Input 'points' has clouds with no points (an empty set); send at "
                          "least one [x, y, z] point per cloud.")
        if spec.shape is not None:
            if arr.ndim != len(spec.shape):
                hint = (" Send each cloud as a list of [x, y, z] points, e.g. "
                        "{\"instances\": [[[0.1, 0.2, 0.3], ...], ...]}." if name == "points"
                        else "")
                raise invalid(f"Input '{name}' of signature '{signature.name}' must have shape "
                              f"{_shape_str(spec.shape)} (rank {len(spec.shape)}); got "
                              f"{_shape_str(arr.shape)} (rank {arr.ndim}).{hint}")
            for axis, (want, got) in enumerate(zip(spec.shape, arr.shape)):
                if want not in (-1, None) and want != got:
                    if name == "points" and axis == len(spec.shape) - 1:
                        raise invalid(f"Input 'points' has {got} values per point; each point "
                                      f"must be [x, y, z] ({want} values).")
                    raise invalid(f"Input '{name}' must have shape {_shape_str(spec.shape)}; "
                                  f"got {_shape_str(arr.shape)} (axis {axis} is {got}, not "
                                  f"{want}).")
        if arr.ndim:
            if batch is not None and arr.shape[0] != batch:
                raise invalid(f"Inputs have different batch sizes ({batch} and {arr.shape[0]} "
                              f"for '{name}'); send one entry per cloud in every input.")
            batch = arr.shape[0]
    if batch is not None and batch > limits.max_batch_size:
        raise invalid(f"The request has {batch} clouds, over this server's maximum of "
                      f"{limits.max_batch_size} per request (--max-batch-size); split it into "
                      f"smaller requests (the client does: --batch-size).")
    points = arrays.get("points")
    if points is not None and points.ndim == 3:
        n = points.shape[1]
        if n == 0:
            raise invalid("Input 'points' has clouds with no points (an empty set); send at "
                          "least one [x, y, z] point per cloud.")
        if n > limits.max_points:
            raise invalid(f"Clouds of {n} points exceed this server's maximum of "
                          f"{limits.max_points} points per cloud (--max-points); subsample "
                          f"them (the client does: --num-points).")
        if points.dtype.kind == "f":
            bad = ~np.isfinite(points)
            if bad.any():
                cloud, point, _ = np.argwhere(bad)[0]
                raise invalid(f"Input 'points' has {int(bad.sum())} NaN or Inf coordinates "
                              f"(the first in cloud {cloud}, point {point}); send finite "
                              f"numbers.")
        mask = arrays.get("mask")
        if mask is not None:
            if mask.shape != points.shape[:2]:
                raise invalid(f"Input 'mask' has shape {_shape_str(mask.shape)} but 'points' has "
                              f"{_shape_str(points.shape)}; the mask needs one true/false per "
                              f"point: shape [batch, N].")
            empty = np.flatnonzero(~mask.any(axis=1))
            if empty.size:
                raise invalid(f"Cloud {int(empty[0])} has no point with mask true (an empty "
                              f"set); every cloud needs at least one real point.")


# ----------------------------------------------------------------------------- tensors -> JSON

def _float_strings(a: np.ndarray) -> np.ndarray:
    """Shortest decimal that round-trips each float32, as TF Serving writes them."""
    flat = a.ravel()
    out = np.char.mod("%g", flat)
    single = flat.dtype == np.float32
    back = out.astype(np.float32 if single else np.float64)
    redo = (back != flat) & np.isfinite(flat)
    if redo.any():
        out = out.astype(object)
        out[redo] = np.char.mod("%.9g" if single else "%.17g", flat[redo])
        out = out.astype(str)
    plain = ~(np.char.find(out, ".") >= 0) & ~(np.char.find(out, "e") >= 0) & np.isfinite(flat)
    if plain.any():
        out = np.where(plain, np.char.add(out, ".0"), out)
    if not np.isfinite(flat).all():
        out = np.where(np.isnan(flat), "NaN", out)
        out = np.where(np.isposinf(flat), "Infinity", out)
        out = np.where(np.isneginf(flat), "-Infinity", out)
    return out.reshape(a.shape)


def _scalar_strings(a: np.ndarray) -> np.ndarray:
    if a.dtype.kind == "f":
        return _float_strings(a)
    if a.dtype == np.bool_:
        return np.where(a, "true", "false")
    if a.dtype.kind in "iu":
        return a.astype(str)
    return np.vectorize(lambda v: json.dumps(v.decode("utf-8", "replace")
                                             if isinstance(v, bytes) else str(v)),
                        otypes=[object])(a).astype(str)


def _nest(strings: np.ndarray) -> str:
    if strings.ndim == 0:
        return str(strings)
    if strings.ndim == 1:
        return "[" + ",".join(strings.tolist()) + "]"
    return "[" + ",".join(_nest(s) for s in strings) + "]"


def outputs_to_json(outputs: dict, row: bool) -> str:
    names = sorted(outputs)
    strings = {k: _scalar_strings(np.asarray(outputs[k])) for k in names}
    if not row:
        if len(names) == 1:
            return '{"outputs":' + _nest(strings[names[0]]) + "}"
        return ('{"outputs":{' + ",".join(f'{json.dumps(k)}:{_nest(strings[k])}'
                                         for k in names) + "}}")
    batch = {strings[k].shape[0] if strings[k].ndim else None for k in names}
    if None in batch:
        raise ServingError("INVALID_ARGUMENT", f"Tensor name: {names[0]} has no shape "
                           f"information ")
    if len(batch) != 1:
        raise ServingError("INVALID_ARGUMENT", "Tensor name: output has inconsistent batch size")
    (size,) = batch
    if len(names) == 1:
        return '{"predictions":' + _nest(strings[names[0]]) + "}"
    rows = []
    for i in range(size):
        rows.append("{" + ",".join(f'{json.dumps(k)}:{_nest(strings[k][i])}' for k in names)
                    + "}")
    return '{"predictions":[' + ",".join(rows) + "]}"


# ----------------------------------------------------------------------------- request handling

def _parse_version(text: str | None) -> int | None:
    if not text:
        return None
    value = int(text)
    if value >= 2**63:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return value


def handle_predict(registry: ModelRegistry, limits: Limits, name: str, version: int | None,
                   label: str | None, method: str, body: bytes) -> str:
    doc = parse_json(body)
    if "signature_name" in doc and not isinstance(doc["signature_name"], str):
        raise invalid(f"JSON Value: {_echo(doc)} not formatted correctly. 'signature_name' key "
                      f"must be a string value.")
    manager = registry.get(name)
    if manager is None:
        if label is not None:
            raise invalid(f"Unrecognized servable version label: {label}")
        raise ServingError("NOT_FOUND", "Servable not found for request: " +
                           (f"Specific({name}, {version})" if version is not None
                            else f"Latest({name})"))
    servable = manager.resolve(version, label)
    signame = doc.get("signature_name") or DEFAULT_SIGNATURE
    signature = servable.signatures.get(signame)
    if signature is None:
        raise invalid(f'Serving signature name: "{signame}" not found in signature def')
    if method != "predict":
        raise ServingError("FAILED_PRECONDITION", f"Expected {method} signature method_name to "
                           f"be tensorflow/serving/{method}. Was: {signature.method_name} "
                           f"(this model has predict signatures: use :predict)")
    if signature.method_name != PREDICT_METHOD or signature.fn is None:
        raise ServingError("FAILED_PRECONDITION", f"Expected prediction signature method_name to "
                           f"be {PREDICT_METHOD}. Was: {signature.method_name or '(empty)'}")
    if not signature.inputs:
        raise invalid(f"Failed to get input map for signature: {signame}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    bools_in_body = b"true" in body or b"false" in body
    if has_instances and has_inputs:
        raise invalid(f"JSON Value: {_echo(doc)} Not formatted correctly expecting only one of "
                      f"'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {_echo(doc)} Excepting 'instances' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {_echo(doc)} No values in 'instances' array")
        arrays = tensors_from_instances(instances, signature.inputs, bools_in_body)
    elif has_inputs:
        arrays = tensors_from_inputs(doc["inputs"], signature.inputs, bools_in_body)
    else:
        raise invalid("Missing 'inputs' or 'instances' key")
    validate_inputs(arrays, signature, limits)
    try:
        outputs = servable.call(signature, arrays)
    except Exception as err:  # TF errors for inputs our checks let through
        import tensorflow as tf
        if isinstance(err, (tf.errors.InvalidArgumentError, ValueError, TypeError)):
            raise invalid(str(err).strip().splitlines()[0])
        log.exception("predict failed")
        raise ServingError("INTERNAL", f"{type(err).__name__}: {err}")
    return outputs_to_json(outputs, row=has_instances)


def _status_json(entries) -> str:
    from google.protobuf import json_format
    from tensorflow_serving.apis import get_model_status_pb2

    response = get_model_status_pb2.GetModelStatusResponse()
    codes = response.model_version_status.add().status.DESCRIPTOR.fields_by_name[
        "error_code"].enum_type.values_by_name
    del response.model_version_status[:]
    for version, state in entries:
        item = response.model_version_status.add()
        item.version = version
        item.state = get_model_status_pb2.ModelVersionStatus.State.Value(state.state)
        item.status.SetInParent()
        item.status.error_code = codes[state.error_code].number
        item.status.error_message = state.error_message
    return json_format.MessageToJson(response, always_print_fields_with_no_presence=True,
                                     indent=1)


def handle_get(registry: ModelRegistry, name: str | None, version: int | None,
               label: str | None, subresource: str | None) -> str:
    if not name:
        raise invalid("Missing model name in request.")
    manager = registry.get(name)
    if subresource:
        if manager is None:
            if label is not None:
                raise invalid(f"Unrecognized servable version label: {label}")
            raise ServingError("NOT_FOUND", "Servable not found for request: " +
                               (f"Specific({name}, {version})" if version is not None
                                else f"Latest({name})"))
        return manager.resolve(version, label).metadata_json()
    if manager is None:
        if label is not None:
            raise invalid(f"Unrecognized servable version label: {label}")
        if version is not None:
            raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
        raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
    return _status_json(manager.status(version, label))


def create_app(registry: ModelRegistry, limits: Limits | None = None, *, manage_registry=True):
    """The Starlette app; it starts and stops the registry's poller with its lifespan."""
    import contextlib

    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.requests import ClientDisconnect
    from starlette.responses import Response
    from starlette.routing import Route

    limits = limits or Limits()
    inflight = {"n": 0}
    lock = threading.Lock()

    def reply(status: int, text: str, headers=None) -> Response:
        return Response(text, status_code=status, media_type="application/json",
                        headers=headers)

    def error_reply(err: ServingError) -> Response:
        return reply(err.http_status, json.dumps({"error": err.message}), err.headers)

    async def read_body(request) -> bytes:
        length = request.headers.get("content-length")
        too_big = ServingError(
            "PAYLOAD_TOO_LARGE",
            f"The request body is over this server's maximum of {limits.max_body_bytes} bytes "
            f"(--max-body-bytes); send fewer clouds per request (client: --batch-size) or "
            f"fewer points per cloud (client: --num-points).")
        if length is not None and length.isdigit() and int(length) > limits.max_body_bytes:
            raise too_big
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limits.max_body_bytes:
                raise too_big
            chunks.append(chunk)
        return b"".join(chunks)

    async def v1(request):
        path, method = request.url.path, request.method
        try:
            if not V1_RE.fullmatch(path):
                return Response(status_code=404)
            m = PREDICT_RE.fullmatch(path) if method == "POST" else None
            g = STATUS_RE.fullmatch(path) if method == "GET" else None
            if m is None and g is None:
                raise invalid(f"Malformed request: {method} {path}")
            if m is not None:
                with lock:
                    if inflight["n"] >= limits.max_inflight:
                        raise ServingError(
                            "RESOURCE_EXHAUSTED",
                            f"The server is busy: {inflight['n']} requests in flight "
                            f"(--max-inflight {limits.max_inflight}); retry with backoff.",
                            {"Retry-After": "1"})
                    inflight["n"] += 1
                try:
                    body = await read_body(request)
                    name, version, label, verb = m.groups()
                    text = await run_in_threadpool(
                        handle_predict, registry, limits, name, _parse_version(version), label,
                        verb.lower(), body)
                finally:
                    with lock:
                        inflight["n"] -= 1
                return reply(200, text)
            name, version, label, sub = g.groups()
            text = await run_in_threadpool(handle_get, registry, name, _parse_version(version),
                                           label, sub)
            return reply(200, text)
        except ServingError as err:
            return error_reply(err)
        except ClientDisconnect:
            return Response(status_code=499)
        except Exception as err:  # never let one request take the server down
            log.exception("unexpected error for %s %s", method, path)
            return error_reply(ServingError("INTERNAL", f"{type(err).__name__}: {err}"))

    @contextlib.asynccontextmanager
    async def lifespan(app):
        if manage_registry:
            registry.start()
        try:
            yield
        finally:
            if manage_registry:
                registry.stop()

    return Starlette(routes=[Route("/{path:path}", v1, methods=["GET", "POST", "PUT", "DELETE",
                                                                  "PATCH"])],
                     lifespan=lifespan)


# ----------------------------------------------------------------------------- CLI

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m serving.server",
        description="TF-Serving-compatible REST server for SavedModels under BASE/<version>/.")
    p.add_argument("--model-name", "--model_name", help="model name in the URLs")
    p.add_argument("--model-base-path", "--model_base_path",
                   help="folder with one integer subfolder per version")
    p.add_argument("--model-config-file", "--model_config_file",
                   help="TF Serving models.config (text proto); replaces --model-name/"
                        "--model-base-path, or with them overrides that model's base path")
    p.add_argument("--model-config-file-poll-wait-seconds",
                   "--model_config_file_poll_wait_seconds", type=float, default=0.0,
                   help="re-read the config file this often (0: never)")
    p.add_argument("--port", "--rest-api-port", "--rest_api_port", type=int, default=8501,
                   help="REST port (0: any free port; see --ready-file)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--version-policy", default=None,
                   help="latest (default), latest:N, all, specific:V1,V2")
    p.add_argument("--version-label", action="append", metavar="LABEL=VERSION",
                   help="version label, repeatable (or version_labels in the config file)")
    p.add_argument("--file-system-poll-wait-seconds", "--file_system_poll_wait_seconds",
                   type=float, default=1.0,
                   help="how often to look for new versions (0: only at start)")
    p.add_argument("--max-points", type=int, default=Limits.max_points,
                   help="most points per cloud")
    p.add_argument("--max-batch-size", type=int, default=Limits.max_batch_size,
                   help="most clouds per request")
    p.add_argument("--max-body-bytes", type=int, default=Limits.max_body_bytes,
                   help="largest request body")
    p.add_argument("--max-inflight", type=int, default=Limits.max_inflight,
                   help="predict requests in progress before answering 429")
    p.add_argument("--ready-file", help="write {\"url\": ...} here once serving")
    p.add_argument("--log-level", default="info")
    return p


def configs_from_args(args) -> list[ModelConfig]:
    labels = parse_labels(args.version_label)
    policy = parse_policy(args.version_policy) if args.version_policy else None
    if args.model_config_file:
        configs = load_model_config_file(args.model_config_file)
        if args.model_base_path or args.model_name:
            if len(configs) != 1 and not args.model_name:
                raise ConfigError("--model-base-path with a multi-model config file needs "
                                  "--model-name to say which model it is for")
            target = [c for c in configs if not args.model_name or c.name == args.model_name]
            if not target:
                raise ConfigError(f"--model-name {args.model_name!r} is not in "
                                  f"{args.model_config_file} (models: "
                                  f"{', '.join(c.name for c in configs)})")
            if args.model_base_path:
                target[0].base_path = args.model_base_path
        for c in configs:
            c.labels.update(labels)
            if policy:
                c.policy = policy
    else:
        if not args.model_name or not args.model_base_path:
            raise ConfigError("give --model-name and --model-base-path, or "
                              "--model-config-file")
        configs = [ModelConfig(args.model_name, args.model_base_path, policy or ("latest", 1),
                               labels)]
    for c in configs:
        if not pathlib.Path(c.base_path).is_dir():
            log.warning("base path %s of model %s does not exist yet; waiting for versions",
                        c.base_path, c.name)
    return configs


class ServerProcess:
    """`python -m serving.server ARGS` in a child process, as `make bench-serve` and the test suite run it.

    Starts at once (the child imports TensorFlow while the caller goes on), listens where ``ARGS``
    say (``--port 0`` picks a free port), logs to ``work_dir/server.log``; `wait_ready` returns its
    URL once it serves; leaving the ``with`` block stops it.

    Example (needs an export under exports/m)::

        with ServerProcess(["--model-name", "m", "--model-base-path", "exports/m", "--port", "0"], work) as server:
            url = server.wait_ready()
    """

    def __init__(self, args: list[str], work_dir, env: dict | None = None):
        import subprocess

        work_dir = pathlib.Path(work_dir)
        self.ready_file, self.log_path = work_dir / "ready.json", work_dir / "server.log"
        cmd = [sys.executable, "-m", "serving.server", *args, "--ready-file", str(self.ready_file)]
        with self.log_path.open("w") as log:
            self.proc = subprocess.Popen(cmd, cwd=pathlib.Path(__file__).resolve().parents[1], stdout=log,
                                         stderr=subprocess.STDOUT,
                                         env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})})

    def wait_ready(self, timeout: float = 240) -> str:
        """The server's base URL once it accepts requests; RuntimeError with its log's tail if it exits or times out."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the embedded server exited ({self.proc.returncode}):\n"
                                   f"{self.log_path.read_text()[-3000:]}")
            if self.ready_file.exists():
                return json.loads(self.ready_file.read_text())["url"]
            time.sleep(0.1)
        raise RuntimeError(f"the embedded server did not start in {timeout} s:\n{self.log_path.read_text()[-3000:]}")

    def stop(self) -> None:
        import subprocess

        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        configs = configs_from_args(args)
        limits = Limits(args.max_points, args.max_batch_size, args.max_body_bytes,
                        args.max_inflight)
        for field, value in dataclasses.asdict(limits).items():
            if value < 1:
                raise ConfigError(f"--{field.replace('_', '-')} must be >= 1, got {value}")
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        from tensorflow_serving.apis import get_model_status_pb2  # noqa: F401
    except ImportError:
        print("error: the tensorflow-serving-api protos are missing; run `make install` or "
              "`pip install --no-deps 'tensorflow-serving-api>=2.21,<2.22'`", file=sys.stderr)
        return 2

    import uvicorn

    registry = ModelRegistry(configs, poll_seconds=args.file_system_poll_wait_seconds,
                             config_file=args.model_config_file,
                             config_poll_seconds=args.model_config_file_poll_wait_seconds,
                             on_load=gc.freeze)
    # Like TF Serving, load what is there before accepting requests.
    registry.poll_once()
    # A JSON batch of clouds is ~30k small lists; with TensorFlow's ~400k long-lived objects
    # in the heap, the collections those allocations trigger cost 3-4x the parse itself.
    # Freezing the loaded objects (again after every load) and collecting the young
    # generation less often removes that; nothing here makes many reference cycles.
    gc.freeze()
    gc.set_threshold(100_000, 50, 100)
    # proto=IPPROTO_TCP matters: asyncio sets TCP_NODELAY on accepted connections only for
    # sockets that say so, and without it keep-alive answers wait ~40 ms on delayed ACKs.
    sock = socket.socket(socket.AF_INET6 if ":" in args.host else socket.AF_INET,
                         socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror}; pick another "
              f"--port (0 picks a free one)", file=sys.stderr)
        return 2
    port = sock.getsockname()[1]
    url = f"http://{args.host}:{port}"
    app = create_app(registry, limits)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on",
                            timeout_graceful_shutdown=5)
    server = uvicorn.Server(config)

    def announce():
        while not server.started:
            time.sleep(0.05)
        for c in configs:
            log.info("serving model %s from %s (policy %s, labels %s)", c.name, c.base_path,
                     ":".join(map(str, c.policy)), c.labels or "none")
        print(f"serving on {url}  (e.g. curl {url}/v1/models/{configs[0].name})", flush=True)
        if args.ready_file:
            tmp = pathlib.Path(args.ready_file + ".tmp")
            tmp.write_text(json.dumps({"url": url, "pid": os.getpid()}))
            os.replace(tmp, args.ready_file)

    threading.Thread(target=announce, daemon=True).start()
    server.run(sockets=[sock])
    return 0


if __name__ == "__main__":
    sys.exit(main())
