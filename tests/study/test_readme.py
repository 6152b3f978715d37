"""The library's Python examples in the README run as written, in order in one namespace, as a reader pastes them
(test_readme_library.py checks the quick start's numbers; test_quickstart.py runs the paper's MNIST quick start)."""

import re

import pytest
from helpers import README

import amnesiac


def _blocks(start: str, end: str) -> list[str]:
    text = README.read_text()
    section = text[text.index(start): text.index(end)]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


@pytest.mark.slow  # trains twice on 3000 samples; test_readme_library.py runs the quick start in the fast loop
def test_the_librarys_python_blocks_run_in_order(capsys):
    blocks = _blocks("## The library", "## The paper")
    assert len(blocks) >= 3  # the quick start, the hand-written loop, the request record
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    out = capsys.readouterr().out  # the quick start printed its table: the original model, then each alpha
    assert "class 3" in out and "\noriginal " in out and "\nalpha = 0.5 " in out and "\nalpha = 1 " in out
    opt, log = namespace["opt"], namespace["log"]
    assert isinstance(opt, amnesiac.AttributedOptimizer) and opt.closed
    assert log.steps == len(namespace["loader"]) and log.delta_vector(["class3"]).abs().max() > 0
    assert namespace["record"].forgotten() == {"class3": 0}  # the request served after training was recorded
