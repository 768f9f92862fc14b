"""Answering one API call, independent of the transport: predict, model status, metadata.

`handle_predict` resolves the model version (number, label or latest), the signature and
the request format, parses the body (`json_text`), converts it (`codec`), checks it
(`validation`), calls the model and returns the answer's JSON text; `handle_get` returns
the status or metadata document. Both raise `ServingError` with TF Serving's code and
message for anything a client did wrong. The REST app (`app.py`) routes URLs here; the
gRPC services (`grpc_service.py`) share `find_servable`, `run_signature`, `status_proto`
and `classify_regress_error`, so both APIs answer from the same loaded versions with the
same checks and errors.

Example (needs an export under exports/setnet-default)::

    registry = ModelRegistry([ModelConfig("setnet", "exports/setnet-default")])
    registry.poll_once()
    handle_predict(registry, Limits(), "setnet", None, None, "predict",
                   b'{"instances": [[[0.1, 0.2, 0.3]]]}')
"""

from __future__ import annotations

import logging

from serving.server.codec import (check_examples, outputs_to_json, tensors_from_inputs,
                                  tensors_from_instances)
from serving.server.config import Limits
from serving.server.errors import ServingError, invalid
from serving.server.json_text import echo, parse_json
from serving.server.ragged import pad_instances
from serving.server.servable import DEFAULT_SIGNATURE, PREDICT_METHOD, LoadedVersion, Signature
from serving.server.validation import validate_inputs
from serving.server.versions import ModelRegistry

log = logging.getLogger(__name__)


def parse_version(text: str | None) -> int | None:
    if not text:
        return None
    value = int(text)
    if value >= 2**63:
        raise invalid(f"Failed to convert version: {text} to numeric.")
    return value


def find_servable(registry: ModelRegistry, name: str, version: int | None,
                  label: str | None) -> LoadedVersion:
    """The loaded version a request names (a number, a label, or the latest), or TF
    Serving's error for it (NOT_FOUND, or INVALID_ARGUMENT for an unknown label)."""
    manager = registry.get(name)
    if manager is None:
        if label is not None:
            raise invalid(f"Unrecognized servable version label: {label}")
        raise ServingError("NOT_FOUND", "Servable not found for request: " +
                           (f"Specific({name}, {version})" if version is not None
                            else f"Latest({name})"))
    return manager.resolve(version, label)


def run_signature(servable: LoadedVersion, signature: Signature, arrays: dict,
                  limits: Limits) -> dict:
    """Checks the point clouds, calls the model and returns its outputs as numpy arrays;
    every API (REST predict, gRPC Predict) calls the model through here."""
    validate_inputs(arrays, signature, limits)
    try:
        return servable.call(signature, arrays)
    except ServingError:  # from the batcher: a full queue, a request over its batch size
        raise
    except Exception as err:  # TF errors for inputs our checks let through
        import tensorflow as tf
        if isinstance(err, (tf.errors.InvalidArgumentError, ValueError, TypeError)):
            raise invalid(str(err).strip().splitlines()[0])
        log.exception("predict failed")
        raise ServingError("INTERNAL", f"{type(err).__name__}: {err}")


def classify_regress_error(servable: LoadedVersion, signature_name: str,
                           method: str) -> ServingError:
    """TF Serving's answer to Classify or Regress on this version (`method` is "classify"
    or "regress"): the signature checks of its classifier.cc / regressor.cc, run with the
    method-name check off (tensorflow_model_server's default), and UNIMPLEMENTED for a
    signature that passes them, since this server runs predict signatures only."""
    from google.protobuf import text_format

    sig = servable.signature_defs.get(signature_name)
    if sig is None:
        return invalid(f"No signature was found with the name: {signature_name}")
    described = text_format.MessageToString(sig)
    if len(sig.inputs) != 1:
        return invalid("Expected one input Tensor.")
    if method == "classify":
        if len(sig.outputs) not in (1, 2):
            return invalid(f"Expected one or two output Tensors, found {len(sig.outputs)}")
        if "inputs" not in sig.inputs:
            return invalid(f"No classification inputs found in SignatureDef: {described}")
        if "classes" not in sig.outputs and "scores" not in sig.outputs:
            return invalid(f'Expected classification signature outputs to contain at least '
                           f'one of "classes" or "scores". Signature was: {described}')
    else:
        if len(sig.outputs) != 1:
            return invalid("Expected one output Tensor.")
        if "inputs" not in sig.inputs:
            return invalid(f"No regression inputs found in SignatureDef: {described}")
        if "outputs" not in sig.outputs:
            return invalid(f"No regression outputs found in SignatureDef: {described}")
    return ServingError("UNIMPLEMENTED", f"Signature {signature_name} of model "
                        f"{servable.model_name} is a {method} signature; this server runs "
                        f"predict signatures only (use Predict, or TF Serving itself).")


