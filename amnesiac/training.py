"""Training with delta logs attached: the loop, the optimizer recipe, device choice and accuracy.

:func:`train` runs a plain supervised loop over ``(x, y, sample_ids)`` batches. Each attached log sees
every step: after ``loss.backward()`` it says which batch rows belong to which of its groups; each group's
share of the batch gradient is then read off the backward pass by hooks (one weight-gradient pass over the
tracked rows, :class:`~amnesiac.grads.GroupGradients`, with a per-layer ``torch.func`` fallback); after
``optimizer.step()`` each log folds the step in. The loop is a thin one over
:class:`~amnesiac.AttributedOptimizer`, which a hand-written loop can use directly.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from .attributed import GROUP_GRAD_METHODS, AttributedOptimizer

OPTIMIZERS = ("adam", "adamw", "sgd")


def pick_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks ``$AMNESIAC_DEVICE`` when set (e.g. ``cpu`` to keep a GPU machine on the CPU), else CUDA
    when available, else the CPU; other values are checked and returned.

    Example:
        >>> pick_device("cpu")
        device(type='cpu')
    """
    if str(device) == "auto":
        forced = os.environ.get("AMNESIAC_DEVICE", "").strip()
        if forced:
            return pick_device(forced) if forced != "auto" else pick_device("cuda" if torch.cuda.is_available()
                                                                            else "cpu")
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ValueError(f"unknown device {device!r}; use 'auto', 'cpu' or 'cuda' (or set AMNESIAC_DEVICE to "
                         "one of them)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError("device 'cuda' was requested but CUDA is not available here; use device='auto' or 'cpu'")
    return dev


def pick_reproducible_device(device: str | torch.device = "auto") -> torch.device:
    """:func:`pick_device`, and on CUDA turn on deterministic algorithms (process-wide), without which a replay or
    any run-vs-run comparison on a GPU means nothing: two identical GPU runs end as far apart as removing one
    sample does. On the CPU training is already bit-reproducible, and nothing is changed.

    Example:
        >>> pick_reproducible_device("cpu")
        device(type='cpu')
    """
    dev = pick_device(device)
    if dev.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS reads it when a handle is made
        torch.use_deterministic_algorithms(True)
        torch.backends.cudnn.benchmark = False
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
    share_seconds: float = 0.0  # of which forming the groups' shares (before the optimizer's step)
    update_seconds: float = 0.0  # of which folding each step into the logs (after it)

    @property
    def wall_seconds(self) -> float:
        return float(sum(self.seconds))

    def extend(self, later: History) -> History:
        """Append a later run of the same training (its next epochs) to this history, in place."""
        self.loss += later.loss
        self.accuracy += later.accuracy
        self.seconds += later.seconds
        self.steps += later.steps
        self.samples += later.samples
        self.log_seconds += later.log_seconds
        self.share_seconds += later.share_seconds
        self.update_seconds += later.update_seconds
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> History:
        return cls(**d)


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
    group_grads: str = "auto",
    weight_grads: str = "autograd",
    zero_weight_ids: Sequence[int] | torch.Tensor | None = None,
    drop_ids: Sequence[int] | torch.Tensor | None = None,
    forget_weight: float = 0.0,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    scheduler_every: str = "step",
    skip_batches: int = 0,
    on_batch=None,
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
        group_grads: how delta logs get their groups' gradient shares. ``"auto"``: read off the ordinary
            backward pass, one weight-gradient pass over the tracked rows per distinct grouping, by the layer
            rules of :class:`~amnesiac.grads.GroupGradients` (Linear, Conv, GroupNorm, LayerNorm; a layer
            without a rule falls back, alone, to ``torch.func``); ``"hooks"``: the same, refusing layers
            without a rule; ``"vmap"``: whole-model per-sample gradients of the tracked rows with
            ``torch.func``, summed per group.
        weight_grads: ``"autograd"`` (every weight gradient as in plain training; the shares are a second pass
            over the tracked rows) or ``"partitioned"`` (each hooked layer's weight gradient computed once, as a
            partition of the batch rows into groups and untracked rows; equal to plain training's gradient up to
            the order of float sums). See :class:`~amnesiac.AttributedOptimizer`.
        zero_weight_ids: the *zero-weighted replay*: these samples stay in their batches (same order, same
            RNG stream) but their loss is multiplied by 0, while the batch mean still divides by the full
            batch size B. Batches that hold none of them take exactly the ordinary step.
        forget_weight: with ``zero_weight_ids``, the loss weight of those samples instead of 0 (the mean still
            divides by B): ``1 - eps`` gives the replays whose finite differences measure the derivative of the
            trained parameters in the samples' weight (REFERENCE: metagradients); ``1`` is ordinary training up
            to the order of float sums in the batches that hold them.
        drop_ids: the *dropped replay* (retraining with the same seed and order): these samples are removed
            from their batches and the loss is the mean over the rows left; a batch left empty takes no
            optimizer step. Exclusive with ``zero_weight_ids``. See the Method chapter,
            "Which model does alpha = 1 aim at?".
        scheduler: a learning-rate scheduler built on ``optimizer``, stepped after every optimizer step
            (``scheduler_every="step"``) or after every epoch (``"epoch"``). The logs read each step's
            learning rate from the optimizer, so any schedule is attributed exactly.
        skip_batches: pass over the first ``skip_batches`` batches of the loader's sequence (over all epochs)
            without a step: a run resumed from a checkpoint taken after that many batches continues exactly where
            it stopped (the loader's order depends only on its seed and epoch). See :mod:`amnesiac.rewind`.
        on_batch: called as ``on_batch(position, sample_ids, model, optimizer)`` after each batch's step (and
            after a dropped replay's empty batch, which takes none); ``position`` counts the loader's batches from
            0 over all epochs, skipped ones included (:class:`amnesiac.rewind.RewindRecord` records with it).

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
    if group_grads not in GROUP_GRAD_METHODS:
        raise ValueError(f"unknown group_grads {group_grads!r}; valid: {', '.join(GROUP_GRAD_METHODS)}")
    if zero_weight_ids is not None and drop_ids is not None:
        raise ValueError("give zero_weight_ids (zero-weighted replay) or drop_ids (dropped replay), not both")
    forget_weight = float(forget_weight)
    if not (math.isfinite(forget_weight) and forget_weight >= 0.0):
        raise ValueError(f"forget_weight must be finite and >= 0, got {forget_weight}")
    if forget_weight != 0.0 and zero_weight_ids is None:
        raise ValueError("forget_weight weights the zero_weight_ids rows: give zero_weight_ids too")
    excluded = _id_table(zero_weight_ids if zero_weight_ids is not None else drop_ids)
    drop = drop_ids is not None
    if scheduler_every not in ("step", "epoch"):
        raise ValueError(f"scheduler_every must be 'step' or 'epoch', got {scheduler_every!r}")
    if int(skip_batches) < 0:
        raise ValueError(f"skip_batches must be >= 0, got {skip_batches}")
    if skip_batches and scheduler is not None:
        raise ValueError("skip_batches cannot resume a learning-rate scheduler's position; resume without one")
    if scheduler is not None and scheduler.optimizer is not optimizer:
        raise ValueError("the scheduler was built on another optimizer; build it on the one passed to train()")
    opt = optimizer
    if logs:
        opt = AttributedOptimizer(optimizer, model, logs, group_grads=group_grads, weight_grads=weight_grads,
                                  loss_fn=loss_fn,
                                  grad_chunk=grad_chunk)
    history = History()
    total = epochs * len(loader) if hasattr(loader, "__len__") else None
    bar = tqdm(total=total, desc=desc, disable=not progress, leave=False)
    was_training = model.training
    model.train()
    position = -1
    try:
        for _ in range(epochs):
            start, loss_sum, correct, count = time.perf_counter(), 0.0, 0, 0
            for x, y, ids in loader:
                position += 1
                if position < skip_batches:  # resumed from a checkpoint taken after these batches
                    bar.update(1)
                    continue
                keep = _kept_rows(excluded, ids)  # None: every row counts as usual
                if keep is not None and drop:
                    x, y, ids = x[keep], y[keep], ids[keep]
                    if len(y) == 0:  # the whole batch was forgotten: the dropped replay takes no step
                        bar.update(1)
                        if on_batch is not None:
                            on_batch(position, ids, model, optimizer)
                        continue
                x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
                opt.zero_grad(set_to_none=True)
                if logs:
                    opt.set_batch(ids, inputs=x, targets=y)
                out = model(x)
                if keep is not None and not drop:  # zero-weighted: sum over kept rows / B
                    k = keep.to(dev)
                    n_kept = int(keep.sum())
                    loss = loss_fn(out[k], y[k]) * (n_kept / len(y)) if n_kept else (out * 0).sum()
                    if forget_weight != 0.0:  # the excluded rows, weighted (their sum still over B)
                        loss = loss + loss_fn(out[~k], y[~k]) * (forget_weight * (len(y) - n_kept) / len(y))
                else:
                    loss = loss_fn(out, y)
                loss.backward()
                opt.step()  # with logs: pre_step (the groups' shares), the real step, the logs' update
                if scheduler is not None and scheduler_every == "step":
                    scheduler.step()
                n = len(y)
                loss_sum += float(loss.detach()) * n
                correct += int((out.detach().argmax(1) == y).sum())
                count += n
                history.steps += 1
                bar.update(1)
                if on_batch is not None:
                    on_batch(position, ids, model, optimizer)
            if scheduler is not None and scheduler_every == "epoch":
                scheduler.step()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            history.seconds.append(time.perf_counter() - start)
            history.loss.append(loss_sum / max(count, 1))
            history.accuracy.append(correct / max(count, 1))
            history.samples += count
            bar.set_postfix(loss=f"{history.loss[-1]:.3f}", acc=f"{history.accuracy[-1]:.3f}")
    finally:
        if logs:
            opt.close()
            history.log_seconds = opt.log_seconds
            history.share_seconds, history.update_seconds = opt.share_seconds, opt.update_seconds
        bar.close()
        model.train(was_training)
    return history


def _id_table(sample_ids) -> torch.Tensor | None:
    """A boolean lookup table sample id -> excluded, or None when nothing is excluded."""
    if sample_ids is None:
        return None
    ids = torch.as_tensor(sample_ids, dtype=torch.long).reshape(-1)
    if len(ids) and int(ids.min()) < 0:
        raise ValueError(f"sample ids must be non-negative, got {int(ids.min())}")
    table = torch.zeros(int(ids.max()) + 1 if len(ids) else 0, dtype=torch.bool)
    table[ids] = True
    return table


def _kept_rows(table: torch.Tensor | None, ids: torch.Tensor) -> torch.Tensor | None:
    """Mask of the batch rows that are not excluded, or None when no row of this batch is excluded."""
    if table is None or len(table) == 0:
        return None
    ids = ids.reshape(-1).to(torch.long).cpu()
    hit = torch.zeros(len(ids), dtype=torch.bool)
    inside = ids < len(table)
    hit[inside] = table[ids[inside]]
    return None if not bool(hit.any()) else ~hit


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
