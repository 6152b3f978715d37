"""Metrics and attacks: accuracy, losses, distances to the retrained model, membership inference, inversion.

Everything here runs under ``torch.no_grad()`` (except inversion, which optimises an input) in eval mode,
restoring the model's previous mode; arrays go in, small result objects come out.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amnesiac.data import ArrayDataset
from amnesiac.grads import ParamLayout
from amnesiac.training import predict


def per_sample_losses(model: nn.Module, dataset: ArrayDataset) -> np.ndarray:
    """Cross-entropy loss of every sample, [N] float64."""
    logits = predict(model, dataset.x)
    return F.cross_entropy(logits, dataset.y, reduction="none").double().numpy()


def entropies(model: nn.Module, dataset: ArrayDataset) -> np.ndarray:
    """Softmax entropy of every sample's prediction, [N] float64."""
    logp = F.log_softmax(predict(model, dataset.x).double(), dim=1)
    return (-(logp.exp() * logp).sum(1)).numpy()


def accuracy_of(logits: torch.Tensor, labels: torch.Tensor) -> float:
    return float((logits.argmax(1) == labels).float().mean()) if len(labels) else float("nan")


def argmin_finite(values: Sequence[float]) -> int:
    """Index of the smallest finite value; non-finite values (a diverged run) rank last, and where every value is
    non-finite the first index stands.

    Example:
        >>> argmin_finite([float("nan"), 0.3, 0.1])
        2
    """
    arr = np.asarray(values, dtype=float)
    return int(np.argmin(np.where(np.isfinite(arr), arr, np.inf)))


def mean_ci(values: Sequence[float]) -> tuple[float, float, int]:
    """Mean and half-width of the 95% t-interval (ddof=1) of the finite values; half-width NaN for one value.

    Example:
        >>> m, h, n = mean_ci([1.0, 2.0, 3.0]); (m, round(h, 3), n)
        (2.0, 2.484, 3)
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), 0
    if len(v) == 1:
        return float(v[0]), float("nan"), 1
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1) * v.std(ddof=1) / math.sqrt(len(v)))
    return float(v.mean()), half, len(v)


def geometric_ci(values: Sequence[float]) -> tuple[float, float, float, int]:
    """Geometric mean and 95% t-interval on the log scale of positive, heavy-tailed values (a KL divergence, a
    ratio): ``(gmean, low, high, n)``, the interval never below zero; low = high = gmean for one value, NaNs for
    none. Values that are not finite and positive are left out.

    Example:
        >>> g, lo, hi, n = geometric_ci([0.1, 1.0, 10.0]); (round(g, 6), n, lo > 0, round(lo * hi, 6))
        (1.0, 3, True, 1.0)
    """
    v = np.asarray([x for x in values if x is not None and math.isfinite(x) and x > 0], dtype=float)
    if len(v) == 0:
        return float("nan"), float("nan"), float("nan"), 0
    logs = np.log(v)
    g = float(np.exp(logs.mean()))
    if len(v) == 1:
        return g, g, g, 1
    from scipy import stats

    half = float(stats.t.ppf(0.975, len(v) - 1) * logs.std(ddof=1) / math.sqrt(len(v)))
    return g, float(np.exp(logs.mean() - half)), float(np.exp(logs.mean() + half)), len(v)


def class_accuracies(pred: torch.Tensor, labels: torch.Tensor, num_classes: int) -> np.ndarray:
    """Top-1 accuracy per class from predicted and true labels, [num_classes] float64 (NaN for an absent class).

    Example:
        >>> class_accuracies(torch.tensor([0, 1, 1]), torch.tensor([0, 0, 1]), 3).tolist()
        [0.5, 1.0, nan]
    """
    total = torch.bincount(labels, minlength=num_classes)[:num_classes].double()
    hits = torch.bincount(labels[pred == labels], minlength=num_classes)[:num_classes].double()
    return torch.where(total > 0, hits / total.clamp(min=1), torch.nan).numpy()


def param_distance(a: nn.Module, b: nn.Module) -> float:
    """L2 distance between two models' parameter vectors (same architecture)."""
    la, lb = ParamLayout.of(a), ParamLayout.of(b)
    if la != lb:
        raise ValueError("models differ in architecture; parameter distance needs the same layout")
    return float((la.vector(a).double().cpu() - lb.vector(b).double().cpu()).norm())


