"""The cost–exactness frontier: the late-data loader, the rule without the answer, U-LiRA, and the runner."""

import numpy as np
import pytest
import torch
from amnesiac_paper import frontier as fr
from amnesiac_paper import judging, store
from helpers import write_fake_mnist

from amnesiac.data import ArrayDataset


@pytest.fixture
def smoke(monkeypatch, tmp_path):
    write_fake_mnist(tmp_path / "data", n_train=300, n_test=150)
    monkeypatch.setenv("AMNESIAC_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(store, "RESULTS_ROOT", tmp_path / "results")
    return fr.get_frontier_study("smoke")


def test_the_late_loader_holds_the_late_ids_back_until_the_last_epoch():
    ds = ArrayDataset(torch.randn(40, 3), torch.arange(40) % 2, torch.arange(40))
    late = torch.tensor([3, 17, 31])
    loader = fr.LateLoader(ds.loader(8, seed=0), late, epochs=3)
    seen = []
    for _ in range(3):
        ids = torch.cat([b[2] for b in loader])
        seen.append(set(ids.tolist()))
        assert len(list(ds.loader(8, seed=0))) == len(loader) == 5  # the same batch count every epoch
    assert seen[0] == seen[1] == set(range(40)) - {3, 17, 31}
    assert seen[2] == set(range(40))


def test_ulira_is_at_chance_for_one_distribution_and_sees_a_shift():
    gen = np.random.default_rng(0)
    same = ulira_of(gen.normal(size=(60, 40)), gen.normal(size=(60, 40)))
    assert abs(same["auc"] - 0.5) < 0.05 and same["low"] < 0.5 < same["high"]
    shifted = ulira_of(gen.normal(size=(60, 40)) + 2.0, gen.normal(size=(60, 40)))
    assert shifted["auc"] > 0.9 and shifted["low"] > 0.85


def ulira_of(a, b):
    return judging.ulira(a, b, bootstrap=200)


def test_the_auc_counts_ties_half():
    assert judging._auc(np.array([1.0, 1.0]), np.array([1.0, 1.0])) == 0.5
    assert judging._auc(np.array([2.0, 3.0]), np.array([0.0, 1.0])) == 1.0


def test_the_rule_keeps_accuracy_and_never_picks_a_broken_model():
    rows = [{"loss_forget": 0.3, "loss_heldout": 0.3, "acc_val_other": 0.2},  # parity, but the model is broken
            {"loss_forget": 0.1, "loss_heldout": 0.3, "acc_val_other": 0.95}]
    assert judging.rule_choice(rows, 0.95) == 1
    assert judging.rule_choice(rows[:1], 0.95) is None


def test_every_method_has_its_configurations():
    assert fr.configs("original") == [{}]
    assert len(fr.configs("ledger-exact")) == 4 and {"alpha": 1.0} in fr.configs("ledger-exact")
    assert fr.applies("suppression", "class-3") and not fr.applies("suppression", "random-100")


def test_the_smoke_study_runs_resumes_and_measures(smoke, monkeypatch):
    methods = ("original", "rewind", "sisa-5", "ledger-exact", "suppression", "certified")
    result = fr.run_study("smoke", methods=methods, progress=False)
    p = result.pieces
    for s in smoke.sets:
        assert p[f"{s}/rewind"]["answer"]["gap_test"]["mean_rms"] == 0.0  # rewind is the dropped replay itself
        assert p[f"{s}/original"]["answer"]["gap_forget"]["mean_rms"] > 0.0
        assert set(p[f"{s}/original"]["answer"]["klom"]) == set(fr.SPLITS)
        assert len(p[f"{s}/ledger-exact"]["grid"]) == 4 and len(p[f"{s}/certified"]["grid"]) == 6
        assert p[f"{s}/sisa-5"]["rule"] == {"index": 0, "config": {}, "same_as_answer": True}  # nothing to choose
        assert p[f"oracles-{s}"]["n_oracles"] == smoke.n_oracles
    assert "random-10/suppression" not in p and "class-3/suppression" in p
    for s, late in p["late-seed0"]["sets"].items():
        assert late["identical"], s  # the late-data rewind is the retrain without the set, bit for bit
        assert late["fraction"] <= 1 / smoke.recipe.epochs + 1e-9
        assert late["random_order"]["identical"] and late["random_order"]["fraction"] > late["fraction"]
    assert set(p["timing"]["overhead"]) == {"exact-log", "derivative-log", "rewind", "sisa-5", "sisa-10"}
    cost = fr.amortised(result, "class-3", "ledger-exact")
    assert cost["per_request"] == pytest.approx(cost["request"] + cost["training_overhead"] / smoke.requests)
    # resumable: a second run computes nothing (no piece is rewritten)
    stamps = {k: (result.folder / f"{k}.json").stat().st_mtime_ns for k in p}
    again = fr.run_study("smoke", methods=methods, progress=False)
    assert {k: (result.folder / f"{k}.json").stat().st_mtime_ns for k in again.pieces} == stamps
    assert set(fr.load_study("smoke").pieces) == set(p)


def test_the_command_refuses_what_does_not_apply(smoke):
    from amnesiac_paper.__main__ import main

    assert main(["frontier", "--profile", "smoke", "--seeds", "1"]) == 2
    assert main(["frontier", "--profile", "smoke", "--methods", "nope"]) == 2


def test_the_paired_klom_bootstrap_sees_a_shift_and_says_when_it_cannot_tell():
    gen = np.random.default_rng(0)
    oracle = gen.normal(size=(60, 40))
    same = gen.normal(size=(60, 40))
    shifted = gen.normal(size=(60, 40)) + 1.5
    boots = {k: judging.klom_bootstrap(v, oracle, draws=100, bins=10) for k, v in
             (("same", same), ("shifted", shifted), ("floor", gen.normal(size=(60, 40))))}
    assert all(b.shape == (100,) for b in boots.values())
    # the same draws for the same sizes: a method against itself differs by exactly zero
    assert np.array_equal(boots["same"], judging.klom_bootstrap(same, oracle, draws=100, bins=10))
    p95 = {k: np.percentile(judging.klom(v, oracle, bins=10), 95) for k, v in (("same", same), ("shifted", shifted))}
    d = judging.paired_difference(p95["shifted"], p95["same"], boots["shifted"], boots["same"])
    assert d["diff"] > 0 and d["excludes_zero"] and d["low"] > 0
    null = judging.paired_difference(0.0, 0.0, boots["same"], boots["floor"])  # two draws of one distribution
    assert not null["excludes_zero"] and null["low"] < 0 < null["high"]
    with pytest.raises(ValueError, match="same draws"):
        judging.paired_difference(1.0, 2.0, [1.0, 2.0], [1.0])
