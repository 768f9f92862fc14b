"""Tests of the parsed JSON <-> tensor conversion and the point-cloud checks, without a server."""

import doctest
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from serving.server import codec, json_text, validation
from serving.server.errors import ServingError
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


@pytest.mark.parametrize("module", [codec, json_text, validation], ids=lambda m: m.__name__)
def test_module_examples_run(module):
    result = doctest.testmod(module)
    assert result.attempted > 0 and result.failed == 0


def test_json_numbers_become_float32_as_tf_serving_converts_them():
    spec = TensorSpec("points", np.float32, "float", None)
    want = np.float32([[16777216, np.inf, -np.inf]])
    value = [[16777217, 1e39, -1e39]]
    np.testing.assert_array_equal(codec._fast_tensor(value, spec, bools_in_body=False), want)
    np.testing.assert_array_equal(codec._slow_tensor(value, spec), want)
    with pytest.raises(ServingError, match="Type: True is not of expected type: float"):
        codec.array_from_json([[1.5, True]], spec, bools_in_body=True)
