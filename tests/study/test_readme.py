"""The README's Python examples run as written (on a small MNIST-shaped stand-in for the data)."""

import re
from pathlib import Path

import torch

import amnesiac

README = Path(__file__).resolve().parents[2] / "README.md"


def _fake(split):
    n = 256 if split == "train" else 128
    gen = torch.Generator().manual_seed(0 if split == "train" else 1)
    x = torch.randn(n, 1, 28, 28, generator=gen)
    y = torch.arange(n) % 10
    return amnesiac.ArrayDataset(x, y, torch.arange(n), f"mnist-{split}")


def test_readme_python_blocks_run(monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2  # the quick start and the hand-written loop
    monkeypatch.setattr(amnesiac, "load_dataset", lambda name, split, **kw: _fake(split))
    namespace: dict = {}
    for code in blocks:
        exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - the README's own code
    out = capsys.readouterr().out  # the quick start printed its table: the original model, then each alpha
    assert "test 3s" in out and "\noriginal " in out and "\nalpha = 0.01 " in out and "\nalpha = 1 " in out
    opt, log = namespace["opt"], namespace["log"]
    assert isinstance(opt, amnesiac.AttributedOptimizer) and opt.closed
    assert log.steps == len(namespace["loader"]) and log.delta_vector(["class3"]).abs().max() > 0
    assert namespace["record"].forgotten() == {"class3": 0}  # the request served after training was recorded
