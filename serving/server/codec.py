"""JSON <-> tensors, both directions, with TF Serving's rules and error messages.

Requests: `parse_json` reads the body (orjson for speed; json for NaN/Infinity and for
rapidjson-worded parse errors), `tensors_from_instances` (row format) and
`tensors_from_inputs` (columnar format) turn it into one numpy array per signature input.
numpy's own conversion is used whenever it provably gives the same array as walking the
JSON element by element (`_fast_tensor`); otherwise the walk decides and words the error
exactly as TF Serving would (`_slow_tensor`).

Answers: `outputs_to_json` writes `{"predictions": ...}` (row) or `{"outputs": ...}`
(columnar), floats in the shortest form that reads back to the same float32.

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
import math
import re

import numpy as np
import orjson

from serving.server.errors import ServingError, invalid
from serving.server.servable import TensorSpec

MAX_ECHO = 256  # bytes of a request value TF Serving quotes back (kMaxJsonDebugStringBytes)


_RAPIDJSON = [  # Python's json messages -> rapidjson's, which TF Serving prints
    ("Expecting value", "Invalid value."),
    ("Extra data", "The document root must not be followed by other values."),
    ("Expecting property name enclosed in double quotes", "Missing a name for object member."),
    ("Expecting ':' delimiter", "Missing a colon after a name of object member."),
    ("Unterminated string starting at", "Missing a closing quotation mark in string."),
    ("Invalid \\escape", "Invalid escape character in string."),
    ("Invalid control character", "Invalid encoding in string."),
]


def _rapidjson_double(x: float) -> str | None:
    """A double as rapidjson's Writer prints it (shortest digits, its own placement of the
    decimal point and exponent); None for NaN and Inf, which it refuses to write."""
    if not math.isfinite(x):
        return None
    if x == 0:
        return "-0.0" if math.copysign(1, x) < 0 else "0.0"
    sign = "-" if x < 0 else ""
    mantissa, _, exp = repr(abs(x)).partition("e")
    whole, _, frac = mantissa.partition(".")
    digits = (whole + frac.rstrip("0")).lstrip("0") or "0"
    # value = 0.digits * 10^point, digits without leading zeros.
    point = len(whole.lstrip("0")) + int(exp or 0) if whole.strip("0") else (
        int(exp or 0) - (len(frac) - len(frac.lstrip("0"))))
    digits = digits.rstrip("0") or "0"
    k = point - len(digits)
    if 0 <= k and point <= 21:
        return sign + digits + "0" * k + ".0"
    if 0 < point <= 21:
        return sign + digits[:point] + "." + digits[point:]
    if -6 < point <= 0:
        return sign + "0." + "0" * -point + digits
    rest = "." + digits[1:] if len(digits) > 1 else ""
    return f"{sign}{digits[0]}{rest}e{point - 1}"


def _rapidjson_tokens(value, depth: int = 0):
    """What rapidjson's PrettyWriter (4-space indent, single-line arrays) writes for
    `value`, one write call at a time: (text, ok); ok False where it stops (NaN, Inf)."""
    if isinstance(value, dict):
        yield "{", True
        for i, (key, item) in enumerate(value.items()):
            yield ("," if i else "") + "\n" + "    " * (depth + 1) + json.dumps(
                str(key), ensure_ascii=False), True
            first = True
            for text, ok in _rapidjson_tokens(item, depth + 1):
                yield (": " + text if first else text), ok
                first = False
                if not ok:
                    return
        yield ("\n" + "    " * depth if value else "") + "}", True
    elif isinstance(value, list):
        yield "[", True
        for i, item in enumerate(value):
            first = True
            for text, ok in _rapidjson_tokens(item, depth + 1):
                yield ((", " if i else "") + text if first else text), ok
                first = False
                if not ok:
                    return
        yield "]", True
    elif value is None:
        yield "null", True
    elif isinstance(value, bool):
        yield ("true" if value else "false"), True
    elif isinstance(value, int) and -2**63 <= value < 2**64:
        yield str(value), True
    elif isinstance(value, (int, float)):
        text = _rapidjson_double(float(value))
        yield (text or ""), text is not None
    else:
        yield json.dumps(value if isinstance(value, str) else str(value),
                         ensure_ascii=False), True


def echo(value) -> str:
    """A JSON value quoted in an error message as TF Serving quotes it: pretty-printed by
    rapidjson, and cut after the write that reaches 256 bytes.

    >>> print(echo({"instances": 5, "x": [1.5, 1e-07, True]}))
    {
        "instances": 5,
        "x": [1.5, 1e-7, true]
    }
    """
    out, size = [], 0
    for text, ok in _rapidjson_tokens(value):
        if size >= MAX_ECHO or not ok:
            break
        out.append(text)
        size += len(text.encode("utf-8", "surrogateescape"))
    return "".join(out)


_TOO_BIG = "Number too big to be stored in double."


def _byte_offset(text: str, char_offset: int) -> int:
    # rapidjson reports byte offsets; Python's parsers count characters.
    return len(text[:char_offset].encode("utf-8", "surrogateescape"))


def parse_json(body: bytes) -> dict:
    """The request's JSON object, read as TF Serving reads it (rapidjson with NaN and
    Infinity allowed, stopping after the first complete value: trailing bytes are ignored),
    or TF Serving's `JSON Parse error: ...` for what it refuses.

    >>> parse_json(b'{"instances": [1, NaN]} trailing bytes')
    {'instances': [1, nan]}
    >>> parse_json(b'{"instances": [1e400]}')
    Traceback (most recent call last):
    ...
    serving.server.errors.ServingError: JSON Parse error: Number too big to be stored in double. at offset: 15
    """
    if not body or not body.strip():
        raise invalid("JSON Parse error: The document is empty")
    try:
        # orjson is much faster on large arrays of numbers; whatever it refuses (NaN and
        # Infinity, which TF Serving accepts, or malformed JSON) goes to json for the answer.
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as err:
        doc = None
        if err.msg.startswith("unexpected content after document"):
            try:
                doc = orjson.loads(body[:_byte_offset(err.doc, err.pos)])
            except orjson.JSONDecodeError:
                pass
        elif err.msg.startswith("number is infinity"):
            raise invalid(f"JSON Parse error: {_TOO_BIG} at offset: "
                          f"{_byte_offset(err.doc, err.pos)}") from None
        if doc is None:
            doc = _parse_json_slow(body)
    if not isinstance(doc, dict):
        raise invalid(f"JSON Value: {echo(doc)} Is not object")
    return doc


class _NumberTooBig(Exception):
    def __init__(self, literal: str):
        super().__init__(literal)
        self.literal = literal


def _checked_float(literal: str) -> float:
    value = float(literal)
    if math.isinf(value):
        raise _NumberTooBig(literal)
    return value


def _checked_int(literal: str):
    value = int(literal)
    if abs(value) > _DOUBLE_MAX_INT:
        raise _NumberTooBig(literal)
    return value


_DOUBLE_MAX_INT = int(np.finfo(np.float64).max)
_DECODER = json.JSONDecoder(parse_float=_checked_float, parse_int=_checked_int)


def _parse_json_slow(body: bytes):
    # rapidjson as TF Serving runs it does not validate UTF-8: bytes that are not UTF-8
    # pass through strings and after the document.
    text = body.decode("utf-8", "surrogateescape")
    start = len(text) - len(text.lstrip(" \t\n\r"))
    try:
        doc, _ = _DECODER.raw_decode(text, start)
    except json.JSONDecodeError as err:
        msg = next((rj for py, rj in _RAPIDJSON if err.msg.startswith(py)), err.msg)
        raise invalid(f"JSON Parse error: {msg} at offset: {_byte_offset(text, err.pos)}")
    except _NumberTooBig as err:
        # json does not say where; the first token equal to the literal is where rapidjson
        # stopped.
        found = re.search(r"(?<=[\[,:\s])" + re.escape(err.literal) + r"(?=[\s,\]}]|$)", text)
        offset = _byte_offset(text, found.start()) if found else 0
        raise invalid(f"JSON Parse error: {_TOO_BIG} at offset: {offset}")
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
    return invalid(f"JSON Value: {echo(v)} Type: {_json_type(v)} is not of expected type: "
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
                              f"object: {echo(elem)} keys must be equal to: {','.join(names)}")
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
                      f"{_json_type(v)}")
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
        raise invalid(f"{what} must be JSON object but got JSON {_json_type(example)}")
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