def output_divergence(a: nn.Module, b: nn.Module, dataset: ArrayDataset) -> dict[str, float]:
    """Mean Jensen-Shannon divergence (nats) between the two models' softmax outputs, and prediction agreement."""
    pa = F.softmax(predict(a, dataset.x).double(), 1)
    pb = F.softmax(predict(b, dataset.x).double(), 1)
    m = 0.5 * (pa + pb)

    def kl(p, q):
        return (p * (p.clamp_min(1e-300).log() - q.clamp_min(1e-300).log())).sum(1)

    js = 0.5 * (kl(pa, m) + kl(pb, m))
    return {"js": float(js.mean()), "agreement": float((pa.argmax(1) == pb.argmax(1)).double().mean())}


# ------------------------------------------------------------------------------------- membership inference


@dataclass(frozen=True)
class MIAResult:
    """Cross-validated accuracy of a membership attack: ``mean`` and ``std`` over folds, ``n`` per side."""

    mean: float
    std: float
    n: int

    def to_dict(self) -> dict:
        return asdict(self)


def _check_scores(name: str, scores) -> np.ndarray:
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: the attack needs at least one score per side")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} holds {int((~np.isfinite(arr)).sum())} non-finite values (NaN or inf); "
                         "check the model's outputs")
    return arr


