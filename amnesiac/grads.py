"""Per-sample gradients with torch.func, and the flat-vector layout of a model's parameters.

Per-sample gradients are computed only for the rows of a batch that a log tracks (indexed by their
position in the batch), in chunks that bound memory, and returned flat: one row of ``P`` numbers per
sample, in the order of :class:`ParamLayout`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, jvp, vjp, vmap

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
    check_per_sample_compatible(model)
    layout = layout or ParamLayout.of(model)
    named = dict(model.named_parameters())
    params = {n: named[n].detach() for n in layout.names}
    frozen = {n: p.detach() for n, p in model.named_parameters() if n not in params}
    buffers = {n: b.detach() for n, b in model.named_buffers()}

    def row_loss(p, xi, yi):
        out = functional_call(model, ({**p, **frozen}, buffers), (xi.unsqueeze(0),))
        return loss_fn(out, yi.unsqueeze(0))

    def weighted_loss(p, w):
        return (vmap(row_loss, in_dims=(None, 0, 0))(p, x, y) * w).sum()

    def hvp(w, v):
        _, out = jvp(lambda p: grad(weighted_loss)(p, w), (params,), (layout.unflatten(v),))
        return layout.flatten(out)

    dtype = next(iter(params.values())).dtype
    w_all = weights.to(x.device, dtype)
    v_all = tangents.to(x.device, dtype)
    outs = [vmap(hvp)(w_all[a : a + chunk_size], v_all[a : a + chunk_size]) for a in range(0, len(w_all), chunk_size)]
    return torch.cat(outs) if outs else torch.zeros(0, layout.numel, dtype=dtype, device=x.device)


# ------------------------------------------------------------------------ group sums from one backward

# A layer rule: (layer, its input x [B, ...], the batch loss's gradient g w.r.t. its output [B, ...], the
# tracked rows sorted by group) -> {own parameter name: per-group sums [n_present, *shape], or a list of
# n_present tensors}. Samples must not interact inside the layer.
LayerRule = Callable[[nn.Module, torch.Tensor, torch.Tensor, "_RowLayout"], dict]


@dataclass(frozen=True)
class _LayerEntry:
    fn: LayerRule
    unsupported: Callable[[nn.Module], str | None] | None


LAYER_RULES: dict[type, _LayerEntry] = {}


def register_layer_rule(*layers: type, unsupported: Callable[[nn.Module], str | None] | None = None):
    """Register the decorated function as the group-sum rule of these layer classes (exact classes).

    The rule gets ``(layer, x, g, rows)``: the layer's input and the gradient of the batch loss with respect to
    its output, as captured during the ordinary forward and backward passes, and the tracked rows grouped
    (``rows.padded``, ``rows.summed`` and ``rows.order`` help); it returns each of the layer's own parameters'
    gradient summed per present group. ``unsupported(layer)`` may return why one instance cannot be served
    (that layer then falls back to ``torch.func``).

    Example:
        >>> sorted(t.__name__ for t in LAYER_RULES)[:3]
        ['Conv1d', 'Conv2d', 'Conv3d']
    """
    if not layers or not all(isinstance(t, type) and issubclass(t, nn.Module) for t in layers):
        raise TypeError(f"register_layer_rule needs nn.Module subclasses, got {layers}")

    def decorate(fn: LayerRule) -> LayerRule:
        for t in layers:
            LAYER_RULES[t] = _LayerEntry(fn, unsupported)
        return fn

    return decorate


def layer_rule(module: nn.Module) -> tuple[LayerRule | None, str | None]:
    """The rule serving ``module`` and, when there is none, why (it then falls back to ``torch.func``)."""
    entry = LAYER_RULES.get(type(module))
    if entry is None:
        names = ", ".join(sorted(t.__name__ for t in LAYER_RULES))
        return None, f"{type(module).__name__} has no layer rule (rules: {names})"
    reason = entry.unsupported(module) if entry.unsupported is not None else None
    return (None, reason) if reason else (entry.fn, None)


def _own_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, q) for n, q in module.named_parameters(recurse=False) if q.requires_grad]


def hooks_unsupported_reason(model: nn.Module) -> str | None:
    """Why some layer with parameters has no hook rule (``None`` if every one has); such layers are served by
    the per-layer ``torch.func`` fallback of :class:`GroupGradients`."""
    for name, module in model.named_modules():
        if not _own_params(module):
            continue
        _, reason = layer_rule(module)
        if reason is not None:
            return f"module {name!r} ({type(module).__name__}): {reason}"
    return None


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
            own = {pn: where[f"{name}.{pn}" if name else pn] for pn, _ in _own_params(module)
                   if (f"{name}.{pn}" if name else pn) in where}
            if not own:
                continue
            rule, reason = layer_rule(module)
            if rule is None:
                if not fallback:
                    raise TypeError(f"group sums from hooks are not available: module {name!r}: {reason}")
                rule = _functorch_rule
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

    def clear(self) -> None:
        """Forget the captured activations (call after each step)."""
        self._records = {}

    def _forward_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor, *, slot: tuple):
        rule, own = slot
        tapped = self._armed is not None and rule is not _functorch_rule
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
        out = torch.zeros(n_groups, self.layout.numel, dtype=dtype, device=dev)
        layout, groups = _RowLayout.of(assign, n_groups, dev)
        if layout is not None:
            self._add_sums(out, layout, groups, layout.n == n_groups, self._slots)
        return out

    def _add_sums(self, out: torch.Tensor, layout: _RowLayout, groups: torch.Tensor, every: bool, slots: list) -> None:
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
        if rule is _functorch_rule and n_inputs != 1:
            raise TypeError(
                f"{type(module).__name__} has no layer rule and takes {n_inputs} inputs; the torch.func "
                "fallback needs one tensor input. Register a rule with amnesiac.grads.register_layer_rule"
            )

    def _scatter(self, out: torch.Tensor, own: dict, sums: dict, groups: torch.Tensor, every: bool) -> None:
        """Add a layer's per-group sums (a rule's result) into the rows ``groups`` of ``out`` [n_groups, P];
        ``every``: the present groups are all the rows of ``out``, in order (then in place on a view)."""
        offsets = self.layout.offsets
        for pn, i in own.items():
            part = sums.get(pn)
            if part is None:
                continue
            a, z = offsets[i], offsets[i + 1]
            if isinstance(part, list):  # one tensor per present group
                for k, t in zip(groups.tolist(), part):
                    out[k, a:z] += t.reshape(-1)
            elif every:
                out[:, a:z] += part.reshape(len(groups), -1)
            else:
                out[groups, a:z] += part.reshape(len(groups), -1)

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
        first = next((m for m, rule, _ in self._slots if rule is not _functorch_rule), None)
        if first is None:
            return
        dev = next(first.parameters()).device
        layout, groups = _RowLayout.of(assign, n_groups, dev)
        untracked = torch.nonzero(assign.reshape(-1).cpu() < 0).flatten()
        B = assign.numel()
        rest = (None if len(untracked) == 0 else _RowLayout.every_row(B, dev) if len(untracked) == B
                else _RowLayout.one(untracked.to(dev)))
        params = [q for m, rule, _ in self._slots if rule is not _functorch_rule
                  for _, q in _own_params(m) if q.requires_grad]
        for q in params:
            q.requires_grad_(False)
        self._armed = dict(
            groups=layout, where=groups, every=layout is not None and layout.n == n_groups, rest=rest,
            out=torch.zeros(n_groups, self.layout.numel, dtype=params[0].dtype if params else torch.float32,
                            device=dev),
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
        fallback = [slot for slot in self._slots if slot[1] is _functorch_rule]  # their parts: as in group_sums
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
        if arm["groups"] is not None:
            sums = rule(module, x, g, arm["groups"])
            self._scatter(arm["out"], own, sums, arm["where"], arm["every"])
            for pn, part in sums.items():
                if part is not None:
                    total[pn] = torch.stack(part).sum(0) if isinstance(part, list) else part.sum(0)
        if arm["rest"] is not None:
            for pn, part in rule(module, x, g, arm["rest"]).items():
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


@dataclass(frozen=True)
class _RowLayout:
    """Tracked rows sorted by group; ``which``/``within``: each one's group slot and place in that group."""

    order: torch.Tensor
    which: torch.Tensor
    within: torch.Tensor
    n: int  # groups present
    width: int  # rows in the largest group
    sizes: list  # rows in each present group
    whole: bool = False  # one group holding every row of the batch, in order (no rows are copied)

    @classmethod
    def of(cls, assign: torch.Tensor, n_groups: int, dev) -> tuple[_RowLayout | None, torch.Tensor]:
        """The layout of the groups of ``assign`` ([B]: group index or -1) and the present groups (ascending);
        ``None`` when no row is in a group."""
        assign = assign.reshape(-1).to(torch.long).cpu()
        tracked = torch.nonzero(assign >= 0).flatten()
        if tracked.numel() == 0 or n_groups == 0:
            return None, torch.empty(0, dtype=torch.long, device=dev)
        order = tracked[torch.argsort(assign[tracked], stable=True)]  # tracked rows, grouped
        counts = torch.bincount(assign[order], minlength=n_groups)
        groups = torch.nonzero(counts).flatten()  # the groups present, ascending
        slot = torch.zeros(n_groups, dtype=torch.long)
        slot[groups] = torch.arange(len(groups))
        which = slot[assign[order]]  # each ordered row's place among the present groups
        starts = torch.cumsum(counts, 0) - counts
        within = torch.arange(len(order)) - starts[assign[order]]  # its place within its group
        sizes = counts[groups].tolist()
        layout = cls(order.to(dev), which.to(dev), within.to(dev), len(groups), int(counts.max()), sizes)
        return layout, groups.to(dev)

    @classmethod
    def one(cls, rows: torch.Tensor) -> _RowLayout:
        """One group of these rows."""
        n = len(rows)
        return cls(rows, torch.zeros(n, dtype=torch.long, device=rows.device),
                   torch.arange(n, device=rows.device), 1, n, [n])

    @classmethod
    def every_row(cls, B: int, dev) -> _RowLayout:
        """One group of every row of a batch of ``B``."""
        return dataclasses.replace(cls.one(torch.arange(B, device=dev)), whole=True)

    def take(self, t: torch.Tensor) -> torch.Tensor:
        """The rows of ``t`` [B, ...] in ``order``."""
        return t if self.whole else t.index_select(0, self.order)

    def padded(self, t: torch.Tensor) -> torch.Tensor:
        """Rows of ``t`` [B, ...] arranged as [n, width, ...], zeros where a group has fewer rows."""
        if self.whole:
            return t.unsqueeze(0)
        out = t.new_zeros(self.n, self.width, *t.shape[1:])
        out[self.which, self.within] = t.index_select(0, self.order)
        return out

    def summed(self, per_row: torch.Tensor) -> torch.Tensor:
        """Per-row values [n_rows, ...] (in ``order``) summed per group: [n, ...]."""
        out = per_row.new_zeros(self.n, *per_row.shape[1:])
        return out.index_add_(0, self.which, per_row)


