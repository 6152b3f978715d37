"""Every docstring example in the package runs and prints what it says (examples must not drift from the code)."""

import doctest
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

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


def test_build_tooling_docstring_examples():
    path = Path(__file__).resolve().parents[2] / "tools" / "bookbuild.py"
    spec = importlib.util.spec_from_file_location("bookbuild_doctest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0
