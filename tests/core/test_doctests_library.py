"""Every docstring example in the library runs and prints what it says (examples must not drift from the code)."""

import doctest
import importlib
import pkgutil

import pytest

import amnesiac

MODULES = ["amnesiac", *sorted(m.name for m in pkgutil.iter_modules(amnesiac.__path__, "amnesiac."))]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed"
    if name in ("amnesiac", "amnesiac.rules", "amnesiac.attributed", "amnesiac.training", "amnesiac.deltalog"):
        assert result.attempted > 0  # these modules document their main entry point with an example
