"""TF Serving's gRPC API on the same loaded models as REST: PredictionService and ModelService.

`create_grpc_server` serves `tensorflow.serving.PredictionService` (Predict,
GetModelMetadata, Classify, Regress) and `tensorflow.serving.ModelService`
(GetModelStatus) from a `ModelRegistry`, with the messages and stubs of the
`tensorflow-serving-api` package, so TF Serving's own Python client
(`prediction_service_pb2_grpc.PredictionServiceStub`) works unchanged. Requests go
through the same `handlers` functions as REST (version resolution, point-cloud checks,
the model call), and every `ServingError` becomes the gRPC status of the same name, as
`tensorflow_model_server` answers (NOT_FOUND, INVALID_ARGUMENT, FAILED_PRECONDITION,
UNIMPLEMENTED, ...).

What follows TF Serving's gRPC code rather than its REST code: an unknown signature
in Predict is FAILED_PRECONDITION (`Serving signature key "x" not found.`), inputs are
checked by name and count as `predict_util.cc` does, a tensor of the wrong dtype gets
the session's `Expects arg[0] to be float but double is provided`, `output_filter` picks
outputs, GetModelStatus ignores a version label (it answers every version), and answers
carry their tensors in the typed value fields (`float_val`, `int64_val`, ...) as
`Tensor::AsProtoField` writes them. Classify and Regress run TF Serving's signature
checks and answer this model's predict signatures with the same INVALID_ARGUMENT.
MultiInference and ModelService.HandleReloadConfigRequest are UNIMPLEMENTED.

Example (needs an export under exports/setnet-default)::

    registry = ModelRegistry([ModelConfig("setnet", "exports/setnet-default")])
    registry.poll_once()
    server, ports = create_grpc_server(registry, Limits(), ["127.0.0.1:8500"])
    server.start()
    channel = grpc.insecure_channel("127.0.0.1:8500")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(channel)
    request = predict_pb2.PredictRequest()
    request.model_spec.name = "setnet"
    request.inputs["points"].CopyFrom(tf.make_tensor_proto(np.zeros((1, 8, 3), np.float32)))
    stub.Predict(request, timeout=10).outputs["class_id"].int64_val
    server.stop(grace=5)
"""

from __future__ import annotations

import concurrent.futures
import functools
import logging
import time

import grpc
import numpy as np
from tensorflow.core.framework import tensor_pb2, types_pb2
from tensorflow_serving.apis import (get_model_metadata_pb2, model_service_pb2_grpc,
                                     predict_pb2, prediction_service_pb2_grpc)

from serving.server.config import Limits
from serving.server.errors import ServingError, invalid
from serving.server.handlers import (classify_regress_error, find_servable, run_signature,
                                     status_proto)
from serving.server.memory import HeapTrimmer, detach
from serving.server.metrics import Metrics, served_version
from serving.server.servable import DEFAULT_SIGNATURE
from serving.server.versions import ModelRegistry

log = logging.getLogger(__name__)

# grpc_status_util.cc cuts messages here.
MESSAGE_LIMIT = 1024
# The most a fully specified tensor in a message of B bytes can decode to is 8 B (an int64
# written as a one-byte varint); more means the request leans on TensorProto's padding
# (missing values repeat the last one), which must not allocate unbounded memory.
_MAX_EXPANSION = 8

# Tensor::AsProtoField: dtype -> (DataType, the repeated field holding the values).
_FIELDS = {np.dtype(np.float32): (types_pb2.DT_FLOAT, "float_val"),
           np.dtype(np.float64): (types_pb2.DT_DOUBLE, "double_val"),
           np.dtype(np.int32): (types_pb2.DT_INT32, "int_val"),
           np.dtype(np.int64): (types_pb2.DT_INT64, "int64_val"),
           np.dtype(np.bool_): (types_pb2.DT_BOOL, "bool_val")}


def grpc_code(code: str) -> grpc.StatusCode:
    """The gRPC status for a `ServingError` code (413's code has no gRPC twin)."""
    if code == "PAYLOAD_TOO_LARGE":
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode[code]


def _dtype_name(enum_value: int) -> str:
    # DataTypeString: DT_FLOAT -> float, DT_INT64 -> int64.
    try:
        return types_pb2.DataType.Name(enum_value)[3:].lower()
    except ValueError:
        return f"type {enum_value}"


