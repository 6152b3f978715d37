"""The chapters' logic lives in amnesiac_paper.book (one module per chapter): the computed sentences and values, on
committed results."""

import dataclasses

import numpy as np
import pytest
from amnesiac_paper import experiments as E
from amnesiac_paper.book import attacks, common, discussion, intro, mnist_class, mnist_samples, published
from amnesiac_paper.book import comparison as book_comparison
from amnesiac_paper.book import fidelity as book_fidelity
from amnesiac_paper.experiments import load, summarize
from amnesiac_paper.metrics import mean_ci


def test_class_discussion_sentences_come_from_the_results():
    res = load("mnist-class3-simple", "full")
    assert res.seeds  # committed
    out = discussion.class_discussion(res, forget_tol=0.05, rest_drop=0.02)
    assert set(out) == {"overshoot", "best_sentence", "conclusion", "repair_sentence", "mia_sentence",
                        "memory_sentence"}
    rows = {r["key"]: r for r in summarize(res, ("acc_test_rest", "mia_loss"))}
    full = rows[res.experiment.update(1).key]["acc_test_rest"]
    assert f"{full:.3f}" in out["overshoot"]
    assert f"{rows[E.ORIGINAL_KEY]['mia_loss']:.3f}" in out["mia_sentence"]
    empty = discussion.class_discussion(dataclasses.replace(res, seeds={}), forget_tol=0.05, rest_drop=0.02)
    assert all("not available" in s for s in empty.values())


def test_sample_forgetting_values_cover_both_requests():
    res1, res10 = load("mnist-samples1-simple", "full"), load("mnist-samples10-simple", "full")
    values = mnist_samples.sample_forgetting_values(res1, res10)
    for tag in ("1", "10"):
        for key in ("orig_forget", "retrain_forget", "a1_forget", "a01_forget", "ft_forget", "seed_forget"):
            assert 0.0 <= values[f"{key}_{tag}"] <= 1.0, key
        assert values[f"frac_{tag}"] == (0.01 if tag == "1" else 0.1)
    assert values["gap_vs_kit"] in ("smaller than", "at least as large as")


def test_the_abstract_is_computed_from_the_committed_studies():
    from amnesiac_paper import fidelity

    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    mem = attacks.membership_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu", progress=False)
    from amnesiac_paper.book import frontier, regime

    reg = regime.regime_results(profile="full")
    front = frontier.frontier_results(profile="full")
    text = intro.abstract(fid, mem, reg, front)
    assert "exact bookkeeping is not counterfactual removal" in text and "times faster" not in text
    rs, cs = front.study.sets
    rows = {s: {r["method"]: r for r in frontier.frontier_rows(front, s)} for s in (rs, cs)}
    exact, nothing = rows[rs]["ledger-exact"]["klom"]["forget"], rows[rs]["original"]["klom"]["forget"]
    assert f"gives {exact:.2f} against {nothing:.2f}" in text
    assert frontier.verdict(frontier.paired(front, rs, "ledger-exact", "original")) in text  # paired, with n
    assert f"reaches {rows[rs]['rewind']['klom']['forget']:.2f} and {rows[cs]['rewind']['klom']['forget']:.2f}" in text
    assert f"exact rewinding {rows[rs]['rewind']['per_request']:.2g} s" in text
    per = [r for opt in fid.study.optimizers for r in fidelity.summary_rows(fid, "full", opt, "drop")]
    assert f"at most {max(r['c'][0] for r in per):.2f}" in text
    assert f"AUC {mem.pieces['lira']['alpha=1']['auc']:.2f}" in text
    empty = intro.abstract(fid, None, None, None)  # the parts whose study is missing are left out, not invented
    assert "KLOM" not in empty and "ε*" not in empty and "at most" in empty and "same seed" not in text
    from amnesiac_paper import comparison as cmp_study

    fake = _fake_comparison({m: [0.5, 0.5] for m in cmp_study.METHODS}, floors={"class-3": [0.004, 0.009]})
    with_floor = intro.abstract(fid, None, None, None, fake)  # the fake seeds' originals: KL 0.01 and 0.02
    assert ("differ in their test outputs by a KL of 0.006 (adam, class-3), where doing nothing is at 0.014 "
            "(geometric means over 2 or more seeds)") in with_floor
    series = intro.hero_series(fid)
    assert set(series) == set(fid.study.optimizers)
    for rows_ in series.values():
        assert [r["size"] for r in rows_] == sorted(r["size"] for r in rows_)
        assert all(0 < r["a1_kl"][1] <= r["a1_kl"][0] <= r["a1_kl"][2] for r in rows_)  # log-scale, above zero
        assert not any("same_seed_kl" in r for r in rows_)  # no comparison given
    from amnesiac_paper import comparison as cmp_study
    from amnesiac_paper import plotting

    comp = _fake_comparison({m: [0.5, 0.5] for m in cmp_study.METHODS}, floors={"random-100": [0.004, 0.009]})
    with_floor = intro.hero_series(fid, comp)
    marked = [r for r in with_floor["adam"] if "same_seed_kl" in r]
    assert [r["set"] for r in marked] == ["random-100"] and marked[0]["same_seed_kl"][0] == pytest.approx(0.006)
    assert not any("same_seed_kl" in r for r in with_floor["sgd"])  # the fake comparison has adam only
    fig = plotting.hero_figure(with_floor)
    assert [line for line in fig.axes[2].get_lines() if line.get_marker() == "x"]
    table = frontier.glance_table(front)
    assert table.count("\n") == 2 + len(frontier.GLANCE_METHODS)
    assert f"{rows[cs]['rewind']['klom']['forget']:.2f}" in table


