"""The delta log: each group's share of every parameter update, accumulated during training.

A *group* is a set of samples forgotten together (one sample, a class, a user). The log keeps, per group,
a flat vector ``delta`` (its share of theta_T - theta_0) and, for optimizers with state, the group's share
of the in-flight optimizer buffer. Samples in no group fall into the *remainder*, which the log tracks
independently, so that

    sum over groups of delta_k + remainder == theta_T - theta_0        (exactly, up to rounding)

holds as a checkable invariant, not by construction. The book's Method chapter (book/method.md, "Exact shares of
an optimizer step") derives every rule. Three attributions:

* ``"update"`` (default): optimizer-consistent shares, exact for every optimizer with an update rule
  (:mod:`amnesiac.rules`: SGD with momentum, dampening and Nesterov; Adam, AdamW and AMSGrad; RMSprop;
  Adagrad; coupled or decoupled weight decay; any learning-rate schedule). Denominators (Adam, RMSprop,
  Adagrad) are taken as given, so a group's influence on the second moment is the one thing ignored.
* ``"propagated"``: the update attribution carried forward through the later steps: at every step each
  group's share is augmented by the change of the batch gradient that its current delta causes, a
  Hessian-vector product of the batch loss without the group's rows, ``(H_t - H_{k,t}) d_k``. Subtracting it
  (alpha = 1) is the first-order estimate of the zero-weighted replay, exact for a model whose loss is
  quadratic in the parameters (linear model, squared loss) under SGD with momentum. Adam's denominators stay
  taken as given (the group's effect on the second moment is not included). Needs the batch's inputs and
  targets (:class:`~amnesiac.AttributedOptimizer` passes them) and costs one HVP per group per step. With
  ``propagate_hessian="trained"`` the Hessian is the whole batch loss's, ``H_t d_k``: the delta is then the
  derivative of the trained parameters in the group's loss weight at 1 (a metagradient), which finite
  differences of replays measure independently (``train(..., zero_weight_ids=F, forget_weight=1 - eps)``).
  With ``propagate_second_moment=True`` (Adam, AdamW) the group's effect on the second moment is carried too
  (:class:`amnesiac.rules.SecondMoment`), so that the delta is the forward-mode derivative of the whole step.
* ``"gradient"``: the seed's record: minus the sum, over training, of each group's share of the batch
  gradient, (1/B) * grad loss_i (no learning rate, no optimizer scaling). Subtracting it with alpha = 1 is
  the seed's gradient ascent. It does not sum to the parameter change; there is no remainder.

A mask keeps a fraction ``p`` of each parameter tensor's coordinates per group, chosen by a generator
seeded from the group's key (the sample id for per-sample groups), so the indices can be regenerated
instead of stored.

Why one module of about 900 lines: :class:`DeltaLog` is the library's one stateful object, and its parts (the
step's shares, the optimizer algebra, checkpoints and the read-out) all read and write the same buffers under one
invariant (the deltas and the remainder sum to theta_T - theta_0); split across modules they would reach into each
other's private state. What does not touch that state lives beside it: files and storage dtypes in
:mod:`amnesiac.storage`, the update rules and their per-coordinate coefficients for a step in :mod:`amnesiac.rules`,
and the lazy segments that settle first moments, on the tensors the log hands them, in :mod:`amnesiac.segments`.
"""

from __future__ import annotations

import math
import time
import zlib
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.optim import Optimizer

from . import buffers
from .grads import ParamLayout
from .ledger import GroupTable, Ledger, check_layout, require_keys
from .rules import check_optimizer as check_rule
from .rules import second_moment_coefficients, second_moment_rule, step_coefficients
from .segments import DecaySegment, Segment, same
from .storage import allocate_file, is_ledger_file, storage_dtype

ATTRIBUTIONS = ("update", "gradient", "propagated")
INDEXINGS = ("position", "seed-misindexed")
PROPAGATE_HESSIANS = ("replay", "trained", "gauss-newton")
_RESUMED = "resumed from a checkpoint"  # the optimizer reference of a log restored by load_state_dict


def group_seed(key: Hashable, mask_seed: int) -> int:
    """The generator seed of a group's mask: the sample id itself for integer keys, a CRC of the name else."""
    base = int(key) if isinstance(key, int) else zlib.crc32(str(key).encode())
    return (base * 1_000_003 + mask_seed) % (2**63 - 1)


def mask_indices(layout: ParamLayout, p: float, seed: int) -> torch.Tensor:
    """Flat coordinates kept by a p-mask: ``int(p * n)`` of each tensor's ``n`` (as the seed), chosen at random.

    Regenerable: the same ``seed`` always gives the same indices (sorted within each tensor).
    """
    gen = torch.Generator().manual_seed(seed)
    parts = []
    for n, offset in zip(layout.sizes(), layout.offsets):
        k = int(p * n)
        parts.append(torch.sort(torch.randperm(n, generator=gen)[:k]).values + offset)
    return torch.cat(parts)


def masked_size(layout: ParamLayout, p: float) -> int:
    return sum(int(p * n) for n in layout.sizes())


