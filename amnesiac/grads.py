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