def test_the_consolidated_table_reads_both_studies():
    from amnesiac_paper import fidelity, membership

    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    mem = membership.load_study("full")
    table = discussion.consolidated_table(fid, mem)
    lines = table.splitlines()
    assert len(lines) == 2 + len(discussion.CONSOLIDATED_ROWS)
    row = {r["set"]: r for r in fidelity.summary_rows(fid, "full", "sgd", "drop")}.get("random-100")
    if row is not None:
        assert common.format_ci(row["a1_recovered"]) in lines[2]
    if mem.pieces.get("lira-methods"):
        scrub = next(line for line in lines if line.startswith("| SCRUB"))
        assert f"{mem.pieces['lira-methods']['methods']['SCRUB']['auc']:.3f}" in scrub and "not measured" in scrub


def test_the_misindexing_sentence_follows_the_numbers():
    from amnesiac_paper.experiments import load

    res = load("mnist-class3-simple", "full")
    assert "not computed" in mnist_class.misindexing_sentence(res, None)
    bigger = {"seed": 0, "n_forget": 100, "norms": {"gradient-p0.1": 3.0, "misindexed": 1.0},
              "cosines": {"gradient-p0.1|misindexed": 0.1}}
    smaller = {**bigger, "norms": {"gradient-p0.1": 1.0, "misindexed": 3.0}}
    text_big, text_small = mnist_class.misindexing_sentence(res, bigger), mnist_class.misindexing_sentence(res, smaller)
    assert "norm 3, the mis-indexed one 1" in text_big
    assert ("limited the damage" in text_big) != ("limited the damage" in text_small)


def test_the_conclusions_are_computed_from_the_studies():
    from amnesiac_paper import membership

    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    mem = membership.load_study("full")
    assert "of the way from the original model" in book_fidelity.fidelity_conclusion(fid)
    if mem.pieces.get("lira"):
        assert f"{mem.pieces['lira']['alpha=1']['auc']:.3f}" in attacks.attacks_conclusion(mem)
    assert "not computed" in attacks.attacks_conclusion(None)


def _fake_comparison(recovered: dict[str, list[float]], floors: dict[str, list[float]] | None = None):
    """A ComparisonResult whose chosen trial of each method recovers the given fraction, per seed (100 random
    samples; the class set recovers half of it); ``floors``: set -> the same-seed floor's test KL per seed."""
    from amnesiac_paper import comparison as cmp

    study = cmp.get_comparison_study("full", optimizers=["adam"], seeds=[0, 1])
    records = {}
    for seed in study.seeds:
        pieces = {}
        for name in study.sets:
            for method in study.methods:
                r = recovered[method][seed] * (0.5 if name.startswith("class") else 1.0)
                test = {"drop": {"recovered": r, "kl": 1 - r, "agreement": 0.9}, "acc_forget": 0.8, "acc_test": 0.97,
                        "acc_test_class": 0.1, "acc_test_rest": 0.96}
                bad = {**test, "drop": {"recovered": -1.0, "kl": 5.0, "agreement": 0.5}}
                trials = [{"params": {"x": 2}, "seconds": 9.0, "retain_passes": 0.0, "val": {"kl": 3.0},
                           "test": bad},
                          {"params": {"x": 1}, "seconds": 1.5, "retain_passes": 1.0, "val": {"kl": 0.1},
                           "test": test}]
                pieces[f"{name}/{method}"] = {"trials": trials, "chosen": 1, "oracle": 1, "replay_seconds": 40.0,
                                              "provenance": {"git": "abc1234", "cpu": "x"},
                                              "original_fingerprint": "fp",
                                              "original": {"drop": {"kl": 0.01 * (seed + 1)}}}
            if floors and name in floors:
                pieces[f"{name}/neighbour"] = {"test": {"drop": {"kl": floors[name][seed], "agreement": 0.99}},
                                               "original": {"drop": {"kl": 0.01 * (seed + 1)}},
                                               "original_fingerprint": "fp", "provenance": {"git": "abc1234",
                                                                                            "cpu": "x"}}
        records[("adam", seed)] = pieces
    return cmp.ComparisonResult(study, records, None)


def test_the_comparison_renders_the_chosen_trials_and_joins_the_consolidated_table():
    from amnesiac_paper import comparison, membership

    comp = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)})
    table = book_comparison.comparison_table(comp, "adam", "random-100")
    ssd = next(line for line in table.splitlines() if line.startswith("| SSD"))
    i = list(comparison.METHODS).index("ssd")
    assert common.format_ci(comparison.summary_rows(comp, "adam", "random-100")[i]["chosen_recovered"]) in ssd
    assert "x=1 (×2)" in ssd and "| 1.5 ± 0 |" in ssd  # the chosen settings over the seeds; seconds of the chosen trial
    assert "retrain (the dropped replay)" in table and "| 40 ± 0 |" in table
    assert "acc. test class" in book_comparison.comparison_table(comp, "adam", "class-3")
    assert "Comparison `full`: 6 trials per method, 2 (optimizer, seed)" in book_comparison.comparison_provenance(comp)
    assert "not shown" not in book_comparison.comparison_provenance(comp)
    old = comparison.ComparisonResult(comp.study, comp.records, None, ["sgd/seed1/class-3/scrub",
                                                                        "sgd/seed1/class-3/neggrad_plus"])
    assert ("2 piece(s) on disk (neggrad_plus, scrub) were computed under an earlier search space or code of their "
            "method and are not shown") in book_comparison.comparison_provenance(old)
    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    lines = discussion.consolidated_table(fid, membership.load_study("full"), comp).splitlines()
    assert len(lines) == 2 + len(discussion.CONSOLIDATED_ROWS) + len(comparison.METHODS)
    tuned = next(line for line in lines if line.startswith("| NegGrad+, tuned (6 trials"))
    rows = {r["method"]: r for r in comparison.summary_rows(comp, "adam", "class-3")}
    assert common.format_ci(rows["neggrad_plus"]["chosen_recovered"]) in tuned
    empty = comparison.ComparisonResult(comp.study, {}, None)
    text = book_comparison.comparison_provenance(empty)
    assert "Not computed yet" in text and "amnesiac_paper comparison --profile full" in text and "weights" in text
    text = book_fidelity.propagation_provenance(empty)  # the same sentence, the propagation study's command
    assert "Not computed yet" in text and "amnesiac_paper propagation --profile full" in text and "weights" not in text
    assert "No complete seed for adam" in book_comparison.comparison_table(empty, "adam", "class-3")


