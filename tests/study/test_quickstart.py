"""The README's quick start on the real MNIST prints what the README says it prints, and examples/quickstart.py
(the same script with timings) prints the same table."""

import re
import runpy
from pathlib import Path

import amnesiac_paper
import pytest
from helpers import README, fake_mnist

ROOT = Path(__file__).resolve().parents[2]
ROW = re.compile(r"^(original|alpha = \S+) +(\d\.\d{3}) +(\d\.\d{3})$", flags=re.M)
# the README's "Expected:" sentence, phrase by phrase; each phrase is checked below, on the numbers
EXPECTED = ("the original model scores above 0.95 on both", "at alpha = 0.01 the test 3s fall below 0.05",
            "rest stays above 0.95", "at alpha = 1 the rest falls below 0.2")


def _section() -> str:
    text = README.read_text()
    return text[text.index("### Quick start on MNIST"):]


def _quick_start() -> str:
    return re.findall(r"```python\n(.*?)```", _section(), flags=re.S)[0]


def _table(out: str) -> dict[str, tuple[float, float]]:
    return {name: (float(f), float(r)) for name, f, r in ROW.findall(out)}


@pytest.mark.slow  # one epoch on the whole of MNIST
def test_the_quick_start_on_mnist_prints_the_ranges_the_readme_states(capsys):
    """About a minute on 2 CPU cores: one epoch of SimpleModel with a class log on the whole MNIST training set."""
    try:
        amnesiac_paper.load_dataset("mnist", "test", download=False)
    except amnesiac_paper.DatasetUnavailable:
        pytest.skip(f"the real MNIST is not under {amnesiac_paper.data_root()} (set AMNESIAC_DATA to a folder holding "
                    "MNIST/raw, as .ci/run does)")
    exec(compile(_quick_start(), str(README), "exec"), {})  # noqa: S102 - the README's own code
    out = capsys.readouterr().out
    table = _table(out)
    assert set(table) == {"original", "alpha = 0.01", "alpha = 1"}, out
    readme = " ".join(_section().split())
    assert all(phrase in readme for phrase in EXPECTED)
    (orig_f, orig_r), (f, r), (_, r1) = table["original"], table["alpha = 0.01"], table["alpha = 1"]
    assert orig_f > 0.95 and orig_r > 0.95, out
    assert f < 0.05 and r > 0.95, out
    assert r1 < 0.2, out


@pytest.mark.slow  # trains the full-width SimpleModel twice (README and example)
def test_the_example_prints_the_quick_starts_table(monkeypatch, capsys):
    """examples/quickstart.py trains and forgets as the README's code does (on a small MNIST-shaped stand-in)."""
    monkeypatch.setattr(amnesiac_paper, "load_dataset", lambda name, split, **kw: fake_mnist(split))
    exec(compile(_quick_start(), str(README), "exec"), {})  # noqa: S102 - the README's own code
    readme = capsys.readouterr().out
    runpy.run_path(str(ROOT / "examples" / "quickstart.py"), run_name="__main__")
    example = capsys.readouterr().out
    assert len(_table(readme)) == 3 and _table(example) == _table(readme)
    header = [line for line in readme.splitlines() if "test 3s" in line]
    assert len(header) == 1 and header[0] in example.splitlines()
