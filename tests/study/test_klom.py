"""KLOM's estimator on distributions whose KL divergence is known."""

import math

import numpy as np
import pytest
from amnesiac_paper.klom import binned_kl, klom, klom_percentile, oracle_floor


def test_binned_kl_approaches_the_known_kl_of_two_gaussians():
    rng = np.random.default_rng(0)
    for shift, sigma in ((1.0, 1.0), (0.5, 1.0), (2.0, 1.5)):
        p = rng.normal(0.0, sigma, 200_000)
        q = rng.normal(shift, sigma, 200_000)
        true = shift**2 / (2 * sigma**2)  # KL(N(0, s^2) || N(m, s^2))
        est = binned_kl(p, q, bins=60)
        assert est == pytest.approx(true, rel=0.08), (shift, sigma, est, true)
    # with the benchmark's 20 bins the estimate is coarser but ordered: a larger shift, a larger KL
    small, large = (binned_kl(rng.normal(0, 1, 5000), rng.normal(m, 1, 5000)) for m in (0.5, 1.5))
    assert small < large


def test_binned_kl_of_one_distribution_is_near_zero_and_disjoint_supports_are_bounded():
    rng = np.random.default_rng(1)
    assert binned_kl(rng.normal(0, 1, 100_000), rng.normal(0, 1, 100_000)) < 1e-3
    assert binned_kl([0.0, 0.1], [5.0, 5.1], bins=2, eps=1e-5) == pytest.approx(math.log(1e5))
    assert binned_kl([3.0, 3.0], [3.0]) == 0.0
    with pytest.raises(ValueError, match="samples on both sides"):
        binned_kl([], [1.0])


def test_klom_is_per_example_and_the_oracle_floor_sits_below_a_real_difference():
    rng = np.random.default_rng(2)
    n, examples = 200, 50
    oracle = rng.normal(0.0, 1.0, (n, examples))
    same = rng.normal(0.0, 1.0, (n, examples))
    shifted = rng.normal(np.linspace(0, 3, examples), 1.0, (n, examples))  # example i shifted by 3 i / 49
    per = klom(shifted, oracle)
    assert per.shape == (examples,)
    assert np.corrcoef(per, np.linspace(0, 3, examples))[0, 1] > 0.9  # it follows the per-example shift
    floor = oracle_floor(oracle)
    assert floor < klom_percentile(shifted, oracle)
    assert klom_percentile(same, oracle) < klom_percentile(shifted, oracle)
    with pytest.raises(ValueError, match="same examples"):
        klom(shifted[:, :3], oracle)
    with pytest.raises(ValueError, match="at least 4"):
        oracle_floor(oracle[:3])


def test_klom_for_all_examples_at_once_is_binned_kl_of_each_example():
    rng = np.random.default_rng(3)
    u = rng.normal(0.0, 1.0, (37, 25)) * rng.uniform(0.1, 5, 25) + rng.normal(0, 3, 25)
    o = rng.normal(0.5, 1.2, (50, 25))
    u[:, 3] = o[:, 3] = 2.0  # one value on both sides
    u[:, 4] = 1000.0  # clipped
    u[:5, 7], o[:5, 7] = u[:5, 7].max() + 1, u[:, 7].min() - 1  # values on the outer edges
    u[:, 8], o[:, 8] = np.arange(37) % 3, np.arange(50) % 2 * 2  # values exactly on an interior edge (bins 2)
    for bins in (1, 2, 20, 60):
        got = klom(u, o, bins=bins)
        want = np.array([binned_kl(u[:, i], o[:, i], bins=bins) for i in range(u.shape[1])])
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="models on both sides"):
        klom(u[:0], o)
