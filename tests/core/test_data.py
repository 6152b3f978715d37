"""The library's data: ArrayDataset and its seeded loader, forget sets, splits and groups."""

import pytest
import torch

import amnesiac
from amnesiac import data as D


def fake(n=50, classes=10):
    return amnesiac.ArrayDataset(torch.zeros(n, 1, 2, 2), torch.arange(n) % classes, torch.arange(n) + 100, "fake")


def test_test_views_split_the_forgotten_class_from_the_rest():
    ds = fake()
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
