"""Tests of the JSON <-> tensor conversion and the point-cloud checks, without a server."""

import doctest
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.server import codec, validation
from serving.server.servable import TensorSpec


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float32, hnp.array_shapes(min_dims=1, max_dims=3, max_side=5),
                  elements=st.floats(width=32, allow_nan=True, allow_infinity=True)))
def test_floats_are_written_so_that_they_read_back_exactly(a):
    text = codec.outputs_to_json({"y": a}, row=False)
    back = np.asarray(json.loads(text)["outputs"], dtype=np.float32)
    np.testing.assert_array_equal(back, a)


def test_floats_use_the_shortest_form():
    text = codec.outputs_to_json({"y": np.float32([0.1, 1.0, 2.5e-8, 3e9])}, row=False)
    assert text == '{"outputs":[0.1,1.0,2.5e-08,3e+09]}'


@settings(max_examples=60, deadline=None)
@given(hnp.arrays(np.float64, hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
                  elements=st.floats(-1e6, 1e6, width=32)))
def test_fast_and_faithful_json_conversion_agree(a):
    spec = TensorSpec("points", np.float32, "float", None)
    value = a.tolist()
    fast = codec._fast_tensor(value, spec, bools_in_body=False)
    slow = codec._slow_tensor(value, spec)
    assert fast is not None
    np.testing.assert_array_equal(fast, slow)
    assert fast.dtype == slow.dtype == np.float32


@pytest.mark.parametrize("module", [codec, validation], ids=lambda m: m.__name__)
def test_module_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


@pytest.mark.parametrize("body,offset", [
    (b'{"instances": [1e400]}', 15),                      # orjson refuses it
    (b'{"instances": [NaN, -1e400]}', 20),                 # json (for the NaN) refuses it
    ('{"é": [NaN, 1e400]}'.encode(), 13),                  # offsets count bytes
    (b'{"s": "1e400", "a": [NaN, 1e400]}', 26),            # not the string
    (b'{"a": [' + b"9" * 400 + b"]}", 7),                  # an integer beyond double
])
def test_numbers_beyond_double_are_refused_where_rapidjson_stops(body, offset):
    with pytest.raises(codec.ServingError) as err:
        codec.parse_json(body)
    assert err.value.message == (f"JSON Parse error: Number too big to be stored in double. "
                                 f"at offset: {offset}")


@pytest.mark.parametrize("tail", [b" x", b'{"a": 1}', b"\n]]]", b"\xff\xfe"])
def test_bytes_after_the_document_are_ignored(tail):
    assert codec.parse_json(b'{"a": [1, 2]}' + tail) == {"a": [1, 2]}
    assert codec.parse_json(b'{"a": [NaN]}' + tail)["a"][0] != 0


def test_json_numbers_become_float32_as_tf_serving_converts_them():
    spec = TensorSpec("points", np.float32, "float", None)
    want = np.float32([[16777216, np.inf, -np.inf]])
    value = [[16777217, 1e39, -1e39]]
    np.testing.assert_array_equal(codec._fast_tensor(value, spec, bools_in_body=False), want)
    np.testing.assert_array_equal(codec._slow_tensor(value, spec), want)
    with pytest.raises(codec.ServingError, match="Type: True is not of expected type: float"):
        codec._tensor([[1.5, True]], spec, bools_in_body=True)


def test_values_are_echoed_as_rapidjson_pretty_prints_them():
    assert codec.echo({"instances": [[1, 2.5e-7, None]], "b": {}}) == (
        '{\n    "instances": [[1, 2.5e-7, null]],\n    "b": {}\n}')
    assert codec.echo([1e21, 1e20, 0.0001, -0.0]) == (
        "[1e21, 100000000000000000000.0, 0.0001, -0.0]")
    # Writing stops at NaN (the writer refuses it) and after the write that reaches 256 bytes.
    assert codec.echo({"a": [1.5, float("nan"), 2]}) == '{\n    "a": [1.5'
    long = codec.echo({"instances": [[0.125] * 1000]})
    assert 256 <= len(long) < 256 + len(", 0.125") and long.endswith("0.125")