# ------------------------------------------------------------------------------------------ layer rules


@register_layer_rule(nn.Linear)
def _linear(module: nn.Linear, x: torch.Tensor, g: torch.Tensor, rows: _RowLayout) -> dict:
    """Groups in the batch of one batched matmul (rows padded with zeros to the largest group)."""
    xp, gp = rows.padded(x), rows.padded(g)  # [n, width, ..., features]
    x2, g2 = xp.reshape(rows.n, -1, x.shape[-1]), gp.reshape(rows.n, -1, g.shape[-1])
    return {"weight": torch.bmm(g2.transpose(1, 2), x2), "bias": g2.sum(1)}


def _conv_unsupported(module: nn.modules.conv._ConvNd) -> str | None:
    if isinstance(module.padding, str):
        return f"padding={module.padding!r} (the rule needs explicit zero padding)"
    if module.padding_mode != "zeros":
        return f"padding_mode={module.padding_mode!r} (the rule needs zero padding)"
    return None


# How a convolution's group sums are formed: "loop" calls the layer's weight-gradient kernel once per present group
# on that group's rows; "grouped" makes one call for all groups, side by side in the channels of a grouped
# convolution (rows padded with zeros to the largest group). "auto": "grouped" on CUDA, where the per-group calls
# are bound by kernel launches, "loop" elsewhere (on the CPU "grouped" measured 2-3x slower). The benchmark times
# both (``bench.overhead``).
CONV_GROUP_KERNELS = ("auto", "loop", "grouped")
conv_group_kernel = "auto"


