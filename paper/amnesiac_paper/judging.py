"""How the frontier judges a method (:mod:`amnesiac_paper.frontier`): each example's margin, U-LiRA on the
forget examples with its bootstrap interval, KLOM's 95th percentile resampled jointly over the models and the
examples (:func:`klom_bootstrap`) and the paired differences read from it (:func:`paired_difference`), and the
rule that sets a method's knobs without the answer (:func:`rule_choice`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from . import attacks as A
from .klom import klom


def margins_of(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Each example's margin (correct logit minus the log-sum-exp of the others, the datamodels' and LiRA's
    statistic) and whether the model predicts it correctly."""
    model.eval()
    with torch.no_grad():
        z = model(x).double()
    correct = z.gather(1, y[:, None]).squeeze(1)
    other = z.scatter(1, y[:, None], float("-inf")).logsumexp(1)
    return (correct - other).float().numpy(), (z.argmax(1) == y).numpy()


def margin_loss(margins: np.ndarray) -> np.ndarray:
    """Cross-entropy from the margin: log(1 + exp(-margin))."""
    return np.logaddexp(0.0, -margins.astype(np.float64))


ACC_TOLERANCE = 0.02  # the rule keeps a configuration whose held-out accuracy on the other classes drops less


def rule_choice(rows: list[dict], reference_acc: float) -> int | None:
    """The configuration chosen without the answer: among those that keep the validation accuracy on the classes
    not forgotten within :data:`ACC_TOLERANCE` of the original's, the one whose forget-set loss is closest to the
    held-out loss of its classes (a model that never saw the forget set has no reason to fit it better or worse
    than held-out data); ``None`` when none keeps the accuracy (then nothing is changed).

    Example:
        >>> rows = [{"loss_forget": 0.1, "loss_heldout": 0.3, "acc_val_other": 0.9},
        ...         {"loss_forget": 0.28, "loss_heldout": 0.3, "acc_val_other": 0.89},
        ...         {"loss_forget": 0.3, "loss_heldout": 0.3, "acc_val_other": 0.5}]
        >>> rule_choice(rows, 0.9), rule_choice(rows[2:], 0.9)
        (1, None)
    """
    ok = [i for i, r in enumerate(rows) if r["acc_val_other"] >= reference_acc - ACC_TOLERANCE]
    if not ok:
        return None
    return min(ok, key=lambda i: abs(rows[i]["loss_forget"] - rows[i]["loss_heldout"]))


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """ROC AUC by the rank sum (ties counted half)."""
    from scipy.stats import rankdata

    ranks = rankdata(np.concatenate([pos, neg]))
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def ulira(unlearned: np.ndarray, oracles: np.ndarray, *, bootstrap: int, seed: int = 0) -> dict:
    """U-LiRA (Hayes et al. 2024) on the forget examples' margins ``[models, examples]``: per-example Gaussians
    fitted on the first half of each side's models (shadows), every model of the second halves scored by the
    likelihood ratio, AUC of unlearned (positive) against oracle (negative) targets; 0.5 is indistinguishable.
    The interval: 2.5 and 97.5 percentiles over ``bootstrap`` resamples of the examples."""
    hu, ho = len(unlearned) // 2, len(oracles) // 2
    pos = np.stack([A.lira_scores(t, unlearned[:hu], oracles[:ho]) for t in unlearned[hu:]])  # [models, examples]
    neg = np.stack([A.lira_scores(t, unlearned[:hu], oracles[:ho]) for t in oracles[ho:]])
    auc = _auc(pos.ravel(), neg.ravel())
    rng = np.random.default_rng(seed)
    n = pos.shape[1]
    boots = [_auc(pos[:, s].ravel(), neg[:, s].ravel()) for s in (rng.integers(0, n, n) for _ in range(bootstrap))]
    lo, hi = np.percentile(boots, [2.5, 97.5])
    return {"auc": auc, "low": float(lo), "high": float(hi), "n_examples": int(n),
            "n_targets": [len(pos), len(neg)]}


def klom_bootstrap(unlearned: np.ndarray, oracle: np.ndarray, *, draws: int, bins: int, seed: int = 0
                   ) -> np.ndarray:
    """KLOM's 95th percentile over ``draws`` joint resamples of the unlearned models, the oracles and the examples
    (``[models, examples]`` margins on each side): what the P95 would be with other models and other examples.

    The resamples depend only on ``seed`` and the three sizes, so two methods evaluated on the same originals
    against the same oracles share them: the difference of their resampled P95s is a paired bootstrap
    (:func:`paired_difference`) that carries the noise of drawing the models as well as the examples."""
    u, o = np.asarray(unlearned, dtype=np.float64), np.asarray(oracle, dtype=np.float64)
    rng = np.random.default_rng([seed, len(u), len(o), u.shape[1]])
    out = np.empty(draws)
    for b in range(draws):
        rm, ro, re = rng.integers(0, len(u), len(u)), rng.integers(0, len(o), len(o)), \
            rng.integers(0, u.shape[1], u.shape[1])
        out[b] = np.percentile(klom(u[rm][:, re], o[ro][:, re], bins=bins), 95)
    return out


def paired_difference(a: float, b: float, a_boot: Sequence[float], b_boot: Sequence[float]) -> dict:
    """``a - b`` (two KLOM P95s) with a 95% interval from the paired resampled differences ``a_boot - b_boot``
    (:func:`klom_bootstrap` on the same draws): their 2.5 and 97.5 percentiles, shifted by the resamples' bias
    (their mean minus ``a - b``).

    The shift is needed because a resample repeats models, and KLOM's histogram estimate moves with the number of
    distinct models (towards its cap of log(1/eps) for a method far from the oracles): unshifted, the interval of
    a large difference can miss the difference itself. Shifted, it keeps the resamples' spread around the
    estimate.

    Example:
        >>> d = paired_difference(1.0, 3.0, [1.0, 1.1, 0.9], [3.0, 3.2, 2.9])
        >>> d["diff"], d["excludes_zero"], round(d["low"], 3), round(d["high"], 3)
        (-2.0, True, -2.062, -1.967)
    """
    ab, bb = np.asarray(a_boot, dtype=np.float64), np.asarray(b_boot, dtype=np.float64)
    if ab.shape != bb.shape or ab.ndim != 1 or not len(ab):
        raise ValueError(f"need two resampled vectors over the same draws, got shapes {ab.shape} and {bb.shape}")
    d, diffs = float(a - b), ab - bb
    shift = float(diffs.mean()) - d
    q_lo, q_hi = np.percentile(diffs, [2.5, 97.5])
    lo, hi = float(q_lo) - shift, float(q_hi) - shift
    return {"diff": d, "low": lo, "high": hi, "excludes_zero": bool(lo > 0 or hi < 0), "n": int(len(ab))}


def rms_gap(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Root-mean-square difference of two margin arrays over their last axis (per model)."""
    return np.sqrt(((a.astype(np.float64) - b) ** 2).mean(axis=-1))
