"""The layer rules: each layer kind's per-group sums of its parameters' gradients, computed from the input and
the output gradient captured during the ordinary backward pass (:class:`amnesiac.grads.GroupGradients` applies
them), in a registry that :func:`register_layer_rule` extends; a layer without a rule falls back, alone, to
``torch.func``.
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vjp, vmap

# A layer rule: (layer, its input x [B, ...], the batch loss's gradient g w.r.t. its output [B, ...], the
# tracked rows sorted by group) -> {own parameter name: per-group sums [n_present, *shape], or a list of
# n_present tensors}, or a PerGroup that forms them one group at a time. Samples must not interact inside the layer.
LayerRule = Callable[[nn.Module, torch.Tensor, torch.Tensor, "RowLayout"], "dict | PerGroup"]


class PerGroup:
    """A rule's per-group sums formed one group at a time, on demand.

    ``form(k)`` returns ``{own parameter name: the sum over present group k}``. Iterating :meth:`parts` of one
    name forms the groups in order and lets each result go before the next is formed, so the layer needs memory
    for one group's result at a time: a list of all of them is, for a large layer, new memory from the OS at every
    step. The other names' results are kept as they are formed (a bias: small) until their own :meth:`parts` is
    read. Each group is formed once.

    Example:
        >>> per = PerGroup(lambda k: {"weight": torch.full((2,), float(k)), "bias": torch.tensor([k])}, 3)
        >>> [t.tolist() for t in per.parts("weight")], [t.item() for t in per.parts("bias")]
        ([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]], [0, 1, 2])
    """

    def __init__(self, form: Callable[[int], dict], n: int):
        self._form, self.n = form, n
        self._kept: dict[str, list] = {}
        self._formed = False

    def parts(self, name: str):
        """The named parameter's sum for each present group, in order (``None`` entries for a parameter the
        layer does not have)."""
        if name in self._kept:
            yield from self._kept.pop(name)
            return
        if self._formed:
            raise RuntimeError(f"PerGroup: the groups were formed already and {name!r} was not among their results")
        self._formed = True
        for k in range(self.n):
            out = self._form(k)
            for other, t in out.items():
                if other != name:
                    self._kept.setdefault(other, []).append(t)
            yield out.get(name)

    def lists(self) -> dict[str, list]:
        """Every group formed at once: ``{name: [one tensor per present group]}`` (the form of a list rule; ``None``
        for a parameter the layer does not have)."""
        outs = [self._form(k) for k in range(self.n)]
        self._formed = True
        lists = {name: [o[name] for o in outs] for name in (outs[0] if outs else {})}
        return {name: None if all(t is None for t in ts) else ts for name, ts in lists.items()}


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


def own_params(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, q) for n, q in module.named_parameters(recurse=False) if q.requires_grad]


def hooks_unsupported_reason(model: nn.Module) -> str | None:
    """Why some layer with parameters has no hook rule (``None`` if every one has); such layers are served by
    the per-layer ``torch.func`` fallback of :class:`GroupGradients`."""
    for name, module in model.named_modules():
        if not own_params(module):
            continue
        _, reason = layer_rule(module)
        if reason is not None:
            return f"module {name!r} ({type(module).__name__}): {reason}"
    return None


@dataclass(frozen=True)
class RowLayout:
    """Tracked rows sorted by group; ``which``/``within``: each one's group slot and place in that group."""

    order: torch.Tensor
    which: torch.Tensor
    within: torch.Tensor
    n: int  # groups present
    width: int  # rows in the largest group
    sizes: list  # rows in each present group
    whole: bool = False  # one group holding every row of the batch, in order (no rows are copied)

    @classmethod
    def of(cls, assign: torch.Tensor, n_groups: int, dev) -> tuple[RowLayout | None, torch.Tensor]:
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
    def one(cls, rows: torch.Tensor) -> RowLayout:
        """One group of these rows."""
        n = len(rows)
        return cls(rows, torch.zeros(n, dtype=torch.long, device=rows.device),
                   torch.arange(n, device=rows.device), 1, n, [n])

    @classmethod
    def every_row(cls, B: int, dev) -> RowLayout:
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
def _linear(module: nn.Linear, x: torch.Tensor, g: torch.Tensor, rows: RowLayout) -> dict:
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


def conv_kernel_for(device: torch.device | str) -> str:
    """The kernel :data:`conv_group_kernel` resolves to for tensors on ``device``."""
    if conv_group_kernel not in CONV_GROUP_KERNELS:
        raise ValueError(f"amnesiac.layers.conv_group_kernel must be one of {', '.join(CONV_GROUP_KERNELS)}, got "
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
def _conv(module: nn.modules.conv._ConvNd, x: torch.Tensor, g: torch.Tensor, rows: RowLayout) -> dict:
    """The layer's own weight-gradient kernel on each group's rows: once per group, or once for all groups as one
    grouped convolution (:data:`conv_group_kernel`)."""
    if rows.n > 1 and conv_kernel_for(x.device) == "grouped":
        return _conv_grouped(module, x, g, rows)
    xs, gs = rows.take(x).split(rows.sizes), rows.take(g).split(rows.sizes)
    weight, has_bias = module.weight.detach(), module.bias is not None

    def form(k: int) -> dict:
        _, gw, gb = torch.ops.aten.convolution_backward(
            gs[k], xs[k], weight, [weight.shape[0]] if has_bias else None,
            list(module.stride), list(module.padding), list(module.dilation), False, [0] * (x.dim() - 2),
            module.groups, [False, True, has_bias],
        )
        return {"weight": gw, "bias": gb if has_bias else None}

    return PerGroup(form, rows.n)  # one group's weight gradient in memory at a time


def _conv_grouped(module: nn.modules.conv._ConvNd, x: torch.Tensor, g: torch.Tensor, rows: RowLayout) -> dict:
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
def _groupnorm(module: nn.GroupNorm, x: torch.Tensor, g: torch.Tensor, rows: RowLayout) -> dict:
    xr, gr = rows.take(x), rows.take(g)
    xhat = F.group_norm(xr, module.num_groups, eps=module.eps)
    space = list(range(2, x.dim()))
    gw = (xhat * gr).sum(space) if space else xhat * gr
    return {"weight": rows.summed(gw), "bias": rows.summed(gr.sum(space) if space else gr)}


@register_layer_rule(nn.LayerNorm)
def _layernorm(module: nn.LayerNorm, x: torch.Tensor, g: torch.Tensor, rows: RowLayout) -> dict:
    xr, gr = rows.take(x), rows.take(g)
    xhat = F.layer_norm(xr, module.normalized_shape, eps=module.eps)
    inner = list(range(1, x.dim() - len(module.normalized_shape)))
    gw, gb = xhat * gr, gr
    if inner:
        gw, gb = gw.sum(inner), gb.sum(inner)
    return {"weight": rows.summed(gw), "bias": rows.summed(gb)}


def functorch_rule(module: nn.Module, x: torch.Tensor, g: torch.Tensor, rows: RowLayout) -> dict:
    """The fallback for a layer without a rule: per-row vector-Jacobian products of the layer alone (its own
    parameters; children fixed) on the captured input and output gradient, with ``torch.func``, summed per group."""
    params = {n: q.detach() for n, q in own_params(module)}

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
