"""The docstring examples of setnet.teleport run and give what they show."""

import doctest
import importlib

import pytest


@pytest.mark.parametrize("name", ["setnet.teleport.callback"])
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted >= 1 and result.failed == 0