def loss_mia(members, nonmembers, *, n_splits: int = 10, seed: int = 0) -> MIAResult:
    """Loss-based membership inference (NeurIPS 2023 unlearning challenge starting kit).

    Balances the two sides by seeded subsampling to the smaller size, then scores a logistic regression on
    the single feature with stratified ``n_splits``-fold cross-validation. 0.5 = members and non-members are
    indistinguishable.

    Example:
        >>> r = loss_mia(np.random.default_rng(0).normal(size=200), np.random.default_rng(1).normal(size=200))
        >>> 0.35 < r.mean < 0.65
        True
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    a, b = _check_scores("members", members), _check_scores("nonmembers", nonmembers)
    n = min(len(a), len(b))
    rng = np.random.default_rng(seed)
    a, b = rng.choice(a, n, replace=False), rng.choice(b, n, replace=False)
    splits = min(n_splits, n)
    if splits < 2:
        raise ValueError(f"need at least 2 scores per side for cross-validation, got {n}")
    x = np.concatenate([a, b]).reshape(-1, 1)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    cv = StratifiedKFold(n_splits=splits, shuffle=True, random_state=seed)
    scores = cross_val_score(LogisticRegression(), x, y, cv=cv, scoring="accuracy")
    return MIAResult(float(scores.mean()), float(scores.std()), int(n))


def entropy_mia(retain, test, forget, *, seed: int = 0) -> float:
    """Entropy-based membership inference (SSD / Bad Teacher): fit members (retain) vs non-members (test)
    on softmax entropy, balanced by subsampling; return the fraction of forget samples predicted members."""
    from sklearn.linear_model import LogisticRegression

    r, t, f = (_check_scores(n, s) for n, s in (("retain", retain), ("test", test), ("forget", forget)))
    n = min(len(r), len(t))
    rng = np.random.default_rng(seed)
    x = np.concatenate([rng.choice(r, n, replace=False), rng.choice(t, n, replace=False)]).reshape(-1, 1)
    y = np.concatenate([np.ones(n), np.zeros(n)])
    clf = LogisticRegression().fit(x, y)
    return float(clf.predict(f.reshape(-1, 1)).mean())


# ------------------------------------------------------------------------------------------ model inversion


def invert(model: nn.Module, target: int, shape: tuple[int, ...], *, steps: int = 300, lr: float = 0.05,
           tv: float = 0.05, l2: float = 0.01, seed: int = 0) -> torch.Tensor:
    """Fredrikson-style model inversion: an input that maximises ``target``'s log-probability.

    Gradient descent on ``-log p(target | x) + tv * total_variation(x) + l2 * ||x||^2`` from a blank image,
    with the input kept in the data range [-1, 1]. Returns the image [C, H, W] on the CPU.
    """
    dev = next(model.parameters()).device
    was_training = model.training
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = (0.01 * torch.randn(1, *shape, generator=gen)).to(dev).requires_grad_(True)
    opt = torch.optim.Adam([x], lr=lr)
    label = torch.tensor([target], device=dev)
    try:
        for _ in range(steps):
            opt.zero_grad()
            img = x.clamp(-1, 1)
            tv_term = (img[..., 1:, :] - img[..., :-1, :]).abs().mean() + (img[..., 1:] - img[..., :-1]).abs().mean()
            loss = F.cross_entropy(model(img), label) + tv * tv_term + l2 * img.pow(2).mean()
            loss.backward()
            opt.step()
    finally:
        model.train(was_training)
        model.zero_grad(set_to_none=True)
    return x.detach().clamp(-1, 1)[0].cpu()


# ---------------------------------------------------------------------------------------------- memory


def per_batch_formula_bytes(n_params: int, n_samples: int, epochs: int, batch_size: int, bytes_per: int = 4) -> int:
    """Graves's per-batch store for requests not known in advance: one vector per step, E * ceil(N/B)."""
    return n_params * epochs * -(-n_samples // batch_size) * bytes_per


def per_sample_formula_bytes(n_params: int, n_tracked: int, p: float = 1.0, bytes_per: int = 4) -> int:
    """The seed's per-sample store: a p fraction of one vector per tracked sample, O(N M p)."""
    return int(n_params * n_tracked * p * bytes_per)


def per_step_store_vectors(n_train: int, n_tracked: int, epochs: int, batch_size: int) -> float:
    """Expected number of parameter vectors a per-step store keeps to serve any request among ``n_tracked``
    samples not known in advance: one per training step whose batch holds at least one of them, that is
    ``epochs * batches * (1 - C(n_train - n_tracked, B) / C(n_train, B))`` for random batches of ``B``.

    Example:
        >>> round(per_step_store_vectors(60_000, 1, 4, 64), 2)  # one tracked sample: one step per epoch
        4.0
    """
    if not 0 <= n_tracked <= n_train:
        raise ValueError(f"n_tracked={n_tracked} must lie in [0, n_train={n_train}]")
    batches = -(-n_train // batch_size)
    # probability that a batch of B misses every tracked sample (sampling without replacement)
    miss = 1.0
    for i in range(batch_size):
        miss *= max(0.0, (n_train - n_tracked - i) / (n_train - i))
    return epochs * batches * (1.0 - miss)


def memory_crossover(n_train: int, epochs: int, batch_size: int, p: float = 1.0) -> int:
    """The smallest number of tracked samples at which a per-sample ledger (``p`` of one vector per sample)
    holds more than the per-step store of :func:`per_step_store_vectors` (requests not known in advance).

    Example:
        >>> memory_crossover(60_000, 4, 64)  # the seed's MNIST settings
        3688
    """
    lo, hi = 1, n_train
    if p * n_train <= per_step_store_vectors(n_train, n_train, epochs, batch_size):
        return n_train + 1  # the ledger never holds more
    while lo < hi:  # the ledger grows linearly, the store saturates: one crossing
        mid = (lo + hi) // 2
        if p * mid > per_step_store_vectors(n_train, mid, epochs, batch_size):
            hi = mid
        else:
            lo = mid + 1
    return lo
