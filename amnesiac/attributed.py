"""The optimizer wrapper: any training loop feeds delta logs by wrapping its optimizer.

:class:`AttributedOptimizer` keeps the wrapped optimizer's interface (``param_groups``, ``state``,
``zero_grad``, ``step``, ``state_dict``; learning-rate schedulers work unchanged) and makes the logging
visible as a step of its own, :meth:`~AttributedOptimizer.pre_step`, run by ``step()`` before the real step:

    opt = AttributedOptimizer(torch.optim.Adam(model.parameters()), model, [log])
    for x, y, sample_ids in loader:
        opt.zero_grad()
        opt.set_batch(sample_ids)          # which samples are in this batch, before backward
        loss_fn(model(x), y).backward()
        opt.step()                         # pre_step (the groups' shares) + the real step + the logs' update
    opt.close()                            # removes the hooks

Each group's share of the batch gradient is read off the ordinary backward pass by hooks
(:class:`~amnesiac.grads.GroupGradients`: one weight-gradient pass over the tracked rows, by a registry of
layer rules, with a per-layer ``torch.func`` fallback for layers without one). ``group_grads="vmap"`` takes
whole-model per-sample gradients instead, which need the batch: ``set_batch(ids, inputs=x, targets=y)``.
"""

from __future__ import annotations

import inspect
import time
from collections import Counter, OrderedDict
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torch.optim import Optimizer

from . import buffers
from .grads import GroupGradients, ParamLayout, per_sample_grads
from .layers import hooks_unsupported_reason

GROUP_GRAD_METHODS = ("auto", "hooks", "vmap")
WEIGHT_GRAD_MODES = ("autograd", "partitioned")


