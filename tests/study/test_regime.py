"""The linear-regime study: the finite-difference derivative, eps*, the convex control, the LDS and the runner."""

import dataclasses
import math

import numpy as np
import pytest
import torch
from amnesiac_paper import regime as rg
from amnesiac_paper import store
from amnesiac_paper.setting import recovered_fraction
from helpers import write_fake_mnist

from amnesiac.data import ArrayDataset


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    """The smoke study on stand-in MNIST (random pixels, labels i % 10): 300 training and 100 held-out images."""
    write_fake_mnist(tmp_path / "data", n_train=400, n_test=120)
    monkeypatch.setenv("AMNESIAC_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(store, "RESULTS_ROOT", tmp_path / "results")
    study = rg.get_regime_study("smoke")
    pool, held = rg.study_data(study)
    return study, pool, held, tmp_path / "weights"


def test_the_geometry_gives_the_recovered_fraction_by_the_law_of_cosines():
    gen = torch.Generator().manual_seed(0)
    theta_t, ref = torch.randn(50, generator=gen, dtype=torch.float64), torch.randn(50, generator=gen,
                                                                                      dtype=torch.float64)
    delta = torch.randn(50, generator=gen, dtype=torch.float64)
    geo = rg.geometry(delta, theta_t - ref)
    for alpha in (0.3, 1.0, 2.0):
        assert rg.recovered_from_geometry(geo["r"], geo["c"], alpha) == pytest.approx(
            recovered_fraction(theta_t - alpha * delta, ref, theta_t), abs=1e-12)
    assert rg.recovered_from_geometry(1.0, 1.0) == pytest.approx(1.0)
    best = max(rg.recovered_from_geometry(0.5, 0.3, a) for a in np.linspace(0, 2, 2001))
    assert best == pytest.approx(1 - math.sqrt(1 - 0.3**2), abs=1e-6)  # at alpha = c / r


def test_eps_star_is_the_largest_eps_below_which_every_finite_difference_agrees():
    rows = [{"eps": e, "agrees": a} for e, a in ((1.0, False), (0.1, True), (1e-3, False), (1e-6, True), (1e-9, True))]
    assert rg.linear_radius(rows) == 1e-6  # 1e-3 breaks the run: 0.1 does not count
    assert rg.linear_radius([{"eps": 1e-9, "agrees": False}, {"eps": 1.0, "agrees": True}]) is None
    d = torch.tensor([1.0, 0.0])
    assert rg.agreement(torch.tensor([1.0, 0.1]), d)["agrees"]
    assert not rg.agreement(torch.tensor([2.0, 0.0]), d)["agrees"]  # the right direction, twice the size
    assert not rg.agreement(torch.tensor([0.5, 1.0]), d)["agrees"]
    assert rg.divergence_step(torch.tensor([1.0, 5.0, float("inf"), 1.0]), 1.0) == 3
    assert rg.divergence_step(torch.tensor([1.0, 2e3]), 1.0) == 2
    assert rg.divergence_step(torch.tensor([1.0, 2.0]), 1.0) is None
    assert rg.spearman(np.array([1.0, 2.0, 2.0, 3.0]), np.array([4.0, 5.0, 5.0, 6.0])) == pytest.approx(1.0)


def test_forget_groups_are_disjoint_with_controls_of_the_same_size(tiny):
    study, pool, _, _ = tiny
    groups = rg.forget_groups(study, pool, seed=0)
    assert rg.forget_sets(groups) == ["random-5", "random-20", "class-3"]
    ids = torch.cat(list(groups.values()))
    assert len(torch.unique(ids)) == len(ids)
    for name in rg.forget_sets(groups):
        assert len(groups[f"control-{name}"]) == len(groups[name])
    assert bool((pool.y[groups["class-3"]] == 3).all()) and int((pool.y == 3).sum()) == len(groups["class-3"])
    assert not torch.equal(rg.forget_groups(study, pool, seed=1)["random-5"], groups["random-5"])
    with pytest.raises(ValueError, match="too small"):
        rg.forget_groups(dataclasses.replace(study, set_sizes=(100, 200)), pool, seed=0)


@pytest.fixture
def features():
    """A convex problem with a minimiser: 10 overlapping Gaussian classes in 20 fixed features (the frozen
    features of a linear probe), 1000 training and 200 held-out points, and the smoke study with sets of 5 and 10."""
    means = torch.randn(10, 20, generator=torch.Generator().manual_seed(99))

    def draw(n, seed):
        y = torch.arange(n) % 10
        x = means[y] + 1.5 * torch.randn(n, 20, generator=torch.Generator().manual_seed(seed))
        return ArrayDataset(x.double(), y, torch.arange(n), "features")

    study = dataclasses.replace(rg.get_regime_study("smoke"), set_sizes=(5, 10))
    convex = dataclasses.replace(study.regime("convex"), batch_size=32)  # the paper's recipe: lr 0.01, momentum 0.9
    return study, convex, draw(1000, 0), draw(200, 1)


def test_the_convex_control_is_in_the_linear_regime_and_first_order_removal_recovers_the_replay(features, tmp_path):
    """Where theory says first order must hold (logistic regression with a minimiser, a contracting trajectory,
    small sets), the finite differences agree with the propagated derivative up to removal itself, and
    subtracting either first-order delta recovers at least 0.9 of the distance to the zero-weighted replay. Two
    controls could refute it: the exact delta (zeroth order in the propagation) recovers much less, and a random
    group of the same size (not forgotten) recovers nothing."""
    study, convex, pool, held = features
    rec = rg.cell_piece(study, convex, 0, pool, held, tmp_path)
    for name in ("random-5", "random-10"):
        s = rec["sets"][name]
        assert s["weight_one_vs_original"] < 1e-12  # the weight-1 replay is the original run
        small = [r for r in s["fd"] if r["eps"] <= 1e-4]
        assert all(r["cos"] > 0.999 and abs(r["ratio"] - 1) < 1e-3 for r in small)  # the derivative, measured
        assert s["eps_star"] == 1.0
        for kind in ("propagated", "derivative"):
            d = s["deltas"][kind]
            assert d["set"]["recovered"] >= 0.9, (name, kind, d["set"])
            assert d["set"]["recovered"] == pytest.approx(rg.recovered_from_geometry(d["set"]["r"], d["set"]["c"]),
                                                          abs=1e-9)
            assert d["control"]["recovered"] < 0.2 and abs(d["control"]["c"]) < 0.3
            assert d["diverged_at"] is None
        assert s["deltas"]["exact"]["set"]["recovered"] < 0.5
    assert rec["sets"]["class-3"]["eps_star"] < 1.0  # a whole class is not a small perturbation, even here
    lds = rg.lds_piece(study, convex, 0, pool, held, tmp_path)
    assert lds["derivative"]["examples"] == len(held)
    assert lds["derivative"]["lds"] > 0.95 and lds["exact"]["lds"] < 0.8
    # one sample at a time, each against its own replays: the derivative points at the zero-weighted replay,
    # recovers most of the way, single by single, and brings every single closer in output space than doing nothing
    singles = rg.singles_piece(dataclasses.replace(study, singles=6), convex, 0, pool, held, tmp_path)
    assert singles["n_singles"] == 6 and len({s["id"] for s in singles["singles"]}) == 6
    for s in singles["singles"]:
        assert s["derivative"]["zero"]["recovered"] >= 0.85 and s["derivative"]["zero"]["c"] > 0.99, s
        assert s["exact"]["zero"]["recovered"] < s["derivative"]["zero"]["recovered"]  # zeroth order: less
        assert s["derivative"]["zero"]["kl"] < s["original"]["zero"]["kl"]
    summ = rg.singles_summary(rg.RegimeResult(study, tmp_path, {}, {}, singles={("convex", 0): singles}), "convex",
                              "zero")
    assert summ["n"] == 6 and summ["derivative"]["closer"] == 6 and summ["derivative"]["log_kl_ratio"][0] < 0
    assert rg.singles_summary(rg.RegimeResult(study, tmp_path, {}, {}), "convex") is None


def test_in_a_relu_network_the_derivative_holds_only_for_small_eps(tiny):
    """The default regime (ReLU, SGD with momentum): the propagated derivative is what the finite differences
    converge to (not a bug), but a ReLU network's training is only piecewise smooth in the loss weight, so the
    agreement ends long before removal."""
    study, pool, held, weights = tiny
    rec = rg.cell_piece(study, study.regime("default"), 0, pool, held, weights)
    for name, s in rec["sets"].items():
        at = {r["eps"]: r for r in s["fd"]}
        assert at[1e-6]["cos"] > 0.999 and abs(at[1e-6]["ratio"] - 1) < 1e-2, (name, at[1e-6])
        assert s["eps_star"] is not None and s["eps_star"] < 1.0
        assert len(s["deltas"]["derivative"]["trace"]) > 1


@pytest.mark.slow
def test_the_study_resumes_from_its_pieces_and_loads_what_it_wrote(tiny, monkeypatch):
    study, *_ = tiny
    small = dict(regimes_=["convex"], lds_regimes=["convex"], stabilise_regimes=["convex"], singles_regimes=["convex"])
    first = rg.run_study("smoke", progress=False, **small)
    assert set(first.cells) == set(first.lds) == set(first.stable) == set(first.remedy) == set(first.singles) == {
        ("convex", 0)}
    assert first.cells[("convex", 0)]["provenance"]["semantics"] == rg.REGIME_SEMANTICS

    def refuse(*a, **k):
        raise AssertionError("a finished piece was computed again")

    monkeypatch.setattr(rg, "cell_piece", refuse)
    monkeypatch.setattr(rg, "lds_piece", refuse)
    monkeypatch.setattr(rg, "singles_piece", refuse)
    again = rg.run_study("smoke", progress=False, **small)
    assert again.cells == first.cells and again.singles == first.singles
    loaded = rg.load_study("smoke")
    assert loaded.cells[("convex", 0)]["sets"] == first.cells[("convex", 0)]["sets"]
    assert loaded.singles[("convex", 0)]["singles"] == first.singles[("convex", 0)]["singles"]
    assert rg.singles_summary(loaded, "convex")["n"] == study.singles


def test_bad_regimes_and_seeds_are_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="valid: default"):
        rg.get_regime_study("smoke", regimes_=["nope"])
    with pytest.raises(ValueError, match="non-negative"):
        rg.get_regime_study("smoke", seeds=[-1])
    with pytest.raises(ValueError, match="unknown profile"):
        rg.get_regime_study("huge")
    with pytest.raises(ValueError, match="late_epochs"):
        rg.Regime("bad", epochs=2, late_epochs=2)
    full = rg.get_regime_study("full")
    assert [r.name for r in full.regimes][:3] == ["default", "lr-x0.1", "lr-x10"] and full.eps[-1] == 1e-12
    assert full.hash == rg.get_regime_study("full", seeds=[0]).hash  # seeds and cells do not change the folder


