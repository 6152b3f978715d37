"""Membership attacks that can detect forgetting: arrays in, small results out.

* :func:`roc` and :func:`threshold_attack`: ROC AUC, TPR at low FPR (1%, 0.1%) and the attack's own held-out
  balanced accuracy, for any score where higher means "member"; :func:`bootstrap_attack`: their intervals over
  resampled target models and examples.
* :func:`class_conditional_loss_attack`: members are the forgotten class's training images, non-members the
  same class's test images, so the attack detects "was trained on", not "is of this class".
* :func:`plant_canaries` / :func:`canary_rates`: mislabelled canaries, a per-sample test: a model that trained on
  a canary predicts its planted label, a model that never saw it the true one.
* :func:`logit_confidence`, :func:`lira_scores`, :func:`ulira_attack`: the per-example likelihood-ratio attack
  (Carlini et al. 2022) in its unlearning form (U-LiRA, Hayes et al. 2024): for each target example, Gaussians
  fitted to its logit-scaled confidence under shadow models that saw and then forgot it and under shadows that
  never saw it; the attack tells an unlearned model from one that never saw the example.
* :func:`difference_scores` / :func:`difference_attack`: the update itself as a leak: which candidates were
  forgotten, judged by the alignment of the parameter change with each candidate's gradient.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amnesiac.data import ArrayDataset
from amnesiac.training import predict

DEFAULT_FPRS = (0.01, 0.001)


def _scores(name: str, values) -> np.ndarray:
    arr = np.asarray(values, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: the attack needs at least one score per side")
    bad = ~np.isfinite(arr)
    if bad.any():
        raise ValueError(f"{name} holds {int(bad.sum())} non-finite values (NaN or inf); check the model's outputs")
    return arr


@dataclass(frozen=True)
class ROC:
    """An ROC curve (``fpr``, ``tpr`` ascending, from (0, 0) to (1, 1)) and its area.

    Example:
        >>> r = roc([1.0, 2.0], [0.0, 1.0]); r.auc  # pairs: 1 > 0, 1 = 1 (half), 2 > 0, 2 > 1
        0.875
    """

    fpr: np.ndarray
    tpr: np.ndarray
    auc: float

    def tpr_at(self, fpr: float) -> float:
        """The highest TPR of a threshold whose FPR is at most ``fpr`` (no interpolation)."""
        ok = self.fpr <= fpr + 1e-12
        return float(self.tpr[ok].max()) if ok.any() else 0.0


def roc(member_scores, nonmember_scores) -> ROC:
    """ROC of "member if score >= threshold" over every threshold; AUC is the Mann-Whitney statistic (ties 1/2)."""
    from scipy.stats import rankdata

    a, b = _scores("member scores", member_scores), _scores("non-member scores", nonmember_scores)
    ranks = rankdata(np.concatenate([a, b]))  # average ranks: ties count one half
    auc = float((ranks[: len(a)].sum() - len(a) * (len(a) + 1) / 2) / (len(a) * len(b)))
    thresholds = np.unique(np.concatenate([a, b]))[::-1]  # descending
    a_sorted, b_sorted = np.sort(a), np.sort(b)
    tpr = 1.0 - np.searchsorted(a_sorted, thresholds, side="left") / len(a)
    fpr = 1.0 - np.searchsorted(b_sorted, thresholds, side="left") / len(b)
    return ROC(np.concatenate([[0.0], fpr]), np.concatenate([[0.0], tpr]), auc)


def auc_and_tprs(member_scores: np.ndarray, nonmember_scores: np.ndarray, fprs=DEFAULT_FPRS) -> tuple[float, dict]:
    """:func:`roc`'s AUC and its TPR at each FPR (``ROC.tpr_at``), without building the curve: sorts and binary
    searches only, for the thousands of resamples of :func:`bootstrap_attack`.

    Example:
        >>> auc, tpr = auc_and_tprs(np.array([3.0, 2.0, 1.0]), np.array([1.0, 0.0, -1.0, -2.0]), fprs=(0.25,))
        >>> round(auc, 4), tpr[0.25]
        (0.9583, 1.0)
    """
    a, b = np.asarray(member_scores, dtype=np.float64), np.sort(np.asarray(nonmember_scores, dtype=np.float64))
    below, at_or_below = np.searchsorted(b, a, side="left"), np.searchsorted(b, a, side="right")
    auc = float((below.sum() + 0.5 * (at_or_below - below).sum()) / (len(a) * len(b)))
    tprs = {}
    for f in fprs:
        k = math.floor((f + 1e-12) * len(b))  # negatives a threshold may let through (ROC.tpr_at's tolerance)
        # the lowest admissible threshold lies just above the (k+1)-th largest negative
        tprs[float(f)] = 1.0 if k >= len(b) else float((a > b[len(b) - 1 - k]).mean())
    return auc, tprs


def bootstrap_attack(scores: np.ndarray, member: np.ndarray, defined: np.ndarray | None = None, *,
                     draws: int = 1000, fprs=DEFAULT_FPRS, seed: int = 0) -> dict:
    """95% intervals of an attack's AUC and TPR at each FPR over joint resamples of the target models (rows of the
    ``[models, examples]`` arrays) and of the examples (columns): what the attack would score with other models
    and other examples. ``scores``: the attack's score of each example under each target model; ``member``: True
    where that model holds (or held and forgot) the example; ``defined``: where a score exists (default:
    everywhere). The attack's own fit (shadows, Gaussians) is kept, as in the evaluation of Carlini et al.;
    resamples without one side are skipped. Returns ``{"auc": [low, high], "tpr": {fpr: [low, high]},
    "draws": used}`` (FPRs as strings, as in :meth:`AttackResult.to_dict`).

    Example:
        >>> rng = np.random.default_rng(0)
        >>> member = rng.random((8, 50)) < 0.5
        >>> ci = bootstrap_attack(rng.normal(size=(8, 50)) + member, member, draws=200)
        >>> ci["auc"][0] < 0.76 < ci["auc"][1] and ci["draws"] == 200
        True
    """
    s, m = np.asarray(scores, dtype=np.float64), np.asarray(member, dtype=bool)
    d = np.ones_like(m) if defined is None else np.asarray(defined, dtype=bool)
    if not (s.shape == m.shape == d.shape) or s.ndim != 2:
        raise ValueError(f"scores, member and defined must be [models, examples] arrays of one shape, got "
                         f"{s.shape}, {m.shape}, {d.shape}")
    rng = np.random.default_rng(seed)
    K, N = s.shape
    aucs, tprs = [], {float(f): [] for f in fprs}
    for _ in range(draws):
        r, c = rng.integers(0, K, K), rng.integers(0, N, N)
        sub, mm, dd = s[np.ix_(r, c)], m[np.ix_(r, c)], d[np.ix_(r, c)]
        pos, neg = sub[mm & dd], sub[~mm & dd]
        if not len(pos) or not len(neg):
            continue
        auc, tpr = auc_and_tprs(pos, neg, fprs)
        aucs.append(auc)
        for f in tprs:
            tprs[f].append(tpr[f])
    if not aucs:
        raise ValueError("no resample holds both members and non-members: the attack has nothing to score")
    return {"auc": [float(v) for v in np.percentile(aucs, [2.5, 97.5])],
            "tpr": {str(f): [float(v) for v in np.percentile(v, [2.5, 97.5])] for f, v in tprs.items()},
            "draws": len(aucs)}


@dataclass(frozen=True)
class AttackResult:
    """What a membership attack achieves: ROC AUC, TPR at low FPRs, and its held-out balanced accuracy.

    ``heldout_accuracy``: the threshold is chosen on a random half of each side and the balanced accuracy is
    measured on the other half (0.5 = no signal).
    """

    auc: float
    tpr: dict[float, float]
    heldout_accuracy: float
    n_members: int
    n_nonmembers: int
    curve: ROC | None = field(default=None, compare=False, repr=False)

    def to_dict(self, *, with_curve: bool = False, points: int = 200) -> dict:
        out = {"auc": self.auc, "tpr": {str(k): v for k, v in self.tpr.items()},
               "heldout_accuracy": self.heldout_accuracy, "n_members": self.n_members,
               "n_nonmembers": self.n_nonmembers}
        if with_curve and self.curve is not None:  # log-spaced FPR grid, enough for a log-log plot
            grid = np.unique(np.concatenate([[0.0], np.logspace(-4, 0, points)]))
            out["curve"] = {"fpr": grid.tolist(), "tpr": [self.curve.tpr_at(f) for f in grid]}
        return out


def _heldout_accuracy(a: np.ndarray, b: np.ndarray, seed: int) -> float:
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    rng = np.random.default_rng(seed)
    ia, ib = rng.permutation(len(a)), rng.permutation(len(b))
    fit_a, test_a = a[ia[: len(a) // 2]], a[ia[len(a) // 2:]]
    fit_b, test_b = b[ib[: len(b) // 2]], b[ib[len(b) // 2:]]
    cands = np.unique(np.concatenate([fit_a, fit_b]))
    tpr = 1.0 - np.searchsorted(np.sort(fit_a), cands, side="left") / len(fit_a)
    tnr = np.searchsorted(np.sort(fit_b), cands, side="left") / len(fit_b)
    t = cands[int(np.argmax(tpr + tnr))]
    return float(0.5 * ((test_a >= t).mean() + (test_b < t).mean()))


def threshold_attack(member_scores, nonmember_scores, *, fprs=DEFAULT_FPRS, seed: int = 0) -> AttackResult:
    """Score-threshold membership attack (higher score = member): AUC, TPR at ``fprs``, held-out accuracy.

    Example:
        >>> rng = np.random.default_rng(0)
        >>> r = threshold_attack(rng.normal(3, 1, 2000), rng.normal(0, 1, 2000))
        >>> r.auc > 0.97 and r.heldout_accuracy > 0.9
        True
    """
    a, b = _scores("member scores", member_scores), _scores("non-member scores", nonmember_scores)
    curve = roc(a, b)
    return AttackResult(curve.auc, {float(f): curve.tpr_at(f) for f in fprs}, _heldout_accuracy(a, b, seed),
                        len(a), len(b), curve)


def per_sample_losses(model: nn.Module, dataset: ArrayDataset) -> np.ndarray:
    """Cross-entropy loss of every sample, [N] float64."""
    return F.cross_entropy(predict(model, dataset.x), dataset.y, reduction="none").double().numpy()


def class_conditional_loss_attack(model: nn.Module, members: ArrayDataset, nonmembers: ArrayDataset, *,
                                  seed: int = 0) -> AttackResult:
    """Loss attack with members and non-members of the same class(es): the score is minus the loss.

    For class forgetting, ``members`` are the forgotten class's training images and ``nonmembers`` its test
    images; on the original model the attack's held-out accuracy is the signal there is to remove.
    """
    if set(torch.unique(members.y).tolist()) != set(torch.unique(nonmembers.y).tolist()):
        got = (sorted(torch.unique(members.y).tolist()), sorted(torch.unique(nonmembers.y).tolist()))
        raise ValueError(f"members and non-members must hold the same classes (a class-conditional attack); got "
                         f"{got[0]} and {got[1]}")
    return threshold_attack(-per_sample_losses(model, members), -per_sample_losses(model, nonmembers), seed=seed)


# ----------------------------------------------------------------------------------------------- canaries


@dataclass(frozen=True)
class Canaries:
    """Training samples given a wrong label: their ids, true labels and planted labels."""

    ids: torch.Tensor
    true: torch.Tensor
    planted: torch.Tensor


def plant_canaries(dataset: ArrayDataset, k: int, *, num_classes: int, seed: int = 0) -> tuple[ArrayDataset,
                                                                                                  Canaries]:
    """A copy of ``dataset`` in which ``k`` seeded random samples carry a wrong label (another class, uniform).

    Example:
        >>> ds = ArrayDataset(torch.zeros(10, 1), torch.arange(10) % 3, torch.arange(10))
        >>> new, c = plant_canaries(ds, 4, num_classes=3, seed=1)
        >>> bool((c.planted != c.true).all()) and int((new.y != ds.y).sum())
        4
    """
    if not 0 < k <= len(dataset):
        raise ValueError(f"k must be in 1..{len(dataset)}, got {k}")
    if num_classes < 2:
        raise ValueError("canaries need at least 2 classes")
    gen = torch.Generator().manual_seed(60_013 + seed)
    rows = torch.sort(torch.randperm(len(dataset), generator=gen)[:k]).values
    true = dataset.y[rows].clone()
    planted = (true + torch.randint(1, num_classes, (k,), generator=gen)) % num_classes
    y = dataset.y.clone()
    y[rows] = planted
    return ArrayDataset(dataset.x, y, dataset.ids, f"{dataset.name}+{k}canaries"), Canaries(dataset.ids[rows], true,
                                                                                          planted)


def canary_rates(logits: torch.Tensor, canaries: Canaries) -> dict[str, float]:
    """Fractions of canaries predicted as their planted label and as their true label (``logits`` [k, C] in the
    canaries' order).

    Example:
        >>> c = Canaries(torch.arange(2), torch.tensor([0, 1]), torch.tensor([1, 0]))
        >>> canary_rates(torch.tensor([[0.0, 5.0], [0.0, 5.0]]), c)
        {'planted': 0.5, 'true': 0.5, 'n': 2}
    """
    pred = logits.argmax(1).cpu()
    return {"planted": float((pred == canaries.planted).double().mean()),
            "true": float((pred == canaries.true).double().mean()), "n": len(canaries.ids)}


# ---------------------------------------------------------------------------------- likelihood-ratio attack


def logit_confidence(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """log(p_y / (1 - p_y)) of each row, computed stably as z_y - logsumexp(z without y) (Carlini et al.).

    Example:
        >>> float(logit_confidence(torch.tensor([[0.0, 0.0]]), torch.tensor([0]))[0])
        0.0
    """
    z = logits.double()
    zy = z.gather(1, labels.view(-1, 1)).squeeze(1)
    rest = z.scatter(1, labels.view(-1, 1), float("-inf"))
    return (zy - torch.logsumexp(rest, 1)).numpy()


def lira_scores(target, in_conf, out_conf, *, min_std: float = 1e-3, global_variance: bool = False) -> np.ndarray:
    """Per-example Gaussian log-likelihood ratios: log N(x; mu_in, sd_in) - log N(x; mu_out, sd_out).

    Args:
        target: [N] the target model's (logit-scaled) confidence on each example.
        in_conf, out_conf: [K_in, N] and [K_out, N] the example's confidence under shadow models of each kind
            (for unlearning: saw-then-forgot, and never saw). NaN entries (a shadow that does not hold the
            example on that side) are ignored.
        min_std: floor on the fitted standard deviations.
        global_variance: use one standard deviation per side for every example (Carlini et al.'s choice for
            few shadows).
    Higher = more like the IN side.
    """
    x = np.asarray(target, dtype=np.float64).reshape(-1)
    a, b = np.asarray(in_conf, dtype=np.float64), np.asarray(out_conf, dtype=np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != len(x) or b.shape[1] != len(x):
        raise ValueError(f"in_conf and out_conf must be [K, N] with N = {len(x)}; got {a.shape} and {b.shape}")
    mu_a, mu_b = np.nanmean(a, 0), np.nanmean(b, 0)
    if global_variance:
        sd_a = np.full_like(mu_a, np.nanstd(a - mu_a))
        sd_b = np.full_like(mu_b, np.nanstd(b - mu_b))
    else:
        sd_a, sd_b = np.nanstd(a, 0), np.nanstd(b, 0)
    sd_a, sd_b = np.maximum(sd_a, min_std), np.maximum(sd_b, min_std)
    if not (np.isfinite(mu_a).all() and np.isfinite(mu_b).all()):
        raise ValueError("an example has no shadow model on one side: every example needs at least one IN and OUT")

    def logpdf(v, mu, sd):
        return -0.5 * ((v - mu) / sd) ** 2 - np.log(sd) - 0.5 * math.log(2 * math.pi)

    return logpdf(x, mu_a, sd_a) - logpdf(x, mu_b, sd_b)


def ulira_attack(positive, negative, in_conf, out_conf, *, fprs=DEFAULT_FPRS, seed: int = 0,
                 global_variance: bool = False) -> AttackResult:
    """U-LiRA: tell target models that saw-then-forgot each example (``positive`` [N] confidences) from target
    models that never saw it (``negative`` [N]), with per-example Gaussians fitted on shadows (``in_conf``:
    saw-then-forgot, ``out_conf``: never saw, each [K, N]). An ideal unlearner gives AUC 0.5 and TPR = FPR."""
    pos = lira_scores(positive, in_conf, out_conf, global_variance=global_variance)
    neg = lira_scores(negative, in_conf, out_conf, global_variance=global_variance)
    return threshold_attack(pos, neg, fprs=fprs, seed=seed)


# ---------------------------------------------------------------------------------------- difference attack


def difference_scores(theta_before: torch.Tensor, theta_after: torch.Tensor,
                      candidate_grads: torch.Tensor) -> np.ndarray:
    """How strongly the parameter change of an unlearning request points along each candidate's gradient:
    cosine of (theta_after - theta_before) with the candidate's loss gradient at ``theta_before``, [M].

    Removing a sample's contribution undoes descent steps along its gradient, so the change aligns with the
    gradients of the forgotten samples (score high) and not with others'.
    """
    change = (theta_after.double() - theta_before.double()).reshape(1, -1)
    g = candidate_grads.double().reshape(len(candidate_grads), -1)
    if g.shape[1] != change.shape[1]:
        raise ValueError(f"gradients have {g.shape[1]} entries, the parameters {change.shape[1]}")
    return F.cosine_similarity(g, change.expand_as(g), dim=1).numpy()


def difference_attack(theta_before: torch.Tensor, theta_after: torch.Tensor, forgotten_grads: torch.Tensor,
                      other_grads: torch.Tensor, *, fprs=DEFAULT_FPRS, seed: int = 0) -> AttackResult:
    """An attacker holding the model before and after a request ranks candidates by :func:`difference_scores`;
    the result says how well that tells the forgotten candidates from the others (AUC 0.5: not at all)."""
    return threshold_attack(difference_scores(theta_before, theta_after, forgotten_grads),
                            difference_scores(theta_before, theta_after, other_grads), fprs=fprs, seed=seed)
