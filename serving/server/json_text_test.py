"""Tests of reading request bodies and quoting values as TF Serving does, without a server."""

import pytest

from serving.server.errors import ServingError
from serving.server.json_text import echo, parse_json


@pytest.mark.parametrize("body,offset", [
    (b'{"instances": [1e400]}', 15),                      # orjson refuses it
    (b'{"instances": [NaN, -1e400]}', 20),                 # json (for the NaN) refuses it
    ('{"é": [NaN, 1e400]}'.encode(), 13),                  # offsets count bytes
    (b'{"s": "1e400", "a": [NaN, 1e400]}', 26),            # not the string
    (b'{"a": [' + b"9" * 400 + b"]}", 7),                  # an integer beyond double
])
def test_numbers_beyond_double_are_refused_where_rapidjson_stops(body, offset):
    with pytest.raises(ServingError) as err:
        parse_json(body)
    assert err.value.message == (f"JSON Parse error: Number too big to be stored in double. "
                                 f"at offset: {offset}")


@pytest.mark.parametrize("tail", [b" x", b'{"a": 1}', b"\n]]]", b"\xff\xfe"])
def test_bytes_after_the_document_are_ignored(tail):
    assert parse_json(b'{"a": [1, 2]}' + tail) == {"a": [1, 2]}
    assert parse_json(b'{"a": [NaN]}' + tail)["a"][0] != 0


def test_values_are_echoed_as_rapidjson_pretty_prints_them():
    assert echo({"instances": [[1, 2.5e-7, None]], "b": {}}) == (
        '{\n    "instances": [[1, 2.5e-7, null]],\n    "b": {}\n}')
    assert echo([1e21, 1e20, 0.0001, -0.0]) == (
        "[1e21, 100000000000000000000.0, 0.0001, -0.0]")
    # Writing stops at NaN (the writer refuses it) and after the write that reaches 256 bytes.
    assert echo({"a": [1.5, float("nan"), 2]}) == '{\n    "a": [1.5'
    long = echo({"instances": [[0.125] * 1000]})
    assert 256 <= len(long) < 256 + len(", 0.125") and long.endswith("0.125")