def test_truncated_propagation_spans_the_exact_delta_and_the_derivative(tiny):
    """Propagating over the last k epochs: k = 0 is the exact delta, k = all epochs the full derivative (the
    cell's numbers, from another run of the same training); in between, what truncation buys is measured."""
    study, pool, held, weights = tiny
    reg = study.regime("default")
    cell = rg.cell_piece(study, reg, 0, pool, held, weights)
    trunc = rg.stabilised_piece(dataclasses.replace(study, truncations=(0, 1, reg.epochs)), reg, 0, pool, held,
                                weights)
    assert trunc["truncations"] == [0, 1, reg.epochs]
    for name, rows in trunc["sets"].items():
        d = cell["sets"][name]["deltas"]
        assert rows["0"]["recovered"] == pytest.approx(d["exact"]["set"]["recovered"], abs=1e-9)
        assert rows[str(reg.epochs)]["recovered"] == pytest.approx(d["derivative"]["set"]["recovered"], abs=1e-9)
        assert rows["0"]["propagated_steps"] == 0 and rows["1"]["propagated_steps"] == cell["steps"] // reg.epochs
        assert rows["1"]["recovered"] != pytest.approx(rows["0"]["recovered"], abs=1e-6)


def test_the_remedies_are_measured_and_gauss_newton_is_the_hessian_of_the_convex_control(tiny):
    """Logistic regression is linear in its parameters, so its Gauss-Newton matrix is its Hessian: that remedy
    must reproduce the derivative there; damping 0 is no damping, damping > 0 changes what is carried."""
    study, pool, held, weights = tiny
    study = dataclasses.replace(study, dampings=(0.0, 1.0))
    assert set(rg.remedies(study)) == {"gauss-newton", "damping-0", "damping-1"}
    for name in ("convex", "default"):
        reg = study.regime(name)
        cell = rg.cell_piece(study, reg, 0, pool, held, weights)
        rem = rg.stabilised_piece(study, reg, 0, pool, held, weights, variants=rg.remedies(study))
        for set_name, rows in rem["sets"].items():
            derivative = cell["sets"][set_name]["deltas"]["derivative"]["set"]
            assert rows["damping-0"]["recovered"] == pytest.approx(derivative["recovered"], abs=1e-9)
            assert rows["damping-0"]["propagated_steps"] == cell["steps"]
            assert rows["damping-1"]["norm"] != pytest.approx(derivative["norm"], rel=1e-6)
            if name == "convex":
                assert rows["gauss-newton"]["recovered"] == pytest.approx(derivative["recovered"], abs=1e-9)
            else:
                assert rows["gauss-newton"]["norm"] != pytest.approx(derivative["norm"], rel=1e-6)


