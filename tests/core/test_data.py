"""Data loading from the real on-disk formats (tiny files made here), splits, groups and loaders."""

import gzip
import pickle
import struct

import amnesiac_paper
import numpy as np
import pytest
import torch

import amnesiac
from amnesiac import data as D


def write_fake_mnist(root, n_train=30, n_test=10):
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True)
    rng = np.random.default_rng(0)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        for kind, header, arr in (
            ("images-idx3-ubyte", struct.pack(">IIII", 2051, n, 28, 28), images),
            ("labels-idx1-ubyte", struct.pack(">II", 2049, n), labels),
        ):
            payload = header + arr.tobytes()
            (raw / f"{prefix}-{kind}").write_bytes(payload)
            with gzip.open(raw / f"{prefix}-{kind}.gz", "wb") as f:
                f.write(payload)


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
    assert not D.dataset_available("cifar100", root=tmp_path)
    with pytest.raises(ValueError, match="valid datasets"):
        amnesiac_paper.load_dataset("imagenet")


def fake(n=50, classes=10):
    return amnesiac.ArrayDataset(torch.zeros(n, 1, 2, 2), torch.arange(n) % classes, torch.arange(n) + 100, "fake")


def test_graves_setting_keeps_only_the_first_threes():
    ds = fake()
    g = amnesiac_paper.graves_mnist(ds, forget_class=3, keep=2)
    threes = g.ids[g.y == 3].tolist()
    assert threes == [103, 113]
    assert len(g) == 50 - 3
    forgotten, rest = amnesiac.test_views(ds, 3)
    assert (forgotten.y == 3).all() and (rest.y != 3).all() and len(forgotten) + len(rest) == 50


def test_splits_and_groups():
    ds = fake()
    r1, r2 = amnesiac.random_ids(ds, 0.1, seed=1), amnesiac.random_ids(ds, 0.1, seed=1)
    assert torch.equal(r1, r2) and len(r1) == 5
    assert not torch.equal(r1, amnesiac.random_ids(ds, 0.1, seed=2))
    retain = ds.without(r1)
    assert len(retain) == 45 and not torch.isin(retain.ids, r1).any()
    assert torch.equal(ds.subset(r1).ids, r1)
    with pytest.raises(KeyError, match="not in dataset"):
        ds.subset([1])
    users = amnesiac.groups_by_user(ds.ids, 7, seed=0)
    assert sorted(torch.cat(list(users.values())).tolist()) == ds.ids.tolist()
    with pytest.raises(ValueError, match="valid classes"):
        amnesiac.class_ids(ds, 10)
    with pytest.raises(ValueError, match="repeat"):
        D.explicit_ids(ds, [100, 100])


def test_loader_is_seeded_and_epochs_differ():
    ds = fake()
    a = [b[2].tolist() for b in ds.loader(8, seed=3)]
    b = [b[2].tolist() for b in ds.loader(8, seed=3)]
    assert a == b
    loader = ds.loader(8, seed=3)
    e0, e1 = [x[2].tolist() for x in loader], [x[2].tolist() for x in loader]
    assert e0 != e1 and sorted(sum(e0, [])) == sorted(sum(e1, [])) == ds.ids.tolist()


def test_models_build_and_reject_bad_names():
    assert amnesiac_paper.build_model("simple", 1, 10)(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    assert amnesiac_paper.build_model("resnet18", 3, 100, stem="cifar")(torch.zeros(1, 3, 32, 32)).shape == (1, 100)
    with pytest.raises(ValueError, match="valid models"):
        amnesiac_paper.build_model("vgg", 1, 10)
