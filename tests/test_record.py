"""Forget requests served one after another from a saved ledger, with an append-only, hash-chained record."""

import json

import pytest
import torch
from conftest import flat, tiny_dataset, tiny_model

import amnesiac


@pytest.fixture
def saved(tmp_path):
    """A model trained with a log of three user groups, saved to files as a training job would leave them."""
    ds = tiny_dataset()
    model = tiny_model()
    log = amnesiac.DeltaLog(model, {"a": [0, 1, 2], "b": [5, 6], 7: [7]})
    amnesiac.train(model, ds.loader(8, seed=1), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), epochs=2,
                   delta_log=log, progress=False)
    torch.save(model.state_dict(), tmp_path / "model.pt")
    amnesiac.save_ledger(tmp_path / "ledger.pt", log)
    return tmp_path


def _load(folder, name="model.pt"):
    model = tiny_model(seed=3)  # other weights: everything comes from the files
    model.load_state_dict(torch.load(folder / name, weights_only=True))
    log = amnesiac.load_ledger(folder / "ledger.pt", amnesiac.DeltaLog(model, {"a": [0, 1, 2], "b": [5, 6], 7: [7]}))
    return model, log


def test_requests_served_one_after_another_from_saved_files(saved):
    model, log = _load(saved)
    theta_t = flat(model).clone()
    record = amnesiac.RequestRecord(saved / "requests.jsonl")
    first = record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log, alpha=1.0)
    torch.save(first.state_dict(), saved / "after-a.pt")
    # later, another process: the saved model and ledger, the same record file
    model2, log2 = _load(saved, "after-a.pt")
    record2 = amnesiac.RequestRecord(saved / "requests.jsonl")
    second = record2.serve(model2, amnesiac.Request(forget_groups=("b", 7)), log=log2, alpha=0.5)
    entries = record2.entries()
    assert [(e["index"], e["groups"], e["alpha"]) for e in entries] == [(0, ["a"], 1.0), (1, ["b", 7], 0.5)]
    assert entries[0]["model_before"] == amnesiac.model_fingerprint(model)
    assert entries[1]["model_before"] == entries[0]["model_after"] == amnesiac.model_fingerprint(first)
    assert entries[1]["model_after"] == amnesiac.model_fingerprint(second)
    assert entries[1]["prev"] == entries[0]["hash"] and entries[0]["ledger_steps"] == log.steps > 0
    assert record2.forgotten() == {"a": 0, "b": 1, 7: 1}
    want = theta_t - log.delta_vector(["a"]) - 0.5 * log.delta_vector(["b", 7])
    torch.testing.assert_close(flat(second), want, rtol=0, atol=1e-12)


def test_the_record_refuses_what_would_corrupt_the_model(saved):
    model, log = _load(saved)
    path = saved / "requests.jsonl"
    record = amnesiac.RequestRecord(path)
    after = record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log)
    size = path.stat().st_size
    with pytest.raises(ValueError, match=r"group\(s\) \['a'\] were already forgotten \(request\(s\) \[0\]\)"):
        record.serve(after, amnesiac.Request(forget_groups=("a", "b")), log=log)
    with pytest.raises(ValueError, match="is not the one request 0 returned"):
        record.serve(model, amnesiac.Request(forget_groups=("b",)), log=log)  # the stale, pre-request model
    with pytest.raises(KeyError):
        record.serve(after, amnesiac.Request(forget_groups=("nobody",)), log=log)
    with pytest.raises(ValueError, match="names no group"):
        record.serve(after, amnesiac.Request(), log=log)
    assert path.stat().st_size == size  # nothing was appended by a refused request
    record.serve(after, amnesiac.Request(forget_groups=("b",)), log=log)
    assert len(record.entries()) == 2


def test_a_changed_truncated_or_reordered_record_is_refused(saved):
    model, log = _load(saved)
    path = saved / "requests.jsonl"
    record = amnesiac.RequestRecord(path)
    m = record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log)
    record.serve(m, amnesiac.Request(forget_groups=("b",)), log=log)
    good = path.read_text()
    lines = good.splitlines()
    edited = json.loads(lines[0])
    edited["alpha"] = 0.1
    path.write_text(json.dumps(edited) + "\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match="line 1 was changed"):
        amnesiac.RequestRecord(path)
    path.write_text(lines[1] + "\n" + lines[0] + "\n")
    with pytest.raises(ValueError, match="line 1 is not request 0"):
        amnesiac.RequestRecord(path)
    path.write_text(good[:-20])
    with pytest.raises(ValueError, match="last line is incomplete"):
        amnesiac.RequestRecord(path)