def test_the_singles_findings_call_a_delta_closer_only_where_the_log_kl_interval_excludes_zero():
    from amnesiac_paper.book import regime as book_regime

    def single(i, exact_kl, derivative_kl):
        ref = {"kl": 1e-3, "distance": 1.0}

        def at(kl):
            return {"norm": 1.0, **{m: {"recovered": 0.1, "kl": kl, "c": 0.5, "r": 1.0} for m in ("zero", "drop")}}

        return {"id": i, "original": {"zero": ref, "drop": ref}, "exact": at(exact_kl), "derivative": at(derivative_kl)}

    # exact: ten times the original's KL in every single (farther); derivative: half in some, double in others
    rows = [single(i, 1e-2, 5e-4 if i % 2 else 2e-3) for i in range(20)]
    piece = {"regime": {"name": "default"}, "seed": 0, "singles_semantics": rg.SINGLES_SEMANTICS, "n_singles": 20,
             "singles": rows}
    study = rg.get_regime_study("smoke")
    res = rg.RegimeResult(study, None, {}, {}, singles={("default", 0): piece})
    text = book_regime.singles_findings(res)
    assert text.startswith("One sample at a time, 20 single samples (1 seed of the default regime")
    exact, derivative = text.split("; the derivative")
    assert "*farther* from the replay than doing nothing" in exact and "0 of 20 singles closer" in exact
    assert "inconclusive" in derivative and "10 of 20 singles closer" in derivative
    table = book_regime.singles_table(res).splitlines()
    assert len(table) == 2 + 4 and "| dropped replay | exact |" in table[4]
    stale = {("default", 0): dict(piece, singles_semantics=rg.SINGLES_SEMANTICS + 1)}
    assert "not computed yet" in book_regime.singles_findings(rg.RegimeResult(study, None, {}, {}, singles=stale))
