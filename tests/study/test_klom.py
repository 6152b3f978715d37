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