class AttributedOptimizer(Optimizer):
    """Wraps ``optimizer`` so that every step feeds ``logs`` (delta logs and batch logs).

    Args:
        optimizer: any optimizer over ``model``'s parameters whose step needs no closure (LBFGS is refused);
            delta logs with ``attribution="update"`` need one with an update rule
            (:func:`amnesiac.register_update_rule`), options it can follow and buffers that start with the log,
            checked when the wrapper is built and again before every step (:meth:`amnesiac.DeltaLog.check_optimizer`).
        model: the model being trained (no BatchNorm: a sample's gradient must not depend on the others).
        logs: a log or a list of logs, created on ``model`` before its first step.
        group_grads: ``"auto"`` (shares read off the backward pass by the layer rules; a layer without a rule
            falls back, alone, to ``torch.func`` on its captured input and output gradient), ``"hooks"`` (the
            same, refusing layers without a rule) or ``"vmap"`` (whole-model per-sample gradients with
            ``torch.func``; needs ``inputs`` and ``targets`` in :meth:`set_batch`).
        loss_fn: the per-batch mean loss of (logits, targets), used only by the ``"vmap"`` path.
        grad_chunk: per-sample gradients are computed this many rows at a time (``"vmap"`` path).
        check_finite: refuse a step whose batch gradient holds NaN or infinity (raises before the optimizer
            and the logs change, so the ledger stays as of the last good step).
        weight_grads: ``"autograd"`` (the default: autograd computes every weight gradient as in plain
            training, and the groups' shares are formed again over the tracked rows) or ``"partitioned"``:
            the weight gradients of the layers with a rule are computed once, as a partition of the batch
            rows into the groups of the log that tracks the most rows of the batch and the untracked rows,
            and ``.grad`` is set to the sum of the parts (:meth:`amnesiac.grads.GroupGradients.arm`). The
            gradient then equals plain training's up to the order of float sums (not bit for bit). Hooks
            path only; not under DistributedDataParallel (its reducer needs autograd's gradients).

    Example:
        >>> from amnesiac import DeltaLog
        >>> model = nn.Linear(3, 2)
        >>> log = DeltaLog(model, {"a": [0, 1]})
        >>> opt = AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, log)
        >>> opt.set_batch(torch.tensor([0, 1, 2, 3]))
        >>> F.cross_entropy(model(torch.randn(4, 3)), torch.tensor([0, 1, 1, 0])).backward()
        >>> opt.step()
        >>> opt.close(); log.steps
        1
    """

    def __init__(
        self,
        optimizer: Optimizer,
        model: nn.Module,
        logs,
        *,
        group_grads: str = "auto",
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
        grad_chunk: int = 32,
        check_finite: bool = True,
        weight_grads: str = "autograd",
    ):
        if isinstance(optimizer, AttributedOptimizer):
            raise TypeError("the optimizer is already wrapped; pass its logs to the existing AttributedOptimizer")
        if not isinstance(optimizer, Optimizer):
            raise TypeError(f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}")
        if group_grads not in GROUP_GRAD_METHODS:
            raise ValueError(f"unknown group_grads {group_grads!r}; valid: {', '.join(GROUP_GRAD_METHODS)}")
        if weight_grads not in WEIGHT_GRAD_MODES:
            raise ValueError(f"unknown weight_grads {weight_grads!r}; valid: {', '.join(WEIGHT_GRAD_MODES)}")
        if weight_grads == "partitioned" and group_grads == "vmap":
            raise ValueError("weight_grads='partitioned' forms the weight gradients in the hooks' backward pass; "
                             "it needs group_grads='auto' or 'hooks', not 'vmap'")
        if weight_grads == "partitioned" and isinstance(model, nn.parallel.DistributedDataParallel):
            raise ValueError("weight_grads='partitioned' is not available under DistributedDataParallel (its "
                             "reducer averages autograd's gradients); use weight_grads='autograd'")
        if (reason := _needs_closure(optimizer)) is not None:
            raise TypeError(reason)
        logs = [] if logs is None else list(logs) if isinstance(logs, Sequence) else [logs]
        for log in logs:  # an optimizer the logs cannot follow is refused before anything is attached
            if hasattr(log, "check_optimizer"):
                log.check_optimizer(optimizer)
        self.original_optimizer = optimizer
        self.model = model
        self.weight_grads = weight_grads
        self.logs = logs
        self.loss_fn, self.grad_chunk, self.check_finite = loss_fn, grad_chunk, check_finite
        self.layout = ParamLayout.of(model)
        self.share_seconds = 0.0  # pre_step: the groups' shares (and the partitioned weight gradients' bookkeeping)
        self.update_seconds = 0.0  # after the optimizer's step: the logs fold the step in
        # what torch.optim.Optimizer's own hooks expect to find (schedulers and hooks read these)
        self._optimizer_step_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_step_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_pre_hooks: OrderedDict = OrderedDict()
        self._optimizer_load_state_dict_post_hooks: OrderedDict = OrderedDict()
        self._capture: GroupGradients | None = None
        wants_shares = any(log.needs_per_sample_grads for log in self.logs)
        if wants_shares and group_grads != "vmap":
            if group_grads == "hooks" and (reason := hooks_unsupported_reason(model)) is not None:
                raise TypeError(f"group_grads='hooks' is not available for this model: {reason}; use 'vmap' or 'auto'")
            self._capture = GroupGradients(model, self.layout).__enter__()
        self._batch: tuple | None = None
        self._prepared = False
        self.closed = False
        # what backward left in each .grad, to detect clipping (a uniform rescale: attributed) and gradient
        # accumulation over several backward passes (refused) between set_batch and step
        self._grad_hooks = []
        self._raw: dict[int, torch.Tensor] = {}
        self._norm_buffer: torch.Tensor | None = None  # float64 scratch for the gradients' norms (_norm64)
        self._backwards: dict[int, int] = {}
        if wants_shares:
            self._grad_hooks = [q.register_post_accumulate_grad_hook(self._on_grad)
                                for q in self.layout.params(model)]
        self._row_hooks = []
        if self._capture is not None and weight_grads == "partitioned":
            self._row_hooks = [m.register_forward_pre_hook(self._on_forward) for m in model.modules()
                               if any(q.requires_grad for q in m.parameters(recurse=False))]

    # ------------------------------------------------------------------------- the optimizer's interface

    @property
    def param_groups(self) -> list[dict]:
        return self.original_optimizer.param_groups

    @param_groups.setter
    def param_groups(self, value: list[dict]) -> None:
        self.original_optimizer.param_groups = value

    @property
    def state(self):
        return self.original_optimizer.state

    @state.setter
    def state(self, value) -> None:
        self.original_optimizer.state = value

    @property
    def defaults(self) -> dict:
        return self.original_optimizer.defaults

    @defaults.setter
    def defaults(self, value: dict) -> None:
        self.original_optimizer.defaults = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.original_optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        return self.original_optimizer.state_dict()

    def load_state_dict(self, state_dict: dict) -> None:
        self.original_optimizer.load_state_dict(state_dict)

    def add_param_group(self, param_group: dict) -> None:
        raise RuntimeError(
            "parameters cannot be added to an attributed optimizer: the logs' layout is fixed when they are "
            "created. Build the optimizer with every parameter group first, then wrap it"
        )

    def __repr__(self) -> str:
        return f"AttributedOptimizer({self.original_optimizer!r}, logs={self.logs!r})"

    # ------------------------------------------------------------------------------------ the extra work

    def set_batch(self, sample_ids, *, inputs: torch.Tensor | None = None, targets: torch.Tensor | None = None):
        """Say which samples make up this batch (row i of the loss is sample ``sample_ids[i]``).

        Call before ``loss.backward()``; ``inputs`` and ``targets`` are needed only by the ``"vmap"`` path. One
        sample id per row of the batch: a different number is refused (here when ``inputs``/``targets`` show the
        rows, else at the step, before anything changes).
        """
        if self.closed:
            raise RuntimeError("this AttributedOptimizer was closed; wrap the optimizer again to log more steps")
        ids = torch.as_tensor(sample_ids).reshape(-1)
        if ids.dtype.is_floating_point or ids.dtype == torch.bool:
            raise TypeError(f"sample_ids must be integers, got dtype {ids.dtype}")
        if len(ids) and int(ids.min()) < 0:
            raise ValueError(f"sample ids must be non-negative dataset indices, got {int(ids.min())}")
        for t in (inputs, targets):
            if t is not None and (t.dim() == 0 or len(t) != len(ids)):
                raise ValueError(_rows_message(len(ids), len(t) if t.dim() else 0, "the first dimension of "
                                               + ("inputs" if t is inputs else "targets"), "Nothing was recorded"))
        self._batch = (ids.to(torch.long), inputs, targets)
        self._prepared = False
        self._raw, self._backwards = {}, {}
        if self._capture is not None:
            self._capture.clear()  # e.g. a step skipped by a GradScaler left its activations behind
            if self.weight_grads == "partitioned":
                self._arm(ids)

    @property
    def log_seconds(self) -> float:
        """Seconds spent in the logging work (:attr:`share_seconds` + :attr:`update_seconds`)."""
        return self.share_seconds + self.update_seconds

    def _arm(self, ids: torch.Tensor) -> None:
        """Partition the coming backward pass's weight gradients by the grouping that covers the most rows."""
        best = None
        for log in self.logs:
            if log.needs_per_sample_grads and hasattr(log, "assignment_for"):
                assign, n = log.assignment_for(ids)
                tracked = int((assign >= 0).sum())
                if best is None or tracked > best[0]:
                    best = (tracked, assign, n)
        if best is not None:
            self._capture.arm(best[1], best[2], on_grads=self._on_partitioned)

    def _on_partitioned(self, params: list) -> None:
        for q in params:  # what the post-accumulate hook records for autograd's gradients
            self._on_grad(q)

    def pre_step(self) -> None:
        """The logging work of this step: begin it in every log and hand each delta log its groups' shares.

        Runs once per step (``step()`` calls it when it was not called already). Needs :meth:`set_batch` and
        a finished backward pass.
        """
        if self._prepared or not self.logs:
            self._prepared = True
            return
        if self._batch is None:
            raise RuntimeError(
                "call set_batch(sample_ids) before each step: the logs must know which samples are in the batch"
            )
        for log in self.logs:  # options changed since construction: refused before the optimizer's step
            if hasattr(log, "check_optimizer"):
                log.check_optimizer(self.original_optimizer)
        norms = self._norms_now()
        if self.check_finite:
            self._check_finite(norms)
        scale = self._grad_scale(norms)
        self._check_rows()
        ids, x, y = self._batch
        if (x is None or y is None) and any(getattr(log, "needs_inputs", False) for log in self.logs):
            self._batch = None
            raise ValueError(
                "a propagated delta log needs the batch for its Hessian-vector products: pass "
                "set_batch(sample_ids, inputs=x, targets=y). The step was not taken"
            )
        if self._capture is not None:
            self._hook_shares(ids)
        else:
            if (x is None or y is None) and any(log.needs_per_sample_grads for log in self.logs):
                self._batch = None
                raise ValueError(
                    "this model's shares come from per-sample gradients (torch.func), which need the batch: pass "
                    "set_batch(sample_ids, inputs=x, targets=y). The step was not taken"
                )
            rows = [log.begin_step(self.model, ids) for log in self.logs]
            union = torch.unique(torch.cat(rows)) if rows else torch.empty(0, dtype=torch.long)
            if union.numel():
                for r, g in per_sample_grads(self.model, x, y, union.to(x.device), layout=self.layout,
                                             loss_fn=self.loss_fn, chunk_size=self.grad_chunk):
                    for log in self.logs:
                        log.accumulate(r, g)
        propagating = [log for log in self.logs if getattr(log, "needs_inputs", False)]
        if propagating and self._capture is not None:
            self._capture._paused = True  # the HVPs' functional forward passes must not be captured
        try:
            for log in propagating:
                log.propagate(self.model, x, y, self.loss_fn)
        finally:
            if self._capture is not None:
                self._capture._paused = False
        if scale != 1.0:
            for log in self.logs:
                log.set_grad_scale(scale)
        self._prepared = True

    def step(self, closure=None):
        """:meth:`pre_step` (if not run yet), the wrapped optimizer's step, then each log folds the step in.

        Args:
            closure: optional, as for any torch optimizer: called once, with gradients enabled, before
                :meth:`pre_step`; it must run the forward and backward pass of the batch given to
                :meth:`set_batch` (zeroing the gradients first) and return the loss, which ``step`` returns. The
                wrapped optimizer then steps without it (optimizers that re-evaluate the loss several times per
                step, such as LBFGS, are refused when the wrapper is built).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        t0 = time.perf_counter()
        self.pre_step()
        self.share_seconds += time.perf_counter() - t0
        self.original_optimizer.step()
        t0 = time.perf_counter()
        for log in self.logs:
            log.end_step(self.original_optimizer)
        self.update_seconds += time.perf_counter() - t0
        self._batch, self._prepared = None, False
        return loss

    def close(self) -> None:
        """Remove the hooks from the model (the logs keep what they recorded)."""
        if self._capture is not None:
            self._capture.__exit__(None, None, None)
            self._capture = None
        for h in (*self._grad_hooks, *self._row_hooks):
            h.remove()
        self._grad_hooks, self._row_hooks, self._raw = [], [], {}
        self._norm_buffer = None
        self.closed = True

    def __enter__(self) -> AttributedOptimizer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------------------------------ helpers

    def _on_forward(self, module: nn.Module, inputs: tuple) -> None:
        """weight_grads='partitioned': a forward pass over another number of rows than the armed batch's (sample ids
        that do not match the batch) runs unarmed, as plain autograd; :meth:`_check_rows` then refuses the step."""
        key = self._capture.armed_key if self._capture is not None else None
        x = inputs[0] if inputs else None
        if (key is not None and torch.is_grad_enabled() and torch.is_tensor(x) and x.dim() > 0
                and x.shape[0] != len(key[1])):
            self._capture.disarm()

    def _check_rows(self) -> None:
        """Refuse sample ids whose number is not the batch's row count, as the hooks saw it in the backward pass
        (the first dimension of every hooked layer's input) or as the inputs give it."""
        ids, x, _ = self._batch
        if self._capture is not None:
            rows = sorted({rec[0].shape[0] for recs in self._capture._records.values() for rec in recs
                           if rec[2] is not None and rec[0].dim() > 0})
        else:
            rows = [] if x is None else [len(x)]
        if rows and rows != [len(ids)]:
            self._batch = None
            if self._capture is not None:
                self._capture.clear()
            raise ValueError(_rows_message(len(ids), rows[0] if len(rows) == 1 else rows,
                                           "the first dimension of the layers' inputs in the backward pass",
                                           "The step was not taken: call set_batch with the right ids and run the "
                                           "backward pass again"))

    def _on_grad(self, q: torch.Tensor) -> None:
        k = id(q)
        self._backwards[k] = self._backwards.get(k, 0) + 1
        if self._backwards[k] == 1:  # the norm, not a copy: nearly free when nothing touches the gradients
            self._raw[k] = self._norm64(q.grad.detach())

    def _norm64(self, g: torch.Tensor) -> torch.Tensor:
        """``torch.linalg.vector_norm(g, dtype=torch.float64)``, to the bit. On the CPU that call casts ``g`` to
        float64 in new memory and reduces the copy; here the cast goes into a buffer kept across steps (new memory
        of a gradient's size, twice per parameter per step, measured as a visible part of ResNet-18's log)."""
        if (g.device.type != "cpu" or g.dtype == torch.float64 or not g.is_contiguous()  # (the cast keeps strides)
                or not buffers.REUSE):
            return torch.linalg.vector_norm(g, dtype=torch.float64)
        n = g.numel()
        if self._norm_buffer is None or self._norm_buffer.numel() < n:
            self._norm_buffer = torch.empty(n, dtype=torch.float64)
        scratch = self._norm_buffer[:n]
        scratch.copy_(g.reshape(-1))
        return torch.linalg.vector_norm(scratch)

    def _norms_now(self) -> dict[int, torch.Tensor]:
        """Each recorded parameter's gradient norm as the step will use it (float64, :meth:`_norm64`), read once
        for both the finiteness check and the rescale's detection."""
        return {id(q): self._norm64(q.grad.detach()) for q in self.layout.params(self.model)
                if id(q) in self._raw and q.grad is not None}

    def _grad_scale(self, norms: dict[int, torch.Tensor]) -> float:
        """The factor by which the gradients were rescaled between backward and step (1: untouched).

        Global-norm clipping (``clip_grad_norm_``) and a ``GradScaler``'s unscaling multiply every gradient
        by one number; the groups' shares are multiplied by the same number, taken as given (like Adam's
        denominator). Detected from each parameter's gradient norm, recorded when backward wrote it: all
        unchanged means untouched; all changed by one ratio is a common rescale; ratios that differ between
        parameters (``clip_grad_value_``, a per-parameter rescale) are refused, as is accumulating several
        backward passes into one step. (A change that keeps every parameter's gradient norm, such as permuting
        entries, would pass unseen; no training recipe does that.)
        """
        if any(n > 1 for n in self._backwards.values()):
            self._batch = None
            raise RuntimeError(
                "the gradients were accumulated over several backward passes before this step; a log attributes "
                "one backward pass per step. Call set_batch with every sample of the accumulated batch and run one "
                "backward on their (mean) loss, or step after each backward"
            )
        raw, now = [], []
        for q in self.layout.params(self.model):
            r = self._raw.get(id(q))
            if r is not None:
                raw.append(r)
                now.append(norms[id(q)] if q.grad is not None
                           else torch.zeros((), dtype=torch.float64, device=r.device))
        if not raw:
            return 1.0
        raw_t, now_t = torch.stack(raw).cpu(), torch.stack(now).cpu()  # one transfer, not one per parameter
        if torch.equal(raw_t, now_t):
            return 1.0
        total = float(raw_t.square().sum())
        c = float(now_t.square().sum() / total) ** 0.5 if total > 0 else 0.0
        if not bool(((now_t - c * raw_t).abs() <= 1e-5 * max(c, 1e-30) * raw_t + 1e-30).all()):
            self._batch = None
            raise RuntimeError(
                "the gradients were changed between backward and step by more than one common factor (e.g. "
                "clip_grad_value_ or a per-parameter rescale); the groups' shares cannot follow. Global-norm "
                "clipping (clip_grad_norm_) and GradScaler are supported. Under DistributedDataParallel, which "
                "averages the gradients after backward, call amnesiac.attach_ddp(ddp_model, optimizer) first"
            )
        return c

    def _check_finite(self, norms: dict[int, torch.Tensor]) -> None:
        """Refuse a step whose gradients hold NaN or infinity. A finite float64 norm (``norms``, as the step reads
        the gradient) means every entry is finite: a NaN or an infinity makes the norm so, and squares of finite
        float32 (or narrower) numbers cannot overflow a float64 sum. Only a gradient whose norm is not finite, or
        one without a norm, is read entry by entry (a float64 gradient's norm may overflow while its entries are
        finite)."""
        params = [q for q in self.layout.params(self.model) if q.grad is not None]
        if params and all(id(q) in norms for q in params) and bool(
                torch.isfinite(torch.stack([norms[id(q)] for q in params])).all()):
            return  # one check (one device sync), the common case

        def finite(q: torch.Tensor) -> bool:
            n = norms.get(id(q))
            return (n is not None and bool(torch.isfinite(n))) or bool(torch.isfinite(q.grad).all())

        bad = [n for n, q in zip(self.layout.names, self.layout.params(self.model))
               if q.grad is not None and not finite(q)]
        if bad:
            self._batch = None
            if self._capture is not None:
                self._capture.clear()
            raise FloatingPointError(
                f"the batch gradient holds NaN or infinity (in {', '.join(bad[:3])}); the step was not taken and "
                "the logs hold training up to the last finite step. Lower the learning rate or check the data"
            )

    def _hook_shares(self, ids: torch.Tensor) -> None:
        """Begin the step in every log and hand each delta log its groups' shares, formed from the hooks.

        Logs that group this batch's rows identically (e.g. several per-sample logs of one forget set) share
        one computation.
        """
        wanted = []
        for log in self.logs:
            log.begin_step(self.model, ids)
            if log.needs_per_sample_grads:
                assign, n = log.group_assignment()
                if n:
                    wanted.append((log, (n, tuple(assign.tolist())), assign))
        users = Counter(key for _, key, _ in wanted)
        done: dict[tuple, torch.Tensor] = {}
        armed = self._capture.armed_key
        if armed is not None and armed in users:  # formed in the backward pass, with the weight gradients
            done[armed] = self._capture.partition()
        self._capture.disarm()
        for log, key, assign in wanted:
            if key not in done:
                done[key] = self._capture.group_sums(assign, key[0])
            users[key] -= 1
            log.add_shares(done[key] if users[key] == 0 else done[key].clone())  # a log may change its copy
        self._capture.clear()  # the captured activations are not needed past this point


def _rows_message(n_ids: int, rows, seen: str, outcome: str) -> str:
    return (f"set_batch was given {n_ids} sample ids but the batch has {rows} rows ({seen}); pass one sample id "
            "per row of the batch, in the order of its rows (row i of the loss is sample_ids[i]), and keep the "
            f"batch in the first dimension of every layer's input. {outcome}")


def _needs_closure(optimizer: Optimizer) -> str | None:
    """Why ``optimizer`` cannot be wrapped because its step needs a closure (``None`` if it does not)."""
    name = type(optimizer).__name__
    if isinstance(optimizer, torch.optim.LBFGS):
        return ("LBFGS re-evaluates the loss several times per step through a closure; the log cannot attribute a "
                "step made of several backward passes (it attributes the one backward pass of set_batch's batch). "
                "Use an optimizer whose step needs no closure (SGD, Adam, AdamW, RMSprop, Adagrad)")
    try:
        closure = inspect.signature(optimizer.step).parameters.get("closure")
    except (TypeError, ValueError):
        return None
    if closure is not None and closure.default is inspect.Parameter.empty:
        return (f"{name}.step needs a closure: an optimizer that re-evaluates the loss within its step cannot be "
                "attributed (the log attributes the one backward pass of set_batch's batch). Use an optimizer "
                "whose step needs no closure")
    return None
