"""Metrics and attacks: membership inference sanity, validation, inversion, distances."""

import numpy as np
import pytest
import torch
from amnesiac_paper import metrics as M
from helpers import tiny_dataset, tiny_model


def test_mia_on_identical_distributions_is_chance():
    rng = np.random.default_rng(0)
    r = M.loss_mia(rng.exponential(size=2000), rng.exponential(size=2000), seed=0)
    assert abs(r.mean - 0.5) < 0.05
    assert r.n == 2000 and r.std >= 0


def test_mia_on_separated_distributions_is_near_perfect():
    rng = np.random.default_rng(1)
    r = M.loss_mia(rng.normal(0.0, 0.1, 300), rng.normal(2.0, 0.1, 3000), seed=0)
    assert r.mean > 0.95
    assert r.n == 300  # balanced by subsampling the larger side


def test_entropy_mia_fraction():
    rng = np.random.default_rng(2)
    retain, test = rng.normal(0.1, 0.05, 1000), rng.normal(1.0, 0.05, 1000)
    assert M.entropy_mia(retain, test, rng.normal(0.1, 0.05, 100)) > 0.95
    assert M.entropy_mia(retain, test, rng.normal(1.0, 0.05, 100)) < 0.05


@pytest.mark.parametrize("bad,match", [([], "empty"), ([1.0, float("nan")], "non-finite"),
                                       ([1.0, float("inf")], "non-finite")])
def test_mia_rejects_bad_scores(bad, match):
    with pytest.raises(ValueError, match=match):
        M.loss_mia(bad, [1.0, 2.0, 3.0])


def test_inversion_returns_a_finite_image_in_range():
    model = tiny_model(dtype=torch.float32)
    img = M.invert(model, 2, (1, 8, 8), steps=20)
    assert img.shape == (1, 8, 8) and torch.isfinite(img).all()
    assert img.abs().max() <= 1 and img.abs().sum() > 0
    assert model.training  # mode restored


def test_distances_and_losses():
    ds = tiny_dataset()
    ds = type(ds)(ds.x.float(), ds.y, ds.ids)
    a, b = tiny_model(0, dtype=torch.float32), tiny_model(1, dtype=torch.float32)
    assert M.param_distance(a, a) == 0 and M.param_distance(a, b) > 0
    same, diff = M.output_divergence(a, a, ds), M.output_divergence(a, b, ds)
    assert same["js"] == pytest.approx(0, abs=1e-12) and same["agreement"] == 1
    assert 0 < diff["js"] <= np.log(2)
    losses = M.per_sample_losses(a, ds)
    assert losses.shape == (40,) and (losses > 0).all()
    assert (M.entropies(a, ds) <= np.log(4) + 1e-9).all()


def test_memory_formulas():
    # the seed's ResNet-18 numbers: 3,128 per-batch vectors of 11.2M parameters ~ 140 GB
    assert M.per_batch_formula_bytes(11_200_000, 50_000, 4, 64) == 11_200_000 * 4 * 782 * 4
    assert M.per_sample_formula_bytes(11_200_000, 500, 0.1) == int(11_200_000 * 500 * 0.1 * 4)


def test_the_per_step_store_saturates_and_the_crossover_is_where_the_ledger_overtakes_it():
    from amnesiac_paper.metrics import memory_crossover, per_step_store_vectors

    counts = [per_step_store_vectors(6_000, n, 3, 50) for n in (0, 1, 10, 100, 1_000, 6_000)]
    assert counts[0] == 0 and counts == sorted(counts)
    assert counts[1] == pytest.approx(3.0) and counts[-1] == pytest.approx(3 * 120)  # one step per epoch; all steps
    cross = memory_crossover(6_000, 3, 50)
    assert cross > per_step_store_vectors(6_000, cross, 3, 50) >= cross - 1
    assert memory_crossover(6_000, 3, 50, p=0.1) > cross  # masks shrink the ledger, the crossover moves out
    assert memory_crossover(6_000, 100, 50, p=0.01) == 6_001  # never: the store keeps every step
    with pytest.raises(ValueError, match="must lie in"):
        per_step_store_vectors(10, 11, 1, 2)
