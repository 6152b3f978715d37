"""Data with sample ids: in-memory datasets, a seeded batch loader, forget sets and groups.

Every dataset here yields ``(x, y, sample_ids)``: the ids are indices into the original dataset and travel
with the samples through shuffling, batching and subsetting, so a delta log can attribute each row of a batch
to the sample it came from. (Loading MNIST and CIFAR-100 is the paper's: :mod:`amnesiac_paper.datasets`.)
"""

from __future__ import annotations

import operator
from collections.abc import Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class ArrayDataset:
    """Images, labels and sample ids held as tensors: ``x`` [N, C, H, W] float, ``y`` [N] long, ``ids`` [N] long."""

    x: torch.Tensor
    y: torch.Tensor
    ids: torch.Tensor
    name: str = ""

    def __post_init__(self):
        if not (len(self.x) == len(self.y) == len(self.ids)):
            raise ValueError(f"x, y and ids differ in length: {len(self.x)}, {len(self.y)}, {len(self.ids)}")

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return self.x[i], self.y[i], self.ids[i]

    def subset(self, sample_ids: Sequence[int] | torch.Tensor, *, name: str | None = None) -> ArrayDataset:
        """The samples with these ids, in the order given. Unknown ids raise ``KeyError``."""
        pos = self.positions(sample_ids)
        return ArrayDataset(self.x[pos], self.y[pos], self.ids[pos], name if name is not None else self.name)

    def without(self, sample_ids: Sequence[int] | torch.Tensor, *, name: str | None = None) -> ArrayDataset:
        """All samples except these ids (the retain set when given the forget ids)."""
        drop = torch.isin(self.ids, torch.as_tensor(sample_ids, dtype=torch.long))
        keep = ~drop
        return ArrayDataset(self.x[keep], self.y[keep], self.ids[keep], name if name is not None else self.name)

    def positions(self, sample_ids: Sequence[int] | torch.Tensor) -> torch.Tensor:
        """Row positions of the given sample ids."""
        want = torch.as_tensor(sample_ids, dtype=torch.long).reshape(-1)
        order = torch.argsort(self.ids)
        sorted_ids = self.ids[order]
        where = torch.searchsorted(sorted_ids, want).clamp(max=max(len(sorted_ids) - 1, 0))
        found = sorted_ids[where] == want if len(sorted_ids) else torch.zeros_like(want, dtype=torch.bool)
        if not bool(found.all()):
            missing = want[~found][:10].tolist()
            raise KeyError(f"sample ids not in dataset {self.name!r}: {missing} (showing up to 10)")
        return order[where]

    def relabel(self, sample_ids: torch.Tensor, labels: torch.Tensor) -> ArrayDataset:
        """A copy where the given samples carry new labels."""
        y = self.y.clone()
        y[self.positions(sample_ids)] = labels
        return ArrayDataset(self.x, y, self.ids, self.name)

    def loader(self, batch_size: int, *, shuffle: bool = True, seed: int = 0) -> BatchLoader:
        """A seeded batch iterator over this dataset (see :class:`BatchLoader`)."""
        return BatchLoader(self, batch_size, shuffle=shuffle, seed=seed)


