"""The propagation study (the propagated attribution against the replays): it runs, caches and summarises on
stand-in MNIST, the committed results match its definition, and the log's memory is what the book says."""

import json
from pathlib import Path

import pytest
import torch
from amnesiac_paper import fidelity as fi
from amnesiac_paper import propagation as pr
from helpers import tiny_study


@pytest.mark.slow  # the study on stand-in MNIST, run twice
def test_propagation_study_runs_caches_and_summarises(tmp_path, monkeypatch):
    small = tiny_study(monkeypatch, tmp_path)
    root = tmp_path / "results"
    res = pr.run_study("smoke", optimizers=["sgd"], results_root=root, progress=False)
    rec = res.records[("sgd", 0)]
    assert set(rec) == {"original", "set-random-10", "set-class-3"}
    assert rec["original"]["overhead"] > 0 and rec["original"]["n_logs"] == 4
    one = rec["set-random-10"]
    assert [r["alpha"] for r in one["methods"]["propagated"]] == [0.3, 1.0] and one["hvp_seconds"] > 0
    assert one["original"]["zero"]["recovered"] == 0.0 and one["references"]["zero"]["zero"]["recovered"] == 1.0
    assert one["delta_norm"]["propagated"] != one["delta_norm"]["exact"]
    rows = pr.summary_rows(res, "sgd")
    assert [r["set"] for r in rows] == ["random-10", "class-3"] and rows[0]["seeds"] == [0]
    assert rows[0]["propagated_recovered"][2] == 1  # (mean, half-width, n)
    # cached: a second run loads every piece instead of computing
    monkeypatch.setattr(pr, "_original", lambda *a, **k: (_ for _ in ()).throw(AssertionError("recomputed")))
    again = pr.run_study("smoke", optimizers=["sgd"], results_root=root, progress=False)
    assert again.records[("sgd", 0)]["set-class-3"] == rec["set-class-3"]
    assert pr.load_study("smoke", results_root=root).records[("sgd", 0)] == again.records[("sgd", 0)]
    # the replays live in the fidelity study's weights folder: a fidelity original that differs is refused
    weights = small.folder(root) / "weights" / "full" / "sgd" / "seed0"
    assert (weights / "propagation-original.pt").exists() and (weights / "random-10.zero.pt").exists()
    torch.save({"theta": torch.zeros(3)}, weights / "original.pt")
    (res.folder / "sgd" / "seed0" / "set-class-3.json").unlink()
    monkeypatch.undo()
    monkeypatch.setenv("AMNESIAC_DATA", str(tmp_path / "data"))
    monkeypatch.setattr(fi, "get_study", lambda profile="smoke", seeds=None, optimizers=None: small)
    with pytest.raises(RuntimeError, match="differs from this run's"):
        pr.run_study("smoke", optimizers=["sgd"], results_root=root, progress=False)
    with pytest.raises(ValueError, match="valid profiles: smoke, full"):
        pr.get_propagation_study("huge")
    with pytest.raises(ValueError, match="propagate_every must be >= 1"):
        pr.get_propagation_study("smoke", propagate_every=0)


def test_committed_propagation_results_match_the_study_and_one_original_per_combo():
    root = Path(__file__).resolve().parents[2] / "results" / pr.STUDY_NAME
    for folder in sorted(p for p in root.glob("full-*") if p.is_dir()):
        assert folder.name == f"full-{pr.get_propagation_study('full').hash}", f"{folder}: stale study definition"
        for combo in sorted(p for p in folder.glob("*/seed*") if p.is_dir()):
            pieces = {p.stem: json.loads(p.read_text()) for p in combo.glob("*.json")}
            assert not any(p["provenance"]["git"].endswith("+dirty") for p in pieces.values())
            assert len({p["original"]["acc_test"] for k, p in pieces.items() if k.startswith("set-")}) == 1


@pytest.mark.slow  # trains full-width SimpleModel with exact and propagated logs 8 times: ~30 s
def test_the_propagated_log_holds_a_delta_and_a_buffer_per_group():
    from amnesiac_paper.book import fidelity as book_fidelity

    for opt in ("sgd", "adam"):
        m = pr.log_memory(opt)
        assert m["propagated"] == pytest.approx(2.0, abs=0.01), m  # delta + momentum / first moment, float32
        assert m["update"] >= m["propagated"] - 0.01 and m["n_params"] == 95110
    assert "sgd: 2.00 (exact) and 2.00 (propagated)" in book_fidelity.propagation_memory_sentence(["sgd"])
    with pytest.raises(ValueError, match="unknown optimizer 'lbfgs'"):
        pr.log_memory("lbfgs")