def _conv_kernel(device: torch.device | str) -> str:
    """The kernel :data:`conv_group_kernel` resolves to for tensors on ``device``."""
    if conv_group_kernel not in CONV_GROUP_KERNELS:
        raise ValueError(f"amnesiac.grads.conv_group_kernel must be one of {', '.join(CONV_GROUP_KERNELS)}, got "
                         f"{conv_group_kernel!r}")
    if conv_group_kernel == "auto":
        return "grouped" if torch.device(device).type == "cuda" else "loop"
    return conv_group_kernel


@contextlib.contextmanager
def conv_kernel(kernel: str):
    """Within the block, convolutions form their group sums with ``kernel`` (one of :data:`CONV_GROUP_KERNELS`);
    the previous setting is restored on leaving, also after an error."""
    global conv_group_kernel
    if kernel not in CONV_GROUP_KERNELS:
        raise ValueError(f"conv_kernel: kernel must be one of {', '.join(CONV_GROUP_KERNELS)}, got {kernel!r}")
    saved, conv_group_kernel = conv_group_kernel, kernel
    try:
        yield
    finally:
        conv_group_kernel = saved


@register_layer_rule(nn.Conv1d, nn.Conv2d, nn.Conv3d, unsupported=_conv_unsupported)
def _conv(module: nn.modules.conv._ConvNd, x: torch.Tensor, g: torch.Tensor, rows: _RowLayout) -> dict:
    """The layer's own weight-gradient kernel on each group's rows: once per group, or once for all groups as one
    grouped convolution (:data:`conv_group_kernel`)."""
    if rows.n > 1 and _conv_kernel(x.device) == "grouped":
        return _conv_grouped(module, x, g, rows)
    xr, gr = rows.take(x), rows.take(g)
    weight, has_bias = module.weight.detach(), module.bias is not None
    gws, gbs = [], []
    for xk, gk in zip(xr.split(rows.sizes), gr.split(rows.sizes)):
        _, gw, gb = torch.ops.aten.convolution_backward(
            gk, xk, weight, [weight.shape[0]] if has_bias else None,
            list(module.stride), list(module.padding), list(module.dilation), False, [0] * (x.dim() - 2),
            module.groups, [False, True, has_bias],
        )
        gws.append(gw)
        gbs.append(gb)
    return {"weight": gws, "bias": gbs if has_bias else None}


