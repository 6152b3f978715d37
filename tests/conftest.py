"""Shared tiny fixtures: seeded synthetic data and small models, float64 where exactness is claimed."""

import os

import pytest
import torch

# Tests compare tensors with CPU tensors: keep device="auto" on the CPU even on a machine with a GPU (the
# chapters executed by papermill inherit this too). The CUDA tests in test_cuda.py ask for "cuda" explicitly.
os.environ.setdefault("AMNESIAC_DEVICE", "cpu")

import amnesiac  # noqa: E402

torch.set_num_threads(2)


def tiny_dataset(n=40, classes=4, size=8, channels=1, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, channels, size, size, generator=gen, dtype=torch.float64)
    y = torch.randint(0, classes, (n,), generator=gen)
    return amnesiac.ArrayDataset(x, y, torch.arange(n), "tiny")


def tiny_model(seed=0, classes=4, channels=1, dtype=torch.float64):
    torch.manual_seed(seed)
    return amnesiac.SimpleModel(channels, classes, width=6).to(dtype)


def flat(model):
    return amnesiac.ParamLayout.of(model).vector(model)


@pytest.fixture
def data():
    return tiny_dataset()


@pytest.fixture
def model():
    return tiny_model()