def test_the_comparison_brief_names_the_closest_method_beside_the_ledger_the_original_and_the_floor():
    from amnesiac_paper import comparison
    from amnesiac_paper.fidelity import summary_rows

    # KL = 1 - recovered: SCRUB (the last method) recovers most, so it is closest on both sets
    comp = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)})
    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    text = book_comparison.comparison_brief(comp, fid)
    rows = {r["method"]: r for r in comparison.summary_rows(comp, "adam", "random-100")}
    floor = {r["set"]: [p["floor_kl"] for p in r["per_seed"]] for r in summary_rows(fid, "full", "adam")}
    original = common.format_gci([0.01, 0.02])  # the fake seeds' original models; KL on a log scale
    assert text.startswith("* **Every method with the same tuning budget** (6 trials each")
    assert (f"adam, random-100 (2 seeds): closest SCRUB {common.format_gci(rows['scrub']['chosen_kl_values'])}, "
            "ledger subtraction "
            f"{common.format_gci(rows['amnesiac']['chosen_kl_values'])}; the original model {original}, another "
            f"retraining {common.format_gci(floor['random-100'])}") in text
    assert "same-seed floor" not in text  # none computed in this fake
    with_floor = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)},
                                  floors={"random-100": [0.004, 0.006]})
    assert (f"the original model {original}, the same-seed floor {common.format_gci([0.004, 0.006])}, another "
            "retraining") in book_comparison.comparison_brief(with_floor, fid)
    assert "adam, class-3 (2 seeds): closest SCRUB" in text
    empty = comparison.ComparisonResult(comp.study, {}, None)
    assert "no complete seed yet" in book_comparison.comparison_brief(empty, fid)


def test_the_comparison_findings_measure_every_method_against_doing_nothing():
    from amnesiac_paper import comparison

    comp = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)})
    for seed in (0, 1):
        for m in comparison.METHODS:
            comp.records[("adam", seed)][f"class-3/{m}"]["original"] = {"drop": {"kl": 0.72}}
    lines = book_comparison.comparison_findings(comp).splitlines()
    labels = [comparison.LABELS[m] for m in comparison.METHODS]
    # random-100: the original (KL 0.01-0.02) beats every trial of every method
    assert lines[0].startswith("* **adam, random-100** (2 seeds): doing nothing")
    assert "none of the 6 methods comes closer by a paired interval that excludes zero (the closest on average: " \
        "SCRUB" in lines[0]
    assert f"no trial of {', '.join(labels)}, in any seed" in lines[0]
    # class-3 (KL = 1 - recovered / 2, mean 0.85 - 0.05 i for method i): methods 3-5 are closer than 0.72 on
    # average, but two seeds whose KLs differ by 0.05 leave every paired interval across zero: inconclusive
    assert f"inconclusive with 2 seeds for {', '.join(labels)}" in lines[1]
    assert "come closer" not in lines[1]
    assert lines[1].endswith(f"no trial of {labels[0]}, {labels[1]}, in any seed, came closer than the original.")
    # the same methods with seeds that agree (recovered 0.8 and 0.81: KL 0.6 and 0.595 against 0.72): closer
    tight = _fake_comparison({m: [0.8, 0.81] for m in comparison.METHODS})
    for seed in (0, 1):
        for m in comparison.METHODS:
            tight.records[("adam", seed)][f"class-3/{m}"]["original"] = {"drop": {"kl": 0.72}}
    line = book_comparison.comparison_findings(tight).splitlines()[1]
    assert "6 of 6 methods come closer (paired over seeds, the interval of the log KL ratio below zero" in line
    assert "inconclusive" not in line
    empty = comparison.ComparisonResult(comp.study, {}, None)
    assert book_comparison.comparison_findings(empty).startswith("*No complete")


def test_the_fidelity_references_are_the_floor_and_the_repair_only_control_of_each_set():
    from amnesiac_paper.fidelity import summary_rows

    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    refs = book_fidelity.fidelity_references(fid, "adam")
    rows = summary_rows(fid, "full", "adam")
    assert set(refs["floor_kl"]) == {r["set"] for r in rows} and "class-3" in refs["repair_only"]
    for r in rows:
        assert refs["floor_kl"][r["set"]] == r["floor_kl"]
        assert refs["floor_kl_values"][r["set"]] == [p["floor_kl"] for p in r["per_seed"]]
        if "ft_seconds" in r:
            assert refs["repair_only"][r["set"]] == (r["ft_seconds"][0], r["ft_kl"][0])
    assert book_fidelity.fidelity_references(fid, "sgd", "graves")["floor_kl"] == {}  # no seed of that setting
    assert book_fidelity.fidelity_references(fid, "rmsprop") == {"floor_kl": {}, "floor_kl_values": {},
                                                                 "repair_only": {}}