def handle_predict(registry: ModelRegistry, limits: Limits, name: str, version: int | None,
                   label: str | None, method: str, body: bytes) -> str:
    doc = parse_json(body)
    if "signature_name" in doc and not isinstance(doc["signature_name"], str):
        raise invalid(f"JSON Value: {echo(doc)} not formatted correctly. 'signature_name' key "
                      f"must be a string value.")
    signame = doc.get("signature_name") or DEFAULT_SIGNATURE
    if method != "predict":
        # TF Serving reads the body into tf.Examples before it looks at the model.
        check_examples(doc)
        raise classify_regress_error(find_servable(registry, name, version, label), signame,
                                     method)
    servable = find_servable(registry, name, version, label)
    signature = servable.signatures.get(signame)
    if signature is None:
        raise invalid(f'Serving signature name: "{signame}" not found in signature def')
    if not signature.inputs:
        raise invalid(f"Failed to get input map for signature: "
                      f"{doc.get('signature_name') or 'DEFAULT'}")
    if signature.fn is None:
        raise ServingError("FAILED_PRECONDITION", f"Expected prediction signature method_name to "
                           f"be {PREDICT_METHOD}. Was: {signature.method_name or '(empty)'}")
    has_instances, has_inputs = "instances" in doc, "inputs" in doc
    bools_in_body = b"true" in body or b"false" in body
    if has_instances and has_inputs:
        raise invalid(f"JSON Value: {echo(doc)} Not formatted correctly expecting only one of "
                      f"'inputs' or 'instances' keys to exist ")
    if has_instances:
        instances = doc["instances"]
        if not isinstance(instances, list):
            raise invalid(f"JSON Value: {echo(doc)} Expecting 'instances' to be an list/array")
        if not instances:
            raise invalid(f"JSON Value: {echo(doc)} No values in 'instances' array")
        # Clouds of different sizes: padded and masked here (an extension; ragged.py).
        routed = pad_instances(instances, signature, servable.signatures, bools_in_body)
        if routed is not None:
            signature, arrays = routed
        else:
            arrays = tensors_from_instances(instances, signature.inputs, bools_in_body)
    elif has_inputs:
        arrays = tensors_from_inputs(doc["inputs"], signature.inputs, bools_in_body)
    else:
        raise invalid("Missing 'inputs' or 'instances' key")
    outputs = run_signature(servable, signature, arrays, limits)
    return outputs_to_json(outputs, row=has_instances)


def status_proto(entries):
    """`GetModelStatusResponse` for `(version, VersionState)` pairs, as both APIs answer it."""
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
    return response


def _status_json(entries) -> str:
    from google.protobuf import json_format

    return json_format.MessageToJson(status_proto(entries),
                                     always_print_fields_with_no_presence=True, indent=1)


def handle_get(registry: ModelRegistry, name: str | None, version: int | None,
               label: str | None, subresource: str | None) -> str:
    if not name:
        raise invalid("Missing model name in request.")
    manager = registry.get(name)
    if subresource:
        return find_servable(registry, name, version, label).metadata_json()
    # TF Serving's status ignores a version label: /labels/L answers every version.
    if manager is None:
        if version is not None:
            raise ServingError("NOT_FOUND", f"Could not find version {version} of model {name}")
        raise ServingError("NOT_FOUND", f"Could not find any versions of model {name}")
    return _status_json(manager.status(version, None))
