"""The ledger protocol: what every log shares (its group table and its read-out), whatever it stores.

A *ledger* records, during training, something per group from which a group's contribution can later be
subtracted: :class:`~amnesiac.DeltaLog` keeps each group's exact share of every update, and
:class:`~amnesiac.BatchLog` keeps the parameter changes of the steps whose batch held the group. Both are
driven the same way (:class:`~amnesiac.AttributedOptimizer` calls ``begin_step`` after the backward pass and
``end_step`` after the optimizer's step) and read out the same way (``delta_vector(groups)``, a flat vector
in the model's :class:`~amnesiac.ParamLayout`, which unlearning subtracts).
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.optim import Optimizer

from .data import normalise_groups
from .grads import ParamLayout


class GroupTable:
    """Group names and the sample id -> group lookup of a ledger (built once, shared by every log kind).

    Example:
        >>> t = GroupTable({"a": [0, 2], "b": [5]})
        >>> t.owners(torch.tensor([2, 3, 5, 99])).tolist()
        [0, -1, 1, -1]
    """

    def __init__(self, groups: Mapping[Hashable, Sequence[int] | torch.Tensor]):
        names, ids, owner = normalise_groups(groups)
        self.names: list = names
        self.index = {n: g for g, n in enumerate(names)}
        self.group_of = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)  # sample id -> group row
        self.group_of[ids] = owner
        self.sizes = torch.bincount(owner, minlength=len(names))

    def __len__(self) -> int:
        return len(self.names)

    def owners(self, sample_ids: torch.Tensor) -> torch.Tensor:
        """The group row of each sample id (-1: in no group), on the CPU."""
        ids = torch.as_tensor(sample_ids).reshape(-1).to(torch.long).cpu()
        owner = torch.full((len(ids),), -1, dtype=torch.long)
        inside = (ids >= 0) & (ids < len(self.group_of))
        owner[inside] = self.group_of[ids[inside]]
        return owner

    def rows(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """Rows of these group names, in the order given; an unknown name raises KeyError listing the groups."""
        groups = list(groups)
        bad = [g for g in groups if g not in self.index]
        if bad:
            some = ", ".join(map(repr, self.names[:8]))
            raise KeyError(
                f"unknown group(s) {bad[:5]}; this log tracks {len(self.names)} groups "
                f"({some}{', ...' if len(self.names) > 8 else ''})"
            )
        return torch.tensor([self.index[g] for g in groups], dtype=torch.long)

    def groups_of_samples(self, sample_ids: Sequence[int] | torch.Tensor) -> list:
        """The groups holding these samples; a sample in no group raises KeyError."""
        ids = torch.as_tensor(sample_ids, dtype=torch.long).reshape(-1)
        owner = self.owners(ids)
        if bool((owner < 0).any()):
            raise KeyError(
                f"samples {ids[owner < 0][:10].tolist()} were not tracked by this log; "
                "record a log whose groups include them (they are in its remainder)"
            )
        return [self.names[g] for g in torch.unique(owner).tolist()]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.group_of, self.sizes))


class Ledger(ABC):
    """Base of every log: the group table, the training hooks and the read-out.

    Subclasses set :attr:`layout` and :attr:`table` and implement the hooks and :meth:`delta_vector`.
    """

    layout: ParamLayout
    table: GroupTable

    # ------------------------------------------------------------------------------ training hooks

    @property
    @abstractmethod
    def needs_per_sample_grads(self) -> bool:
        """Whether the log needs each group's share of the batch gradient at every step."""

    @abstractmethod
    def begin_step(self, model: nn.Module, sample_ids: torch.Tensor) -> torch.Tensor:
        """After the backward pass: note this batch; returns the batch positions it needs gradients for."""

    def accumulate(self, rows: torch.Tensor, grads: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Per-sample gradients of batch positions ``rows`` (only logs that need them override this)."""

    def set_grad_scale(self, scale: float) -> None:  # noqa: B027 - optional hook
        """This step's gradients were multiplied by ``scale`` after backward (clipping); logs of gradient
        shares scale them alike, logs of parameter changes need nothing."""

    @abstractmethod
    def end_step(self, optimizer: Optimizer | None) -> None:
        """After the optimizer's step: fold this step in."""

    # ------------------------------------------------------------------------------------- read-out

    @abstractmethod
    def delta_vector(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """What forgetting these groups subtracts, as one flat [P] vector (layout: :attr:`layout`)."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes held by the log's tensors."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to resume training with this log (see :func:`save_ledger`)."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> Ledger:
        """Restore :meth:`state_dict` into a log built the same way."""

    def delta(self, groups: Iterable[Hashable]) -> dict[str, torch.Tensor]:
        """:meth:`delta_vector` as name -> tensor shaped like the parameter."""
        return self.layout.unflatten(self.delta_vector(groups))

    @property
    def group_names(self) -> list:
        return self.table.names

    def rows_of(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """Rows of these groups (KeyError for an unknown name, listing the groups)."""
        return self.table.rows(groups)

    def groups_of_samples(self, sample_ids: Sequence[int] | torch.Tensor) -> list:
        """The groups holding these samples; a sample the log did not track raises KeyError."""
        return self.table.groups_of_samples(sample_ids)


def save_ledger(path: str | Path, log: Ledger) -> Path:
    """Write ``log.state_dict()`` to ``path`` atomically (temporary file, then rename) with a SHA-256 of its
    bytes, so :func:`load_ledger` can tell a truncated or corrupted file from a good one.

    Example:
        >>> import tempfile, pathlib
        >>> from amnesiac import DeltaLog
        >>> log = DeltaLog(nn.Linear(2, 2), {"a": [0]})
        >>> p = save_ledger(pathlib.Path(tempfile.mkdtemp()) / "log.pt", log)
        >>> load_ledger(p, DeltaLog(nn.Linear(2, 2), {"a": [0]})).steps
        0
    """
    buf = io.BytesIO()
    torch.save(log.state_dict(), buf)
    payload = buf.getvalue()
    record = {"format": "amnesiac-ledger-1", "sha256": hashlib.sha256(payload).hexdigest(),
              "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    return atomic_torch_save(path, record)


def atomic_torch_save(path: str | Path, obj) -> Path:
    """``torch.save(obj)`` to a temporary file beside ``path``, then renamed onto it: ``path`` holds the old file or
    the whole new one, never half of it (the temporary is removed if saving fails)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        torch.save(obj, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_ledger(path: str | Path, log: Ledger) -> Ledger:
    """Restore a file written by :func:`save_ledger` into ``log`` (built the same way); a damaged file raises
    ``ValueError`` naming it, and ``log`` is left as it was."""
    path = Path(path)
    try:
        record = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises several types for a truncated archive
        raise ValueError(f"{path} is not a readable ledger file ({type(err).__name__}: {err}); it may be truncated") \
            from None
    if not isinstance(record, dict) or record.get("format") != "amnesiac-ledger-1":
        raise ValueError(f"{path} is not a ledger written by save_ledger")
    payload = record["payload"].numpy().tobytes()
    if hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise ValueError(f"{path} is corrupted: its checksum does not match its contents")
    return log.load_state_dict(torch.load(io.BytesIO(payload), weights_only=True))