def test_the_comparison_overview_puts_every_tuned_method_between_doing_nothing_and_retraining():
    from amnesiac_paper import comparison, membership
    from amnesiac_paper.fidelity import summary_rows
    from amnesiac_paper.metrics import geometric_ci

    floors = {"random-100": [0.004, 0.006], "class-3": [0.02, 0.03]}  # the same-seed floor's KL per seed
    comp = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)}, floors)
    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    lines = book_comparison.comparison_overview(comp, fid, membership.load_study("full")).splitlines()
    assert lines[0].startswith("| method | adam, random-100: test KL to replay (× same-seed floor) | adam, class-3:")
    assert len(lines) == 2 + len(comparison.METHODS) + 4
    ssd = {r["method"]: r for r in comparison.summary_rows(comp, "adam", "class-3")}["ssd"]["chosen_kl_values"]
    line = next(x for x in lines if x.startswith("| SSD, tuned"))
    ratio = geometric_ci(ssd)[0] / geometric_ci(floors["class-3"])[0]  # geometric means: KL on a log scale
    assert f"| {common.format_gci(ssd)} ({ratio:.3g}×) |" in line
    lira = membership.load_study("full").pieces["lira-methods"]["methods"]["SSD"]["auc"]
    assert line.endswith(f"| {lira:.3f} | 1.5 ± 0 |")  # U-LiRA at the defaults; the chosen trial's seconds
    assert "| random relabelling, tuned |" in lines[4] and "not measured" in lines[4]
    assert lines[-4].startswith("| original model (no unlearning) |")
    assert lines[-3].startswith("| retrain, same seed and order, one more sample dropped (the same-seed floor) | "
                                f"{common.format_gci(floors['random-100'])} (1×)")
    other = {r["set"]: [p["floor_kl"] for p in r["per_seed"]] for r in summary_rows(fid, "full", "adam")}
    ratio = geometric_ci(other["random-100"])[0] / geometric_ci(floors["random-100"])[0]
    assert lines[-2].startswith(f"| retrain, another seed and order | {common.format_gci(other['random-100'])} "
                                f"({ratio:.3g}×)")
    assert lines[-1] == "| retrain, same seed and order (the replay) | 0 | 0 | 0.5 (by construction) | 40 ± 0 |"
    # without a same-seed floor: no ratio, and the floor's row says it is not computed
    bare = book_comparison.comparison_overview(_fake_comparison(
        {m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)}), fid).splitlines()
    assert "×" not in "\n".join(bare[2:]) and "| not computed | not computed |" in bare[-3]
    empty = comparison.ComparisonResult(comp.study, {}, None)
    assert book_comparison.comparison_overview(empty, fid).startswith("*No complete seed")


def test_the_same_seed_floor_sentence_gives_the_floor_beside_the_original_and_says_when_another_cpu_made_it():
    from amnesiac_paper import comparison

    floors = {"random-100": [0.004, 0.006], "class-3": [0.02, 0.03]}
    comp = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)}, floors)
    text = book_comparison.same_seed_sentence(comp)
    assert (f"adam, random-100: {common.format_gci([0.004, 0.006])} against {common.format_gci([0.01, 0.02])} for "
            "the original model of the same runs") in text and "2 seeds" in text and "another kind of CPU" not in text
    for seed in (0, 1):  # trained on another CPU: another original model
        for name in floors:
            comp.records[("adam", seed)][f"{name}/neighbour"].update(original_fingerprint="other",
                                                                     provenance={"git": "abc", "cpu": "AMD"})
    assert comparison.same_seed_floor(comp, "adam", "class-3")["same_original"] is False
    assert "trained on another kind of CPU (AMD)" in book_comparison.same_seed_sentence(comp)
    assert "No same-seed floor" in book_comparison.same_seed_sentence(_fake_comparison(
        {m: [0.5, 0.5] for m in comparison.METHODS}))


def test_per_seed_tables_show_each_seeds_value_in_seed_order():
    from amnesiac_paper import comparison
    from amnesiac_paper.fidelity import summary_rows

    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    row = next(r for r in summary_rows(fid, "full", "sgd") if r["set"] == "class-3")
    line = next(x for x in book_fidelity.fidelity_table(fid, "sgd", per_seed=True).splitlines()
                if x.startswith("| class-3"))
    want = " / ".join(f"{p['a1_recovered']:.3g}" for p in row["per_seed"])
    assert line.startswith(f"| class-3 | {row['size']} | 0, 1, 2 | {want} |")
    comp = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)})
    lines = book_comparison.comparison_seed_table(comp, "adam", "random-100").splitlines()
    assert lines[0] == "| method | seed 0: test KL (chosen) | seed 1: test KL (chosen) |"
    assert lines[2] == "| ledger subtraction | 0.8 (x=1) | 0.6 (x=1) |"  # KL = 1 - recovered, per seed
    empty = comparison.ComparisonResult(comp.study, {}, None)
    assert "No complete seed" in book_comparison.comparison_seed_table(empty, "adam", "random-100")


