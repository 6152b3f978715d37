"""Membership attacks on synthetic scores of known separation: chance where the sides are identical, the
analytic optimum where they are Gaussian, and the per-example likelihood ratio beating one global threshold."""

import math

import numpy as np
import pytest
import torch
from amnesiac_paper import attacks as A
from scipy.stats import norm

import amnesiac


def test_roc_auc_counts_ties_as_half_and_tpr_at_fpr_does_not_interpolate():
    r = A.roc([1.0, 2.0], [0.0, 1.0])
    assert r.auc == 0.875
    assert r.tpr_at(0.0) == 0.5 and r.tpr_at(0.5) == 1.0  # threshold 2: (tpr 0.5, fpr 0); threshold 1: (1, 0.5)
    assert r.fpr[0] == 0 and r.tpr[0] == 0 and r.fpr[-1] == 1 and r.tpr[-1] == 1


def test_identical_distributions_give_chance_and_separated_ones_near_one():
    rng = np.random.default_rng(0)
    n = 4000
    same = A.threshold_attack(rng.normal(size=n), rng.normal(size=n), seed=1)
    sigma = math.sqrt((2 * n + 1) / (12 * n * n))  # the AUC's standard deviation under no separation
    assert abs(same.auc - 0.5) < 4 * sigma and abs(same.heldout_accuracy - 0.5) < 0.03
    assert same.tpr[0.01] < 0.03
    apart = A.threshold_attack(rng.normal(4, 1, n), rng.normal(size=n))
    assert apart.auc > 0.99 and apart.heldout_accuracy > 0.95 and apart.tpr[0.01] > 0.8


def test_tpr_at_low_fpr_matches_the_gaussian_optimum():
    rng = np.random.default_rng(2)
    n = 200_000
    r = A.threshold_attack(rng.normal(1, 1, n), rng.normal(0, 1, n))
    for fpr in (0.01, 0.001):
        want = 1 - norm.cdf(norm.ppf(1 - fpr) - 1)  # Neyman-Pearson: thresholding x is optimal here
        assert abs(r.tpr[fpr] - want) < 0.01, (fpr, r.tpr[fpr], want)
    assert abs(r.auc - norm.cdf(1 / math.sqrt(2))) < 0.005


def test_per_example_likelihood_ratio_reaches_the_optimum_a_global_threshold_misses():
    """Each example has its own baseline m_i; IN = m_i + 1, OUT = m_i, unit noise. Knowing m_i from shadows, the
    likelihood ratio is the optimal test (TPR at 1% FPR ~ 0.092); one global threshold is swamped by the m_i."""
    rng = np.random.default_rng(3)
    N, K = 20_000, 64
    m = rng.normal(0, 5, N)
    in_conf = m + 1 + rng.normal(size=(K, N))
    out_conf = m + rng.normal(size=(K, N))
    positive, negative = m + 1 + rng.normal(size=N), m + rng.normal(size=N)
    lira = A.ulira_attack(positive, negative, in_conf, out_conf)
    optimum = 1 - norm.cdf(norm.ppf(0.99) - 1)
    assert abs(lira.tpr[0.01] - optimum) < 0.02, (lira.tpr[0.01], optimum)
    naive = A.threshold_attack(positive, negative)
    assert naive.tpr[0.01] < 0.03 and lira.auc > naive.auc + 0.1
    # an ideal unlearner: "forgot" is distributed as "never saw"; the attack is at chance
    ideal = A.ulira_attack(m + rng.normal(size=N), m + rng.normal(size=N), m + rng.normal(size=(K, N)), out_conf)
    assert abs(ideal.auc - 0.5) < 0.02 and ideal.tpr[0.01] < 0.02


def test_lira_inputs_are_checked():
    with pytest.raises(ValueError, match=r"\[K, N\] with N = 3"):
        A.lira_scores(np.zeros(3), np.zeros((4, 2)), np.zeros((4, 3)))
    with pytest.raises(ValueError, match="non-finite"):
        A.threshold_attack([0.0, float("nan")], [1.0])
    with pytest.raises(ValueError, match="empty"):
        A.roc([], [1.0])


def test_logit_confidence_is_stable_and_monotone_in_the_true_class_probability():
    logits = torch.tensor([[100.0, 0.0, 0.0], [0.0, 0.0, 0.0], [-50.0, 0.0, 0.0]])
    conf = A.logit_confidence(logits, torch.tensor([0, 0, 0]))
    assert np.isfinite(conf).all() and conf[0] > conf[1] > conf[2]
    assert abs(conf[1] - math.log(1 / 2)) < 1e-12  # p = 1/3: log(p / (1 - p))


def test_canaries_are_planted_deterministically_and_scored_per_sample():
    ds = amnesiac.ArrayDataset(torch.zeros(50, 2), torch.arange(50) % 5, torch.arange(100, 150))
    new, c = A.plant_canaries(ds, 7, num_classes=5, seed=4)
    again, c2 = A.plant_canaries(ds, 7, num_classes=5, seed=4)
    assert torch.equal(c.ids, c2.ids) and torch.equal(new.y, again.y)
    assert int((new.y != ds.y).sum()) == 7 and bool((c.planted != c.true).all())
    assert set(c.ids.tolist()) <= set(range(100, 150))
    rates = A.canary_rates(torch.nn.functional.one_hot(c.planted, 5).float(), c)
    assert rates == {"planted": 1.0, "true": 0.0, "n": 7}
    with pytest.raises(ValueError, match="k must be in 1..50"):
        A.plant_canaries(ds, 0, num_classes=5)


def test_difference_attack_finds_the_forgotten_candidates_of_a_subtraction():
    gen = torch.Generator().manual_seed(5)
    P, M = 400, 60
    grads = torch.randn(M, P, generator=gen, dtype=torch.float64)
    forgotten = torch.arange(10)
    theta = torch.randn(P, generator=gen, dtype=torch.float64)
    # subtracting the forgotten samples' deltas (each -lr * grad) moves theta along their gradients
    after = theta + 0.1 * grads[forgotten].sum(0) + 0.01 * torch.randn(P, generator=gen, dtype=torch.float64)
    hit = A.difference_attack(theta, after, grads[forgotten], grads[10:])
    assert hit.auc > 0.99
    unrelated = theta + 0.3 * torch.randn(P, generator=gen, dtype=torch.float64)
    miss = A.difference_attack(theta, unrelated, grads[forgotten], grads[10:])
    assert 0.2 < miss.auc < 0.8


def test_class_conditional_attack_needs_the_same_classes_on_both_sides():
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4, 3))
    a = amnesiac.ArrayDataset(torch.randn(6, 1, 2, 2), torch.tensor([1] * 6), torch.arange(6))
    b = amnesiac.ArrayDataset(torch.randn(6, 1, 2, 2), torch.tensor([2] * 6), torch.arange(6))
    with pytest.raises(ValueError, match="same classes"):
        A.class_conditional_loss_attack(model, a, b)
    r = A.class_conditional_loss_attack(model, a, a)
    assert r.auc == 0.5 and r.n_members == 6
    d = r.to_dict(with_curve=True)
    assert d["curve"]["fpr"][0] == 0.0 and len(d["curve"]["tpr"]) == len(d["curve"]["fpr"])
