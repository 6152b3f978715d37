"""Per-sample gradients with torch.func, and the flat-vector layout of a model's parameters.

Per-sample gradients are computed only for the rows of a batch that a log tracks (indexed by their
position in the batch), in chunks that bound memory, and returned flat: one row of ``P`` numbers per
sample, in the order of :class:`ParamLayout`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from .models import check_per_sample_compatible

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


# ------------------------------------------------------------------------ group sums from one backward

_HOOKABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.GroupNorm, nn.LayerNorm)


def hooks_unsupported_reason(model: nn.Module) -> str | None:
    """Why :class:`GroupGradients` cannot serve ``model`` (``None`` if it can)."""
    for name, module in model.named_modules():
        own = [n for n, q in module.named_parameters(recurse=False) if q.requires_grad]
        if not own:
            continue
        if type(module) not in _HOOKABLE:
            return f"module {name!r} ({type(module).__name__}) holds trainable parameters and has no group-sum rule"
        if isinstance(module, nn.modules.conv._ConvNd) and isinstance(module.padding, str):
            return f"module {name!r} uses padding={module.padding!r}"
        if isinstance(module, nn.modules.conv._ConvNd) and module.padding_mode != "zeros":
            return f"module {name!r} uses padding_mode={module.padding_mode!r}"
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

    Supported layers: Linear, Conv1d/2d/3d (zero padding), GroupNorm, LayerNorm; see
    :func:`hooks_unsupported_reason`. A layer may be called several times per forward pass.

    Example:
        >>> m = nn.Linear(3, 2)
        >>> with GroupGradients(m) as cap:
        ...     F.cross_entropy(m(torch.randn(4, 3)), torch.tensor([0, 1, 1, 0])).backward()
        ...     sums = cap.group_sums(torch.tensor([0, 1, -1, 0]), 2)
        >>> sums.shape
        torch.Size([2, 8])
    """

    def __init__(self, model: nn.Module, layout: ParamLayout | None = None):
        reason = hooks_unsupported_reason(model)
        if reason is not None:
            raise TypeError(f"group sums from hooks are not available: {reason}; use per_sample_grads instead")
        check_per_sample_compatible(model)
        self.layout = layout or ParamLayout.of(model)
        where = {n: i for i, n in enumerate(self.layout.names)}
        self._slots = []  # (module, layout index of weight or None, of bias or None)
        covered = set()
        for name, module in model.named_modules():
            if not isinstance(module, _HOOKABLE):
                continue
            w = where.get(f"{name}.weight" if name else "weight")
            b = where.get(f"{name}.bias" if name else "bias")
            if w is None and b is None:
                continue
            self._slots.append((module, w, b))
            covered.update(i for i in (w, b) if i is not None)
        if len(covered) != len(self.layout.names):
            missing = [n for i, n in enumerate(self.layout.names) if i not in covered]
            raise TypeError(f"parameters {missing[:5]} belong to no supported layer; use per_sample_grads instead")
        self._records: dict[int, list] = {}
        self._handles: list = []

    def __enter__(self) -> GroupGradients:
        self._handles = [m.register_forward_hook(self._forward_hook) for m, _, _ in self._slots]
        return self

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []
        self.clear()

    def clear(self) -> None:
        """Forget the captured activations (call after each step)."""
        self._records = {}

    def _forward_hook(self, module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if not (torch.is_grad_enabled() and torch.is_tensor(output) and output.requires_grad):
            return
        x = inputs[0].detach()
        rec = [x, x._version, None]
        self._records.setdefault(id(module), []).append(rec)

        def keep(g: torch.Tensor) -> None:
            rec[2] = g.detach()

        output.register_hook(keep)

    def group_sums(self, assign: torch.Tensor, n_groups: int) -> torch.Tensor:
        """Sum, per group, of the batch gradient's per-sample parts: [n_groups, P].

        Args:
            assign: [B] group index (0 .. n_groups-1) of each batch position, -1 for rows in no group.
            n_groups: number of groups (rows of the result).
        """
        assign = assign.reshape(-1).to(torch.long).cpu()
        first = next(iter(self._records.values()), None)
        if first is None or first[0][2] is None:
            raise RuntimeError("no captured backward pass: call loss.backward() inside the context first")
        dev, dtype = first[0][0].device, first[0][2].dtype
        out = torch.zeros(n_groups, self.layout.numel, dtype=dtype, device=dev)
        tracked = torch.nonzero(assign >= 0).flatten()
        if tracked.numel() == 0 or n_groups == 0:
            return out
        order = tracked[torch.argsort(assign[tracked], stable=True)]  # tracked rows, grouped
        counts = torch.bincount(assign[order], minlength=n_groups)
        groups = torch.nonzero(counts).flatten()  # the groups present, ascending
        slot = torch.zeros(n_groups, dtype=torch.long)
        slot[groups] = torch.arange(len(groups))
        which = slot[assign[order]]  # each ordered row's place among the present groups
        starts = torch.cumsum(counts, 0) - counts
        within = torch.arange(len(order)) - starts[assign[order]]  # its place within its group
        sizes = counts[groups].tolist()
        layout = _RowLayout(order.to(dev), which.to(dev), within.to(dev), len(groups), int(counts.max()), sizes)
        every = len(groups) == n_groups  # then the rows of the result are the present groups in order
        groups = groups.to(dev)
        offsets = self.layout.offsets
        for module, w, b in self._slots:
            for x, version, g in self._records.get(id(module), ()):
                if g is None:
                    continue
                if x._version != version:
                    raise RuntimeError(
                        f"the input of a {type(module).__name__} layer was modified in place after the forward "
                        "pass; its group gradients cannot be formed. Avoid in-place operations on layer inputs."
                    )
                gw, gb = _group_weight_grads(module, x, g, layout)  # [n_present, ...]
                for i, part in ((w, gw), (b, gb)):
                    if i is None:
                        continue
                    a, z = offsets[i], offsets[i + 1]
                    if isinstance(part, list):  # one tensor per present group
                        for k, t in zip(groups.tolist(), part):
                            out[k, a:z] += t.reshape(-1)
                    elif every:  # in place on a view
                        out[:, a:z] += part.reshape(layout.n, -1)
                    else:
                        out[groups, a:z] += part.reshape(layout.n, -1)
        return out


@dataclass(frozen=True)
class _RowLayout:
    """Tracked rows sorted by group; ``which``/``within``: each one's group slot and place in that group."""

    order: torch.Tensor
    which: torch.Tensor
    within: torch.Tensor
    n: int  # groups present
    width: int  # rows in the largest group
    sizes: list  # rows in each present group

    def padded(self, t: torch.Tensor) -> torch.Tensor:
        """Rows of ``t`` [B, ...] arranged as [n, width, ...], zeros where a group has fewer rows."""
        out = t.new_zeros(self.n, self.width, *t.shape[1:])
        out[self.which, self.within] = t.index_select(0, self.order)
        return out

    def summed(self, per_row: torch.Tensor) -> torch.Tensor:
        """Per-row values [n_rows, ...] (in ``order``) summed per group: [n, ...]."""
        out = per_row.new_zeros(self.n, *per_row.shape[1:])
        return out.index_add_(0, self.which, per_row)


def _group_weight_grads(module: nn.Module, x: torch.Tensor, g: torch.Tensor, rows: _RowLayout):
    """(weight, bias) gradients of one layer summed per group: [n_present, *shape] or a list of n_present.

    Linear: groups in the batch of one batched matmul (rows padded with zeros to the largest group).
    Conv: the layer's own weight-gradient kernel once per group, on that group's rows (a grouped convolution
    with the groups side by side in the channels computes the same in one call, but measured 2-3x slower on
    CPU). Norm layers: per-row terms summed per group.
    """
    if isinstance(module, nn.Linear):
        xp, gp = rows.padded(x), rows.padded(g)  # [n, width, ..., features]
        x2, g2 = xp.reshape(rows.n, -1, x.shape[-1]), gp.reshape(rows.n, -1, g.shape[-1])
        return torch.bmm(g2.transpose(1, 2), x2), g2.sum(1)
    xr, gr = x.index_select(0, rows.order), g.index_select(0, rows.order)
    if isinstance(module, nn.modules.conv._ConvNd):
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
        return gws, gbs if has_bias else None
    if isinstance(module, nn.GroupNorm):
        xhat = F.group_norm(xr, module.num_groups, eps=module.eps)
        space = list(range(2, x.dim()))
        gw = (xhat * gr).sum(space) if space else xhat * gr
        return rows.summed(gw), rows.summed(gr.sum(space) if space else gr)
    if isinstance(module, nn.LayerNorm):
        xhat = F.layer_norm(xr, module.normalized_shape, eps=module.eps)
        inner = list(range(1, x.dim() - len(module.normalized_shape)))
        gw, gb = xhat * gr, gr
        if inner:
            gw, gb = gw.sum(inner), gb.sum(inner)
        return rows.summed(gw), rows.summed(gb)
    raise TypeError(f"no group-sum rule for {type(module).__name__}")
