"""A delta log sharded by group across the ranks of a ``torch.distributed`` job (DistributedDataParallel).

Under DDP every rank computes the gradient of its own slice of the global batch, and DDP averages the gradients
so that every replica takes the same step. :class:`ShardedDeltaLog` gives each group one owner rank (round robin
over the groups), which alone keeps that group's delta. At every step each rank forms the shares of the groups
present in its slice (the hooks path of :class:`amnesiac.AttributedOptimizer`), divides them by the number of
ranks as DDP divides the gradients, and sends each share to its group's owner with one ``all_to_all_single``:
every share travels once, and the [groups x parameters] matrix is never gathered. Each owner adds up what it
received and folds the step in with the update rule, reading the optimizer's state, which is the same on every
rank. Each rank's log is then an exact ledger of its own groups: its groups' deltas plus its remainder add up to
the parameter change. :meth:`ShardedDeltaLog.delta_vector` is collective and moves only the sum asked for
(after one all-gather of a 32-byte hash that checks every rank asked for the same groups);
:func:`unlearn_sharded` subtracts it, as :func:`amnesiac.unlearn` does with ``"amnesiac"`` for a DeltaLog.

DDP rewrites every gradient between backward and the optimizer's step (it averages them), which the wrapper's
check for clipping would take for a per-parameter change: :func:`attach` registers a DDP communication hook that
averages as DDP's default hook does and records the averaged gradients' norms for that check, so global-norm
clipping stays attributed exactly under DDP too.

Usage (each rank)::

    dist.init_process_group("gloo")                       # or "nccl" on GPUs; torchrun sets the environment
    ddp = DistributedDataParallel(model)
    log = ShardedDeltaLog(model, groups)                  # every rank passes the same groups
    opt = AttributedOptimizer(torch.optim.Adam(model.parameters()), model, log)
    attach(ddp, opt)
    for x, y, ids in my_slice_of_each_global_batch:
        opt.zero_grad(); opt.set_batch(ids)
        F.cross_entropy(ddp(x), y).backward()
        opt.step()
    d = log.delta_vector(["class3"])                      # collective: call on every rank
    forgot = unlearn_sharded(model, Request(forget_groups=("class3",)), log=log, alpha=0.01)  # collective too
"""

from __future__ import annotations

import hashlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
import torch.distributed as dist
from torch import nn
from torch.optim import Optimizer

from .deltalog import DeltaLog
from .ledger import GroupTable, Ledger, tensor_bytes


def _require_initialised(process_group) -> tuple[int, int]:
    if not (dist.is_available() and dist.is_initialized()):
        raise RuntimeError("torch.distributed is not initialised: call torch.distributed.init_process_group first "
                           "(torchrun sets the environment it reads)")
    return dist.get_rank(process_group), dist.get_world_size(process_group)


