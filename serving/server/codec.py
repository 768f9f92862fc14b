"""Parsed JSON <-> tensors, both directions, with TF Serving's rules and error messages.

Requests: `tensors_from_instances` (row format) and `tensors_from_inputs` (columnar format)
turn a parsed body (`json_text.parse_json`) into one numpy array per signature input.
numpy's own conversion is used whenever it provably gives the same array as walking the
JSON element by element (`_fast_tensor`); otherwise the walk decides and words the error
exactly as TF Serving would (`_slow_tensor`).

Answers: `outputs_to_json` writes `{"predictions": ...}` (row) or `{"outputs": ...}`
(columnar), floats in the shortest form that reads back to the same float32.
`check_examples` checks a `:classify`/`:regress` body as TF Serving reads it into tf.Examples.

Example:

>>> import numpy as np
>>> from serving.server.servable import TensorSpec
>>> spec = {"points": TensorSpec("points", np.float32, "float", (-1, -1, 3))}
>>> tensors_from_instances([[[0.5, 1, 2]]], spec, bools_in_body=False)["points"].shape
(1, 1, 3)
>>> outputs_to_json({"class_id": np.array([2])}, row=True)
'{"predictions":[2]}'
"""

from __future__ import annotations

import json

import numpy as np

from serving.server.errors import ServingError, invalid
from serving.server.json_text import echo, json_type
from serving.server.servable import TensorSpec


def _is_b64(v) -> bool:
    return isinstance(v, dict) and len(v) == 1 and isinstance(v.get("b64"), str)


def is_element_object(v) -> bool:
    return isinstance(v, dict) and not _is_b64(v)


def _type_error(v, spec: TensorSpec) -> ServingError:
    return invalid(f"JSON Value: {echo(v)} Type: {json_type(v)} is not of expected type: "
                   f"{spec.dtype_name}")


def _leaf(v, spec: TensorSpec):
    """One JSON scalar converted for `spec`, with TF Serving's type rules."""
    kind = spec.dtype_name
    if kind in ("float", "double"):
        # Any JSON number, rounded to the nearest float (beyond float32's range: Inf), as
        # rapidjson's GetFloat gives TF Serving.
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _type_error(v, spec)
        return float(v)
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
            raise invalid(f"JSON Value: {echo(v)} not formatted correctly for base64 data")
        raise _type_error(v, spec)
    raise ServingError("UNIMPLEMENTED", f"Conversion of JSON Value: {echo(v)} to type: "
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
            raise invalid(f"JSON Value: {echo(v)} found at incorrect level: {level + 1} in "
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
    with np.errstate(over="ignore"):
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
        with np.errstate(over="ignore"):  # beyond float32's range is Inf, as in TF Serving
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


def array_from_json(v, spec: TensorSpec, bools_in_body: bool) -> np.ndarray:
    """One input's parsed JSON value as an array of ``spec``'s dtype, or the ServingError TF Serving gives."""
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
    if not is_element_object(instances[0]) and len(inputs) > 1:
        raise invalid("instances is a plain list, but expecting list of objects as multiple "
                      "input tensors required as per tensorinfo_map")
    if is_element_object(instances[0]):
        for i, elem in enumerate(instances):
            if not is_element_object(elem):
                raise invalid(f"Expecting object but got list at item {i} of input list")
            for key in elem:
                if key not in inputs:
                    raise invalid(f"Failed to process element: {i} key: {key} of 'instances' "
                                  f"list. Error: INVALID_ARGUMENT: JSON object: does not have "
                                  f"named input: {key}")
            if set(elem) != set(names):
                raise invalid(f"Failed to process element: {i} of 'instances' list. JSON "
                              f"object: {echo(elem)} keys must be equal to: {','.join(names)}")
        columns = {k: [elem[k] for elem in instances] for k in names}
    else:
        for i, elem in enumerate(instances):
            if is_element_object(elem):
                raise invalid(f"Expecting value/list but got object at item {i} of input list")
        columns = {names[0]: instances}
    out = {}
    for key, items in columns.items():
        spec = inputs[key]
        fast = _fast_tensor(items, spec, bools_in_body)
        if fast is not None:
            out[key] = fast
            continue
        where = f" key: {key}" if len(columns) > 1 or is_element_object(instances[0]) else ""
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
        return {name: array_from_json(value, inputs[name], bools_in_body)}
    out = {}
    for name in sorted(inputs):
        if name not in value:
            raise invalid(f"Missing named input: {name} in 'inputs' object.")
        out[name] = array_from_json(value[name], inputs[name], bools_in_body)
    return out


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


def _feature_kind(v, name: str) -> str:
    """The tf.Example feature list one JSON value goes to, by TF Serving's rules."""
    if v is None or isinstance(v, list) or (isinstance(v, dict) and not _is_b64(v)):
        raise invalid(f"Feature: {name} has element with unexpected JSON type: "
                      f"{json_type(v)}")
    if isinstance(v, bool):
        return "int64"
    if isinstance(v, (dict, str)):
        return "bytes"
    if isinstance(v, float):
        return "float"
    if not -2**63 <= v < 2**63:
        if v < 2**64:
            raise invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        return "float"
    return "int64"


def _check_example(example, what: str = "Example") -> None:
    if not isinstance(example, dict):
        raise invalid(f"{what} must be JSON object but got JSON {json_type(example)}")
    for name, content in example.items():
        kind = None
        for v in content if isinstance(content, list) else [content]:
            got = _feature_kind(v, name)
            if kind is not None and got != kind:
                raise invalid(f"Unexpected element type in feature: {name} expecting type: "
                              f"{kind}")
            kind = got


def check_examples(doc: dict) -> None:
    """The body of a `:classify` or `:regress` call, checked as TF Serving reads it into
    tf.Examples: an optional `context` object and a non-empty `examples` list of objects
    whose features hold numbers, strings or `{"b64": ...}` of one kind each.

    >>> check_examples({"instances": [[1, 2, 3]]})
    Traceback (most recent call last):
    ...
    serving.server.errors.ServingError: JSON Value: {
        "instances": [[1, 2, 3]]
    } When method is classify, key 'examples' is expected and was not found
    """
    if "context" in doc:
        _check_example(doc["context"])
    if "examples" not in doc:
        # TF Serving says "classify" for :regress too.
        raise invalid(f"JSON Value: {echo(doc)} When method is classify, key 'examples' is "
                      f"expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise invalid(f"JSON Value: {echo(doc)} Expecting 'examples' value to be an "
                      f"list/array")
    if not examples:
        raise invalid(f"JSON Value: {echo(doc)} 'examples' value is an empty array")
    for example in examples:
        _check_example(example)
