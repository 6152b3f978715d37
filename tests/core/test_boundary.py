"""The library's boundary: nothing under amnesiac/ imports the paper's package or a study dependency, and the
library imports and works (train, unlearn, save and load a ledger, a request record) with those made
unimportable; its distribution declares torch and tqdm alone and packages amnesiac alone."""

import ast
import fnmatch
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "amnesiac"
# the paper's package and what only the studies, the book and their tooling need
BLOCKED = ("amnesiac_paper", "torchvision", "numpy", "sklearn", "scipy", "matplotlib", "ipywidgets", "papermill",
           "IPython", "PIL", "onnx", "onnxruntime", "pandas", "jupytext")


def _imports(tree):
    """(line, top-level module name) of every absolute import in ``tree``: statements at any depth (inside
    functions, try blocks, conditionals) and importlib.import_module / __import__ calls with a literal name."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from ((node.lineno, a.name.split(".")[0]) for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.lineno, node.module.split(".")[0]
        elif isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str):
            f = node.func
            name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
            if name in ("import_module", "__import__"):
                yield node.lineno, node.args[0].value.split(".")[0]


def _doctest_imports(source):
    """The same for the import lines of the docstring examples (they run in test_doctests_library.py)."""
    for lineno, line in enumerate(source.splitlines(), 1):
        m = re.match(r"\s*>>>\s+((?:import|from)\s.*)$", line)
        if m:
            try:
                tree = ast.parse(m.group(1).split(";")[0])
            except SyntaxError:
                continue
            yield from ((lineno, name) for _, name in _imports(tree))


def test_no_module_of_the_library_imports_the_paper_or_a_study_dependency():
    files = sorted(LIBRARY.rglob("*.py"))
    assert len(files) >= 10 and LIBRARY / "__init__.py" in files
    found = []
    for path in files:
        source = path.read_text()
        for lineno, name in [*_imports(ast.parse(source, str(path))), *_doctest_imports(source)]:
            if name in BLOCKED:
                found.append(f"{path.relative_to(ROOT)}:{lineno} imports {name}")
    assert not found, "the library must need torch (and tqdm) alone:\n" + "\n".join(found)


def test_the_scan_sees_imports_inside_functions_and_by_name():
    src = "def f():\n    import numpy.linalg\n    from scipy import stats\n    return importlib.import_module('PIL')\n"
    assert {name for _, name in _imports(ast.parse(src))} == {"numpy", "scipy", "PIL"}
    assert [name for _, name in _doctest_imports("    >>> import torch, sklearn\n")] == ["torch", "sklearn"]


# A fresh interpreter imports torch first (it may import numpy itself: those modules are torch's, and the scan above
# covers the library's own imports of them); every other blocked package is then made absent as if not installed:
# sys.modules[name] = None, so importing it raises ModuleNotFoundError and importlib.util.find_spec gives None (a
# meta-path finder that raised instead would break torch, whose torch._dynamo probes third-party packages with
# find_spec when an optimizer is built). A watch on __import__ records any import of them by the library's modules,
# an optional one caught by try/except included. The library must import, work, and attempt none of them.
PROBE = r"""
import builtins, importlib, json, pkgutil, sys, tempfile
from pathlib import Path

import torch

BLOCKED = set(sys.argv[1].split(","))
before = set(sys.modules)
torch_loaded = sorted(BLOCKED & {m.split(".")[0] for m in before})
hidden = BLOCKED - set(torch_loaded)
for name in hidden:
    sys.modules[name] = None
attempts = []
real_import = builtins.__import__


def watched_import(name, globals=None, locals=None, fromlist=(), level=0):
    importer = (globals or {}).get("__name__") or ""
    if level == 0 and name.split(".")[0] in BLOCKED and importer.split(".")[0] == "amnesiac":
        attempts.append(f"{importer} imports {name}")
    return real_import(name, globals, locals, fromlist, level)


builtins.__import__ = watched_import

import amnesiac

modules = sorted(m.name for m in pkgutil.walk_packages(amnesiac.__path__, "amnesiac."))
for name in modules:
    importlib.import_module(name)

torch.manual_seed(0)
gen = torch.Generator().manual_seed(0)
data = amnesiac.ArrayDataset(torch.randn(24, 1, 6, 6, generator=gen), torch.arange(24) % 3, torch.arange(24))
model = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.ReLU(), torch.nn.Flatten(), torch.nn.Linear(64, 3))
groups = amnesiac.groups_by_class(data)
log = amnesiac.DeltaLog(model, groups)
amnesiac.train(model, data.loader(8, seed=0), torch.optim.Adam(model.parameters(), lr=0.01), epochs=2,
               delta_log=log, progress=True)
folder = Path(tempfile.mkdtemp())
request = amnesiac.Request(forget_groups=("class1",))
new = amnesiac.unlearn("amnesiac", model, request, log=log, alpha=0.5)
again = amnesiac.load_ledger(amnesiac.save_ledger(folder / "ledger.pt", log), amnesiac.DeltaLog(model, groups))
assert torch.equal(again.delta_vector(["class1"]), log.delta_vector(["class1"]))
record = amnesiac.RequestRecord(folder / "requests.jsonl")
served = record.serve(model, request, log=again, alpha=0.5)
assert torch.equal(amnesiac.ParamLayout.of(new).vector(new), amnesiac.ParamLayout.of(served).vector(served))
assert record.forgotten() == {"class1": 0}

new_blocked = sorted(m for m, mod in sys.modules.items()
                     if m not in before and mod is not None and m.split(".")[0] in hidden)
print(json.dumps({"file": amnesiac.__file__, "modules": modules, "torch_loaded": torch_loaded,
                  "new_blocked": new_blocked, "attempts": sorted(set(attempts))}))
"""


def test_the_library_imports_and_works_with_the_paper_and_study_dependencies_unimportable(tmp_path):
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
           "AMNESIAC_DEVICE": "cpu", "OMP_NUM_THREADS": "2"}
    proc = subprocess.run([sys.executable, "-c", PROBE, ",".join(BLOCKED)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert Path(out["file"]).resolve() == (LIBRARY / "__init__.py").resolve()  # this checkout's library
    expected = {f"amnesiac.{p.stem}" for p in LIBRARY.glob("*.py") if p.stem != "__init__"}
    assert expected <= set(out["modules"])  # every module was imported
    assert out["new_blocked"] == [] and out["attempts"] == [], out


def test_the_distribution_needs_torch_and_tqdm_alone_and_packages_the_library_alone():
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        tomllib = pytest.importorskip("tomli")
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    deps = meta["project"]["dependencies"]
    names = sorted(re.match(r"[A-Za-z0-9_.-]+", d.strip()).group(0).lower() for d in deps)
    assert names == ["torch", "tqdm"], deps
    find = meta["tool"]["setuptools"]["packages"]["find"]
    include = find["include"]
    assert "amnesiac" in include and find.get("where", ["."]) == ["."]
    for name in ("amnesiac", "amnesiac.grads"):
        assert any(fnmatch.fnmatchcase(name, p) for p in include), (name, include)
    for name in ("amnesiac_paper", "amnesiac_paper.book", "paper", "tests", "tools", "examples"):
        assert not any(fnmatch.fnmatchcase(name, p) for p in include), (name, include)
