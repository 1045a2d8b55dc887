"""The examples in the docstrings run and give what they show."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import telecli

MODULES = sorted(m.name for m in pkgutil.walk_packages(telecli.__path__, "telecli.")
                 if ">>> " in (importlib.util.find_spec(m.name).loader.get_source(m.name) or ""))


def test_there_are_doctests():
    assert {"telecli.lens.metrics", "telecli.lens.stats"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0 and result.attempted > 0
