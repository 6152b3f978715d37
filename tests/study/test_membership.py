"""The membership study runs end to end on fake MNIST (every piece cached and resumable)."""

import pytest
from amnesiac_paper import membership as mb
from helpers import tiny_study


@pytest.mark.slow  # the study on stand-in MNIST
def test_membership_study_runs_caches_and_checks_its_fast_path(tmp_path, monkeypatch):
    tiny_study(monkeypatch, tmp_path, graves_optimizer="adam")
    root = tmp_path / "results"
    res = mb.run_study("smoke", results_root=root, progress=False)
    p = res.pieces
    assert {"class-seed0", "canary-seed0", "shadow0", "shadow3", "lira"} <= set(p)
    cls = p["class-seed0"]
    assert cls["n_members"] == 5 and [r["alpha"] for r in cls["amnesiac"]] == [0.3, 1.0]
    assert 0 <= cls["original"]["auc"] <= 1 and "curve" in cls["retrain"]
    can = p["canary-seed0"]
    assert can["n_canaries"] == 10 and 0 <= can["original"]["planted"] <= 1
    assert set(can["difference"]) == {"alpha=1", "rule", "rule + repair", "batched (alpha=1)"}
    assert can["difference"]["alpha=1"]["auc"] > 0.5  # subtracting the canaries' delta aligns with their gradients
    lira = p["lira"]
    assert {"original", "alpha=0.3", "alpha=1"} <= set(lira)
    assert lira["check_max_abs_diff"] < 1e-4  # the fast subtraction is what unlearn() gives
    assert len(p["shadow0"]["forgot"]["1.0"]) == len(p["shadow0"]["inside"])
    # U-LiRA for every method, each shadow forgetting all its candidates at once
    methods = p["lira-methods"]
    assert methods["shadow_gap"] < 1e-6  # the same shadow models, trained twice
    assert set(methods["methods"]) == set(mb.SET_METHODS) and all(
        0 <= m["auc"] <= 1 and m["seconds"] >= 0 for m in methods["methods"].values())
    assert p["methods0"]["forgot"]["SSD"] and len(p["methods0"]["forgot"]["SCRUB"]) == len(p["methods0"]["inside"])
    from amnesiac_paper.book import attacks

    table = attacks.lira_methods_table(res)
    assert table.count("\n") == len(mb.SET_METHODS) + 1 and "| SCRUB |" in table
    assert "U-LiRA, every method" in attacks.membership_findings(res)
    assert "samples at once" in attacks.ulira_methods_sentence(res)
    assert "not computed" in attacks.ulira_methods_sentence(None)
    # cached: nothing is recomputed
    monkeypatch.setattr(mb, "shadow_piece", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = mb.run_study("smoke", results_root=root, progress=False)
    assert again.pieces["lira"] == lira
    assert mb.load_study("smoke", results_root=root).pieces.keys() == again.pieces.keys()
    with pytest.raises(ValueError, match="valid: class, canary, lira, methods"):
        mb.run_study("smoke", results_root=root, parts=["nope"])


def test_committed_membership_results_match_the_study_and_a_clean_revision():
    import json
    from pathlib import Path

    root = Path(__file__).resolve().parents[2] / "results" / mb.STUDY_NAME
    for folder in sorted(p for p in root.glob("full-*") if p.is_dir()):
        study = mb.get_membership_study("full")
        assert folder.name == f"full-{study.hash}", f"{folder} was computed for another study definition: rerun"
        pieces = [json.loads(p.read_text()) for p in folder.glob("*.json") if p.stem != "config"]
        assert pieces and all(not p["provenance"]["git"].endswith("+dirty") for p in pieces)
        names = {p.stem for p in folder.glob("*.json")}
        assert {f"shadow{j}" for j in range(study.shadows)} | {"lira"} <= names


def test_the_findings_are_the_means_of_each_seeds_values_at_alpha_1_and_at_the_rules_alpha():
    import re

    from amnesiac_paper.book import attacks

    res = mb.load_study("full")
    cls = [v for k, v in sorted(res.pieces.items()) if k.startswith("class-seed")]
    if not cls:
        pytest.skip("no committed full-profile class pieces")
    text = attacks.membership_findings(res)

    def mean(values):
        return sum(values) / len(values)

    def at_rule(r):  # the original model where the rule (recomputed from the piece's losses) keeps it
        alpha = mb.piece_rule(r)["alpha"]
        return r["original"]["auc"] if alpha == 0 else r["amnesiac"][r["alphas"].index(alpha)]["attack"]["auc"]

    one = mean([r["amnesiac"][r["alphas"].index(1.0)]["attack"]["auc"] for r in cls])
    rule = mean([at_rule(r) for r in cls])
    got = re.search(r"subtraction at α = 1 ([0-9.]+) .*?at the rule's α ([0-9.]+)", text.splitlines()[0])
    assert got and float(got[1]) == pytest.approx(one, abs=6e-4) and float(got[2]) == pytest.approx(rule, abs=6e-4)


def test_method_pieces_from_other_settings_or_other_models_are_refused():
    shadows = [{"confidence": [0.5, 1.0, -0.2], "inside": [10, 30]}, {"confidence": [0.1, 0.7, 0.3], "inside": [20]},
               {"confidence": [0.4, 0.9, 0.1], "inside": [10, 20]}, {"confidence": [0.2, 0.3, 0.8], "inside": [30]}]
    good = [{"shadow": k, "config": mb.set_methods_config(), "confidence": s["confidence"], "inside": s["inside"],
             "forgot": {n: [0.0] * len(s["inside"]) for n in mb.SET_METHODS},
             "method_seconds": dict.fromkeys(mb.SET_METHODS, 0.1)} for k, s in enumerate(shadows)]
    out = mb.lira_methods_summary(shadows, good, [10, 20, 30])
    assert out["shadow_gap"] == 0.0 and set(out["methods"]) == set(mb.SET_METHODS)
    import json

    as_stored = [json.loads(json.dumps(p)) for p in good]  # read back from disk: tuples are lists
    assert mb.lira_methods_summary(shadows, as_stored, [10, 20, 30])["methods"] == out["methods"]
    other = [dict(good[0], config={**mb.set_methods_config(), "semantics": -1}), *good[1:]]
    with pytest.raises(ValueError, match="computed with other settings"):
        mb.lira_methods_summary(shadows, other, [10, 20, 30])
    moved = [dict(good[0], confidence=[0.5, 1.2, -0.2]), *good[1:]]
    with pytest.raises(ValueError, match="trained on another machine"):
        mb.lira_methods_summary(shadows, moved, [10, 20, 30])


def _attack(auc: float) -> dict:
    return {"auc": auc, "tpr": {"0.01": auc / 10, "0.001": auc / 100}, "heldout_accuracy": auc}


def _class_piece(forget, held, stored_rule=None) -> dict:
    """A minimal class piece on the grid (0.1, 1): the original's AUC 0.9, the rows' 0.7 and 0.5."""
    alphas = [0.1, 1.0]
    rows = [{"alpha": a, "attack": _attack(auc), "loss_forget": f, "loss_val_matched": v, "acc_test": 0.9}
            for a, auc, f, v in zip(alphas, (0.7, 0.5), forget, held)]
    return {"alphas": alphas, "amnesiac": rows, "original": _attack(0.9), "retrain": _attack(0.55),
            "zero_replay": _attack(0.56), "finetune": _attack(0.8),
            "rule": stored_rule or {"alpha": 1.0, "reached": False}}


def test_the_rule_is_recomputed_from_a_piece_and_reads_the_original_where_it_keeps_it():
    from types import SimpleNamespace

    from amnesiac_paper.book import attacks

    never = _class_piece([0.1, 0.2], [0.5, 0.6])  # stored as the earlier rule did: the largest alpha
    at_one = _class_piece([0.1, 0.7], [0.5, 0.6], {"alpha": 1.0, "reached": True})
    assert mb.piece_rule(never) == {"alpha": 0.0, "reached": False}
    assert mb.piece_rule(at_one) == {"alpha": 1.0, "reached": True}
    assert mb.subtraction_at(never, 0.0) == {"alpha": 0.0, "attack": never["original"]}
    assert mb.subtraction_at(never, 1.0)["attack"]["auc"] == 0.5
    with pytest.raises(KeyError, match="not on the grid"):
        mb.subtraction_at(never, 0.3)
    result = SimpleNamespace(pieces={"class-seed0": never, "class-seed1": at_one}, study=None)
    first = attacks.membership_findings(result).splitlines()[0]
    assert "at the rule's α 0.7 ± " in first and "never reached in 1 of 2 seeds" in first  # (0.9 + 0.5) / 2
    table = attacks.class_attack_table(result)
    assert "original model (the rule's choice in 1 of 2 seeds: parity never reached, no change)" in table
    assert "subtract, α = 1 (the rule's choice in 1 of 2 seeds)" in table and "α = 0.1 (" not in table
    assert attacks.rule_fallback_sentence(result, "class").startswith("The rule reached parity in 1 of 2 seeds")
    # a canary piece: rates and the original's test accuracy at alpha = 0
    canary = {"n_canaries": 2, "alphas": [0.1], "original": {"planted": 0.8, "true": 0.1},
              "test_accuracy": {"original": 0.97, "retrain": 0.97},
              "amnesiac": [{"alpha": 0.1, "rates": {"planted": 0.2, "true": 0.7}, "loss_forget": 0.1,
                            "loss_heldout": 0.2, "acc_test": 0.96}], "rule": {"alpha": 0.1, "reached": False}}
    assert mb.piece_rule(canary) == {"alpha": 0.0, "reached": False}
    assert mb.subtraction_at(canary, 0.0) == {"alpha": 0.0, "rates": canary["original"], "acc_test": 0.97}
    # its difference attack was computed at the stored alpha, which the current rule contradicts: refused
    with pytest.raises(ValueError, match="recompute|remove the piece"):
        mb.difference_rule_alpha(canary)
    assert mb.difference_rule_alpha(dict(canary, rule={"alpha": 0.0, "reached": False})) == 0.0


def test_the_fast_auc_and_tpr_are_the_roc_curves_own_including_ties():
    import numpy as np
    from amnesiac_paper import attacks as A

    rng = np.random.default_rng(3)
    for n_pos, n_neg in ((50, 2000), (1500, 1500), (7, 9)):
        pos = np.round(rng.normal(0.7, 1.0, n_pos), 1)  # rounded: many ties within and across the two sides
        neg = np.round(rng.normal(0.0, 1.0, n_neg), 1)
        fprs = (0.001, 0.01, 0.1, 0.5, 1.0)
        auc, tpr = A.auc_and_tprs(pos, neg, fprs)
        curve = A.roc(pos, neg)
        assert auc == pytest.approx(curve.auc, abs=1e-12)
        assert tpr == {f: pytest.approx(curve.tpr_at(f), abs=1e-12) for f in fprs}


def test_the_attack_bootstrap_covers_a_known_auc_and_refuses_what_it_cannot_score():
    import numpy as np
    from amnesiac_paper import attacks as A
    from scipy.stats import norm

    rng = np.random.default_rng(0)
    member = rng.random((12, 300)) < 0.5
    scores = rng.normal(size=member.shape) + member  # members shifted by 1: AUC = Phi(1 / sqrt(2))
    ci = A.bootstrap_attack(scores, member, draws=300)
    assert ci["auc"][0] < norm.cdf(1 / np.sqrt(2)) < ci["auc"][1] and ci["auc"][1] - ci["auc"][0] < 0.08
    assert set(ci["tpr"]) == {"0.01", "0.001"} and all(lo <= hi for lo, hi in ci["tpr"].values())
    with pytest.raises(ValueError, match="one shape"):
        A.bootstrap_attack(scores, member[:, :10])
    with pytest.raises(ValueError, match="nothing to score"):
        A.bootstrap_attack(scores, np.ones_like(member), draws=5)


def test_committed_ulira_is_its_shadow_pieces_own_and_carries_intervals():
    res = mb.load_study("full")
    if "lira-methods" not in res.pieces:
        pytest.skip("no committed full-profile U-LiRA")
    shadows = [res.pieces[f"shadow{j}"] for j in range(res.study.shadows)]
    cands = mb.lira_candidates(res)
    again = mb.lira_summary(res.study, shadows, cands)
    for key in ("original", "alpha=1", "alpha=0.1"):
        assert {k: again[key][k] for k in ("auc", "tpr")} == {k: res.pieces["lira"][key][k] for k in ("auc", "tpr")}
    methods = mb.lira_methods_summary(shadows, [res.pieces[f"methods{j}"] for j in range(res.study.shadows)], cands)
    assert {k: v["auc"] for k, v in methods["methods"].items()} == {
        k: v["auc"] for k, v in res.pieces["lira-methods"]["methods"].items()}
    ci = mb.lira_intervals(res, draws=200)
    assert set(ci) == {"original", *map(mb.lira_key, res.study.alphas), *mb.SET_METHODS}
    for key, rec in [*((k, res.pieces["lira"][k]) for k in ("original", "alpha=1")),
                     *res.pieces["lira-methods"]["methods"].items()]:
        assert ci[key]["auc"][0] < rec["auc"] < ci[key]["auc"][1], key


def test_the_ulira_findings_call_a_ranking_established_only_where_intervals_part():
    from amnesiac_paper.book import attacks

    named = {"A": {"auc": 0.52}, "B": {"auc": 0.56}, "C": {"auc": 0.90}}
    apart = {"A": {"auc": [0.49, 0.55]}, "B": {"auc": [0.555, 0.57]}, "C": {"auc": [0.88, 0.92]}}
    text = attacks._chance_sentence(named, apart)
    assert "At chance (interval holds 0.5): A" in text and "A is closest, its interval apart from B's" in text
    overlapping = dict(apart, B={"auc": [0.53, 0.60]})
    assert "overlap, so which is closer is not established" in attacks._chance_sentence(named, overlapping)
    far = {k: {"auc": [v["auc"][0] + 0.2, v["auc"][1] + 0.2]} for k, v in apart.items()}
    assert "No interval holds 0.5" in attacks._chance_sentence(named, far)