class BatchLoader:
    """Yields ``(x, y, sample_ids)`` batches; each epoch's order comes from ``seed`` and the epoch number.

    Iterating twice gives two different epochs (epoch 0, then 1, ...), exactly reproducible from the seed.

    Example:
        >>> ds = ArrayDataset(torch.zeros(5, 1, 2, 2), torch.zeros(5, dtype=torch.long), torch.arange(5))
        >>> [len(b[2]) for b in ds.loader(2, shuffle=False)]
        [2, 2, 1]
    """

    def __init__(self, dataset: ArrayDataset, batch_size: int, *, shuffle: bool = True, seed: int = 0):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError(f"dataset {dataset.name!r} is empty: nothing to iterate")
        self.dataset, self.batch_size, self.shuffle, self.seed = dataset, batch_size, shuffle, seed
        self.epoch = 0

    def __len__(self) -> int:
        return -(-len(self.dataset) // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        n = len(self.dataset)
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
            order = torch.randperm(n, generator=gen)
        else:
            order = torch.arange(n)
        self.epoch += 1
        ds = self.dataset
        for start in range(0, n, self.batch_size):
            rows = order[start : start + self.batch_size]
            yield ds.x[rows], ds.y[rows], ds.ids[rows]


# ----------------------------------------------------------------------------------------------- loading


# ----------------------------------------------------------------------------------------- forget sets


def class_ids(dataset: ArrayDataset, cls: int) -> torch.Tensor:
    """Sample ids of one class."""
    _check_class(dataset, cls)
    return dataset.ids[dataset.y == cls].clone()


def random_ids(dataset: ArrayDataset, fraction: float, *, seed: int) -> torch.Tensor:
    """A seeded random ``fraction`` of the dataset's sample ids (at least one), sorted."""
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    n = max(1, round(fraction * len(dataset)))
    gen = torch.Generator().manual_seed(seed)
    return torch.sort(dataset.ids[torch.randperm(len(dataset), generator=gen)[:n]]).values


def explicit_ids(dataset: ArrayDataset, sample_ids: Sequence[int]) -> torch.Tensor:
    """Validated explicit sample ids (each must be in the dataset, no repeats)."""
    ids = torch.as_tensor(sample_ids, dtype=torch.long).reshape(-1)
    if len(torch.unique(ids)) != len(ids):
        raise ValueError("sample ids repeat; give each sample once")
    dataset.positions(ids)  # raises KeyError naming unknown ids
    return ids


def test_views(test: ArrayDataset, forget_class: int) -> tuple[ArrayDataset, ArrayDataset]:
    """The test set split into (the forgotten class, the rest)."""
    _check_class(test, forget_class)
    mask = test.y == forget_class
    forgotten = ArrayDataset(test.x[mask], test.y[mask], test.ids[mask], f"{test.name}-class{forget_class}")
    rest = ArrayDataset(test.x[~mask], test.y[~mask], test.ids[~mask], f"{test.name}-rest")
    return forgotten, rest


def _check_class(dataset: ArrayDataset, cls: int) -> None:
    n_classes = int(dataset.y.max()) + 1 if len(dataset) else 0
    if not (_is_index(cls) and 0 <= operator.index(cls) < max(n_classes, 1)):
        raise ValueError(f"class {cls!r} out of range for {dataset.name!r}: valid classes are 0..{n_classes - 1}")


# ----------------------------------------------------------------------------------------------- groups


def class_group(c: int) -> str:
    """The group name of class ``c`` in :func:`groups_by_class`: ``"class3"``. Name a class's group with it, not by
    retyping the string; masked logs seed each group's mask from its name (:func:`amnesiac.deltalog.group_seed`).

    Example:
        >>> class_group(3)
        'class3'
    """
    return f"class{int(c)}"


def groups_by_class(dataset: ArrayDataset, classes: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
    """One group per class (``class_group(3)`` -> ids); all classes present if ``classes`` is None."""
    classes = sorted(set(dataset.y.tolist())) if classes is None else list(classes)
    return {class_group(c): class_ids(dataset, c) for c in classes}


def groups_per_sample(sample_ids: Sequence[int] | torch.Tensor) -> dict[int, torch.Tensor]:
    """One group per sample, named by its id."""
    ids = torch.as_tensor(sample_ids, dtype=torch.long).reshape(-1)
    return {int(i): ids[k : k + 1] for k, i in enumerate(ids)}


def groups_by_user(sample_ids: Sequence[int] | torch.Tensor, n_users: int, *, seed: int) -> dict[str, torch.Tensor]:
    """Split samples into ``n_users`` seeded random "users" of near-equal size (``"user0"``, ...)."""
    ids = torch.as_tensor(sample_ids, dtype=torch.long).reshape(-1)
    if not 1 <= n_users <= len(ids):
        raise ValueError(f"n_users must be in 1..{len(ids)}, got {n_users}")
    gen = torch.Generator().manual_seed(seed)
    perm = ids[torch.randperm(len(ids), generator=gen)]
    return {f"user{u}": torch.sort(chunk).values for u, chunk in enumerate(torch.tensor_split(perm, n_users))}


def normalise_groups(
    groups: Mapping[Hashable, Sequence[int] | torch.Tensor],
) -> tuple[list, torch.Tensor, torch.Tensor]:
    """Validate a group mapping: returns (names, member ids, group index of each member).

    A sample may belong to one group only; a group must not be empty.
    """
    names, ids, owner = [], [], []
    for g, (name, members) in enumerate(groups.items()):
        m = torch.as_tensor(members, dtype=torch.long).reshape(-1)
        if m.numel() == 0:
            raise ValueError(f"group {name!r} has no samples")
        names.append(name)
        ids.append(m)
        owner.append(torch.full_like(m, g))
    if not names:
        raise ValueError("no groups given: pass a mapping of group name -> sample ids")
    all_ids, all_owner = torch.cat(ids), torch.cat(owner)
    if bool((all_ids < 0).any()):
        bad = [n for n, m in zip(names, ids) if bool((m < 0).any())]
        raise ValueError(
            f"sample ids must be non-negative dataset indices; group(s) {bad[:5]} hold "
            f"{all_ids[all_ids < 0][:5].tolist()}"
        )
    uniq, counts = torch.unique(all_ids, return_counts=True)
    if bool((counts > 1).any()):
        raise ValueError(
            f"samples belong to more than one group: {uniq[counts > 1][:10].tolist()}; "
            "each sample may be in one group only"
        )
    return names, all_ids, all_owner


def _is_index(value) -> bool:
    """Whether ``value`` is an integer (a Python or NumPy integer, not a bool or a float)."""
    if isinstance(value, bool):
        return False
    try:
        operator.index(value)
    except TypeError:
        return False
    return True
