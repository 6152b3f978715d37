"""Every docstring example in the paper's package and its build tooling runs and prints what it says (the
library's own are run by tests/core/test_doctests_library.py)."""

import doctest
import importlib
import importlib.util
import pkgutil
import sys
from pathlib import Path

import amnesiac_paper
import pytest
from helpers import fast_only

MODULES = ["amnesiac_paper", *sorted(m.name for m in pkgutil.walk_packages(amnesiac_paper.__path__, "amnesiac_paper."))]
SLOW = {"amnesiac_paper.propagation"}  # its example trains SimpleModel with four logs: ~10 s on 2 CPU cores


@pytest.mark.parametrize("name", fast_only(MODULES, set(MODULES) - SLOW))
def test_docstring_examples(name):
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.failed == 0, f"{result.failed} of {result.attempted} docstring examples in {name} failed"
    if name in ("amnesiac_paper", "amnesiac_paper.models"):
        assert result.attempted > 0  # these modules document their main entry point with an example


def test_build_tooling_docstring_examples():
    path = Path(__file__).resolve().parents[2] / "tools" / "bookbuild.py"
    spec = importlib.util.spec_from_file_location("bookbuild_doctest", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE, verbose=False)
    assert result.attempted > 0 and result.failed == 0
