"""The paper's datasets and models: loading from the real on-disk formats (tiny files made here), the Graves
setting, and the model builder."""

import pickle

import amnesiac_paper
import numpy as np
import pytest
import torch
from helpers import tiny_model, write_fake_mnist

import amnesiac


def write_fake_cifar100(root, n=12):
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        d = {
            "filenames": [f"{i}.png" for i in range(n)],
            "batch_label": split,
            "fine_labels": [i % 100 for i in range(n)],
            "coarse_labels": [i % 20 for i in range(n)],
            "data": rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        }
        with open(folder / split, "wb") as f:
            pickle.dump(d, f, protocol=2)
    meta = {"fine_label_names": [f"c{i}" for i in range(100)], "coarse_label_names": [f"s{i}" for i in range(20)]}
    with open(folder / "meta", "wb") as f:
        pickle.dump(meta, f, protocol=2)


def test_load_mnist_from_local_root(tmp_path, monkeypatch):
    write_fake_mnist(tmp_path)
    monkeypatch.setenv("AMNESIAC_DATA", str(tmp_path))
    train = amnesiac_paper.load_dataset("mnist", "train", download=False)
    assert train.x.shape == (30, 1, 28, 28) and train.x.dtype == torch.float32
    assert float(train.x.min()) >= -1 and float(train.x.max()) <= 1
    assert torch.equal(train.ids, torch.arange(30))
    assert torch.equal(train.y, torch.arange(30) % 10)


def test_load_cifar100_in_the_pickle_format(tmp_path, monkeypatch):
    write_fake_cifar100(tmp_path)
    import torchvision.datasets.cifar as cifar

    monkeypatch.setattr(cifar, "check_integrity", lambda *a, **k: True)  # tiny files cannot match the md5
    test = amnesiac_paper.load_dataset("cifar100", "test", root=tmp_path, download=False)
    assert test.x.shape == (12, 3, 32, 32)
    assert test.y.tolist() == list(range(12))


def test_missing_dataset_is_a_clear_error(tmp_path):
    with pytest.raises(amnesiac_paper.DatasetUnavailable, match="AMNESIAC_DATA"):
        amnesiac_paper.load_dataset("cifar100", "train", root=tmp_path, download=False)
    assert not amnesiac_paper.dataset_available("cifar100", root=tmp_path)
    with pytest.raises(ValueError, match="valid datasets"):
        amnesiac_paper.load_dataset("imagenet")


def test_graves_setting_keeps_only_the_first_threes():
    ds = amnesiac.ArrayDataset(torch.zeros(50, 1, 2, 2), torch.arange(50) % 10, torch.arange(50) + 100, "fake")
    g = amnesiac_paper.graves_mnist(ds, forget_class=3, keep=2)
    threes = g.ids[g.y == 3].tolist()
    assert threes == [103, 113]
    assert len(g) == 50 - 3


def test_models_build_and_reject_bad_names():
    assert amnesiac_paper.build_model("simple", 1, 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert amnesiac_paper.build_model("resnet18", 3, 100, stem="cifar")(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ValueError, match="valid models"):
        amnesiac_paper.build_model("vgg", 1, 10)


def test_the_suites_tiny_model_is_simple_model_bit_for_bit():
    """tests/helpers.py rebuilds SimpleModel so the library's tests need no paper package: the same names and,
    from the same seed, the same parameters."""
    torch.manual_seed(3)
    want = amnesiac_paper.SimpleModel(2, 5, width=6).double().state_dict()
    got = tiny_model(seed=3, classes=5, channels=2).state_dict()
    assert list(got) == list(want)
    assert all(torch.equal(got[k], want[k]) for k in want)
