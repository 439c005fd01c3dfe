"""The runnable examples in the ingest modules' docstrings."""

import doctest
import importlib

import pytest

MODULES = ["ingest.spool", "ingest.health", "ingest.promsd", "ingest.logparse", "ingest.promtext", "ingest.promcanon",
           "ingest.simulator", "ingest.host"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
