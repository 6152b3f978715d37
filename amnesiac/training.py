"""Training with delta logs attached: the loop, the optimizer recipe, device choice and accuracy.

:func:`train` runs a plain supervised loop over ``(x, y, sample_ids)`` batches. Each attached log sees
every step: after ``loss.backward()`` it says which batch rows it needs per-sample gradients for; those
are computed once for all logs (only for those rows, in chunks) and handed to each; after
``optimizer.step()`` each log folds the step in.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .grads import ParamLayout, per_sample_grads

OPTIMIZERS = ("adam", "adamw", "sgd")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; other values are checked and returned."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


@dataclass(frozen=True)
class Recipe:
    """How to train: optimizer and its settings, batch size and epochs (used by every method that trains).

    Example:
        >>> Recipe(optimizer="sgd", lr=0.1, momentum=0.9).make_optimizer(nn.Linear(2, 2).parameters())
        ... # doctest: +ELLIPSIS
        SGD (...
    """

    optimizer: str = "adam"
    lr: float = 1e-3
    batch_size: int = 64
    epochs: int = 4
    weight_decay: float = 0.0
    momentum: float = 0.0
    nesterov: bool = False
    betas: tuple[float, float] = (0.9, 0.999)

    def __post_init__(self):
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"unknown optimizer {self.optimizer!r}; valid: {', '.join(OPTIMIZERS)}")
        if self.lr <= 0 or self.batch_size < 1 or self.epochs < 0:
            raise ValueError(
                f"need lr > 0, batch_size >= 1 and epochs >= 0; got {self.lr}, {self.batch_size}, {self.epochs}"
            )

    def make_optimizer(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(
                params, lr=self.lr, momentum=self.momentum, nesterov=self.nesterov, weight_decay=self.weight_decay
            )
        cls = torch.optim.Adam if self.optimizer == "adam" else torch.optim.AdamW
        return cls(params, lr=self.lr, betas=self.betas, weight_decay=self.weight_decay)

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class History:
    """What :func:`train` measured: per-epoch mean loss and accuracy on the batches seen, and wall times."""

    loss: list[float] = field(default_factory=list)
    accuracy: list[float] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)
    steps: int = 0
    samples: int = 0
    log_seconds: float = 0.0  # time spent in the logs' hooks and per-sample gradients

    @property
    def wall_seconds(self) -> float:
        return float(sum(self.seconds))


def train(
    model: nn.Module,
    loader: Iterable,
    optimizer: torch.optim.Optimizer,
    *,
    epochs: int,
    delta_log=None,
    device: str | torch.device = "auto",
    loss_fn=F.cross_entropy,
    seed: int | None = None,
    progress: bool = True,
    desc: str = "train",
    grad_chunk: int = 32,
) -> History:
    """Train ``model`` in place for ``epochs`` passes over ``loader``, feeding every attached log.

    Args:
        model: the model (moved to ``device``).
        loader: yields ``(x, y, sample_ids)`` batches; iterated once per epoch.
        optimizer: built over ``model``'s parameters.
        epochs: passes over the loader.
        delta_log: a :class:`~amnesiac.DeltaLog`, a :class:`~amnesiac.BatchLog`, or a list of them.
        device: ``"auto"`` (CUDA if available), ``"cpu"`` or ``"cuda"``.
        loss_fn: mean-reduced loss of (logits, labels).
        seed: if given, seeds torch's global generator first (CPU runs are then deterministic).
        progress: show a tqdm progress bar.
        grad_chunk: per-sample gradients are computed this many rows at a time.

    Example:
        >>> from amnesiac.data import ArrayDataset
        >>> ds = ArrayDataset(torch.randn(8, 3), torch.tensor([0, 1] * 4), torch.arange(8))
        >>> m = nn.Linear(3, 2)
        >>> train(m, ds.loader(4), torch.optim.SGD(m.parameters(), lr=0.1), epochs=1, progress=False).steps
        2
    """
    if epochs < 0:
        raise ValueError(f"epochs must be >= 0, got {epochs}")
    if seed is not None:
        torch.manual_seed(seed)
    dev = pick_device(device)
    model.to(dev)
    logs = [] if delta_log is None else list(delta_log) if isinstance(delta_log, Sequence) else [delta_log]
    layout = ParamLayout.of(model) if logs else None
    history = History()
    total = epochs * len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    was_training = model.training
    model.train()
    try:
        for _ in range(epochs):
            start, loss_sum, correct, count = time.perf_counter(), 0.0, 0, 0
            for x, y, ids in loader:
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                optimizer.zero_grad(set_to_none=True)
                out = model(x)
                loss = loss_fn(out, y)
                loss.backward()
                if logs:
                    t0 = time.perf_counter()
                    rows = [log.begin_step(model, ids) for log in logs]
                    union = torch.unique(torch.cat(rows)) if rows else torch.empty(0, dtype=torch.long)
                    if union.numel():
                        for r, g in per_sample_grads(
                            model, x, y, union.to(dev), layout=layout, loss_fn=loss_fn, chunk_size=grad_chunk
                        ):
                            for log in logs:
                                log.accumulate(r, g)
                    history.log_seconds += time.perf_counter() - t0
                optimizer.step()
                if logs:
                    t0 = time.perf_counter()
                    for log in logs:
                        log.end_step(optimizer)
                    history.log_seconds += time.perf_counter() - t0
                n = len(y)
                loss_sum += float(loss.detach()) * n
                correct += int((out.detach().argmax(1) == y).sum())
                count += n
                history.steps += 1
                bar.update(1)
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            history.seconds.append(time.perf_counter() - start)
            history.loss.append(loss_sum / max(count, 1))
            history.accuracy.append(correct / max(count, 1))
            history.samples += count
            bar.set_postfix(loss=f"{history.loss[-1]:.3f}", acc=f"{history.accuracy[-1]:.3f}")
    finally:
        bar.close()
        model.train(was_training)
    return history


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, *, batch_size: int = 1024) -> torch.Tensor:
    """Logits of ``model`` on ``x`` [N, ...] in eval mode (mode restored), returned on the CPU as [N, classes]."""
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        outs = [model(x[i : i + batch_size].to(dev)).float().cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(outs) if outs else torch.empty(0)


def accuracy(model: nn.Module, dataset) -> float:
    """Top-1 accuracy of ``model`` on an :class:`~amnesiac.data.ArrayDataset` (NaN if it is empty)."""
    if len(dataset) == 0:
        return float("nan")
    return float((predict(model, dataset.x).argmax(1) == dataset.y).float().mean())
