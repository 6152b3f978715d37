"""Exact unlearning by rewinding: checkpoints and first uses recorded during training, then replay without the data.

A :class:`RewindRecord` attached to :func:`amnesiac.train` (``on_batch=record``) keeps the model's and the
optimizer's state (and torch's random state) every ``every`` batches and, per sample, the position of the first
batch that held it. A request for a forget set F rewinds to the last checkpoint taken before any sample of F was
first used and replays the rest of training without F (:func:`rewind_unlearn`): every step before that
checkpoint never saw F, so the result is the dropped replay, retraining with the same seed and batch order, bit
for bit on the CPU. Its cost is the part of training after the rewind point: near a full retrain when F's samples
are used early (random order: some sample of any sizeable F is in the first batches), small when F arrived late
(a last fine-tuning stage, the last epoch).

Example:
    >>> import torch, amnesiac
    >>> from torch import nn
    >>> data = amnesiac.ArrayDataset(torch.randn(32, 4), torch.arange(32) % 2, torch.arange(32))
    >>> def fresh():
    ...     torch.manual_seed(0)
    ...     model = nn.Linear(4, 2)
    ...     return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    >>> model, opt = fresh()
    >>> record = RewindRecord(model, opt, every=2)
    >>> _ = amnesiac.train(model, data.loader(8, seed=1), opt, epochs=2, on_batch=record, progress=False)
    >>> model2, opt2 = fresh()
    >>> out = rewind_unlearn(model2, opt2, data.loader(8, seed=1), record, [5, 9], epochs=2)
    >>> retrained, ropt = fresh()
    >>> _ = amnesiac.train(retrained, data.loader(8, seed=1), ropt, epochs=2, drop_ids=[5, 9], progress=False)
    >>> all(torch.equal(a, b) for a, b in zip(model2.parameters(), retrained.parameters()))
    True
"""

from __future__ import annotations

import copy
import io
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import torch
from torch import nn
from torch.optim import Optimizer

from .training import train
from .unlearning import Request, register


@dataclass(frozen=True)
class Checkpoint:
    """The state after ``position + 1`` batches (``position = -1``: before training)."""

    position: int
    blob: bytes  # torch.save of {"model", "optimizer", "rng"}

    @property
    def nbytes(self) -> int:
        return len(self.blob)


class RewindRecord:
    """Checkpoints every ``every`` batches and each sample's first use, recorded during :func:`amnesiac.train`.

    Build it on the model and optimizer about to be trained (their state is the first checkpoint) and pass it as
    ``train(..., on_batch=record)``. Checkpoints are kept in memory, serialised (``nbytes`` says how much).

    Args:
        model: the model about to be trained.
        optimizer: its optimizer, with no step taken yet.
        every: take a checkpoint after every ``every`` batches.
    """

    def __init__(self, model: nn.Module, optimizer: Optimizer, *, every: int):
        if int(every) < 1:
            raise ValueError(f"every must be >= 1 (batches between checkpoints), got {every}")
        self.every = int(every)
        self.first_use: dict[int, int] = {}
        self.checkpoints: list[Checkpoint] = [self._snapshot(-1, model, optimizer)]
        self.batches = 0

    @staticmethod
    def _snapshot(position: int, model: nn.Module, optimizer: Optimizer) -> Checkpoint:
        buf = io.BytesIO()
        torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state()},
                   buf)  # serialised at once: later steps cannot change it
        return Checkpoint(position, buf.getvalue())

    def __call__(self, position: int, sample_ids: torch.Tensor, model: nn.Module, optimizer: Optimizer) -> None:
        if position != self.batches:
            raise RuntimeError(f"the record saw {self.batches} batches but train() reports position {position}: "
                               "attach a record to one training run from its start")
        for i in sample_ids.reshape(-1).tolist():
            self.first_use.setdefault(int(i), position)
        self.batches += 1
        if self.batches % self.every == 0:
            self.checkpoints.append(self._snapshot(position, model, optimizer))

    @property
    def nbytes(self) -> int:
        """Bytes held by the checkpoints (the first-use table aside)."""
        return sum(c.nbytes for c in self.checkpoints)

    def rewind_point(self, forget_ids: Iterable[int]) -> Checkpoint:
        """The last checkpoint taken before the first use of any of ``forget_ids`` (ids never used rewind
        nowhere: the last checkpoint)."""
        used = [self.first_use[int(i)] for i in forget_ids if int(i) in self.first_use]
        first = min(used) if used else self.batches
        return max((c for c in self.checkpoints if c.position < first), key=lambda c: c.position)


def rewind_unlearn(model: nn.Module, optimizer: Optimizer, loader, record: RewindRecord,
                   forget_ids: Sequence[int] | torch.Tensor, *, epochs: int, **train_kwargs) -> dict:
    """Exact unlearning: load ``record``'s rewind point for ``forget_ids`` into ``model`` and ``optimizer`` (built
    like the originals) and replay the rest of training without them (``drop_ids``), with a loader built like the
    original's (same dataset, batch size and seed). Returns the position rewound to and the fraction of the
    training's batches replayed (the cost, relative to retraining from scratch).

    Raises:
        ValueError: the record saw a different number of batches than ``epochs`` passes over ``loader`` make.
    """
    total = epochs * len(loader)
    if total != record.batches:
        raise ValueError(f"the record saw {record.batches} batches, {epochs} epochs of this loader make {total}: "
                         "replay with the original's loader and epochs")
    ids = torch.as_tensor(forget_ids, dtype=torch.long).reshape(-1)
    point = record.rewind_point(ids.tolist())
    state = torch.load(io.BytesIO(point.blob), weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    train_kwargs.setdefault("progress", False)
    train(model, loader, optimizer, epochs=epochs, drop_ids=ids, skip_batches=point.position + 1, **train_kwargs)
    replayed = total - (point.position + 1)
    return {"position": point.position, "replayed_batches": replayed, "fraction": replayed / total}


def replayed_fraction(record: RewindRecord, forget_ids: Iterable[int]) -> float:
    """The fraction of the training's batches a request for ``forget_ids`` replays (its cost against a full
    retrain), read from the record without replaying anything."""
    point = record.rewind_point([int(i) for i in forget_ids])
    return (record.batches - (point.position + 1)) / record.batches


@register("rewind")
def _rewind(model: nn.Module, request: Request, *, record: RewindRecord | None = None, loader=None,
            progress: bool = False) -> nn.Module:
    """Rewind and replay (:func:`rewind_unlearn`) as a registered method: a copy of ``model`` and an optimizer from
    ``request.recipe`` (built as the original's was) restore the record's rewind point for ``request.forget``'s ids
    and replay the recipe's epochs of ``loader`` (the original's) without them. ``model`` is left as it was."""
    request.need("forget", "recipe", method="rewind")
    if not isinstance(record, RewindRecord) or loader is None:
        raise TypeError("method 'rewind' needs record=<the RewindRecord of the original's training> and "
                        "loader=<the original's loader>")
    new = copy.deepcopy(model)
    opt = request.recipe.make_optimizer(new.parameters())
    rewind_unlearn(new, opt, loader, record, request.forget.ids, epochs=request.recipe.epochs, progress=progress)
    return new
