"""Per-sample gradients with torch.func, and the flat-vector layout of a model's parameters.

Per-sample gradients are computed only for the rows of a batch that a log tracks (indexed by their
position in the batch), in chunks that bound memory, and returned flat: one row of ``P`` numbers per
sample, in the order of :class:`ParamLayout`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

from . import buffers
from .buffers import held_only_by_caller
from .layers import LayerRule, PerGroup, RowLayout, check_per_sample_compatible, functorch_rule, layer_rule, own_params

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class ParamLayout:
    """Where each trainable parameter lives in a flat vector: ``names[i]`` spans ``offsets[i]:offsets[i+1]``.

    Example:
        >>> layout = ParamLayout.of(nn.Linear(3, 2))
        >>> layout.names, layout.shapes, layout.numel
        (('weight', 'bias'), ((2, 3), (2,)), 8)
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    offsets: tuple[int, ...]  # len(names) + 1

    @classmethod
    def of(cls, model: nn.Module) -> ParamLayout:
        names, shapes, offsets = [], [], [0]
        for name, p in model.named_parameters():
            if p.requires_grad:
                names.append(name)
                shapes.append(tuple(p.shape))
                offsets.append(offsets[-1] + p.numel())
        if not names:
            raise ValueError("the model has no trainable parameters")
        return cls(tuple(names), tuple(shapes), tuple(offsets))

    @property
    def numel(self) -> int:
        return self.offsets[-1]

    def sizes(self) -> list[int]:
        return [b - a for a, b in zip(self.offsets[:-1], self.offsets[1:])]

    def flatten(self, tensors: dict[str, torch.Tensor]) -> torch.Tensor:
        """Dict name -> tensor (optionally with leading batch dims) to a flat [..., P] tensor."""
        first = tensors[self.names[0]]
        lead = first.shape[: first.dim() - len(self.shapes[0])]
        return torch.cat([tensors[n].reshape(*lead, -1) for n in self.names], dim=-1)

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Flat [..., P] tensor to a dict name -> tensor shaped like the parameters (views, no copy)."""
        if flat.shape[-1] != self.numel:
            raise ValueError(f"flat vector has {flat.shape[-1]} entries, the layout {self.numel}")
        lead = flat.shape[:-1]
        return {
            n: flat[..., a:b].reshape(*lead, *s)
            for n, s, a, b in zip(self.names, self.shapes, self.offsets[:-1], self.offsets[1:])
        }

    def params(self, model: nn.Module) -> list[torch.Tensor]:
        named = dict(model.named_parameters())
        return [named[n] for n in self.names]

    def vector(self, model: nn.Module) -> torch.Tensor:
        """The model's trainable parameters as one flat vector (a copy)."""
        return torch.cat([p.detach().reshape(-1) for p in self.params(model)])

    def check(self, model: nn.Module) -> None:
        """Raise if ``model`` does not have exactly this layout."""
        other = ParamLayout.of(model)
        if other != self:
            raise ValueError(
                "the model does not match the log: "
                f"log has {len(self.names)} tensors / {self.numel} parameters, model has "
                f"{len(other.names)} / {other.numel}. Use the model architecture the log was recorded with."
            )