def test_a_method_whose_every_trial_diverged_reads_as_diverged_not_as_a_number():
    from amnesiac_paper import comparison, plotting

    comp = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)})
    for seed in (0, 1):
        for t in comp.records[("adam", seed)]["class-3/scrub"]["trials"]:
            t["val"]["kl"] = t["test"]["drop"]["kl"] = t["test"]["drop"]["recovered"] = float("nan")
    scrub = next(x for x in book_comparison.comparison_table(comp, "adam", "class-3").splitlines()
                 if x.startswith("| SCRUB"))
    assert "| diverged | diverged |" in scrub
    findings = book_comparison.comparison_findings(comp).splitlines()[1]
    assert ("(SCRUB: every trial diverged, non-finite outputs; the learning rates of the search space, 0.01-1 × the "
            "recipe's, hold no stable setting here)") in findings and "closest on average: SSD" in findings
    assert "class-3 (2 seeds): closest SSD" in book_comparison.comparison_brief(
        comp, book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu"))
    fig = plotting.comparison_vs_compute(comp, "adam")
    assert [t.get_text() for t in fig.axes[1].texts if t.get_text().startswith("diverged")] == \
        ["diverged (every trial): SCRUB"]
    assert sum(line.get_marker() == "o" for line in fig.axes[1].get_lines()) == len(comparison.METHODS) - 1


def test_the_quality_against_compute_figure_places_every_method_the_original_and_retraining():
    from amnesiac_paper import comparison, plotting
    from matplotlib.collections import PathCollection

    comp = _fake_comparison({m: [0.2 + 0.1 * i, 0.4 + 0.1 * i] for i, m in enumerate(comparison.METHODS)},
                            floors={"random-100": [0.004, 0.009]})
    fig = plotting.comparison_vs_compute(comp, "adam", floor_kl={"random-100": 0.05},
                                         repair_only={"class-3": (2.0, 0.3)})
    left, right = fig.axes[:2]
    assert left.get_title() == "adam, random-100" and right.get_title() == "adam, class-3"
    points = [line for line in left.get_lines() if line.get_marker() == "o"]
    assert len(points) == len(comparison.METHODS)  # one point per method, at its chosen trial's geometric mean
    rows = comparison.summary_rows(comp, "adam", "random-100")
    want = [np.sqrt(r["chosen_kl_values"][0] * r["chosen_kl_values"][1]) for r in rows]
    assert np.allclose([p.get_data()[1][0] for p in points], want, rtol=1e-12)
    assert all(tuple(p.get_data()[0]) == (1.5,) for p in points)  # the chosen trial's seconds
    original = [line for line in left.get_lines() if line.get_linestyle() == ":"]
    assert len(original) == 1 and original[0].get_ydata()[0] == pytest.approx(np.sqrt(0.01 * 0.02))  # over seeds
    same_seed = [line for line in left.get_lines() if line.get_linestyle() == "--"]
    assert len(same_seed) == 1 and same_seed[0].get_ydata()[0] == pytest.approx(0.006)  # sqrt(0.004 * 0.009)
    assert not [line for line in right.get_lines() if line.get_linestyle() == "--"]  # none computed for the class
    stars = [c for c in left.collections if isinstance(c, PathCollection)]
    assert len(stars) == 1 and tuple(stars[0].get_offsets()[0]) == (40.0, 0.05)  # retraining at the floor
    squares = [c for c in right.collections if isinstance(c, PathCollection)]  # no floor given for the class
    assert len(squares) == 1 and tuple(squares[0].get_offsets()[0]) == (2.0, 0.3)  # the repair-only control
    assert "1 p" in [t.get_text() for t in left.texts]  # retain passes of the chosen trial


def test_the_mask_control_sentence_names_the_control_the_masked_record_behaves_like():

    def rec(seed, like):
        rows = []
        for p in (0.001, 0.01):
            full = {"norm": 100.0, "acc_test_forgotten": 0.5, "acc_test_rest": 0.97}
            v = {"full_times_p": {**full, "norm": 100 * p}, "full_times_sqrt_p": {**full, "norm": 100 * p ** 0.5,
                                                                                  "acc_test_forgotten": 0.1},
                 "random_direction": {**full, "norm": 5.0, "acc_test_forgotten": 0.9}}
            rows.append({"p": p, **v, "masked": {**v[like], "norm": 2 * 100 * p ** 0.5}, "cosine_masked_full": 0.3})
        return {"seed": seed, "ps": [0.001, 0.01], "rows": rows,
                "original": {"acc_test_forgotten": 0.9, "acc_test_rest": 0.97}}

    for like in ("full_times_p", "full_times_sqrt_p"):
        text = mnist_class.mask_control_sentence([rec(0, like), rec(1, like)])
        assert f"most like the {dict(mnist_class.MASK_VARIANTS)[like]} at 2 of 2" in text and "2 seeds" in text
        assert "largest accuracy gap to it 0.000" in text and "2.00 to 2.00 times" in text and "0.30 to 0.30" in text
        # component along the full record: 2 * 100 sqrt(p) * 0.3 / (100 p) = 0.6 / sqrt(p)
        assert f"{0.6 / 0.01 ** 0.5:.2f} to {0.6 / 0.001 ** 0.5:.2f} times the full record × p" in text
        assert "by at most 0.000, the masked record by up to" in text  # the random direction keeps 0.9 / 0.97
        assert ("does no more than a random direction" in text) == (like == "full_times_p")
    table = mnist_class.mask_control_table([rec(0, "full_times_p")])
    assert "| 0.001 | 6.32: 0.50 / 0.970 | 0.1: 0.50 / 0.970 |" in table
    assert "not computed" in mnist_class.mask_control_sentence([])
    assert "not computed" in mnist_class.mask_control_table([])


def test_the_seed_report_is_set_beside_ours_row_by_row():
    res = load("mnist-class3-simple", "full")
    metrics = ("acc_test_forgotten", "acc_test_rest")
    no = {r["key"]: r for r in summarize(res, metrics, "no_repair")}
    after = {r["key"]: r for r in summarize(res, metrics, "after_repair")}

    def ours(row):
        return f"{common.pm(row, metrics[0])} / {common.pm(row, metrics[1])}"

    seed_rows = published.SEED_REPORT["mnist-class3-simple"]
    for every in (False, True):
        lines = mnist_class.seed_beside_ours(res, metrics, every_method=every).splitlines()
        assert lines[0] == ("| method | seed: after train | ours: after train | seed: no retrain | ours: no repair | "
                            "seed: after retrain | ours: after repair |")
        rows = {line.strip("|").split(" | ")[0].strip(): [c.strip() for c in line.strip("|").split(" | ")]
                for line in lines[2:]}
        for seed in seed_rows:  # each seed row beside the row of ours it names (a typed selection, not its text)
            key = seed.ours(res.experiment).key
            train, (f_no, r_no), (f_after, r_after) = seed.after_training, seed.no_retrain, seed.after_retrain
            cells = rows[seed.name]
            assert cells[1] == f"{train[0]:.2f} / {train[1]:.2f}" and cells[2] == ours(no[E.ORIGINAL_KEY])
            assert cells[3] == f"{f_no:.2f} / {r_no:.2f}" and cells[4] == ours(no[key])
            assert cells[5] == f"{f_after:.2f} / {r_after:.2f}" and cells[6] == ours(after[key])
        assert lines[-1].startswith("| Retrain from scratch (reference) |")
        assert rows["Retrain from scratch (reference)"][4] == ours(no[E.RETRAIN_KEY])
        assert len(rows) == len(seed_rows) + 1 if not every else len(rows) == len(no) - 1  # all but the original
    seed_keys = {seed.ours(res.experiment).key for seed in seed_rows}
    unrepaired = next(k for k, r in after.items() if k not in seed_keys and r["acc_test_rest"] != r["acc_test_rest"])
    cells = rows[no[unrepaired]["label"]]
    assert cells[1] == cells[3] == cells[5] == cells[6] == "–" and cells[4] == ours(no[unrepaired])
    with pytest.raises(ValueError, match="no computed seeds"):
        mnist_class.seed_beside_ours(dataclasses.replace(res, seeds={}))


def test_provenance_says_when_a_seed_was_resumed_and_its_wall_time_is_partial():
    res = load("mnist-class3-simple", "full")
    assert "resumed" not in common.provenance(res)
    rec = dict(res.seeds[0], resumed={"from": "trained", "methods_done": 1})
    text = common.provenance(dataclasses.replace(res, seeds={**res.seeds, 0: rec}))
    assert "seed(s) [0] resumed after an interruption: only their last run's time is counted" in text


def test_the_reading_of_the_seed_comparison_follows_the_numbers():
    res = load("mnist-class3-simple", "full")
    exp = res.experiment
    F, R = metrics = ("acc_test_forgotten", "acc_test_rest")
    rows = {r["key"]: r for r in summarize(res, metrics + ("agreement_to_retrain",), "no_repair")}
    text = mnist_class.seed_comparison_reading(res)
    assert text.startswith(f"**Reading the table** (means over {len(res.seeds)} seeds")
    for key in (E.ORIGINAL_KEY, E.RETRAIN_KEY, exp.per_batch().key, exp.misindexed().key, exp.finetune().key):
        assert f"{rows[key][F]:.2f} / {rows[key][R]:.2f}" in text, key
    # the seed's p = 0.1 row (0.00 / 0.83) lies nearer the mis-indexed record than the correctly indexed one
    assert "nearer our mis-indexed record" in text
    best = mnist_class.smallest_alpha_matching(res)
    assert best is not None and f"at α = {best['alpha']:g}" in text
    assert common.pm(rows[exp.update(best["alpha"]).key], "agreement_to_retrain", 3) in text
    # the rule's thresholds decide the sentences: with no room on the forgotten class nothing matches
    strict = mnist_class.seed_comparison_reading(res, forget_tol=0.0, rest_drop=0.0)
    assert "No scale of the exact update attribution" in strict and "does not forget like" in strict
    # the step-size sentence follows the largest gap between masked and scaled records against forget_tol
    gap = max(abs(rows[exp.seed_record(p).key][m] - rows[exp.gradient_record(p).key][m])
              for p in exp.ps for m in metrics)
    assert f"(largest gap {gap:.2f})" in text and 0 < gap < 0.5
    assert "not only a step size" in strict and "not only a step size" in mnist_class.seed_comparison_reading(
        res, forget_tol=gap / 2) and "acts as a step size" in mnist_class.seed_comparison_reading(res, forget_tol=gap)
    with pytest.raises(ValueError, match="no computed seeds"):
        mnist_class.seed_comparison_reading(dataclasses.replace(res, seeds={}))


def test_the_linear_regime_chapter_is_computed_from_the_committed_study():
    from amnesiac_paper import regime as rg
    from amnesiac_paper.book import regime

    res = regime.regime_results(profile="full")
    assert set(res.cells) == {(r.name, s) for r in res.study.regimes for s in res.study.seeds}  # every cell committed
    assert set(res.lds) == {(n, s) for n in res.study.lds_regimes for s in res.study.seeds}
    assert "Not computed yet" not in regime.regime_provenance(res)
    assert "+dirty" not in regime.regime_provenance(res)
    row = regime.cell_row(res, "default", "random-100")
    assert len(row["seeds"]) == 3 and row["fd_best_cos"] > 0.99  # the derivative check, on the committed numbers
    findings = regime.regime_findings(res)
    assert format(row["derivative_recovered"][0], ".3g") in findings
    assert regime.geometry_check(res) < 1e-6  # the law of cosines is the measurement
    table = regime.phase_table(res, "random-100")
    assert table.count("\n") == len(res.study.regimes) + 1
    lds = mean_ci([res.lds[("default", s)]["derivative"]["lds"] for s in res.study.seeds])
    assert common.format_ci(lds) in regime.lds_table(res)
    assert regime.lds_design(res).startswith(f"For {res.study.lds_subsets} random forget subsets")
    conclusion = regime.regime_conclusion(res)
    assert f"{res.study.n_train:,} images" in conclusion and "ε*" in conclusion
    assert rg.AGREE_COS == 0.9  # the criterion the chapter states
    setup = regime.regime_setup(res)
    assert f"{res.study.n_train:,} MNIST images" in setup and "learning rate ×10" in setup and "batch 16" in setup
    assert setup.count(";") == len(res.study.regimes) - 1  # every cell but the default, named once


def test_the_rule_sentences_count_the_fallbacks_and_the_table_shows_no_change_there():
    from amnesiac_paper import fidelity, membership

    fid = book_fidelity.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    rules = [fidelity.record_rule(rec) for pieces in fid.records.values() for k, rec in pieces.items()
             if k.startswith("set-")]
    fell = sum(not r["reached"] for r in rules)
    text = book_fidelity.rule_fallback_sentence(fid)
    assert f"reached in {len(rules) - fell} of {len(rules)} " in text
    assert (f"in the other {fell} the rule kept the original model (α = 0)" in text) if fell else "never used" in text
    table = book_fidelity.fidelity_rule_table(fid)
    assert "1 (not reached" not in table  # the rule never falls back to the largest alpha
    assert table.count("0 (not reached: no change)") == sum(
        not fidelity.record_rule(rec)["reached"] for (setting, _, _), pieces in fid.records.items()
        if setting == "full" for k, rec in pieces.items() if k.startswith("set-"))
    mem = membership.load_study("full")
    cls = [v for k, v in sorted(mem.pieces.items()) if k.startswith("class-seed")]
    kept = sum(not membership.piece_rule(r)["reached"] for r in cls)
    sentence = attacks.rule_fallback_sentence(mem, "class")
    assert sentence.startswith(f"The rule reached parity in {len(cls) - kept} of {len(cls)} seeds")
    assert (f"in the other {kept} it never did" in sentence) == bool(kept)
    assert attacks.difference_table(mem)  # the canary pieces' rule rows are the current rule's (else refused)


def test_the_frontier_chapter_is_computed_from_the_committed_study():
    from amnesiac_paper import frontier as fr
    from amnesiac_paper.book import frontier

    res = frontier.frontier_results(profile="full")
    assert not frontier.missing(res)  # every piece committed
    prov = frontier.frontier_provenance(res)
    assert "Not computed yet" not in prov and "+dirty" not in prov
    for s in res.study.sets:
        table = frontier.frontier_table(res, s)
        rows = frontier.frontier_rows(res, s)
        assert table.count("\n") == len(rows) + 2  # header, rule, the floor, one row per method
        rewind = next(r for r in rows if r["method"] == "rewind")
        assert f"{rewind['klom']['forget']:.2f}" in table and rewind["gap"]["mean"] == 0.0
        assert f"{res.pieces[f'oracles-{s}']['klom']['forget']:.2f}" in table
        paired = frontier.paired_table(res, s)
        assert paired.count("\n") == len(rows) + 1
        d = frontier.paired(res, s, "original", "rewind")
        assert frontier.verdict(d) in paired
    findings = frontier.frontier_findings(res)
    assert findings.count("- **") == len(res.study.sets)
    late = frontier.late_table(res)
    assert "**no**" not in late and late.count("\n") == len(res.study.late_seeds) * len(res.study.sets) + 1
    assert "plain training" in frontier.timing_table(res)
    points = frontier.frontier_points(res)
    assert set(points) == set(res.study.sets)
    cost = fr.amortised(res, res.study.sets[0], "ledger-derivative")
    timing = res.pieces["timing"]
    assert cost["training_overhead"] == timing["median"]["derivative-log"] - timing["median"]["plain"] > 0


def _fake_fidelity_row(name: str, per_seed: list[dict]) -> dict:
    keys = ("a1_recovered", "oracle_recovered", "oracle_alpha", "a1_floor_ratio", "zero_to_drop_dist",
            "original_dist", "original_kl", "a1_kl", "floor_kl", "best_kl", "best_control_kl", "rule_alpha",
            "rule_recovered", "rule_kl", "ft_recovered", "best_control_recovered")
    row = {k: mean_ci([p[k] for p in per_seed]) for k in keys}
    return {**row, "set": name, "seeds": list(range(len(per_seed))), "rule_reached": [True] * len(per_seed),
            "per_seed": per_seed}


def test_the_fidelity_findings_call_a_difference_only_where_the_paired_interval_excludes_zero(monkeypatch):
    from types import SimpleNamespace

    from amnesiac_paper import fidelity

    def seed(a1, oracle, control, best_kl, original_kl, ft):
        return {"a1_recovered": a1, "oracle_recovered": oracle, "oracle_alpha": 0.1, "a1_floor_ratio": 2.0,
                "zero_to_drop_dist": 1.0, "original_dist": 2.0, "original_kl": original_kl, "a1_kl": 0.5,
                "floor_kl": 0.05, "best_kl": best_kl, "best_control_kl": 1.0, "rule_alpha": 0.1,
                "rule_recovered": 0.0, "rule_kl": 0.1, "ft_recovered": ft, "best_control_recovered": control}

    # "spans": every difference's interval spans zero (means of +0.1 with a spread of 0.5); "clear": all exclude it
    spans = [seed(0.6, 0.6, 0.1, 0.02, 0.01, 0.1), seed(-0.4, -0.4, 0.1, 0.005, 0.01, 0.6),
             seed(0.1, 0.1, -0.2, 0.01, 0.01, -0.3)]
    clear = [seed(0.30, 0.30, 0.01, 0.001, 0.01, 0.01), seed(0.31, 0.31, 0.02, 0.0011, 0.01, 0.02),
             seed(0.29, 0.29, 0.00, 0.0009, 0.01, 0.00)]
    rows = [_fake_fidelity_row("random-spans", spans), _fake_fidelity_row("random-clear", clear)]
    monkeypatch.setattr(fidelity, "summary_rows", lambda *a, **k: rows)
    text = book_fidelity.fidelity_findings(SimpleNamespace(study=SimpleNamespace(optimizers=("sgd",))))
    assert "no closer and no farther than the original model that 3 seeds can tell (inconclusive) for random-spans" \
        in text
    assert "closer to the replay than the original model for random-clear" in text
    assert "closer to the replay than the original model for random-clear (smallest KL" in text  # output space
    assert "beats both controls" in text and "for 1 of 2 sets (random-clear); inconclusive for random-spans" in text
    assert "the oracle subtraction beats it for random-clear; inconclusive for random-spans" in text
    assert book_fidelity.paired_seeds(rows[0], "a1_recovered")["sign"] == 0  # the interval spans zero


def test_closer_than_the_original_is_said_only_where_the_paired_seed_interval_excludes_zero():
    from types import SimpleNamespace

    spec = SimpleNamespace(stored_name="m")

    def result(pairs):  # (method's JS, original's JS) per seed
        return SimpleNamespace(seeds={k: {"original": {"js_to_retrain": o}, "methods": {"m": {
            "no_repair": {"js_to_retrain": m}}}} for k, (m, o) in enumerate(pairs)})

    clear = mnist_samples.closer_than_original(result([(0.010, 0.020), (0.011, 0.021), (0.009, 0.020)]), spec)
    assert clear.startswith("closer to the retrained model") and "3 seeds" in clear
    # the method's mean is lower, but one seed goes the other way: the interval spans zero
    spans = mnist_samples.closer_than_original(result([(0.010, 0.030), (0.025, 0.020), (0.012, 0.015)]), spec)
    assert spans.startswith("not measurably closer") and "inconclusive" in spans
    worse = mnist_samples.closer_than_original(result([(0.030, 0.020), (0.031, 0.020), (0.029, 0.020)]), spec)
    assert worse.startswith("*farther*")
    assert "no interval" in mnist_samples.closer_than_original(result([(0.01, 0.02)]), spec)


def test_the_inversion_resembles_a_model_only_by_an_interval_that_excludes_zero():
    assert attacks.inversion_closer([0.2, 0.25, 0.22], [0.6, 0.62, 0.58]).startswith("the retrained model's")
    assert attacks.inversion_closer([0.6, 0.62, 0.58], [0.2, 0.25, 0.22]).startswith("the original model's")
    assert "inconclusive" in attacks.inversion_closer([0.2, 0.6, 0.3], [0.5, 0.1, 0.35])


def test_the_traffic_table_sets_each_row_beside_its_floor_or_says_the_run_predates_it():
    from amnesiac_paper.book import memory_time

    row = {"ratio": 3.0, "floor_ratio": 1.5, "traffic_bytes_per_step": 4.5e8}
    bench = {"profile": "full", "provenance": {"git": "abc1234"}, "stream_bandwidth": 1.0e10,
             "overhead": [{"model": "resnet18", "rows": {"plain": {"ratio": 1.0}, "class groups": row}}]}
    text = memory_time.traffic_table(bench)
    assert "10.0 GB/s" in text and "| class groups | 450.0 | 1.50 | 3.00 | 2.00 |" in text and "| plain |" not in text
    del bench["stream_bandwidth"]
    old = memory_time.traffic_table(bench)
    assert "predates the traffic model" in old and "python -m amnesiac_paper bench --profile full" in old


def test_the_flush_table_sets_tiled_and_whole_rows_beside_the_floor_or_says_the_run_predates_it():
    from amnesiac_paper.book import memory_time

    flush = {"width": 4_194_304, "groups": 10, "steps": 4, "tile": 16384, "tiled_seconds_per_step": 0.2,
             "whole_rows_seconds_per_step": 0.8, "traffic_bytes_per_step": 1.0e9, "floor_seconds_per_step": 0.1}
    bench = {"profile": "full", "provenance": {"git": "abc1234"}, "flush": flush}
    text = memory_time.flush_table(bench)
    assert "4,194,304 parameters" in text and "1000 MB per step, 100.0 ms" in text
    assert "| tiled over 16,384 coordinates (default) | 200.0 | 2.00 |" in text
    assert "| whole rows (before) | 800.0 | 8.00 |" in text
    del bench["flush"]
    old = memory_time.flush_table(bench)
    assert "predates the tiled flush" in old and "abc1234" in old
