"""gRPC client for TF Serving (and the embedded server): the same calls as `ServingClient`.

`GrpcServingClient` talks to `tensorflow.serving.PredictionService` and `ModelService` (port
8500 by default) with the stubs of `tensorflow-serving-api`, and answers in the same form as
the REST client: `predict` returns `{output name: array}`, `status` and `metadata` the JSON
documents TF Serving's REST API returns for the same call (rendered from the gRPC answers by
protobuf's JSON mapping), so code and tests written against one work against the other.
It needs TensorFlow (the serving protos import its `tensorflow.core` protos); the REST
client does not.

    python -m serving.client predict --grpc --url 127.0.0.1:8500 cloud.npy

Example (needs a server, e.g. `make serve`)::

    client = GrpcServingClient("127.0.0.1:8500", "setnet", timeout=30)
    out = client.predict(clouds)        # list of (N_i, 3) arrays or an array (B, N, 3)
    out["class_id"], out["probabilities"]
    client.status()["model_version_status"][0]["state"]        # "AVAILABLE"

UNAVAILABLE (no server yet, or a version loading), RESOURCE_EXHAUSTED (busy) and
DEADLINE_EXCEEDED answers are retried with the REST client's backoff; other errors raise
`ServingClientError` at once, with the gRPC status name and the server's message.
"""

from __future__ import annotations

import time
from typing import Callable

import numpy as np

from serving.base_client import (BaseClient, RetryableFailure, ServingClientError,
                                 check_rows, cloud_batches, join_outputs, no_answer,
                                 padded_batches, unreachable)

__all__ = ["GrpcServingClient"]

RETRY_CODES = ("UNAVAILABLE", "RESOURCE_EXHAUSTED", "DEADLINE_EXCEEDED")


