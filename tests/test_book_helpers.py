"""The chapters' logic lives in amnesiac.book: the computed sentences and values, on committed results."""

import dataclasses

from amnesiac import book
from amnesiac.experiments import load, summarize


def test_class_discussion_sentences_come_from_the_results():
    res = load("mnist-class3-simple", "full")
    assert res.seeds  # committed
    out = book.class_discussion(res, forget_tol=0.05, rest_drop=0.02)
    assert set(out) == {"overshoot", "best_sentence", "conclusion", "repair_sentence", "mia_sentence",
                        "memory_sentence"}
    rows = {r["method"]: r for r in summarize(res, ("acc_test_rest", "mia_loss"))}
    full = rows[res.experiment.update(1).label]["acc_test_rest"]
    assert f"{full:.3f}" in out["overshoot"]
    assert f"{rows['After training (original)']['mia_loss']:.3f}" in out["mia_sentence"]
    empty = book.class_discussion(dataclasses.replace(res, seeds={}), forget_tol=0.05, rest_drop=0.02)
    assert all("not available" in s for s in empty.values())


def test_sample_forgetting_values_cover_both_requests():
    res1, res10 = load("mnist-samples1-simple", "full"), load("mnist-samples10-simple", "full")
    values = book.sample_forgetting_values(res1, res10)
    for tag in ("1", "10"):
        for key in ("orig_forget", "retrain_forget", "a1_forget", "a01_forget", "ft_forget", "seed_forget"):
            assert 0.0 <= values[f"{key}_{tag}"] <= 1.0, key
        assert values[f"frac_{tag}"] == (0.01 if tag == "1" else 0.1)
    assert values["gap_vs_kit"] in ("smaller than", "at least as large as")


def test_the_abstract_is_computed_from_the_committed_studies():
    from amnesiac import book, fidelity

    fid = book.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    mem = book.membership_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu", progress=False)
    text = book.abstract(fid, mem, 10.0)
    rows = {r["set"]: r for r in fidelity.summary_rows(fid, "full", "adam", "drop")}
    if "random-100" not in rows:
        assert "waits for it" in text
        return
    assert f"Adam {rows['random-100']['a1_recovered'][0]:+.3f} for 100 random samples" in text
    assert f"AUC {mem.pieces['lira']['alpha=1']['auc']:.2f}" in text and "10 times faster" in text


def test_the_consolidated_table_reads_both_studies():
    from amnesiac import book, fidelity, membership

    fid = book.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    mem = membership.load_study("full")
    table = book.consolidated_table(fid, mem)
    lines = table.splitlines()
    assert len(lines) == 2 + len(book.CONSOLIDATED_ROWS)
    row = {r["set"]: r for r in fidelity.summary_rows(fid, "full", "sgd", "drop")}.get("random-100")
    if row is not None:
        assert book._ci(row["a1_recovered"]) in lines[2]
    if mem.pieces.get("lira-methods"):
        scrub = next(line for line in lines if line.startswith("| SCRUB"))
        assert f"{mem.pieces['lira-methods']['methods']['SCRUB']['auc']:.3f}" in scrub and "not measured" in scrub


def test_the_misindexing_sentence_follows_the_numbers():
    from amnesiac import book
    from amnesiac.experiments import load

    res = load("mnist-class3-simple", "full")
    assert "not computed" in book.misindexing_sentence(res, None)
    bigger = {"seed": 0, "n_forget": 100, "norms": {"gradient-p0.1": 3.0, "misindexed": 1.0},
              "cosines": {"gradient-p0.1|misindexed": 0.1}}
    smaller = {**bigger, "norms": {"gradient-p0.1": 1.0, "misindexed": 3.0}}
    text_big, text_small = book.misindexing_sentence(res, bigger), book.misindexing_sentence(res, smaller)
    assert "norm 3, the mis-indexed one 1" in text_big
    assert ("limited the damage" in text_big) != ("limited the damage" in text_small)


def test_the_conclusions_are_computed_from_the_studies():
    from amnesiac import book, membership

    fid = book.fidelity_results(profile="full", seeds=[0, 1, 2], recompute=False, device="cpu")
    mem = membership.load_study("full")
    assert "of the way from the original model" in book.fidelity_conclusion(fid)
    if mem.pieces.get("lira"):
        assert f"{mem.pieces['lira']['alpha=1']['auc']:.3f}" in book.attacks_conclusion(mem)
    assert "not computed" in book.attacks_conclusion(None)
