"""The fair comparison: every method gets the same trials budget from its own declared space, is chosen on
validation and reported on test, against the fidelity study's own original and dropped replay."""

import json
from pathlib import Path

import amnesiac_paper
import numpy as np
import pytest
import torch
from amnesiac_paper import comparison as cmp
from amnesiac_paper import fidelity as fi
from amnesiac_paper.metrics import argmin_finite
from helpers import tiny_study

import amnesiac


def test_every_method_gets_the_same_budget_of_distinct_trials_with_its_defaults_first():
    for method in cmp.METHODS:
        params = amnesiac.method_params(method)
        for key in cmp.SPACES[method]:  # the space names real parameters (lr_scale scales the method's lr)
            assert ("lr" if key == "lr_scale" else key) in params, (method, key)
        got = cmp.trials(method, 6)
        assert len(got) == 6 and len({json.dumps(t, sort_keys=True) for t in got}) == 6
        assert got[0] == cmp.defaults(method)
        assert got == cmp.trials(method, 6)  # fixed per method: every seed and optimizer tries the same
        assert cmp.trials(method, 3) == got[:3]
    assert cmp.defaults("amnesiac") == {"alpha": 1.0}
    assert cmp.defaults("ssd") == {"selection": 10.0, "dampening": 1.0}
    assert all(t["max_epochs"] <= t["epochs"] for t in cmp._configurations("scrub"))
    assert cmp._call_params({"epochs": 2, "lr_scale": 0.3}, 0.01) == {"epochs": 2, "lr": pytest.approx(0.003)}
    assert cmp.retain_passes("scrub", {"epochs": 3}) == 3.0 and cmp.retain_passes("amnesiac", {"alpha": 1}) == 0.0
    with pytest.raises(ValueError, match="budget must be between 1 and 9 for 'amnesiac'"):
        cmp.trials("amnesiac", 10)
    with pytest.raises(ValueError, match="unknown method 'retrain'"):
        cmp.trials("retrain", 2)
    with pytest.raises(ValueError, match="unknown method"):
        cmp.get_comparison_study("smoke", methods=["amnesiac", "sisa"])
    with pytest.raises(ValueError, match="'amnesiac' has 9 configurations, budget is 12"):
        cmp.get_comparison_study("full", budget=12)
    with pytest.raises(ValueError, match="valid profiles: smoke, full"):
        cmp.get_comparison_study("huge")
    with pytest.raises(ValueError, match="non-negative"):
        cmp.get_comparison_study("full", seeds=[-1])
    with pytest.raises(ValueError, match=r"unknown optimizer\(s\) \['lbfgs'\]; valid: adam, sgd, adamw"):
        cmp.get_comparison_study("full", optimizers=["lbfgs"])
    assert cmp.get_comparison_study("full", optimizers=["sgd"], seeds=[1]).optimizers == ("sgd",)


def test_a_learning_rate_reaches_the_methods_that_train():
    gen = torch.Generator().manual_seed(0)
    data = amnesiac.ArrayDataset(torch.randn(24, 1, 8, 8, generator=gen), torch.arange(24) % 3, torch.arange(24))
    rec = amnesiac.Recipe(optimizer="sgd", lr=0.05, batch_size=8, epochs=1)
    req = amnesiac.Request(forget=data.subset(data.ids[:4]), retain=data.without(data.ids[:4]), recipe=rec,
                           num_classes=3, device="cpu")
    torch.manual_seed(0)
    model = amnesiac_paper.SimpleModel(num_classes=3, width=4)
    theta = amnesiac.ParamLayout.of(model).vector(model)
    for method in ("finetune", "relabel"):
        moved = {}
        for lr in (None, 0.05, 0.5):
            new = amnesiac.unlearn(method, model, req, lr=lr)
            moved[lr] = float((amnesiac.ParamLayout.of(new).vector(new) - theta).norm())
        assert moved[None] == moved[0.05]  # None is the recipe's rate
        assert moved[0.5] > moved[0.05] > 0
        with pytest.raises(ValueError, match="lr must be a positive finite number"):
            amnesiac.unlearn(method, model, req, lr=0.0)


@pytest.fixture
def small_study(tmp_path, monkeypatch):
    small = tiny_study(monkeypatch, tmp_path, optimizer="adam")
    return small, tmp_path / "results"


