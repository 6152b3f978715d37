"""KLOM, the field's per-example, distribution-level unlearning metric (Georgiev et al. 2024).

For every example, the margins that N unlearned models give it (each model unlearned from an independently
trained original) form one distribution and the margins of N oracles (models retrained without the forget set,
with independent seeds) another; KLOM is the KL divergence between them, estimated on a shared histogram of
``bins`` bins over the range of both samples, and is reported as a percentile (the 95th) over the examples of a
split (forget, retain, validation). The oracle-against-oracle split (two disjoint halves of the oracles) is the
floor the estimator reaches with no difference at all; "do nothing" (the originals) is the ceiling to beat.

The estimator follows the public data-unlearning benchmark: margins clipped to ``[-clip, clip]``, bins shared by
both samples, the oracle's bin probability floored at ``eps`` where the unlearned models put mass (so a bin the
oracles never reach costs ``log(p / eps)`` instead of infinity), KL(unlearned || oracle).
"""

from __future__ import annotations

import numpy as np


def binned_kl(p_samples, q_samples, *, bins: int = 20, eps: float = 1e-5, clip: float = 100.0) -> float:
    """KL(p || q) of two 1-D samples on a shared histogram of ``bins`` equal bins over their joint range.

    Example:
        >>> binned_kl([0.0, 1.0, 2.0], [0.0, 1.0, 2.0])
        0.0
        >>> round(binned_kl([0.0, 0.1], [5.0, 5.1], bins=2), 3)  # no common bin: log(1 / eps)
        11.513
    """
    p = np.clip(np.asarray(p_samples, dtype=float).ravel(), -clip, clip)
    q = np.clip(np.asarray(q_samples, dtype=float).ravel(), -clip, clip)
    if len(p) == 0 or len(q) == 0:
        raise ValueError(f"binned_kl needs samples on both sides, got {len(p)} and {len(q)}")
    if bins < 1 or not eps > 0:
        raise ValueError(f"need bins >= 1 and eps > 0, got {bins} and {eps}")
    lo, hi = min(p.min(), q.min()), max(p.max(), q.max())
    if hi <= lo:
        return 0.0  # one value on both sides
    edges = np.linspace(lo, hi, bins + 1)
    pp = np.histogram(p, edges)[0] / len(p)
    qq = np.histogram(q, edges)[0] / len(q)
    on = pp > 0
    return float(np.sum(pp[on] * np.log(pp[on] / np.maximum(qq[on], eps))))


def klom(unlearned: np.ndarray, oracle: np.ndarray, *, bins: int = 20, eps: float = 1e-5, clip: float = 100.0
         ) -> np.ndarray:
    """Per-example KLOM: ``unlearned`` and ``oracle`` are margins ``[models, examples]`` (the two sides may have
    different numbers of models); returns ``[examples]`` of :func:`binned_kl` with these keywords, computed for
    every example at once (the same shared bins and counts as NumPy's histogram on each example's edges).

    Example:
        >>> u, o = np.array([[0.0, 1.0], [0.1, 2.0]]), np.array([[5.0, 1.0], [5.1, 2.0]])
        >>> klom(u, o, bins=2).round(3).tolist()  # no common bin, then one distribution
        [11.513, 0.0]
    """
    u, o = np.asarray(unlearned, dtype=float), np.asarray(oracle, dtype=float)
    if u.ndim != 2 or o.ndim != 2 or u.shape[1] != o.shape[1]:
        raise ValueError(f"margins must be [models, examples] with the same examples, got {u.shape} and {o.shape}")
    if len(u) == 0 or len(o) == 0:
        raise ValueError(f"KLOM needs models on both sides, got {len(u)} and {len(o)}")
    if bins < 1 or not eps > 0:
        raise ValueError(f"need bins >= 1 and eps > 0, got {bins} and {eps}")
    u, o = np.clip(u, -clip, clip), np.clip(o, -clip, clip)
    lo, hi = np.minimum(u.min(0), o.min(0)), np.maximum(u.max(0), o.max(0))  # [E]
    inner = np.linspace(lo, hi, bins + 1, axis=0)[1:-1]  # [bins - 1, E]: the interior edges of each example

    def probabilities(x):  # bin k holds edges[k] <= x < edges[k + 1], the last one its right edge too
        idx = (x[:, None, :] >= inner[None]).sum(1)  # [M, E]
        return (idx[:, None, :] == np.arange(bins)[None, :, None]).sum(0) / len(x)  # [bins, E]

    pp, qq = probabilities(u), probabilities(o)
    terms = np.where(pp > 0, pp * np.log(np.where(pp > 0, pp, 1.0) / np.maximum(qq, eps)), 0.0)
    return np.where(hi > lo, terms.sum(0), 0.0)


def klom_percentile(unlearned: np.ndarray, oracle: np.ndarray, q: float = 95.0, **kw) -> float:
    """The ``q``-th percentile over examples of :func:`klom` (the field reports the 95th)."""
    return float(np.percentile(klom(unlearned, oracle, **kw), q))


def oracle_floor(oracle: np.ndarray, q: float = 95.0, *, seed: int = 0, **kw) -> float:
    """KLOM of one random half of the oracles against the other half: what the estimator gives with no
    difference at all, at half the sample size (the floor of the table)."""
    o = np.asarray(oracle, dtype=float)
    if len(o) < 4:
        raise ValueError(f"the floor splits the oracles in two halves: need at least 4, got {len(o)}")
    perm = np.random.default_rng(seed).permutation(len(o))
    half = len(o) // 2
    return klom_percentile(o[perm[:half]], o[perm[half:2 * half]], q, **kw)