def tensor_to_array(proto: tensor_pb2.TensorProto, alias: str, limits: Limits) -> np.ndarray:
    """TensorProto -> numpy array with `tf.make_ndarray`; anything `Tensor::FromProto`
    would refuse is TF Serving's `tensor parsing error: ALIAS`."""
    import tensorflow as tf

    dims = [d.size for d in proto.tensor_shape.dim]
    if proto.tensor_shape.unknown_rank or any(d < 0 for d in dims):
        raise invalid(f"tensor parsing error: {alias}")
    if not proto.tensor_content:
        try:
            itemsize = np.dtype(tf.dtypes.as_dtype(proto.dtype).as_numpy_dtype).itemsize
        except (TypeError, ValueError):
            raise invalid(f"tensor parsing error: {alias}") from None
        size = int(np.prod(dims, dtype=np.float64)) * itemsize
        if size > _MAX_EXPANSION * limits.max_body_bytes:
            raise invalid(f"Input '{alias}' of shape [{','.join(map(str, dims))}] would take "
                          f"{size} bytes, far more than its message holds; send every value "
                          f"(or tensor_content), in requests under --max-body-bytes "
                          f"({limits.max_body_bytes}).")
    try:
        return tf.make_ndarray(proto)
    except (TypeError, ValueError):
        raise invalid(f"tensor parsing error: {alias}") from None


def array_to_tensor(array: np.ndarray, out: tensor_pb2.TensorProto) -> None:
    """Writes `array` into `out` as TF Serving's Predict does (`Tensor::AsProtoField`: the
    values in the typed repeated field, not `tensor_content`)."""
    array = np.asarray(array)
    field = _FIELDS.get(array.dtype)
    if field is None and array.dtype.kind in "OSU":
        field = (types_pb2.DT_STRING, "string_val")
    if field is None:
        import tensorflow as tf
        out.CopyFrom(tf.make_tensor_proto(array))
        return
    out.dtype = field[0]
    for size in array.shape:
        out.tensor_shape.dim.add().size = size
    values = array.ravel().tolist()
    if field[0] == types_pb2.DT_STRING:
        values = [v if isinstance(v, bytes) else str(v).encode("utf-8") for v in values]
    getattr(out, field[1]).extend(values)


def _tensor_bytes(request) -> int:
    """About the size of a request's tensors, without serializing it (ByteSize does)."""
    inputs = getattr(request, "inputs", None)
    if inputs is None:
        return 0
    return sum(len(t.tensor_content) + 8 * (len(t.float_val) + len(t.double_val) +
                                            len(t.int_val) + len(t.int64_val) +
                                            len(t.bool_val) + len(t.string_val))
               for t in inputs.values())


def _answers(method):
    """Runs one RPC: a `ServingError` becomes its gRPC status with the message cut as
    TF Serving cuts it; anything else is INTERNAL and logged. Large requests ask the
    server's `HeapTrimmer` to give their memory back once things are quiet."""

    @functools.wraps(method)
    def rpc(self, request, context):
        start = time.perf_counter()
        try:
            response, code = method(self, request), None
        except ServingError as err:
            code, message = grpc_code(err.code), detach(err).message
        except Exception as err:  # never let one request take the server down
            log.exception("unexpected error in %s", method.__name__)
            code, message = grpc.StatusCode.INTERNAL, f"{type(err).__name__}: {detach(err)}"
        finally:
            if self.trimmer is not None:
                self.trimmer.note(_tensor_bytes(request))
        if self.metrics is not None:
            _observe(self.metrics, self.registry, method.__name__, request, code,
                     time.perf_counter() - start)
        if code is None:
            return response
        if len(message) > MESSAGE_LIMIT:
            message = message[:MESSAGE_LIMIT] + "...TRUNCATED"
        # Aborting here, after the except clause, keeps the error (and through its frames
        # the request's arrays) out of the abort's exception chain.
        context.abort(code, message)

    return rpc


_API_OF = {"Predict": "predict", "GetModelMetadata": "metadata", "Classify": "classify",
           "Regress": "regress", "GetModelStatus": "status"}