@pytest.mark.slow  # the study on stand-in MNIST: minutes
def test_the_comparison_chooses_on_validation_reports_on_test_and_caches(small_study, monkeypatch):
    small, root = small_study
    res = cmp.run_study("smoke", results_root=root, progress=False)
    study = res.study
    assert (study.budget, study.sets, study.methods) == (3, ("random-10", "class-3"), cmp.METHODS)
    rec = res.records[("adam", 0)]
    assert set(rec) == {f"{s}/{m}" for s in study.sets for m in (*study.methods, "neighbour")}
    fingerprints = {r["original_fingerprint"] for r in rec.values()}
    assert len(fingerprints) == 1  # one original model for every method, set and same-seed floor
    # the same-seed floor: the dropped replay again, one more sample (outside the set) removed
    setting = cmp.st.make_setting(small, "full", 0)
    for name in study.sets:
        nb = rec[f"{name}/neighbour"]
        assert nb["neighbour_id"] in setting.pool.ids.tolist()
        assert nb["neighbour_id"] not in setting.sets[name].ids.tolist()
        assert nb["reference"] == rec[f"{name}/amnesiac"]["reference"]  # measured against the same replay
        assert nb["test"]["drop"]["kl"] > 0 and nb["test"]["drop"]["dist"] > 0  # one sample moves the model
        floor = cmp.same_seed_floor(res, "adam", name)
        assert floor["seeds"] == [0] and floor["same_original"] and floor["kl"][0] == nb["test"]["drop"]["kl"]
    for r in (v for k, v in rec.items() if not k.endswith("/neighbour")):
        assert [t["params"] for t in r["trials"]] == cmp.trials(r["method"], 3)
        assert r["chosen"] == int(np.argmin([t["val"]["kl"] for t in r["trials"]]))
        assert r["oracle"] == int(np.argmin([t["test"]["drop"]["kl"] for t in r["trials"]]))
        assert r["original"]["drop"]["recovered"] == 0.0 and r["reference"]["drop"]["recovered"] == 1.0
        assert r["reference"]["drop"]["kl"] == 0.0
    # the ledger's trials are the fidelity study's own subtraction of the same delta from the same model
    fid = fi.run_combo(small, "full", "adam", 0, results_root=root, progress=False)
    assert fid["set-random-10"]["original_fingerprint"] in fingerprints
    ours = next(t for t in rec["random-10/amnesiac"]["trials"] if t["params"]["alpha"] == 1.0)["test"]
    theirs = fi.row_at(fid["set-random-10"], "amnesiac", 1.0)
    assert ours["drop"] == theirs["drop"] and ours["acc_forget"] == theirs["acc_forget"]
    # the methods that train changed the model; SSD's defaults dampen some parameter
    for method in ("finetune", "neggrad_plus", "scrub", "ssd"):
        assert rec[f"class-3/{method}"]["trials"][0]["test"]["drop"]["recovered"] != 0.0, method
    rows = cmp.summary_rows(res, "adam", "class-3")
    assert [r["method"] for r in rows] == list(cmp.METHODS) and rows[0]["seeds"] == [0]
    assert rows[0]["chosen_recovered"][2] == 1 and "chosen_acc_test_class" in rows[0]
    assert all(r["oracle_kl"][0] <= r["chosen_kl"][0] for r in rows)  # the oracle is the best on test by definition
    # doing nothing: the original model's test KL to the replay, the same in every method's row
    assert rows[0]["original_kl"][0] == rec["class-3/amnesiac"]["original"]["drop"]["kl"] > 0
    assert all(r["original_kl"][0] == rows[0]["original_kl"][0] for r in rows)
    # cached: a second run and a load compute nothing and read the same
    real_floor = cmp._neighbour_floor
    monkeypatch.setattr(cmp, "_evaluate_method", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    monkeypatch.setattr(cmp, "_neighbour_floor", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = cmp.run_study("smoke", results_root=root, progress=False)
    assert again.records == res.records == cmp.load_study("smoke", results_root=root).records
    assert cmp.load_study("smoke", results_root=root).stale == []
    # a new space for one method: its pieces are stale (never shown) and only they recompute
    monkeypatch.setitem(cmp.SPACES, "relabel", {"epochs": (1, 2), "lr_scale": (0.1, 1.0)})
    assert cmp.get_comparison_study("smoke").hash == study.hash  # the folder stays
    loaded = cmp.load_study("smoke", results_root=root)
    assert sorted(loaded.stale) == ["adam/seed0/class-3/relabel", "adam/seed0/random-10/relabel"]
    assert "random-10/relabel" not in loaded.records[("adam", 0)] and cmp.complete_seeds(loaded, "adam") == []
    done = []
    monkeypatch.setattr(cmp, "_evaluate_method", lambda c, state, ctx, method, budget: done.append(method) or {
        **res.records[("adam", 0)][f"{ctx.fset.name}/{method}"], "method_semantics": 1,
        "trials": [{"params": p} for p in cmp.trials(method, budget)]})
    cmp.run_study("smoke", results_root=root, progress=False)
    assert done == ["relabel", "relabel"]
    assert cmp.load_study("smoke", results_root=root).stale == []
    # new code of a method (its semantics bumped) makes its pieces stale too
    monkeypatch.setitem(cmp.METHOD_SEMANTICS, "ssd", 2)
    assert sorted(cmp.load_study("smoke", results_root=root).stale) == ["adam/seed0/class-3/ssd",
                                                                          "adam/seed0/random-10/ssd"]
    # --floors-only: the same-seed floors alone, no method; the folder's config still names every method
    monkeypatch.setattr(cmp, "_evaluate_method", lambda *a, **k: (_ for _ in ()).throw(AssertionError("a method")))
    monkeypatch.setattr(cmp, "_neighbour_floor", real_floor)
    for path in res.folder.glob("adam/seed0/*/neighbour.json"):
        path.unlink()
    floors = cmp.run_study("smoke", results_root=root, progress=False, floors_only=True).records[("adam", 0)]
    assert floors == {f"{s}/neighbour": rec[f"{s}/neighbour"] | {k: floors[f"{s}/neighbour"][k] for k in (
        "wall_seconds", "provenance")} for s in study.sets}  # the same floor again (the weights are cached)
    assert json.loads((res.folder / "config.json").read_text())["config"]["methods"] == list(cmp.METHODS)


def test_committed_comparison_results_match_the_study_and_one_original_per_combo():
    root = Path(__file__).resolve().parents[2] / "results" / cmp.STUDY_NAME
    for folder in sorted(p for p in root.glob("full-*") if p.is_dir()):
        assert folder.name == f"full-{cmp.get_comparison_study('full').hash}", f"{folder}: stale study definition"
        for combo in sorted(p for p in folder.glob("*/seed*") if p.is_dir()):
            pieces = [json.loads(p.read_text()) for p in combo.glob("*/*.json") if p.name != "neighbour.json"]
            assert pieces and len({p["original_fingerprint"] for p in pieces}) == 1, combo
            # the same-seed floors: current, from a clean commit, and from the methods' original bit for bit, or
            # trained on another kind of CPU (whose rounding gives another original; the chapter says so)
            for path in combo.glob("*/neighbour.json"):
                nb = json.loads(path.read_text())
                assert cmp.neighbour_is_current(nb) and not nb["provenance"]["git"].endswith("+dirty"), path
                assert "original_fingerprint" in nb and "cpu" in nb["provenance"], path
                if nb["original_fingerprint"] != pieces[0]["original_fingerprint"]:
                    assert nb["provenance"]["cpu"] != pieces[0]["provenance"].get("cpu"), path
            budget = cmp.get_comparison_study("full").budget
            stale = [f"{p['set']}/{p['method']}" for p in pieces if not cmp.piece_is_current(p, budget)]
            assert not stale, f"{combo}: {stale} were computed under another space or code; recompute them"
            assert not any(p["provenance"]["git"].endswith("+dirty") for p in pieces), combo
            # the original is the fidelity study's own where both were trained on one kind of CPU: checked, with
            # the propagation study's, by test_committed_results (every fidelity piece's original recorded or
            # attested, amnesiac_paper.originals)


def test_a_diverged_trial_ranks_last_and_a_method_whose_trials_all_diverged_says_so():
    nan, inf = float("nan"), float("inf")
    assert argmin_finite([nan, 0.3, inf, 0.1, nan]) == 3
    assert argmin_finite([nan, nan]) == 0  # every trial diverged: the defaults stand

    def trial(val, test):
        return {"params": {}, "seconds": 1.0, "retain_passes": 1.0, "val": {"kl": val},
                "test": {"drop": {"recovered": 0.0, "kl": test, "agreement": 0.5}, "acc_forget": 0.1, "acc_test": 0.9}}

    # the stored index (from before the fix) pointed at the NaN trial; the trials decide
    record = {"trials": [trial(0.5, 0.4), trial(nan, nan), trial(0.2, 0.6)], "chosen": 1, "oracle": 1}
    assert cmp.chosen_index(record) == 2 and cmp.chosen_index(record, "oracle") == 0
    assert cmp.trial_summary(record)["kl"] == 0.6 and not cmp.diverged(record)
    assert cmp.diverged({"trials": [trial(nan, nan), trial(inf, nan)]})