def _conv_grouped(module: nn.modules.conv._ConvNd, x: torch.Tensor, g: torch.Tensor, rows: _RowLayout) -> dict:
    """Every present group's weight gradient in one call: the groups' rows, padded to the largest group, become the
    batch, and the groups sit side by side in the channels of a convolution with ``groups * n`` groups; padded
    rows are zeros and add nothing."""
    n, width = rows.n, rows.width
    xp, gp = rows.padded(x), rows.padded(g)  # [n, width, C, *spatial]
    xs = xp.transpose(0, 1).reshape(width, n * x.shape[1], *x.shape[2:])
    gs = gp.transpose(0, 1).reshape(width, n * g.shape[1], *g.shape[2:])
    weight, has_bias = module.weight.detach(), module.bias is not None
    # [n * C_out, C_in / groups, *kernel]: only its shape matters, the weight gradient does not read the weight
    stacked = weight.new_empty(n * weight.shape[0], *weight.shape[1:])
    _, gw, gb = torch.ops.aten.convolution_backward(
        gs, xs, stacked, [stacked.shape[0]] if has_bias else None,
        list(module.stride), list(module.padding), list(module.dilation), False, [0] * (x.dim() - 2),
        module.groups * n, [False, True, has_bias],
    )
    return {"weight": gw.reshape(n, *weight.shape), "bias": gb.reshape(n, -1) if has_bias else None}


@register_layer_rule(nn.GroupNorm)
def _groupnorm(module: nn.GroupNorm, x: torch.Tensor, g: torch.Tensor, rows: _RowLayout) -> dict:
    xr, gr = rows.take(x), rows.take(g)
    xhat = F.group_norm(xr, module.num_groups, eps=module.eps)
    space = list(range(2, x.dim()))
    gw = (xhat * gr).sum(space) if space else xhat * gr
    return {"weight": rows.summed(gw), "bias": rows.summed(gr.sum(space) if space else gr)}


@register_layer_rule(nn.LayerNorm)
def _layernorm(module: nn.LayerNorm, x: torch.Tensor, g: torch.Tensor, rows: _RowLayout) -> dict:
    xr, gr = rows.take(x), rows.take(g)
    xhat = F.layer_norm(xr, module.normalized_shape, eps=module.eps)
    inner = list(range(1, x.dim() - len(module.normalized_shape)))
    gw, gb = xhat * gr, gr
    if inner:
        gw, gb = gw.sum(inner), gb.sum(inner)
    return {"weight": rows.summed(gw), "bias": rows.summed(gb)}


def _functorch_rule(module: nn.Module, x: torch.Tensor, g: torch.Tensor, rows: _RowLayout) -> dict:
    """The fallback for a layer without a rule: per-row vector-Jacobian products of the layer alone (its own
    parameters; children fixed) on the captured input and output gradient, with ``torch.func``, summed per group."""
    params = {n: q.detach() for n, q in _own_params(module)}

    def row_grads(xi, gi):
        _, pull = vjp(lambda p: functional_call(module, p, (xi.unsqueeze(0),)), params)
        return pull(gi.unsqueeze(0))[0]

    xr, gr = rows.take(x), rows.take(g)
    per_row = vmap(row_grads)(xr, gr)  # name -> [n_rows, *shape]
    return {n: rows.summed(t) for n, t in per_row.items()}


def check_per_sample_compatible(model: nn.Module) -> None:
    """Raise a clear error if the model mixes samples within a batch (BatchNorm in training mode)."""
    for name, module in model.named_modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.training:
            raise TypeError(
                f"module {name or type(model).__name__!r} is {type(module).__name__} in training mode: it mixes "
                "the samples of a batch, so per-sample gradients are not defined. Replace it with "
                "nn.GroupNorm (e.g. amnesiac.models.resnet18_gn) or use a per-batch log instead."
            )