def _observe(metrics: Metrics, registry: ModelRegistry, rpc: str, request, code,
             seconds: float) -> None:
    """One RPC in the Prometheus metrics, labelled as REST requests are (`metrics.py`)."""
    spec = request.model_spec
    choice = spec.WhichOneof("version_choice")
    version = spec.version.value if choice == "version" else None
    api = _API_OF.get(rpc, rpc)
    served = ("" if api == "status" and version is None else
              served_version(registry, spec.name, version,
                             spec.version_label if choice == "version_label" else None))
    metrics.observe(spec.name, served, api, "GRPC", "OK" if code is None else code.name,
                    seconds)


def _model_spec(request):
    if not request.HasField("model_spec"):
        raise invalid("Missing ModelSpec")
    return request.model_spec


def _servable(registry: ModelRegistry, spec):
    """ServerCore::ServableRequestFromModelSpec, then the version manager's lookup."""
    if not spec.name:
        raise invalid("ModelSpec has no name specified.")
    choice = spec.WhichOneof("version_choice")
    return find_servable(registry, spec.name,
                         spec.version.value if choice == "version" else None,
                         spec.version_label if choice == "version_label" else None)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """`tensorflow.serving.PredictionService` on the registry's loaded versions."""

    def __init__(self, registry: ModelRegistry, limits: Limits,
                 trimmer: HeapTrimmer | None = None, metrics: Metrics | None = None):
        self.registry, self.limits = registry, limits
        self.trimmer = trimmer or HeapTrimmer()
        self.metrics = metrics

    @_answers
    def Predict(self, request):
        spec = _model_spec(request)
        servable = _servable(self.registry, spec)
        name = spec.signature_name or DEFAULT_SIGNATURE
        signature = servable.signatures.get(name)
        if signature is None:
            raise ServingError("FAILED_PRECONDITION",
                               f'Serving signature key "{name}" not found.')
        sigdef = servable.signature_defs[name]
        sent, wanted = set(request.inputs), set(sigdef.inputs)
        if len(sent) > len(wanted) or (len(sent) < len(wanted) and not sigdef.defaults):
            raise invalid(f"input size does not match signature: {len(sent)}!={len(wanted)} "
                          f"len({{{','.join(sorted(sent))}}}) != "
                          f"len({{{','.join(sorted(wanted))}}}). Sent extra: "
                          f"{{{','.join(sorted(sent - wanted))}}}. Missing but required: "
                          f"{{{','.join(sorted(wanted - sent))}}}.")
        arrays = {}
        for alias in sorted(wanted):
            if alias not in request.inputs:
                raise invalid(f"Signature input alias: {alias}(feed name: "
                              f"{sigdef.inputs[alias].name}) not found in request and no "
                              f"default value provided. Inputs expected to be in the request "
                              f"{{{','.join(sorted(sent))}}}, or default input alias set: "
                              f"{','.join(sorted(sigdef.defaults))}")
            arrays[alias] = tensor_to_array(request.inputs[alias], alias, self.limits)
        if sent - wanted:
            raise invalid(f"Inputs contains invalid name. Used request inputs: "
                          f"{','.join(sorted(sent & wanted))}, request input: "
                          f"{','.join(sorted(sent))}")
        seen = set()
        for alias in request.output_filter:
            if alias not in sigdef.outputs:
                raise invalid(f"output tensor alias not found in signature: {alias} Outputs "
                              f"expected to be in the set {{{','.join(sorted(sigdef.outputs))}}}.")
            if alias in seen:
                raise invalid(f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        outputs = list(request.output_filter) or sorted(sigdef.outputs)
        for i, alias in enumerate(sorted(arrays)):
            want = signature.inputs[alias].dtype
            if want is not None and arrays[alias].dtype != want:
                raise invalid(f"Expects arg[{i}] to be {signature.inputs[alias].dtype_name} "
                              f"but {_dtype_name(request.inputs[alias].dtype)} is provided")
        results = run_signature(servable, signature, arrays, self.limits)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = spec.name
        response.model_spec.signature_name = name
        response.model_spec.version.value = servable.version
        for alias in outputs:
            array_to_tensor(results[alias], response.outputs[alias])
        return response

    @_answers
    def GetModelMetadata(self, request):
        spec = _model_spec(request)
        if not request.metadata_field:
            raise invalid("GetModelMetadataRequest must specify at least one metadata_field")
        for field in request.metadata_field:
            if field != "signature_def":
                raise invalid(f"Metadata field {field} is not supported")
        servable = _servable(self.registry, spec)
        response = get_model_metadata_pb2.GetModelMetadataResponse()
        response.model_spec.name = servable.model_name
        response.model_spec.version.value = servable.version
        signatures = get_model_metadata_pb2.SignatureDefMap()
        for name, sig in servable.signature_defs.items():
            signatures.signature_def[name].CopyFrom(sig)
        response.metadata["signature_def"].Pack(signatures)
        return response

    @_answers
    def Classify(self, request):
        servable = _servable(self.registry, _model_spec(request))
        raise classify_regress_error(servable, request.model_spec.signature_name
                                     or DEFAULT_SIGNATURE, "classify")

    @_answers
    def Regress(self, request):
        servable = _servable(self.registry, _model_spec(request))
        raise classify_regress_error(servable, request.model_spec.signature_name
                                     or DEFAULT_SIGNATURE, "regress")


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """`tensorflow.serving.ModelService`: GetModelStatus (HandleReloadConfigRequest is
    UNIMPLEMENTED; the model config file is re-read instead, see
    --model_config_file_poll_wait_seconds)."""

    def __init__(self, registry: ModelRegistry, metrics: Metrics | None = None):
        self.registry = registry
        self.trimmer = None  # status requests are small
        self.metrics = metrics

    @_answers
    def GetModelStatus(self, request):
        spec = _model_spec(request)
        version = spec.version.value if spec.HasField("version") else None
        manager = self.registry.get(spec.name)
        if manager is None:
            if version is not None:
                raise ServingError("NOT_FOUND",
                                   f"Could not find version {version} of model {spec.name}")
            raise ServingError("NOT_FOUND", f"Could not find any versions of model {spec.name}")
        # get_model_status_impl.cc looks at the version only: a label gets every version.
        return status_proto(manager.status(version, None))


def create_grpc_server(registry: ModelRegistry, limits: Limits, addresses: list[str],
                       max_threads: int = 16, trimmer: HeapTrimmer | None = None,
                       metrics: Metrics | None = None):
    """PredictionService and ModelService bound to `addresses`, not yet started.

    Args:
        registry: the served models (the same registry the REST app answers from).
        limits: per-request maxima; `max_body_bytes` is also the largest message accepted
            and `max_inflight` the most RPCs in progress (beyond it gRPC itself answers
            RESOURCE_EXHAUSTED).
        addresses: e.g. `["127.0.0.1:8500", "unix:/tmp/tfs.sock"]`; port 0 picks a free port.
        max_threads: worker threads (tensorflow_model_server's --grpc_max_threads).
        trimmer: the server's `HeapTrimmer` (default: one of its own).
        metrics: the server's Prometheus `Metrics`, if --monitoring_config_file turned
            them on (RPCs are counted with entrypoint GRPC).

    Returns:
        `(server, ports)`: the `grpc.Server` (`server.start()` serves, `server.stop(grace)`
        ends) and the port bound for each address (0 for a UNIX socket).

    Raises:
        OSError: an address cannot be bound (in use, bad host, no permission).
    """
    server = grpc.server(
        concurrent.futures.ThreadPoolExecutor(max_workers=max_threads,
                                              thread_name_prefix="grpc"),
        maximum_concurrent_rpcs=limits.max_inflight,
        options=[
            # gRPC sets SO_REUSEPORT by default, and then a second server on the same
            # port starts without error and silently takes half of the connections.
            ("grpc.so_reuseport", 0),
            ("grpc.max_receive_message_length", limits.max_body_bytes),
            ("grpc.max_send_message_length", -1),
        ])
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(registry, limits, trimmer, metrics), server)
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(registry, metrics),
                                                              server)
    ports = []
    for address in addresses:
        try:
            port = server.add_insecure_port(address)
        except RuntimeError as err:
            server.stop(None)
            raise OSError(f"cannot listen on {address}: {err}") from err
        if port == 0 and not address.startswith("unix:"):
            server.stop(None)
            raise OSError(f"cannot listen on {address}")
        ports.append(port if not address.startswith("unix:") else 0)
    return server, ports