class GrpcServingClient(BaseClient):
    """Client for one model on a TF Serving gRPC endpoint.

    Args:
        target: `host:port` of the gRPC API (TF Serving's --port, 8500), or `unix:PATH`.
        model_name: the model's name.
        version: pin a version (`model_spec.version`); default: the server's choice.
        label: pin a version label (`model_spec.version_label`) instead.
        timeout: seconds per call (the gRPC deadline).
        retries: extra attempts after UNAVAILABLE, RESOURCE_EXHAUSTED or DEADLINE_EXCEEDED.
        backoff: first retry delay in seconds, doubling with jitter up to `max_backoff`.
        batch_size: most clouds per request.
        tensor_content: send tensors as packed bytes (`tf.make_tensor_proto`, the usual
            client encoding) or, with False, in the typed value fields (`float_val`, ...)
            as TF Serving writes its answers; the server must read both the same.
        channel: a `grpc.Channel` to use instead of opening one to `target`.
    """

    def __init__(self, target: str, model_name: str, *, version: int | None = None,
                 label: str | None = None, timeout: float = 30.0, retries: int = 4,
                 backoff: float = 0.25, max_backoff: float = 8.0, batch_size: int = 32,
                 tensor_content: bool = True, channel=None,
                 sleep: Callable[[float], None] = time.sleep):
        import grpc
        from tensorflow_serving.apis import model_service_pb2_grpc, prediction_service_pb2_grpc

        super().__init__(model_name, version=version, label=label, timeout=timeout,
                         retries=retries, backoff=backoff, max_backoff=max_backoff,
                         batch_size=batch_size, sleep=sleep)
        if "://" in target:
            raise ValueError(f"gRPC targets are host:port (TF Serving's --port, 8500), not a "
                             f"URL: {target!r}")
        self.target, self.tensor_content = target, tensor_content
        # TF Serving accepts messages up to 2 GiB; gRPC's default cap of 4 MiB would refuse
        # a batch of 32 clouds of 1024 points in the answer's direction long before that.
        self.channel = channel or grpc.insecure_channel(target, options=[
            ("grpc.max_receive_message_length", -1), ("grpc.max_send_message_length", -1)])
        self.predictions = prediction_service_pb2_grpc.PredictionServiceStub(self.channel)
        self.models = model_service_pb2_grpc.ModelServiceStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    # -- plumbing -----------------------------------------------------------------------

    def model_spec(self, spec, version: int | None = None, label: str | None = None,
                   signature_name: str | None = None):
        """Fills a request's `model_spec` (name, pinned version or label, signature)."""
        version, label = self.pinned(version, label)
        spec.name = self.model_name
        if version is not None:
            spec.version.value = int(version)
        elif label is not None:
            spec.version_label = label
        if signature_name:
            spec.signature_name = signature_name
        return spec

    def call(self, method: Callable, request):
        """One RPC with retries; returns the answer message."""
        import grpc

        def once(attempts: int):
            try:
                return method(request, timeout=self.timeout)
            except grpc.RpcError as err:
                code = err.code().name
                message = err.details() or code
                if code == "UNAVAILABLE" and "connect" in message.lower():
                    # gRPC's own UNAVAILABLE: no server answered, as REST's refused connection.
                    error = unreachable(attempts, message, self.target, self.target)
                elif code == "DEADLINE_EXCEEDED":
                    error = no_answer(self.timeout, attempts, self.target, status=code)
                else:
                    error = ServingClientError(code, message, self.target)
                # from None: grpc's exception repeats the message at length.
                if code in RETRY_CODES:
                    raise RetryableFailure(error) from None
                raise error from None

        return self.with_retries(once)

    def _tensor(self, array: np.ndarray):
        import tensorflow as tf

        if self.tensor_content:
            return tf.make_tensor_proto(array)
        from serving.server.grpc_service import array_to_tensor
        from tensorflow.core.framework import tensor_pb2

        proto = tensor_pb2.TensorProto()
        array_to_tensor(array, proto)
        return proto

    # -- API ----------------------------------------------------------------------------

    def status(self, version: int | None = None, label: str | None = None) -> dict:
        """ModelService.GetModelStatus, as the REST status document."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_status_pb2

        request = get_model_status_pb2.GetModelStatusRequest()
        self.model_spec(request.model_spec, version, label)
        answer = self.call(self.models.GetModelStatus, request)
        return json_format.MessageToDict(answer, always_print_fields_with_no_presence=True)

    def metadata(self, version: int | None = None, label: str | None = None) -> dict:
        """PredictionService.GetModelMetadata (signature_def), as the REST metadata document."""
        from google.protobuf import json_format
        from tensorflow_serving.apis import get_model_metadata_pb2

        request = get_model_metadata_pb2.GetModelMetadataRequest(
            metadata_field=["signature_def"])
        self.model_spec(request.model_spec, version, label)
        answer = self.call(self.predictions.GetModelMetadata, request)
        signatures = get_model_metadata_pb2.SignatureDefMap()
        answer.metadata["signature_def"].Unpack(signatures)
        opts = dict(preserving_proto_field_name=True, always_print_fields_with_no_presence=True)
        return {"model_spec": json_format.MessageToDict(answer.model_spec, **opts),
                "metadata": {"signature_def": json_format.MessageToDict(signatures, **opts)}}

    def predict_tensors(self, inputs: dict, *, signature_name: str | None = None,
                        version: int | None = None, label: str | None = None,
                        output_filter=()) -> dict[str, np.ndarray]:
        """One Predict call with these input arrays; returns every output as an array."""
        import tensorflow as tf
        from tensorflow_serving.apis import predict_pb2

        request = predict_pb2.PredictRequest(output_filter=list(output_filter))
        self.model_spec(request.model_spec, version, label, signature_name)
        for name, array in inputs.items():
            request.inputs[name].CopyFrom(self._tensor(np.asarray(array)))
        answer = self.call(self.predictions.Predict, request)
        return {name: tf.make_ndarray(tensor) for name, tensor in answer.outputs.items()}

    def predict(self, clouds, *, signature_name: str | None = None, masked: bool | None = None,
                version: int | None = None, label: str | None = None) -> dict[str, np.ndarray]:
        """Predicts clouds, in requests of at most `batch_size` clouds (as `ServingClient.predict`).

        Args:
            clouds: array `(B, N, 3)` or a list of `(N_i, 3)` arrays.
            signature_name: default `serving_default`, or `serving_masked` when padding.
            masked: pad and send a mask (default: only when the clouds differ in size).
            version, label: pin a version for this call.

        Returns:
            dict of output name -> array with one row per cloud, in the order given.
        """
        return join_outputs([self._predict_arrays(inputs, name, version, label)
                             for inputs, name in cloud_batches(clouds, self.batch_size, masked,
                                                               signature_name)])

    def predict_padded(self, points, mask, *, signature_name: str = "serving_masked",
                       version: int | None = None, label: str | None = None
                       ) -> dict[str, np.ndarray]:
        """Sends already padded clouds `points (B, N, 3)` with their `mask (B, N)` as given
        (in requests of `batch_size`)."""
        return join_outputs([self._predict_arrays(inputs, signature_name, version, label)
                             for inputs in padded_batches(points, mask, self.batch_size)])

    def _predict_arrays(self, inputs: dict, signature_name: str | None, version,
                        label) -> dict[str, np.ndarray]:
        outputs = self.predict_tensors(inputs, signature_name=signature_name, version=version,
                                       label=label)
        return check_rows(outputs, len(inputs["points"]), status="OK")