class DeltaLog(Ledger):
    """Accumulates each group's share of every parameter update during :func:`amnesiac.train`.

    Args:
        model: the model about to be trained (its current parameters are theta_0).
        groups: mapping group name -> sample ids. Samples in no group are the remainder.
        attribution: ``"update"`` (optimizer-consistent, exact) or ``"gradient"`` (the seed's raw gradients).
        p: keep only this fraction of each parameter tensor per group (``None`` keeps all).
        mask_seed: mixed into every group's mask seed.
        dtype: storage dtype of the deltas after :meth:`finalize` (``None`` keeps the parameters' dtype): one of
            :data:`amnesiac.storage.STORAGE_DTYPES`, as a ``torch.dtype`` or its name (integer dtypes would round
            every delta to 0).
        device: where the buffers live (default: the parameters' device).
        indexing: ``"position"`` (correct) or ``"seed-misindexed"``: the k-th tracked sample of a batch gets
            the gradient at batch position k, reproducing the seed's bug (an ablation only).
        retire_tol: an in-flight momentum buffer is handed to the remainder once it has decayed below this
            fraction of its size (exact conservation; the group's delta loses a tail of that relative size).
        loss_reduction: how the training loss reduces over the batch (``"mean"`` or ``"sum"``).
        lazy_momentum: for rules with a first moment (momentum, Adam, RMSprop with momentum) and no weight
            decay, settle the groups' in-flight moments once per segment of steps instead of every step (same
            arithmetic, reordered; see :meth:`_flush`). This makes a step cost O(P) plus O(K) per present
            group instead of O(K) per in-flight group.
        lazy_decay: for rules whose every step decays every group's delta (SGD's ``weight_decay``, AdamW's
            decoupled decay), buffer the steps and settle all groups once per segment
            (:class:`amnesiac.segments.DecaySegment`: per coordinate a 2 x 2 recursion shared by all groups)
            instead of moving every group at every step. The same map, reassociated: it rounds differently
            from the eager form (about the float epsilon times the segment's length, relative), so it is not the
            default (the committed studies use the eager form). Whole deltas only (``p=None``); the
            ``"propagated"`` attribution moves every group every step and ignores it.
        propagate_every: ``"propagated"`` only: compute the Hessian-vector products every k-th step and count
            each for k steps (a cheaper, approximate propagation; 1 is exact to first order).
        propagate_after: ``"propagated"`` only: propagate from this step on (e.g. over the last epochs only).
        propagate_hessian: ``"propagated"`` only: whose Hessian carries a delta forward. ``"replay"`` (default):
            the batch loss without the group's rows, ``(H_t - H_{k,t}) d_k``, the first-order expansion of the
            zero-weighted replay's gradient around the trained run (exact for a quadratic loss). ``"trained"``:
            the whole batch loss, ``H_t d_k``: the derivative of the trained parameters in the group's loss
            weight at 1 (for SGD with or without momentum; for Adam with ``propagate_second_moment``).
            ``"gauss-newton"``: the whole batch loss's Gauss–Newton matrix, ``G_t d_k`` (positive semi-definite for
            a convex loss of the outputs: a stabilised stand-in for the trained Hessian where its recursion is
            expansive; equal to it for a model linear in its parameters).
        propagate_damping: ``"propagated"`` only: add ``lambda * d_k`` to each product, ``(H + lambda I) d_k``
            (Levenberg–Marquardt damping: a stabilisation whose effect is measured, not assumed; 0: none).
        propagate_second_moment: ``"propagated"`` only: carry each group's tangent of Adam's second moment
            (a third [groups x parameters] buffer), so that the step's denominator moves with the group's weight
            as it does in a replay; without it the denominator is taken as given, which drops a first-order term
            as large as the one kept. Adam and AdamW (not AMSGrad); SGD has no second moment (no effect).
        storage: a directory: keep the [groups x parameters] deltas and moments in memory-mapped files there
            (``deltas.bin``, ``moments.bin``) instead of RAM, so a ledger larger than memory can be trained and
            read (the operating system pages rows in and out). CPU only. Each file is allocated on disk when it is
            created (a full disk is refused then, naming the bytes needed, instead of failing when a page is first
            written).
        overwrite: with ``storage``, replace the deltas a directory already holds (``deltas.bin``, ``moments.bin``,
            a finalized ``deltas.<dtype>.bin``); without it such a directory is refused, so that one ledger is not
            silently written over by another. Loading a saved ledger (:func:`amnesiac.load_ledger`) into a log
            built on its old directory needs ``overwrite=True``.
        segment_bytes: memory for a lazy segment's buffered per-step coefficients and group shares; a
            segment is settled when it reaches this size (its length adapts to the model and the groups).

    Example:
        >>> model = nn.Linear(2, 2)
        >>> log = DeltaLog(model, {"a": [0, 1], "b": [2]})
        >>> log.group_names, log.nbytes > 0
        (['a', 'b'], True)
    """

    def __init__(
        self,
        model: nn.Module,
        groups: Mapping[Hashable, Sequence[int] | torch.Tensor],
        *,
        attribution: str = "update",
        p: float | None = None,
        mask_seed: int = 0,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        indexing: str = "position",
        retire_tol: float = 1e-12,
        loss_reduction: str = "mean",
        lazy_momentum: bool = True,
        lazy_decay: bool = False,
        segment_bytes: int = 128 * 2**20,
        propagate_every: int = 1,
        propagate_after: int = 0,
        propagate_hessian: str = "replay",
        propagate_second_moment: bool = False,
        propagate_damping: float = 0.0,
        storage: str | Path | None = None,
        overwrite: bool = False,
    ):
        if attribution not in ATTRIBUTIONS:
            raise ValueError(f"unknown attribution {attribution!r}; valid: {', '.join(ATTRIBUTIONS)}")
        if indexing not in INDEXINGS:
            raise ValueError(f"unknown indexing {indexing!r}; valid: {', '.join(INDEXINGS)}")
        if p is not None and not 0.0 < p <= 1.0:
            raise ValueError(f"mask fraction p must be in (0, 1], got {p}")
        if attribution == "propagated" and p is not None:
            raise ValueError("the propagated attribution keeps whole deltas (its Hessian-vector products need "
                             "them); use p=None")
        if int(propagate_every) < 1 or int(propagate_after) < 0:
            raise ValueError(f"need propagate_every >= 1 and propagate_after >= 0, got {propagate_every}, "
                             f"{propagate_after}")
        if propagate_hessian not in PROPAGATE_HESSIANS:
            raise ValueError(f"unknown propagate_hessian {propagate_hessian!r}; valid: {', '.join(PROPAGATE_HESSIANS)}")
        if not (math.isfinite(float(propagate_damping)) and float(propagate_damping) >= 0.0):
            raise ValueError(f"propagate_damping must be finite and >= 0, got {propagate_damping}")
        if propagate_damping and attribution != "propagated":
            raise ValueError("propagate_damping is a setting of attribution='propagated'")
        if propagate_second_moment and attribution != "propagated":
            raise ValueError("propagate_second_moment is a setting of attribution='propagated' (the 'update' "
                             "attribution keeps exact shares of the real update, its denominators as given)")
        if loss_reduction not in ("mean", "sum"):
            raise ValueError(f"loss_reduction must be 'mean' or 'sum', got {loss_reduction!r}")
        dtype = storage_dtype(dtype)
        self.layout = ParamLayout.of(model)
        params = self.layout.params(model)
        self.compute_dtype = params[0].dtype
        self.storage_dtype = dtype or self.compute_dtype
        self.device = torch.device(device) if device is not None else params[0].device
        self._device_given = device is not None  # else the log follows the model (see _follow)
        self.storage = Path(storage) if storage is not None else None
        if self.storage is not None:
            if self.device.type != "cpu":
                raise ValueError(f"memory-mapped storage is on the CPU; got device {self.device}: use device='cpu'")
            self.storage.mkdir(parents=True, exist_ok=True)
            self._stale = self._claim_storage(overwrite)
        self.attribution, self.p, self.mask_seed, self.indexing = attribution, p, mask_seed, indexing
        self.retire_tol, self.loss_reduction = retire_tol, loss_reduction

        self.table = GroupTable(groups)
        names = self.table.names

        G, P = len(names), self.layout.numel
        self.width = P if p is None else masked_size(self.layout, p)
        kw = dict(dtype=self.compute_dtype, device=self.device)
        self.deltas = self._zeros("deltas", (G, self.width), self.compute_dtype)  # [G, K]
        self._mask_cache: torch.Tensor | None = None  # [G, K] flat coordinates per group
        if p is not None:
            self._mask_cache = self._masks(range(G))
        self.moments: torch.Tensor | None = None  # [G, K], allocated on the first step that needs it
        if attribution in ("update", "propagated"):
            self.theta0 = self.layout.vector(model).to(**kw)  # [P]
            self.base = self.theta0.clone()  # theta_0 + remainder, [P]
            self.base_moment: torch.Tensor | None = None
        self._last_seen = torch.full((G,), -(2**62), dtype=torch.long)
        self._in_flight = torch.zeros(G, dtype=torch.bool)
        self.steps = 0
        self.samples_seen = 0
        self._optimizer_ref: int | None = None
        self._opt_steps = 0
        self._param_ids = [id(q) for q in params]
        self._pending: dict | None = None
        self.finalized = False
        self.lazy_momentum = lazy_momentum and attribution != "propagated"  # every group moves every step
        self.lazy_decay = bool(lazy_decay) and attribution != "propagated" and p is None
        self.propagate_every, self.propagate_after = int(propagate_every), int(propagate_after)
        self.propagate_hessian = propagate_hessian
        self.propagate_second_moment = bool(propagate_second_moment)
        self.propagate_damping = float(propagate_damping)
        self.second_moments: torch.Tensor | None = None  # [G, P] tangents of the second moment, when propagated
        self.hvp_seconds = 0.0
        self.segment_bytes = segment_bytes
        self._segment: Segment | DecaySegment | None = None
        self.lazy_steps = 0  # steps whose group moments were settled lazily (diagnostics)
        self.peak_bytes = 0  # most bytes held at once during training, step buffers included
        self._work: dict[str, torch.Tensor] = {}  # [P] buffers reused by every step (:meth:`_workspace`)
        self._coefficients: dict[str, torch.Tensor] = {}  # the last step's [P] coefficients, reused once settled

    def _workspace(self, name: str) -> torch.Tensor:
        """A [P] buffer of the compute dtype kept from step to step. A fresh tensor of the parameters' size comes
        from the OS page by page, zeroed, at every step: for ResNet-18 that measured as a large part of the log's
        cost, so the step's flat temporaries (the batch gradient, the remainder's share, products) live here."""
        buf = self._work.get(name)
        if buf is None or not buffers.REUSE:
            buf = self._work[name] = torch.empty(self.layout.numel, dtype=self.compute_dtype, device=self.device)
        return buf

    def _claim_storage(self, overwrite: bool) -> list[Path]:
        """The ledger files already in the storage directory, which the new deltas will replace; refused unless
        ``overwrite`` (nothing is removed here: the files go when the new deltas are allocated)."""
        found = sorted(p for p in self.storage.iterdir() if is_ledger_file(p.name))
        if found and not overwrite:
            raise FileExistsError(
                f"the storage directory {self.storage} already holds a ledger ({', '.join(p.name for p in found)}); "
                "a new log would replace its deltas. Choose an empty directory, or pass overwrite=True to replace them"
            )
        return found

    def _zeros(self, name: str, shape: tuple[int, int], dtype: torch.dtype) -> torch.Tensor:
        """A zero [rows, width] buffer: in RAM, or memory-mapped from ``<storage>/<name>.bin``, allocated on disk
        first (a full disk raises ``OSError`` here, not a bus error when a page is first written)."""
        if self.storage is None:
            return torch.zeros(*shape, dtype=dtype, device=self.device)
        path = self.storage / f"{name}.bin"
        n = shape[0] * shape[1]
        stale, self._stale = getattr(self, "_stale", []), []  # what the constructor found: replaced by the deltas
        allocate_file(path, max(n, 1) * dtype.itemsize, replaces=[*stale, path])
        return torch.from_file(str(path), shared=True, size=max(n, 1), dtype=dtype)[:n].view(*shape)

    # ------------------------------------------------------------------------------------------ masks

    def _masks(self, rows: Iterable[int]) -> torch.Tensor:
        return torch.stack(
            [mask_indices(self.layout, self.p, group_seed(self.group_names[g], self.mask_seed)) for g in rows]
        ).to(self.device)

    def mask(self, rows: torch.Tensor) -> torch.Tensor:
        """Flat coordinates kept for these group rows ([n, K]); regenerated when the cache was dropped."""
        if self._mask_cache is not None:
            return self._mask_cache[rows.to(self.device)]
        return self._masks(rows.tolist())

    # --------------------------------------------------------------------------------- training hooks

    @property
    def needs_per_sample_grads(self) -> bool:
        return True

    def begin_step(self, model: nn.Module, sample_ids: torch.Tensor) -> torch.Tensor:
        """Call after ``loss.backward()`` and before ``optimizer.step()``; returns the batch rows it needs.

        Returns the batch positions whose per-sample gradients must be passed to :meth:`accumulate`.
        """
        if self.finalized:
            raise RuntimeError("this delta log was finalized; create a new log to record more training")
        if self._pending is not None:
            raise RuntimeError("begin_step called twice without end_step: call end_step(optimizer) after step()")
        self.layout.check(model)
        self._follow(model)
        self._param_ids = [id(q) for q in self.layout.params(model)]
        ids = sample_ids.reshape(-1).to(torch.long).cpu()
        B = len(ids)
        rows, row_owner, present, local = self._owners(ids)
        batch_grad = None
        if self.attribution != "gradient":
            flat = [q.grad.detach().reshape(-1) if q.grad is not None
                    else torch.zeros(q.numel(), dtype=q.dtype, device=q.device) for q in self.layout.params(model)]
            if all(g.dtype == self.compute_dtype and g.device == self.device for g in flat):
                batch_grad = torch.cat(flat, out=self._workspace("batch_grad"))
            else:
                batch_grad = torch.cat(flat).to(self.device, self.compute_dtype)
        self._pending = dict(
            batch_size=B,
            row_owner=row_owner,
            present=present,
            local=local,
            batch_grad=batch_grad,
            sums=None,  # [n_present, K], allocated by the first accumulate / add_shares
            masks=self.mask(present) if self.p is not None else None,
            scaled=False,
            grad_scale=1.0,
            extra=None,  # propagated: [G, P] gradient changes the groups' deltas cause
        )
        self.samples_seen += B
        return rows

    def _owners(self, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """(rows whose gradients the log needs, each batch position's group (-1: none), the groups present,
        group -> its index among the present groups (-1: absent)) for a batch of sample ids (on the CPU)."""
        owner = self.table.owners(ids)
        tracked_pos = torch.nonzero(owner >= 0).flatten()
        row_owner = torch.full((len(ids),), -1, dtype=torch.long)  # batch position -> group whose gradient it is
        if self.indexing == "position":
            row_owner[tracked_pos] = owner[tracked_pos]
            rows = tracked_pos
        else:  # the seed's bug: the k-th tracked sample takes the gradient at batch position k
            rows = torch.arange(len(tracked_pos))
            row_owner[rows] = owner[tracked_pos]
        present = torch.unique(owner[tracked_pos])
        local = torch.full((len(self.group_names),), -1, dtype=torch.long)
        local[present] = torch.arange(len(present))
        return rows, row_owner, present, local

    @staticmethod
    def _assignment(row_owner: torch.Tensor, local: torch.Tensor) -> torch.Tensor:
        assign = torch.full_like(row_owner, -1)
        keep = row_owner >= 0
        assign[keep] = local[row_owner[keep]]
        return assign

    def assignment_for(self, sample_ids) -> tuple[torch.Tensor, int]:
        """What :meth:`group_assignment` will return for a step over this batch, known before its backward pass
        (nothing changes in the log): batch position -> present-group index (-1: no group), groups present."""
        _, row_owner, present, local = self._owners(torch.as_tensor(sample_ids).reshape(-1).to(torch.long).cpu())
        return self._assignment(row_owner, local), len(present)

    def _follow(self, model: nn.Module) -> None:
        """A log built before ``model.to(device)`` moves its buffers to the model's device before the first step
        (instead of copying every share across devices at every step). A log given ``device=`` (or memory-mapped
        storage) stays where it was put; a model that moves after the first step is refused."""
        dev = self.layout.params(model)[0].device
        if dev == self.device or self._device_given or self.storage is not None:
            return
        if self.steps:
            raise RuntimeError(f"the model moved to {dev} after this log recorded {self.steps} step(s) on "
                               f"{self.device}: move the model before training, or build the log with device=")
        for name in ("deltas", "_mask_cache", "theta0", "base"):
            t = getattr(self, name, None)
            if torch.is_tensor(t):
                setattr(self, name, t.to(dev))
        self.device = dev

    def accumulate(self, rows: torch.Tensor, grads: torch.Tensor) -> None:
        """Add per-sample gradients ``grads`` [n, P] of batch positions ``rows`` into their groups' sums."""
        pend = self._pending
        if pend is None:
            raise RuntimeError("accumulate called outside a step: call begin_step first")
        owner = pend["row_owner"][rows.cpu()]
        keep = owner >= 0
        if not bool(keep.any()):
            return
        loc = pend["local"][owner[keep]].to(self.device)
        g = grads[keep.to(grads.device)].to(self.device, self.compute_dtype)  # [n, P]
        if pend["masks"] is not None:
            g = torch.gather(g, 1, pend["masks"][loc])  # [n, K]
        if pend["sums"] is None:
            pend["sums"] = torch.zeros(len(pend["present"]), self.width, dtype=self.compute_dtype, device=self.device)
        pend["sums"].index_add_(0, loc, g)

    def group_assignment(self) -> tuple[torch.Tensor, int]:
        """This step's batch positions -> present-group index (-1: no group), and the number of present groups.

        The alternative to :meth:`accumulate`: a caller that can form group sums directly (see
        :class:`amnesiac.grads.GroupGradients`) passes them to :meth:`add_shares`.
        """
        pend = self._pending
        if pend is None:
            raise RuntimeError("group_assignment called outside a step: call begin_step first")
        return self._assignment(pend["row_owner"], pend["local"]), len(pend["present"])

    def add_shares(self, shares: torch.Tensor) -> None:
        """Add the present groups' shares of the batch gradient, [n_present, P] (rows as :meth:`group_assignment`).

        Shares are already divided as the loss was (no ``1/B`` is applied to them); do not mix with
        :meth:`accumulate` in one step. The log takes ``shares`` over and may change it in place: pass a copy
        if it is needed afterwards.
        """
        pend = self._pending
        if pend is None:
            raise RuntimeError("add_shares called outside a step: call begin_step first")
        if shares.shape != (len(pend["present"]), self.layout.numel):
            raise ValueError(
                f"shares must be [{len(pend['present'])}, {self.layout.numel}] (present groups x parameters), "
                f"got {list(shares.shape)}"
            )
        s = shares.detach().to(self.device, self.compute_dtype)  # values only: a fallback layer's carry autograd
        if pend["masks"] is not None:
            s = torch.gather(s, 1, pend["masks"])
        if pend["sums"] is None:
            pend["sums"] = s
        else:
            pend["sums"] += s
        pend["scaled"] = True

    @property
    def needs_inputs(self) -> bool:
        """Whether :meth:`propagate` must see each batch's inputs and targets."""
        return self.attribution == "propagated"

    def propagate(self, model: nn.Module, inputs: torch.Tensor, targets: torch.Tensor, loss_fn) -> None:
        """``"propagated"``: between ``begin_step`` and ``end_step``, at the parameters the batch gradient was
        taken at, add to every group's share the gradient change its delta causes: the Hessian-vector product
        ``(H_t - H_{k,t}) d_k`` of the mean batch loss with group k's rows weighted 0 (the replay's loss)."""
        pend = self._pending
        if pend is None:
            raise RuntimeError("propagate called outside a step: call begin_step first")
        if self.attribution != "propagated":
            return
        step = self.steps + 1
        if step <= self.propagate_after or (step - self.propagate_after - 1) % self.propagate_every:
            return
        t0 = time.perf_counter()
        from .grads import weighted_gnvps, weighted_hvps

        B = len(pend["row_owner"])
        weights = torch.ones(len(self.group_names), B, dtype=self.compute_dtype)  # [G, B]
        if self.propagate_hessian == "replay":  # the replay's loss: the group's own rows weighted 0
            own = pend["row_owner"]
            rows = torch.nonzero(own >= 0).flatten()
            weights[own[rows], rows] = 0.0
        products = weighted_gnvps if self.propagate_hessian == "gauss-newton" else weighted_hvps
        extra = products(model, inputs, targets, weights / B, self.deltas, layout=self.layout,
                         loss_fn=loss_fn)  # [G, P]
        if self.propagate_damping:
            extra = extra + self.propagate_damping * self.deltas.to(extra.device, extra.dtype)
        pend["extra"] = extra.to(self.device, self.compute_dtype).mul_(self.propagate_every)
        self.hvp_seconds += time.perf_counter() - t0

    def set_grad_scale(self, scale: float) -> None:
        """This step's batch gradient was multiplied by ``scale`` after backward (global-norm clipping): the
        groups' shares are multiplied alike, so the step stays attributed exactly."""
        if self._pending is None:
            raise RuntimeError("set_grad_scale called outside a step: call begin_step first")
        self._pending["grad_scale"] = float(scale)

    def end_step(self, optimizer: Optimizer | None) -> None:
        """Call right after ``optimizer.step()``: fold this step's shares into the groups' deltas."""
        pend, self._pending = self._pending, None
        if pend is None:
            raise RuntimeError("end_step called without begin_step")
        self.steps += 1
        present = pend["present"].to(self.device)
        scale = 1.0 / pend["batch_size"] if self.loss_reduction == "mean" and not pend["scaled"] else 1.0
        scale *= pend["grad_scale"]  # clipping between backward and step
        shares = pend["sums"]  # [n_present, K], each group's share of the batch gradient
        if shares is None:
            shares = torch.zeros(len(present), self.width, dtype=self.compute_dtype, device=self.device)
        if scale != 1.0:
            shares.mul_(scale)
        self.peak_bytes = max(self.peak_bytes, self.nbytes + shares.numel() * shares.element_size())
        if self.attribution == "gradient":
            if len(present):
                self.deltas.index_add_(0, present, -shares)
            return
        if self.attribution == "propagated":  # every group moves: its share (if present) plus what its delta causes
            full = torch.zeros(len(self.group_names), self.width, dtype=self.compute_dtype, device=self.device)
            if len(present):
                full.index_copy_(0, present, shares)
            if pend["extra"] is not None:
                full.add_(pend["extra"], alpha=pend["grad_scale"])
            present = torch.arange(len(self.group_names), device=self.device)
            shares = full
        tracked_total = self._workspace("rest")  # [P], then the remainder's share in place
        if len(present) and pend["masks"] is None:
            torch.sum(shares, 0, out=tracked_total)
        else:
            tracked_total.zero_()
            if len(present):
                tracked_total.index_add_(0, pend["masks"].flatten(), shares.flatten())
        rest_share = torch.sub(pend["batch_grad"], tracked_total, out=tracked_total)  # [P]
        self._last_seen[present.cpu()] = self.steps
        self._optimizer_step(optimizer, present, shares, rest_share,
                             grad=pend["batch_grad"] * pend["grad_scale"] if self.propagate_second_moment else None)

    # ------------------------------------------------------------------------------ optimizer algebra

    def _optimizer_step(self, opt: Optimizer, present: torch.Tensor, shares: torch.Tensor, rest: torch.Tensor,
                        grad: torch.Tensor | None = None):
        if self._optimizer_ref is _RESUMED:  # resumed from a checkpoint: the optimizer continues, buffers too
            self._optimizer_ref = id(opt)
        elif self._optimizer_ref != id(opt):  # a new optimizer starts with empty buffers
            self._flush()
            self._drop_moments()
            self._optimizer_ref, self._opt_steps = id(opt), 0
        self._opt_steps += 1
        hp = step_coefficients(opt, self._param_ids, self.layout, self._opt_steps, self.device,
                               self.compute_dtype, reuse=self._coefficients)
        decay = hp["shrink"] is not None or hp["wd"] is not None
        stateful = hp["beta"] is not None
        if stateful and not decay and self.lazy_momentum:
            self._lazy_step(hp, present, shares, rest)
            return
        if decay and self.lazy_decay and grad is None:
            self._lazy_decay_step(hp, present, shares, rest)
            return
        self._flush()  # a lazy segment pending from steps of another map (the optimizer's settings changed) first
        G = len(self.group_names)
        # which groups change this step: present ones, in-flight ones, or all when decay acts on deltas
        if decay:
            active = torch.arange(G)
        elif stateful:
            horizon = self._horizon(hp["beta"])
            active = torch.nonzero(self._last_seen > self.steps - horizon).flatten()
            self._retire(torch.nonzero(self._in_flight & (self._last_seen <= self.steps - horizon)).flatten())
        else:
            active = present.cpu()
        self._in_flight[active] = True
        act = active.to(self.device)
        full = len(active) == G
        d = self.deltas if full else self.deltas.index_select(0, act)  # [A, K]
        s = torch.zeros_like(d)
        if len(present):
            pos = torch.searchsorted(act, present)
            s.index_copy_(0, pos, shares)
        masks = None if self.p is None else self.mask(active)  # [A, K]

        def coords(v):  # a per-coordinate coefficient as seen by the rows of d
            if not torch.is_tensor(v) or masks is None:
                return v
            return v[masks]

        if self.moments is None and stateful:
            kw = dict(dtype=self.compute_dtype, device=self.device)
            self.moments = self._zeros("moments", (G, self.width), self.compute_dtype)
            self.base_moment = torch.zeros(self.layout.numel, **kw)
        m = None
        if stateful:
            m = self.moments if full else self.moments.index_select(0, act)
        base, bm = self.base, self.base_moment  # the remainder's track, unmasked
        second = (second_moment_coefficients(opt, self._param_ids, self.layout, self._opt_steps, self.device,
                                             self.compute_dtype) if grad is not None else None)
        if second is not None:  # the gradient the optimizer used (coupled weight decay included), before the step
            if not full:
                raise RuntimeError("the second moment's tangents need every group to move every step")
            if hp["wd"] is not None:
                grad = grad + hp["wd"] * (base + d.sum(0))
        # the rule's map (amnesiac.rules), applied to the groups' tracks and to the remainder's
        if hp["shrink"] is not None:
            d.mul_(coords(hp["shrink"]))
            base.mul_(hp["shrink"])
        if hp["wd"] is not None:
            s.add_(coords(hp["wd"]) * d)
            rest = rest + hp["wd"] * base
        if stateful:
            m.mul_(coords(hp["beta"])).add_(coords(hp["gamma"]) * s)
            bm.mul_(hp["beta"]).add_(hp["gamma"] * rest)
            if hp["c"] is not None:
                d.sub_(coords(hp["c"]) * m)
                base.sub_(hp["c"] * bm)
        if hp["e"] is not None:
            d.sub_(coords(hp["e"]) * s)
            base.sub_(hp["e"] * rest)
        if second is not None:  # q <- beta2 q + gamma2 g s; d <- d - c2 q (the remainder keeps the sum exact)
            if self.second_moments is None:
                self.second_moments = torch.zeros_like(self.deltas)
            q = self.second_moments
            q.mul_(second["beta2"]).addcmul_(s, grad * second["gamma2"])
            change = second["c2"] * q
            d.sub_(change)
            base.add_(change.sum(0))
        if not full:
            self.deltas.index_copy_(0, act, d)
            if m is not None:
                self.moments.index_copy_(0, act, m)

    # Lazy moments (rules with a first moment and no weight decay): the steps are buffered in a segment
    # (amnesiac.segments, which derives the algebra) and settled for every involved group at once.

    def _lazy_step(self, hp: dict, present: torch.Tensor, shares: torch.Tensor, rest: torch.Tensor) -> None:
        beta, gamma, c, e = hp["beta"], hp["gamma"], hp["c"], hp["e"]
        self.lazy_steps += 1
        if c is None:
            c = 0.0
        if self.moments is None:
            kw = dict(dtype=self.compute_dtype, device=self.device)
            self.moments = self._zeros("moments", (len(self.group_names), self.width), self.compute_dtype)
            self.base_moment = torch.zeros(self.layout.numel, **kw)
        tmp = self._workspace("product")  # the remainder is tracked eagerly, O(P)
        self.base_moment.mul_(beta).add_(torch.mul(rest, gamma, out=tmp))
        self.base.sub_(torch.mul(self.base_moment, c, out=tmp))
        if e is not None:
            self.base.sub_(torch.mul(rest, e, out=tmp))
        seg = self._segment
        if isinstance(seg, DecaySegment) or (seg is not None and not same(seg.beta, beta)):
            self._flush()
            seg = None
        if seg is None:
            seg = self._segment = Segment(beta=beta, carried=torch.nonzero(self._in_flight).flatten())
        seg.record(c, gamma, e, present, shares)
        if len(present):
            self._in_flight[present.cpu()] = True
        self.peak_bytes = max(self.peak_bytes, self.nbytes)
        if seg.bytes >= self.segment_bytes:
            self._flush()

    def _lazy_decay_step(self, hp: dict, present: torch.Tensor, shares: torch.Tensor, rest: torch.Tensor) -> None:
        """A step of a decaying rule, buffered (:class:`amnesiac.segments.DecaySegment`); the remainder's track
        moves now, as in the eager form."""
        self.lazy_steps += 1
        stateful = hp["beta"] is not None
        if stateful and self.moments is None:
            self.moments = self._zeros("moments", (len(self.group_names), self.width), self.compute_dtype)
            self.base_moment = torch.zeros(self.layout.numel, dtype=self.compute_dtype, device=self.device)
        base, bm = self.base, self.base_moment
        if hp["shrink"] is not None:
            base.mul_(hp["shrink"])
        if hp["wd"] is not None:
            rest = rest + hp["wd"] * base
        if stateful:
            bm.mul_(hp["beta"]).add_(hp["gamma"] * rest)
            if hp["c"] is not None:
                base.sub_(hp["c"] * bm)
        if hp["e"] is not None:
            base.sub_(hp["e"] * rest)
        seg = self._segment
        if not isinstance(seg, DecaySegment) or seg.stateful != stateful:
            self._flush()  # a segment of the other kind, or a rule that gained or lost its moment
            seg = self._segment = DecaySegment(stateful=stateful)
        seg.record(tuple(hp[k] for k in ("shrink", "wd", "beta", "c", "gamma", "e")), present, shares)
        self._in_flight[:] = True  # every group moves
        self.peak_bytes = max(self.peak_bytes, self.nbytes)
        if seg.bytes >= self.segment_bytes:
            self._flush()

    def _flush(self) -> None:
        """Settle the buffered segment: move every involved group's delta and moment to the present step
        (:meth:`amnesiac.segments.Segment.settle`, tiled over :data:`amnesiac.segments.FLUSH_TILE` coordinates)."""
        seg, self._segment = self._segment, None
        if seg is None or not seg.steps:
            return
        if isinstance(seg, DecaySegment):
            seg.settle(self.moments if seg.stateful else None, self.deltas, numel=self.layout.numel)
            return
        seg.settle(self.moments, self.deltas, mask=self.mask if self.p is not None else None,
                   numel=self.layout.numel)
        horizon = self._horizon(seg.beta)
        self._retire(torch.nonzero(self._in_flight & (self._last_seen <= self.steps - horizon)).flatten())

    def _horizon(self, beta) -> int:
        b = float(beta.max()) if torch.is_tensor(beta) else float(beta)
        if b <= 0:
            return 1
        if b >= 1:
            raise ValueError(f"momentum/beta1 must be < 1 for a decaying buffer, got {b}")
        return max(1, math.ceil(math.log(self.retire_tol) / math.log(b)) + 1)

    def _retire(self, rows: torch.Tensor) -> None:
        """Hand the in-flight momentum of groups that left the horizon to the remainder (keeps the sum exact)."""
        if len(rows) == 0 or self.moments is None:
            self._in_flight[rows] = False
            return
        r = rows.to(self.device)
        m = self.moments.index_select(0, r)
        if self.p is None:
            self.base_moment += m.sum(0)
        else:
            self.base_moment.index_add_(0, self.mask(rows).flatten(), m.flatten())
        self.moments.index_fill_(0, r, 0.0)
        self._in_flight[rows] = False

    def _drop_moments(self) -> None:
        self._flush()
        if self.second_moments is not None:
            self.second_moments.zero_()
        if self.moments is not None:
            self.moments.zero_()
            self.base_moment.zero_()

    def check_optimizer(self, optimizer: Optimizer) -> None:
        """Refuse, before ``optimizer``'s next step, what :meth:`end_step` would refuse after it: an optimizer
        without an update rule (``TypeError``), an option its rule cannot follow (``maximize=True``, ...) or
        buffers that did not start empty with this log (the log attached after the optimizer's first step).

        :class:`~amnesiac.AttributedOptimizer` calls it when it is built and before every step, so that a
        refusal comes while the model, the optimizer and the log are as they were. Changes nothing.
        """
        if self.attribution == "gradient" or self.finalized:  # raw gradients need no rule; begin_step refuses
            return
        check_rule(optimizer)
        if self.propagate_second_moment:
            second_moment_rule(optimizer)
        continues = self._optimizer_ref is _RESUMED or self._optimizer_ref == id(optimizer)
        seen = self._opt_steps if continues else 0  # a new optimizer starts the log's buffers afresh
        mine = set(self._param_ids)
        for group in optimizer.param_groups:
            for q in group["params"]:
                state = optimizer.state.get(q, {}) if id(q) in mine else {}
                if "step" in state and int(float(state["step"])) != seen:
                    raise ValueError(
                        f"the optimizer has taken {int(float(state['step']))} steps but the log saw {seen}: attach "
                        "the log before the optimizer's first step (its buffers must start empty), or resume both "
                        "from one checkpoint"
                    )
                if not seen and state.get("momentum_buffer") is not None:
                    raise ValueError(
                        "the optimizer already holds a momentum_buffer (it took steps before this log was attached): "
                        "attach the log before the optimizer's first step (its buffers must start empty)"
                    )

    # ------------------------------------------------------------------------------------ checkpoints

    _CONFIG = ("attribution", "p", "mask_seed", "indexing", "retire_tol", "loss_reduction", "lazy_momentum",
               "segment_bytes", "propagate_every", "propagate_after")
    _TENSORS = ("deltas", "moments", "theta0", "base", "base_moment", "_remainder", "_last_seen", "_in_flight")
    _COUNTERS = ("steps", "samples_seen", "_opt_steps", "peak_bytes", "hvp_seconds", "lazy_steps", "finalized")
    _STATE_KEYS = {"config": dict.fromkeys(_CONFIG), "dtypes": {"compute": None, "storage": None},
                   "layout": {"names": None, "shapes": None}, "groups": {"names": None, "group_of": None},
                   "tensors": dict.fromkeys(_TENSORS), "counters": dict.fromkeys(_COUNTERS), "segment": None,
                   "optimizer_attached": None}  # what load_state_dict reads (masks_cached may be absent)

    def _extra_config(self) -> dict:
        """Settings saved only when they differ from the default, so that the states and fingerprints of logs
        built without them stay what they were."""
        extra = {} if self.propagate_hessian == "replay" else {"propagate_hessian": self.propagate_hessian}
        extra |= {"propagate_second_moment": True} if self.propagate_second_moment else {}
        extra |= {"lazy_decay": True} if self.lazy_decay else {}
        return extra | ({"propagate_damping": self.propagate_damping} if self.propagate_damping else {})

    def state_dict(self) -> dict:
        """Everything the log holds between two steps (tensors, counters, a lazy segment's buffers), so a training
        interrupted here and resumed with :meth:`load_state_dict` gives the same ledger bit for bit.

        Example:
            >>> log = DeltaLog(nn.Linear(2, 2), {"a": [0]})
            >>> sorted(log.state_dict())[:3]
            ['config', 'counters', 'dtypes']
        """
        if self._pending is not None:
            raise RuntimeError("state_dict between begin_step and end_step: checkpoint after the optimizer's step")
        seg = None if self._segment is None else self._segment.state()
        return {
            "kind": "DeltaLog",
            "config": {k: getattr(self, k) for k in self._CONFIG} | self._extra_config(),
            "dtypes": {"compute": str(self.compute_dtype), "storage": str(self.storage_dtype)},
            "layout": {"names": list(self.layout.names), "shapes": [list(x) for x in self.layout.shapes]},
            "groups": {"names": [str(n) for n in self.group_names], "group_of": self.table.group_of},
            "tensors": {k: getattr(self, k, None) for k in self._TENSORS}
            | ({"second_moments": self.second_moments} if self.second_moments is not None else {}),
            "counters": {k: getattr(self, k) for k in self._COUNTERS},
            "segment": seg,
            "optimizer_attached": self._optimizer_ref is not None,
            "masks_cached": self._mask_cache is not None,
        }

    def load_state_dict(self, state: dict) -> DeltaLog:
        """Restore :meth:`state_dict` into a log built the same way (same model layout, groups and settings).

        Everything is checked before anything changes: the settings, the layout (parameter names and shapes: a
        difference is named), the compute and storage dtypes and the groups; a state missing a key (saved by an
        older or other version) raises ``ValueError`` naming the key.

        The next step may come from a new optimizer object (restored from its own ``state_dict``): the log
        adopts it without emptying its moments, and checks that the optimizer's step count continues its own.
        """
        if not isinstance(state, Mapping) or state.get("kind") != "DeltaLog":
            kind = state.get("kind") if isinstance(state, Mapping) else type(state).__name__
            raise ValueError(f"not a DeltaLog state (kind {kind!r})")
        require_keys(state, self._STATE_KEYS, "DeltaLog")
        mine = {k: getattr(self, k) for k in self._CONFIG} | {"propagate_hessian": self.propagate_hessian,
                                                              "propagate_second_moment": self.propagate_second_moment,
                                                              "propagate_damping": self.propagate_damping,
                                                              "lazy_decay": self.lazy_decay}
        # settings saved only when not the default (states saved before they existed have the default)
        saved = {"propagate_hessian": "replay", "propagate_second_moment": False,
                 "propagate_damping": 0.0, "lazy_decay": False} | dict(state["config"])
        diff = {k: (v, saved[k]) for k, v in mine.items() if saved[k] != v}
        if diff:
            raise ValueError(f"the saved log was built with other settings: {diff} (this log, saved log)")
        check_layout(state["layout"], self.layout)
        for what, saved, here, fix in (
                ("compute", state["dtypes"]["compute"], self.compute_dtype, "convert the model with .to(dtype) before "
                 "building the log"),
                ("storage", state["dtypes"]["storage"], self.storage_dtype, "build the log with that dtype=")):
            if saved != str(here):
                raise ValueError(f"the saved log was recorded with {what} dtype {saved}, this log has {here}: {fix}")
        if state["groups"]["names"] != [str(n) for n in self.group_names] or not torch.equal(
                state["groups"]["group_of"], self.table.group_of):
            raise ValueError("the saved log tracks other groups; build the log with the same groups before loading")
        want = (len(self.group_names), self.width)
        for k in ("deltas", "moments"):
            v = state["tensors"][k]
            if v is not None and tuple(v.shape) != want:
                raise ValueError(f"the saved log's {k} are {list(v.shape)}, this log's {list(want)} (groups x "
                                 "coordinates): the state does not match its own layout")
        for k in self._TENSORS:
            v = state["tensors"].get(k)
            if k in ("_last_seen", "_in_flight"):  # bookkeeping lives on the CPU
                setattr(self, k, v.clone())
            elif v is not None:
                setattr(self, k, v.to(self.device))
            elif k in ("theta0", "base", "_remainder"):  # absent before/after finalize: absent here too
                if k in self.__dict__:
                    delattr(self, k)
            else:
                setattr(self, k, None)
        q = state["tensors"].get("second_moments")
        self.second_moments = q.to(self.device) if q is not None else None
        for k, v in state["counters"].items():
            setattr(self, k, v)
        if self.finalized:
            self.deltas = self.deltas.to(self.storage_dtype)
        seg = state["segment"]
        self._segment = (None if seg is None else DecaySegment.from_state(seg) if seg.get("kind") == "decay"
                         else Segment.from_state(seg))
        self._optimizer_ref = _RESUMED if state["optimizer_attached"] else None
        cached = state.get("masks_cached")  # as the saved log held its masks (finalize may have dropped them)
        if cached is False:
            self._mask_cache = None
        elif cached and self._mask_cache is None:
            self._mask_cache = self._masks(range(len(self.group_names)))
        return self

    # -------------------------------------------------------------------------------------- read out

    def finalize(self, *, keep_masks: bool = False) -> DeltaLog:
        """End recording: free the training buffers, cast the deltas to the storage dtype, and (unless
        ``keep_masks``) drop the cached mask indices, which :meth:`delta` then regenerates from their seeds.

        With ``storage``, deltas cast to another dtype go to a new file, ``deltas.<dtype>.bin``, allocated first
        (no room for it raises ``OSError`` before anything changes) and ``deltas.bin`` is removed."""
        cast = None
        if self.storage is not None and self.storage_dtype != self.deltas.dtype:
            name = f"deltas.{str(self.storage_dtype).removeprefix('torch.')}"
            cast = self._zeros(name, tuple(self.deltas.shape), self.storage_dtype)
        self._flush()
        self._work, self._coefficients = {}, {}
        if self.moments is not None:
            self._retire(torch.nonzero(self._in_flight).flatten())
        self.moments = None
        self.second_moments = None
        if self.storage is not None:
            (self.storage / "moments.bin").unlink(missing_ok=True)
        if self.attribution != "gradient":
            self._remainder = (self.base - self.theta0).to(self.storage_dtype)
            del self.base, self.theta0
            self.base_moment = None
        if self.storage is None:
            self.deltas = self.deltas.to(self.storage_dtype)
        elif cast is not None:  # cast into the new file, a chunk of rows at a time
            old, self.deltas = self.deltas, cast
            for a in range(0, len(old), 256):
                self.deltas[a: a + 256] = old[a: a + 256].to(self.storage_dtype)
            del old
            (self.storage / "deltas.bin").unlink(missing_ok=True)
        if not keep_masks:
            self._mask_cache = None
        self.finalized = True
        return self

    def delta_vector(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """Summed delta of these groups as one flat [P] vector (layout: :attr:`layout`), in compute dtype."""
        self._flush()
        rows = self.rows_of(groups)
        out = torch.zeros(self.layout.numel, dtype=self.compute_dtype, device=self.device)
        if len(rows) == 0:
            return out
        for chunk in rows.split(64):  # bounded memory: never copy more than 64 rows at once
            vals = self.deltas.index_select(0, chunk.to(self.device)).to(self.compute_dtype)  # [n, K]
            if self.p is None:
                out += vals.sum(0)
            else:
                out.index_add_(0, self.mask(chunk).flatten(), vals.flatten())
        return out

    @property
    def remainder_vector(self) -> torch.Tensor:
        """What no tracked group owns, flat [P]: theta_T - theta_0 minus every group's delta."""
        if self.attribution == "gradient":
            raise AttributeError(
                "the 'gradient' attribution records raw gradients, which do not add up to the "
                "parameter change; only attribution='update' (or 'propagated') has a remainder"
            )
        if self.finalized:
            return self._remainder.to(self.compute_dtype)
        return self.base - self.theta0

    @property
    def remainder(self) -> dict[str, torch.Tensor]:
        """:attr:`remainder_vector` as name -> tensor."""
        return self.layout.unflatten(self.remainder_vector)

    @property
    def nbytes(self) -> int:
        """Bytes actually held by this log's tensors (deltas, buffers, masks, lookup tables)."""
        held = [
            self.deltas,
            self.moments,
            self.second_moments,
            self._mask_cache,
            self._last_seen,
            self._in_flight,
            getattr(self, "base", None),
            getattr(self, "theta0", None),
            getattr(self, "base_moment", None),
            getattr(self, "_remainder", None),
            *self._work.values(),
        ]
        segment = self._segment.bytes if self._segment else 0
        return segment + self.table.nbytes + sum(t.numel() * t.element_size() for t in held if t is not None)

    def __repr__(self) -> str:
        return (
            f"DeltaLog({len(self.group_names)} groups, attribution={self.attribution!r}, p={self.p}, "
            f"{self.layout.numel} parameters, {self.steps} steps, {self.nbytes / 2**20:.1f} MiB)"
        )
