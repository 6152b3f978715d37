"""The per-batch log of Graves et al. ("Original") and its random-subset variant ("Layer p").

For every optimizer step whose batch holds a tracked sample, the log stores the parameter change of that
step (theta_after - theta_before, so the optimizer's scaling is inside). Unlearning a group subtracts every
stored change of a batch that held one of its samples, which also removes what the other samples of those
batches taught. With ``p`` set, each stored change keeps only a random ``p`` fraction of each parameter
tensor's coordinates; the indices come from a generator seeded by the step number, so they are regenerated,
not stored. With ``store="request"`` the changes of the steps that touch the groups of one request, known
in advance, are summed into a single vector instead of kept per step.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Mapping, Sequence

import torch
from torch import nn
from torch.optim import Optimizer

from .deltalog import mask_indices, masked_size
from .grads import ParamLayout
from .ledger import GroupTable, Ledger, check_layout, require_keys

STORES = ("steps", "request")


class BatchLog(Ledger):
    """Stores the parameter change of every step whose batch holds a tracked sample.

    Args:
        model: the model about to be trained.
        groups: mapping group name -> sample ids (as for :class:`DeltaLog`).
        store: ``"steps"`` keeps each step's change and the groups it touched; ``"request"`` keeps one sum
            over the steps touching any group of ``request``.
        request: the groups to be forgotten, for ``store="request"``.
        p: keep a random ``p`` fraction of each tensor's coordinates per step ("Layer p"); None keeps all.
        seed: seeds the per-step masks.
        device: where stored changes live (default: the parameters' device).

    Example:
        >>> log = BatchLog(nn.Linear(2, 2), {"a": [0]})
        >>> log.stored_steps
        0
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Mapping[Hashable, Sequence[int] | torch.Tensor],
        *,
        store: str = "steps",
        request: Iterable[Hashable] | None = None,
        p: float | None = None,
        seed: int = 0,
        device: torch.device | str | None = None,
    ):
        if store not in STORES:
            raise ValueError(f"unknown store {store!r}; valid: {', '.join(STORES)}")
        if p is not None and not 0.0 < p <= 1.0:
            raise ValueError(f"fraction p must be in (0, 1], got {p}")
        self.layout = ParamLayout.of(model)
        params = self.layout.params(model)
        self.dtype = params[0].dtype
        self.device = torch.device(device) if device is not None else params[0].device
        self.table = GroupTable(groups)
        self.store, self.p, self.seed = store, p, seed
        self.request: frozenset | None = None
        if store == "request":
            if request is None:
                raise ValueError("store='request' needs request=<the group names to forget>")
            self.request = frozenset(request)
            self._request_rows = self._rows(self.request)
            self.summed = torch.zeros(self.layout.numel, dtype=self.dtype, device=self.device)
        self.changes: list[torch.Tensor] = []  # per stored step: [P] or [K] values
        self.step_numbers: list[int] = []
        self.step_groups: list[torch.Tensor] = []  # per stored step: group rows present in its batch
        self.steps = 0
        self.stored_steps = 0
        self._before: torch.Tensor | None = None
        self._params: list[torch.Tensor] | None = None
        self._present: torch.Tensor | None = None

    @property
    def needs_per_sample_grads(self) -> bool:
        return False

    def _rows(self, groups: Iterable[Hashable]) -> torch.Tensor:
        return torch.sort(self.table.rows(groups)).values

    def begin_step(self, model: nn.Module, sample_ids: torch.Tensor) -> torch.Tensor:
        """Snapshot the parameters if this batch holds a tracked sample; needs no per-sample gradients."""
        self.layout.check(model)
        owner = self.table.owners(sample_ids)
        present = torch.unique(owner[owner >= 0])
        if self.store == "request":
            present = present[torch.isin(present, self._request_rows)]
        self._present = present
        if len(present):
            self._params = self.layout.params(model)
            self._before = self.layout.vector(model)
        return torch.empty(0, dtype=torch.long)

    def end_step(self, optimizer: Optimizer | None) -> None:  # noqa: ARG002 - uniform hook
        """Store this step's parameter change if its batch held a tracked sample."""
        self.steps += 1
        if self._before is None:
            return
        after = torch.cat([q.detach().reshape(-1) for q in self._params])
        change = (after - self._before).to(self.device)  # [P]
        self._before, self._params = None, None
        self.stored_steps += 1
        if self.p is not None:
            keep = mask_indices(self.layout, self.p, self._step_seed(self.steps)).to(self.device)
            if self.store == "request":
                self.summed.index_add_(0, keep, change[keep])
            else:
                self.changes.append(change[keep].clone())
        elif self.store == "request":
            self.summed += change
        else:
            self.changes.append(change)
        if self.store == "steps":
            self.step_numbers.append(self.steps)
            self.step_groups.append(self._present)

    _STATE_KEYS = {"config": {"store": None, "p": None, "seed": None, "request": None},
                   "layout": {"names": None, "shapes": None}, "dtype": None,
                   "groups": {"names": None, "group_of": None}, "changes": None,
                   "step_numbers": None, "step_groups": None, "steps": None, "stored_steps": None,
                   "summed": None}  # what load_state_dict reads

    def state_dict(self) -> dict:
        """The stored changes and bookkeeping, to resume a training with this log (see :class:`DeltaLog`)."""
        if self._before is not None:
            raise RuntimeError("state_dict between begin_step and end_step: checkpoint after the optimizer's step")
        return {"kind": "BatchLog", "config": {"store": self.store, "p": self.p, "seed": self.seed,
                                               "request": sorted(map(str, self.request)) if self.request else None},
                "layout": {"names": list(self.layout.names), "shapes": [list(x) for x in self.layout.shapes]},
                "dtype": str(self.dtype),
                "groups": {"names": [str(n) for n in self.group_names], "group_of": self.table.group_of},
                "changes": list(self.changes), "step_numbers": list(self.step_numbers),
                "step_groups": list(self.step_groups), "steps": self.steps, "stored_steps": self.stored_steps,
                "summed": getattr(self, "summed", None)}

    def load_state_dict(self, state: dict) -> BatchLog:
        """Restore :meth:`state_dict` into a log built the same way (same model layout and dtype, groups and
        settings; all checked before anything changes, a difference in the layout named). A state missing a key
        (saved by an older or other version) raises ``ValueError`` naming the key."""
        if not isinstance(state, Mapping) or state.get("kind") != "BatchLog":
            kind = state.get("kind") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"not a BatchLog state (kind {kind!r})")
        require_keys(state, self._STATE_KEYS, "BatchLog")
        mine = {"store": self.store, "p": self.p, "seed": self.seed,
                "request": sorted(map(str, self.request)) if self.request else None}
        if state["config"] != mine:
            raise ValueError(f"the saved log was built with other settings: {state['config']} vs {mine}")
        check_layout(state["layout"], self.layout)
        if state["dtype"] != str(self.dtype):
            raise ValueError(f"the saved log was recorded with parameter dtype {state['dtype']}, this log has "
                             f"{self.dtype}: convert the model with .to(dtype) before building the log")
        if state["groups"]["names"] != [str(n) for n in self.group_names] or not torch.equal(
                state["groups"]["group_of"], self.table.group_of):
            raise ValueError("the saved log tracks other groups; build the log with the same groups before loading")
        sizes = {c.numel() for c in state["changes"]} | ({state["summed"].numel()} if state["summed"] is not None
                                                         else set())
        want = {self.vector_width} | ({self.layout.numel} if state["summed"] is not None else set())
        if not sizes <= want:
            raise ValueError(f"the saved log's stored changes hold {sorted(sizes)} numbers each, this log's "
                             f"{sorted(want)}: the state does not match its own layout")
        self.changes = [c.to(self.device) for c in state["changes"]]
        self.step_numbers, self.step_groups = list(state["step_numbers"]), list(state["step_groups"])
        self.steps, self.stored_steps = state["steps"], state["stored_steps"]
        if state["summed"] is not None:
            self.summed = state["summed"].to(self.device)
        return self

    def _step_seed(self, step: int) -> int:
        return self.seed * 1_000_003 + step

    def steps_touching(self, groups: Iterable[Hashable]) -> list[int]:
        """Indices into :attr:`changes` of the stored steps whose batch held a sample of these groups."""
        rows = self._rows(groups)
        return [i for i, g in enumerate(self.step_groups) if bool(torch.isin(g, rows).any())]

    def delta_vector(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """Sum of the stored changes of every step that touched these groups, flat [P]."""
        groups = frozenset(groups)
        if self.store == "request":
            self._rows(groups)
            if groups != self.request:
                raise ValueError(
                    f"this log summed the steps of request {sorted(self.request, key=str)}; it cannot "
                    f"answer {sorted(groups, key=str)}. Use store='steps' for requests not known in advance"
                )
            return self.summed.clone()
        out = torch.zeros(self.layout.numel, dtype=self.dtype, device=self.device)
        for i in self.steps_touching(groups):
            if self.p is None:
                out += self.changes[i]
            else:
                keep = mask_indices(self.layout, self.p, self._step_seed(self.step_numbers[i])).to(self.device)
                out.index_add_(0, keep, self.changes[i])
        return out

    @property
    def vector_width(self) -> int:
        return self.layout.numel if self.p is None else masked_size(self.layout, self.p)

    @property
    def nbytes(self) -> int:
        """Bytes actually held: stored changes (or the summed vector), step bookkeeping and lookup table."""
        held = list(self.changes) + list(self.step_groups)
        if self.store == "request":
            held.append(self.summed)
        return self.table.nbytes + sum(t.numel() * t.element_size() for t in held)

    def __repr__(self) -> str:
        return (
            f"BatchLog(store={self.store!r}, p={self.p}, {self.stored_steps}/{self.steps} steps stored, "
            f"{self.nbytes / 2**20:.1f} MiB)"
        )
