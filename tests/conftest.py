"""Shared tiny fixtures: seeded synthetic data and small models, float64 where exactness is claimed."""

import os

import pytest
import torch

# Tests compare tensors with CPU tensors: keep device="auto" on the CPU even on a machine with a GPU (the
# chapters executed by papermill inherit this too). The CUDA tests in test_cuda.py ask for "cuda" explicitly.
os.environ.setdefault("AMNESIAC_DEVICE", "cpu")

import amnesiac_paper  # noqa: E402

import amnesiac  # noqa: E402

torch.set_num_threads(2)


def tiny_dataset(n=40, classes=4, size=8, channels=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return amnesiac.ArrayDataset(x, y, torch.arange(n), "tiny")


def tiny_model(seed=0, classes=4, channels=1, dtype=torch.float64):
    torch.manual_seed(seed)
    return amnesiac_paper.SimpleModel(channels, classes, width=6).to(dtype)


def attributed_loop(model, opt, loader, *, epochs=None, start=0, stop=None, scheduler=None):
    """The loop a reader writes around AttributedOptimizer (cross-entropy, a scheduler stepped per batch): global
    steps ``start..stop-1`` (default: ``epochs`` whole epochs) of a seeded loader, whose epoch e's order depends
    only on e, so a loop interrupted at any step and resumed replays the same batches."""
    per_epoch = len(loader)
    stop = epochs * per_epoch if stop is None else stop
    step, skip = start, start % per_epoch
    loader.epoch = start // per_epoch
    while step < stop:
        for i, (x, y, ids) in enumerate(loader):
            if i < skip:
                continue
            if step >= stop:
                return
            opt.zero_grad()
            opt.set_batch(ids)
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.step()
            if scheduler is not None:
                scheduler.step()
            step += 1
        skip = 0


def flat(model):
    return amnesiac.ParamLayout.of(model).vector(model)


@pytest.fixture
def data():
    return tiny_dataset()


@pytest.fixture
def model():
    return tiny_model()