class ShardedDeltaLog(Ledger):
    """:class:`DeltaLog` of ``groups`` sharded across the ranks: group k's delta lives on rank ``k % world``.

    Args:
        model: this rank's replica (the module inside DistributedDataParallel).
        groups: group name -> sample ids, the same on every rank; at least one group per rank.
        process_group: the ranks to shard over (default: the whole job).
        **kwargs: passed to each rank's :class:`DeltaLog` (``attribution="update"`` or ``"gradient"``, ``p``,
            ``dtype``, ``storage`` (each rank keeps its shard in ``<storage>/rank<r>``), ``lazy_momentum``, ...).
    """

    def __init__(self, model: nn.Module, groups: Mapping[Hashable, Sequence[int] | torch.Tensor], *,
                 process_group=None, **kwargs):
        self.process_group = process_group
        self.rank, self.world = _require_initialised(process_group)
        if kwargs.get("attribution", "update") == "propagated":
            raise ValueError("the propagated attribution is not available in a sharded log (its Hessian-vector "
                             "products need every group's delta on every rank)")
        if kwargs.get("indexing", "position") != "position":
            raise ValueError("a sharded log attributes rows by position only")
        self.table = GroupTable(groups)
        G = len(self.table)
        if G < self.world:
            raise ValueError(f"{G} group(s) for {self.world} ranks: a sharded log needs at least one group per rank "
                             "(use a plain DeltaLog on every rank for so few groups)")
        self.owner = torch.arange(G) % self.world  # group row -> owner rank
        self.owned = torch.nonzero(self.owner == self.rank).flatten()  # global rows this rank keeps, ascending
        names = self.table.names
        if kwargs.get("storage") is not None:  # each rank memory-maps its own shard: one folder per rank
            kwargs["storage"] = Path(kwargs["storage"]) / f"rank{self.rank}"
        self.local = DeltaLog(model, {names[g]: groups[names[g]] for g in self.owned.tolist()}, **kwargs)
        self.layout = self.local.layout
        self._pending: dict | None = None
        self.bytes_sent = 0  # shares sent to other ranks, in bytes (a rank's own shares stay in memory)
        self.steps_logged = 0

    # ----------------------------------------------------------------------------------- training hooks

    @property
    def needs_per_sample_grads(self) -> bool:
        return True

    def begin_step(self, model: nn.Module, sample_ids: torch.Tensor) -> torch.Tensor:
        """Collective: learn every rank's slice of the global batch (one small all-gather of sample ids), then
        begin the step in this rank's log over the global batch (DDP has averaged the gradient by now)."""
        ids = torch.as_tensor(sample_ids).reshape(-1).to(torch.long).cpu()
        gathered: list = [None] * self.world
        dist.all_gather_object(gathered, ids.tolist(), group=self.process_group)
        per_rank = [torch.tensor(g, dtype=torch.long) for g in gathered]
        present = []  # per rank: the group rows present in its slice, ascending
        for r in per_rank:
            own = self.table.owners(r)
            present.append(torch.unique(own[own >= 0]))
        mine = present[self.rank]
        index = torch.full((len(self.table),), -1, dtype=torch.long)
        index[mine] = torch.arange(len(mine))
        own = self.table.owners(ids)
        assign = torch.full_like(own, -1)
        assign[own >= 0] = index[own[own >= 0]]
        self.local.begin_step(model, torch.cat(per_rank))
        self._pending = {"present": present, "assign": assign, "shares": None, "scale": 1.0}
        return torch.empty(0, dtype=torch.long)

    def check_optimizer(self, optimizer: Optimizer) -> None:
        """Refuse, before the real step, what this rank's log would refuse after it
        (:meth:`amnesiac.DeltaLog.check_optimizer`); changes nothing."""
        self.local.check_optimizer(optimizer)

    def group_assignment(self) -> tuple[torch.Tensor, int]:
        """This rank's batch positions -> index among the groups present in its slice, and their number."""
        pend = self._check_pending("group_assignment")
        return pend["assign"], len(pend["present"][self.rank])

    def add_shares(self, shares: torch.Tensor) -> None:
        """The shares of the groups present in this rank's slice, as the local loss divided them."""
        pend = self._check_pending("add_shares")
        n = len(pend["present"][self.rank])
        if shares.shape != (n, self.layout.numel):
            raise ValueError(f"shares must be [{n}, {self.layout.numel}], got {list(shares.shape)}")
        pend["shares"] = shares

    def accumulate(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        raise RuntimeError("a sharded log takes its shares from the hooks path (group_grads='hooks' or 'auto' on a "
                           "model whose layers all have rules); per-sample gradients through vmap are not supported")

    def set_grad_scale(self, scale: float) -> None:
        self._check_pending("set_grad_scale")["scale"] = float(scale)

    def end_step(self, optimizer: Optimizer | None) -> None:
        """Collective: send every share to its group's owner (one all_to_all_single), add up what arrived and
        fold the step into this rank's log."""
        pend = self._check_pending("end_step")
        self._pending = None
        present, P = pend["present"], self.layout.numel
        dtype, device = self.local.compute_dtype, self.local.device
        mine = present[self.rank]
        shares = pend["shares"]
        if shares is None:  # no group in this slice (or the wrapper had nothing to form)
            shares = torch.zeros(len(mine), P, dtype=dtype, device=device)
        shares = shares.to(device, dtype) / self.world  # DDP averages the slices' gradients
        owners = self.owner[mine]
        order = torch.argsort(owners, stable=True)  # grouped by owner, ascending group row within an owner
        send = shares.index_select(0, order.to(device)).contiguous()
        send_splits = torch.bincount(owners, minlength=self.world).tolist()
        from_rank = [p[self.owner[p] == self.rank] for p in present]  # what each rank sends here, ascending
        recv_splits = [len(r) for r in from_rank]
        received = torch.empty(sum(recv_splits), P, dtype=dtype, device=device)
        dist.all_to_all_single(received, send, recv_splits, send_splits, group=self.process_group)
        self.bytes_sent += (sum(send_splits) - send_splits[self.rank]) * P * send.element_size()
        self.steps_logged += 1
        rows = torch.cat(from_rank) if from_rank else torch.empty(0, dtype=torch.long)
        here = torch.unique(rows)  # the owned groups present in the global batch, ascending
        if len(here):
            total = torch.zeros(len(here), P, dtype=dtype, device=device)
            total.index_add_(0, torch.searchsorted(here, rows).to(device), received)
            self.local.add_shares(total)
        if pend["scale"] != 1.0:
            self.local.set_grad_scale(pend["scale"])
        self.local.end_step(optimizer)

    def _check_pending(self, what: str) -> dict:
        if self._pending is None:
            raise RuntimeError(f"{what} called outside a step: call begin_step first")
        return self._pending

    # ------------------------------------------------------------------------------------- read-out

    def delta_vector(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """Collective: the summed delta of these groups on every rank (each owner adds its part, then one
        all-reduce of one [P] vector). Every rank must ask for the same groups: one all-gather of a SHA-256 of
        the request checks that first, and if the ranks disagree every rank raises (instead of summing parts of
        different requests): KeyError on a rank that asked for a group the log does not track, ValueError on the
        others, and no rank is left waiting in the all-reduce."""
        groups = list(groups)
        try:
            rows, unknown = self.table.rows(groups), None
            digest = hashlib.sha256(b"rows:" + tensor_bytes(torch.sort(rows).values)).digest()
        except KeyError as err:
            rows, unknown = None, err
            digest = hashlib.sha256(b"unknown:" + repr(groups).encode()).digest()
        differ = self._ranks_asking_otherwise(digest)
        if unknown is not None:
            raise unknown
        if differ:
            shown = groups if len(groups) <= 8 else groups[:8] + [f"... ({len(groups)} groups)"]
            raise ValueError(
                f"ranks disagree on the groups asked for: rank {self.rank} of {self.world} asked for {shown}, "
                f"rank(s) {differ} for other groups. ShardedDeltaLog.delta_vector (and unlearn_sharded) is "
                "collective: call it on every rank with the same groups")
        names = self.table.names
        mine = [names[g] for g in rows.tolist() if int(self.owner[g]) == self.rank]
        out = self.local.delta_vector(mine)
        dist.all_reduce(out, group=self.process_group)
        return out

    def _ranks_asking_otherwise(self, digest: bytes) -> list[int]:
        """Collective: all-gather every rank's 32-byte request digest; the ranks whose digest differs from ours."""
        mine = torch.frombuffer(bytearray(digest), dtype=torch.int64).to(self.local.device)
        gathered = [torch.empty_like(mine) for _ in range(self.world)]
        dist.all_gather(gathered, mine, group=self.process_group)
        return [r for r, g in enumerate(gathered) if not torch.equal(g, mine)]

    @property
    def indexing(self) -> str:
        """Always ``"position"``: a sharded log attributes rows by position only (as ``amnesiac`` needs)."""
        return "position"

    def owned_groups(self) -> list:
        """The groups whose deltas this rank keeps."""
        return list(self.local.group_names)

    @property
    def remainder_vector(self) -> torch.Tensor:
        """Collective: theta_T - theta_0 minus every group's delta (all ranks' groups)."""
        own = self.local.delta_vector(self.local.group_names)
        total = own.clone()
        dist.all_reduce(total, group=self.process_group)
        return self.local.remainder_vector + own - total

    def finalize(self, **kwargs) -> ShardedDeltaLog:
        self.local.finalize(**kwargs)
        return self

    @property
    def steps(self) -> int:
        return self.local.steps

    @property
    def nbytes(self) -> int:
        return self.local.nbytes

    def state_dict(self) -> dict:
        """This rank's shard (save one file per rank, e.g. with :func:`amnesiac.save_ledger`)."""
        return {"rank": self.rank, "world": self.world, "groups": len(self.table), "local": self.local.state_dict()}

    def load_state_dict(self, state: dict) -> ShardedDeltaLog:
        want = (self.rank, self.world, len(self.table))
        got = (state.get("rank"), state.get("world"), state.get("groups"))
        if got != want:
            raise ValueError(f"this shard was saved by rank {got[0]} of {got[1]} over {got[2]} groups; this log is "
                             f"rank {want[0]} of {want[1]} over {want[2]}: load each rank's own file")
        self.local.load_state_dict(state["local"])
        return self


def unlearn_sharded(model: nn.Module, request, *, log: ShardedDeltaLog, alpha: float = 1.0) -> nn.Module:
    """Collective: the ``"amnesiac"`` method of :func:`amnesiac.unlearn` for a :class:`ShardedDeltaLog`.

    Call it on every rank with the same ``request``: it reads the summed delta of ``request.forget_groups``
    (:meth:`ShardedDeltaLog.delta_vector`, which raises ValueError on every rank if the ranks ask for different
    groups) and returns a NEW copy of ``model`` with ``alpha`` times that delta subtracted, the same on every rank;
    ``model`` is left untouched. Pass the module inside DistributedDataParallel (or any model of the log's
    layout). For a repair fine-tune afterwards, see :func:`amnesiac.repair`.

    Args:
        model: the trained model (this rank's replica).
        request: an :class:`amnesiac.Request`; only its ``forget_groups`` are read.
        log: the sharded log recorded during training.
        alpha: the scale of the subtracted delta (a step size along it; see the README's quick start).
    """
    from .unlearning import subtract  # here, not at the top: unlearning may import this module

    if not isinstance(log, ShardedDeltaLog):
        raise TypeError(f"unlearn_sharded needs log=<a ShardedDeltaLog>, got {type(log).__name__}; for a DeltaLog "
                        "use amnesiac.unlearn('amnesiac', model, request, log=log)")
    log.layout.check(model)
    return subtract(model, log.delta_vector(request.forget_groups), alpha)


def attach(ddp_model: nn.parallel.DistributedDataParallel, optimizer) -> None:
    """Register a DDP communication hook that averages the gradients as DDP's default hook does and records the
    averaged gradients' norms in the :class:`amnesiac.AttributedOptimizer`, so its clipping check compares the
    gradient at the step with the averaged one (not with this rank's own)."""
    from .attributed import AttributedOptimizer

    if not isinstance(optimizer, AttributedOptimizer):
        raise TypeError(f"attach needs the AttributedOptimizer, got {type(optimizer).__name__}")
    pg = ddp_model.process_group
    world = dist.get_world_size(pg)

    def hook(opt, bucket):
        buf = bucket.buffer()
        buf.div_(world)
        params = list(bucket.parameters())
        fut = dist.all_reduce(buf, group=pg, async_op=True).get_future()

        def record(f):
            out = f.value()[0]
            off = 0
            for p in params:
                n = p.numel()
                if id(p) in opt._raw:  # shaped as the gradient, so the norm is computed as the check computes it
                    opt._raw[id(p)] = torch.linalg.vector_norm(out[off:off + n].view(p.shape), dtype=torch.float64)
                off += n
            return out

        return fut.then(record)

    ddp_model.register_comm_hook(optimizer, hook)


# ---------------------------------------------------------------------------------------------- measurement


