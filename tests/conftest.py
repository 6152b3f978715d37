"""Shared fixtures and the session's settings; the helpers the test files import live in helpers.py."""

import os

import pytest
import torch

# Tests compare tensors with CPU tensors: keep device="auto" on the CPU even on a machine with a GPU (the
# chapters executed by papermill inherit this too). The CUDA tests in test_cuda.py ask for "cuda" explicitly.
os.environ.setdefault("AMNESIAC_DEVICE", "cpu")

from helpers import tiny_dataset, tiny_model  # noqa: E402

torch.set_num_threads(2)


@pytest.fixture
def data():
    return tiny_dataset()


@pytest.fixture
def model():
    return tiny_model()