def per_sample_grads(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    rows: torch.Tensor | None = None,
    *,
    layout: ParamLayout | None = None,
    loss_fn: LossFn = F.cross_entropy,
    chunk_size: int = 32,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield ``(rows, grads)`` chunks: the gradient of each selected sample's own loss, flat [n, P].

    Each row is the gradient of ``loss_fn(model(x[i:i+1]), y[i:i+1])`` at the current parameters
    (not divided by the batch size). Only ``rows`` (batch positions) are computed, ``chunk_size`` at a time.

    Example:
        >>> m = nn.Linear(4, 3)
        >>> chunks = list(per_sample_grads(m, torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1]), torch.tensor([1, 3])))
        >>> chunks[0][1].shape
        torch.Size([2, 15])
    """
    check_per_sample_compatible(model)
    layout = layout or ParamLayout.of(model)
    if rows is None:
        rows = torch.arange(len(x), device=x.device)
    rows = torch.as_tensor(rows, dtype=torch.long, device=x.device)
    if rows.numel() == 0:
        return
    named = dict(model.named_parameters())
    params = {n: named[n].detach() for n in layout.names}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in params}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def sample_loss(p, xi, yi):
        out = functional_call(model, ({**p, **frozen}, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    per_sample = vmap(grad(sample_loss), in_dims=(None, 0, 0))
    for start in range(0, rows.numel(), chunk_size):
        r = rows[start : start + chunk_size]
        g = per_sample(params, x[r], y[r])  # name -> [n, *shape]
        yield r, layout.flatten(g)  # [n, P]


def weighted_hvps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    tangents: torch.Tensor,
    *,
    layout: ParamLayout | None = None,
    loss_fn: LossFn = F.cross_entropy,
    chunk_size: int = 8,
) -> torch.Tensor:
    """Hessian-vector products of row-weighted batch losses: row k is ``H(L_k) @ tangents[k]``, flat [K, P].

    ``L_k(theta) = sum_i weights[k, i] * loss_fn(model(x[i:i+1]), y[i:i+1])`` at the model's current
    parameters; forward-over-reverse (``torch.func.jvp`` of ``grad``), ``chunk_size`` rows of ``weights`` at
    a time. With ``weights[k] = (1 - [row i in group k]) / B`` this is the batch Hessian without group k's
    rows applied to group k's delta, what the ``"propagated"`` attribution adds to its share.

    Example:
        >>> m = nn.Linear(2, 1, bias=False)
        >>> sq = lambda out, t: ((out - t) ** 2).mean()
        >>> w, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])  # row 0 only; tangent (1, 1)
        >>> h = weighted_hvps(m, torch.eye(2), torch.zeros(2, 1), w, v, loss_fn=sq)
        >>> h.tolist()  # the Hessian of (w . e1)^2 is 2 e1 e1^T
        [[2.0, 0.0]]
    """
    layout, params, frozen, buffers = _functional_parts(model, layout)

    def row_loss(p, xi, yi):
        out = functional_call(model, ({**p, **frozen}, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    def weighted_loss(p, w):
        return (vmap(row_loss, in_dims=(None, 0, 0))(p, x, y) * w).sum()

    def hvp(w, v):
        _, out = jvp(lambda p: grad(weighted_loss)(p, w), (params,), (layout.unflatten(v),))
        return layout.flatten(out)

    return _chunked(hvp, weights, tangents, params, layout, x.device, chunk_size)


def _functional_parts(model: nn.Module, layout: ParamLayout | None):
    """(layout, the logged parameters, the other parameters, the buffers), detached, for ``functional_call``."""
    check_per_sample_compatible(model)
    layout = layout or ParamLayout.of(model)
    named = dict(model.named_parameters())
    params = {n: named[n].detach() for n in layout.names}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in params}
    buffers = {n: b.detach() for n, b in model.named_buffers()}
    return layout, params, frozen, buffers


def _chunked(product, weights, tangents, params, layout, device, chunk_size: int) -> torch.Tensor:
    """``vmap(product)`` over the rows of (weights, tangents), ``chunk_size`` rows at a time, as flat [K, P]."""
    dtype = next(iter(params.values())).dtype
    w_all, v_all = weights.to(device, dtype), tangents.to(device, dtype)
    outs = [vmap(product)(w_all[a: a + chunk_size], v_all[a: a + chunk_size]) for a in range(0, len(w_all), chunk_size)]
    return torch.cat(outs) if outs else torch.zeros(0, layout.numel, dtype=dtype, device=device)



def weighted_gnvps(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    weights: torch.Tensor,
    tangents: torch.Tensor,
    *,
    layout: ParamLayout | None = None,
    loss_fn: LossFn = F.cross_entropy,
    chunk_size: int = 8,
) -> torch.Tensor:
    """Gauss–Newton-vector products of row-weighted batch losses: row k is ``J^T H_out(L_k) J tangents[k]``, flat
    [K, P], where ``J`` is the Jacobian of the model's outputs in its parameters and ``H_out(L_k)`` the Hessian of
    ``L_k`` (as in :func:`weighted_hvps`) in the outputs. It drops the term of the Hessian that the model's
    curvature contributes; for a convex loss of the outputs it is positive semi-definite (a stabilised stand-in
    for the Hessian), and for a model linear in its parameters it is the Hessian.

    Example:
        >>> m = nn.Linear(2, 1, bias=False)
        >>> sq = lambda out, t: ((out - t) ** 2).mean()
        >>> w, v = torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]])
        >>> weighted_gnvps(m, torch.eye(2), torch.zeros(2, 1), w, v, loss_fn=sq).tolist()  # linear: the Hessian
        [[2.0, 0.0]]
    """
    layout, params, frozen, buffers = _functional_parts(model, layout)

    def outputs(p):
        return functional_call(model, ({**p, **frozen}, buffers), (x,))

    def row_loss(oi, yi):
        return loss_fn(oi.unsqueeze(0), yi.unsqueeze(0))

    out, pullback = vjp(outputs, params)

    def gnvp(w, v):
        _, jv = jvp(outputs, (params,), (layout.unflatten(v),))  # J v, [B, C]
        _, hjv = jvp(lambda o: grad(lambda o2: (vmap(row_loss)(o2, y) * w).sum())(o), (out.detach(),), (jv,))
        return layout.flatten(pullback(hjv)[0])

    return _chunked(gnvp, weights, tangents, params, layout, x.device, chunk_size)

# ------------------------------------------------------------------------ group sums from one backward

class GroupGradients:
    """Per-group sums of per-sample gradients, read off the ordinary backward pass.

    While attached (``with GroupGradients(model, layout) as cap:``), hooks keep each layer's input and the
    gradient of the batch loss with respect to its output. Samples do not interact (no BatchNorm), so the
    part of a weight gradient that sample ``i`` contributes depends on row ``i`` of these two alone, and the
    sum over any set of rows is one call of the layer's own weight-gradient kernel on those rows (Opacus's
    observation, summed per group instead of per sample). :meth:`group_sums` thus costs one extra
    weight-gradient pass over the tracked rows, however many groups they form, and never materialises a
    per-sample gradient. The sums are shares of the *batch* gradient (what ``loss.backward()`` produced):
    with a mean-reduced loss, ``1/B`` times the sum of the samples' own gradients.

    Layers are served by the registry :data:`LAYER_RULES` (:func:`register_layer_rule`; Linear, Conv1d/2d/3d
    with zero padding, GroupNorm, LayerNorm). A layer without a rule falls back, alone, to per-sample
    ``torch.func`` vector-Jacobian products of that layer on its captured input and output gradient (exact,
    slower; ``fallback=False`` refuses instead). A layer may be called several times per forward pass; a
    fallback layer must take one tensor input.

    Example:
        >>> m = nn.Linear(3, 2)
        >>> with GroupGradients(m) as cap:
        ...     F.cross_entropy(m(torch.randn(4, 3)), torch.tensor([0, 1, 1, 0])).backward()
        ...     sums = cap.group_sums(torch.tensor([0, 1, -1, 0]), 2)
        >>> sums.shape
        torch.Size([2, 8])
    """

    def __init__(self, model: nn.Module, layout: ParamLayout | None = None, *, fallback: bool = True):
        check_per_sample_compatible(model)
        self.layout = layout or ParamLayout.of(model)
        where = {n: i for i, n in enumerate(self.layout.names)}
        self._slots = []  # (module, rule, {own parameter name: layout index})
        self.fallback_layers: list[str] = []  # names of the layers served by torch.func
        covered = set()
        for name, module in model.named_modules():
            own = {pn: where[f"{name}.{pn}" if name else pn] for pn, _ in own_params(module)
                   if (f"{name}.{pn}" if name else pn) in where}
            if not own:
                continue
            rule, reason = layer_rule(module)
            if rule is None:
                if not fallback:
                    raise TypeError(f"group sums from hooks are not available: module {name!r}: {reason}")
                rule = functorch_rule
                self.fallback_layers.append(name or type(module).__name__)
            self._slots.append((module, rule, own))
            covered.update(own.values())
        if len(covered) != len(self.layout.names):
            missing = [n for i, n in enumerate(self.layout.names) if i not in covered]
            raise TypeError(f"parameters {missing[:5]} belong to no layer the hooks can see")
        self._records: dict[int, list] = {}
        self._handles: list = []
        self._paused = False
        self._armed: dict | None = None  # the partition of the coming backward pass (arm)
        self._anchor: torch.Tensor | None = None
        self._spare: torch.Tensor | None = None  # the last [n_groups, P] result, reused once nothing else holds it
        self.reuses = 0  # results written into the memory of the one before (diagnostics)

    def __enter__(self) -> GroupGradients:
        self._handles = [m.register_forward_hook(functools.partial(self._forward_hook, slot=(rule, own)))
                         for m, rule, own in self._slots]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.disarm()
        self.clear()
        self._spare = None

    def _zeros(self, n_groups: int, dtype: torch.dtype, dev) -> torch.Tensor:
        """A zero [n_groups, P] result: the leading rows of the previous one when nothing holds it any more (a log
        has settled its shares) and it has rows enough, else new memory. A fresh buffer of this size comes from the
        OS page by page at every step (its zeroing measured as the larger part of the log's cost for ResNet-18); a
        reused one is zeroed in place."""
        spare = self._spare
        if (spare is not None and spare.shape[0] >= n_groups and spare.dtype == dtype
                and spare.device == torch.device(dev)):
            del spare  # (a local name is a reference too)
            if buffers.REUSE and held_only_by_caller(self._spare):
                self.reuses += 1
                return self._spare[:n_groups].zero_()
        spare = self._spare = None  # let go of a buffer still in use elsewhere
        self._spare = torch.zeros(n_groups, self.layout.numel, dtype=dtype, device=dev)
        return self._spare

    def clear(self) -> None:
        """Forget the captured activations (call after each step)."""
        self._records = {}

    def _forward_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor, *, slot: tuple):
        rule, own = slot
        tapped = self._armed is not None and rule is not functorch_rule
        if self._paused or not (torch.is_grad_enabled() and torch.is_tensor(output)
                                and (output.requires_grad or tapped)):
            return None
        x = inputs[0].detach()
        rec = [x, x._version, None, len(inputs)]
        self._records.setdefault(id(module), []).append(rec)
        if tapped:  # the weight gradient is formed, partitioned, in the backward pass (arm)
            return _Tap.apply(output, self._anchor, functools.partial(self._tap_backward, module, rule, own, rec))

        def keep(g: torch.Tensor) -> None:
            rec[2] = g.detach()

        output.register_hook(keep)
        return None

    def group_sums(self, assign: torch.Tensor, n_groups: int) -> torch.Tensor:
        """Sum, per group, of the batch gradient's per-sample parts: [n_groups, P].

        Args:
            assign: [B] group index (0 .. n_groups-1) of each batch position, -1 for rows in no group.
            n_groups: number of groups (rows of the result).
        """
        first = next(iter(self._records.values()), None)
        if first is None or first[0][2] is None:
            raise RuntimeError("no captured backward pass: call loss.backward() inside the context first")
        dev, dtype = first[0][0].device, first[0][2].dtype
        out = self._zeros(n_groups, dtype, dev)
        layout, groups = RowLayout.of(assign, n_groups, dev)
        if layout is not None:
            self._add_sums(out, layout, groups, layout.n == n_groups, self._slots)
        return out

    def _add_sums(self, out: torch.Tensor, layout: RowLayout, groups: torch.Tensor, every: bool, slots: list) -> None:
        """Add the group sums of these layers (``slots``), from the captured passes, into ``out``."""
        self._paused = True  # a fallback layer's functional call must not record itself
        try:
            for module, rule, own in slots:
                for x, version, g, n_inputs in self._records.get(id(module), ()):
                    if g is None:
                        continue
                    self._check_record(module, rule, x, version, n_inputs)
                    self._scatter(out, own, rule(module, x, g, layout), groups, every)
        finally:
            self._paused = False

    @staticmethod
    def _check_record(module: nn.Module, rule: LayerRule, x: torch.Tensor, version: int, n_inputs: int) -> None:
        if x._version != version:
            raise RuntimeError(
                f"the input of a {type(module).__name__} layer was modified in place after the forward "
                "pass; its group gradients cannot be formed. Avoid in-place operations on layer inputs."
            )
        if rule is functorch_rule and n_inputs != 1:
            raise TypeError(
                f"{type(module).__name__} has no layer rule and takes {n_inputs} inputs; the torch.func "
                "fallback needs one tensor input. Register a rule with amnesiac.register_layer_rule"
            )

    def _scatter(self, out: torch.Tensor, own: dict, sums: dict, groups: torch.Tensor, every: bool,
                 totals: dict | None = None) -> None:
        """Add a layer's per-group sums (a rule's result) into the rows ``groups`` of ``out`` [n_groups, P];
        ``every``: the present groups are all the rows of ``out``, in order (then in place on a view).
        ``totals``: also put each parameter's sum over the present groups there (a part formed one group at a
        time is added to it as it comes, in group order, and let go)."""
        offsets = self.layout.offsets
        for pn, i in own.items():
            part = sums.parts(pn) if isinstance(sums, PerGroup) else sums.get(pn)
            if part is None:
                continue
            a, z = offsets[i], offsets[i + 1]
            if not torch.is_tensor(part):  # one tensor per present group (a list, or formed one by one)
                acc = None
                for k, t in zip(groups.tolist(), part):
                    if t is not None:
                        out[k, a:z] += t.reshape(-1)
                        if totals is not None:
                            acc = t.clone() if acc is None else acc.add_(t)
                if acc is not None:
                    totals[pn] = acc
                continue
            if every:
                out[:, a:z] += part.reshape(len(groups), -1)
            else:
                out[groups, a:z] += part.reshape(len(groups), -1)
            if totals is not None:
                totals[pn] = part.sum(0)

    # ------------------------------------------------------------------ weight gradients once, partitioned

    def arm(self, assign: torch.Tensor, n_groups: int, on_grads: Callable[[list], None] | None = None) -> None:
        """Compute the next backward pass's weight gradients once, partitioned, instead of twice.

        Call before the forward pass. Until its backward pass ends, the parameters of every layer with a rule
        stop requiring gradients, so autograd computes only the gradients flowing to the inputs; each such
        layer's output passes through a tap that, in the backward pass, forms the layer's weight gradient from
        its captured input and output gradient as a partition of the batch rows: the groups of ``assign`` (as
        in :meth:`group_sums`) and the untracked rows, one rule call each. The parameter's ``.grad`` is the sum
        of the parts, and the groups' parts are kept for :meth:`partition`. The weight-gradient arithmetic is
        then done once per step instead of once by autograd and again over the tracked rows; the gradient
        equals autograd's up to the order of float sums. At the end of the backward pass the parameters
        require gradients again and ``on_grads`` is called with those whose ``.grad`` the taps wrote. Layers
        without a rule (the ``torch.func`` fallback) keep autograd's gradients.
        """
        self.disarm()
        first = next((m for m, rule, _ in self._slots if rule is not functorch_rule), None)
        if first is None:
            return
        dev = next(first.parameters()).device
        layout, groups = RowLayout.of(assign, n_groups, dev)
        untracked = torch.nonzero(assign.reshape(-1).cpu() < 0).flatten()
        B = assign.numel()
        rest = (None if len(untracked) == 0 else RowLayout.every_row(B, dev) if len(untracked) == B
                else RowLayout.one(untracked.to(dev)))
        params = [q for m, rule, own in self._slots if rule is not functorch_rule  # the log's parameters
                  for pn, q in own_params(m) if q.requires_grad and pn in own]
        for q in params:
            q.requires_grad_(False)
        self._armed = dict(
            groups=layout, where=groups, every=layout is not None and layout.n == n_groups, rest=rest,
            out=self._zeros(n_groups, params[0].dtype if params else torch.float32, dev),
            params={id(q): q for q in params}, written={}, on_grads=on_grads, queued=False, ran=False,
            key=(n_groups, tuple(assign.reshape(-1).tolist())),
        )
        if self._anchor is None or self._anchor.device != dev:
            self._anchor = torch.zeros((), device=dev, requires_grad=True)

    @property
    def armed_key(self) -> tuple | None:
        """``(n_groups, assignment)`` of the armed partition, if any."""
        return None if self._armed is None else self._armed["key"]

    def disarm(self) -> None:
        """Give the parameters back their ``requires_grad`` and drop an armed partition (used or not)."""
        if self._armed is not None:
            for q in self._armed["params"].values():
                q.requires_grad_(True)
        self._armed = None

    def partition(self) -> torch.Tensor:
        """The groups' shares of the armed backward pass, [n_groups, P]: the parts the taps formed with the weight
        gradients, and those of the layers without a rule as :meth:`group_sums` forms them (the same numbers as
        :meth:`group_sums` gives, up to the order of float sums); disarms."""
        arm = self._armed
        if arm is None or not arm["ran"]:
            raise RuntimeError("no captured backward pass: arm(...) before the forward pass, then loss.backward(), "
                               "then read the partition")
        self._armed = None
        fallback = [slot for slot in self._slots if slot[1] is functorch_rule]  # their parts: as in group_sums
        if fallback and arm["groups"] is not None:
            self._add_sums(arm["out"], arm["groups"], arm["where"], arm["every"], fallback)
        return arm["out"]

    def _tap_backward(self, module: nn.Module, rule: LayerRule, own: dict, rec: list, g: torch.Tensor) -> None:
        """In the backward pass: one layer's weight gradient, partitioned (see :meth:`arm`)."""
        arm = self._armed
        rec[2] = g.detach()
        if arm is None:
            return
        g = rec[2]
        x = rec[0]
        self._check_record(module, rule, x, rec[1], rec[3])
        if not arm["queued"]:
            torch.autograd.Variable._execution_engine.queue_callback(self._backward_done)
            arm["queued"] = True
        total: dict[str, torch.Tensor] = {}
        if arm["groups"] is not None:  # the groups' parts, and their sum for the parameter's gradient
            self._scatter(arm["out"], own, rule(module, x, g, arm["groups"]), arm["where"], arm["every"], total)
        if arm["rest"] is not None:
            for pn, part in _lists(rule(module, x, g, arm["rest"])).items():
                if part is not None:
                    t = part[0]
                    total[pn] = total[pn] + t if pn in total else t
        params = dict(module.named_parameters(recurse=False))  # armed ones do not require grad just now
        for pn, t in total.items():
            q = params[pn]
            if id(q) in arm["params"]:
                t = t.reshape(q.shape).to(q.dtype)
                q.grad = t if q.grad is None else q.grad + t
                arm["written"][id(q)] = q

    def _backward_done(self) -> None:
        arm = self._armed
        if arm is None:
            return
        arm["ran"] = True
        for q in arm["params"].values():
            q.requires_grad_(True)
        arm["params"] = {}
        if arm["on_grads"] is not None:
            arm["on_grads"](list(arm["written"].values()))


def _lists(sums: dict | PerGroup) -> dict:
    """A rule's result as ``{name: per-group tensor or list}`` (a :class:`PerGroup` formed at once)."""
    return sums.lists() if isinstance(sums, PerGroup) else sums


class _Tap(torch.autograd.Function):
    """Identity on a layer's output whose backward hands the output gradient to a callback. The anchor (a scalar
    that requires grad) makes the output require grad when nothing else does (a first layer whose parameters were
    armed); the output is returned as the same tensor (marked dirty, so later in-place operations stay legal)."""

    @staticmethod
    def forward(ctx, out: torch.Tensor, anchor: torch.Tensor, callback: Callable) -> torch.Tensor:
        ctx.callback = callback
        ctx.mark_dirty(out)
        return out

    @staticmethod
    def backward(ctx, g: torch.Tensor):
        ctx.callback(g)
        return g, None, None
