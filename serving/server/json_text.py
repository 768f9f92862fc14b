"""JSON text as TF Serving reads and quotes it: parsing request bodies and echoing values.

`parse_json` reads a body as TF Serving's rapidjson does (NaN and Infinity allowed, trailing
bytes after the document ignored, numbers beyond a double refused at their byte offset), with
rapidjson's wording for what it refuses; orjson reads the common case fast and Python's json
words the errors. `echo` quotes a JSON value in an error message as TF Serving does
(rapidjson's pretty printer, cut after 256 bytes), and `json_type` names a value's type as
its messages do. Turning the parsed values into tensors is `codec`'s job.

Example:

>>> parse_json(b'{"instances": [[1.5, NaN]]}')
{'instances': [[1.5, nan]]}
>>> echo([1e21, 2.5e-7, True])
'[1e21, 2.5e-7, true]'
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import orjson

from serving.server.errors import invalid

__all__ = ["MAX_ECHO", "echo", "json_type", "parse_json"]

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


def json_type(v) -> str:
    """A JSON value's type as TF Serving's messages name it (Null, True, Number...)."""
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
