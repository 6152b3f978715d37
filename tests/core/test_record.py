"""Forget requests served one after another from a saved ledger, with an append-only, hash-chained record."""

import json
import shutil

import pytest
import torch
from helpers import flat, tiny_dataset, tiny_model

import amnesiac


@pytest.fixture(scope="module")
def trained_files(tmp_path_factory):
    """A model trained with a log of three user groups, saved to files as a training job would leave them."""
    folder = tmp_path_factory.mktemp("trained")
    ds = tiny_dataset()
    model = tiny_model()
    log = amnesiac.DeltaLog(model, {"a": [0, 1, 2], "b": [5, 6], 7: [7]})
    amnesiac.train(model, ds.loader(8, seed=1), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), epochs=2,
                   delta_log=log, progress=False)
    torch.save(model.state_dict(), folder / "model.pt")
    amnesiac.save_ledger(folder / "ledger.pt", log)
    return folder


@pytest.fixture
def saved(tmp_path, trained_files):
    """This test's own copy of the trained files (trained once per module)."""
    for name in ("model.pt", "ledger.pt"):
        shutil.copyfile(trained_files / name, tmp_path / name)
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


def _head(path):
    return json.loads(path.with_name(path.name + ".head").read_text())


@pytest.mark.parametrize("alpha", [0.0, -1.0, float("nan"), float("inf")])
def test_a_request_with_alpha_not_positive_and_finite_is_refused(saved, alpha):
    model, log = _load(saved)
    path = saved / "requests.jsonl"
    record = amnesiac.RequestRecord(path)
    with pytest.raises(ValueError, match="alpha must be a positive finite number"):
        record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log, alpha=alpha)
    assert not path.exists() and record.entries() == []  # nothing recorded: "a" can still be forgotten
    record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log)
    assert record.forgotten() == {"a": 0}


def test_a_removed_last_line_or_record_is_caught_by_the_head(saved):
    model, log = _load(saved)
    path = saved / "requests.jsonl"
    record = amnesiac.RequestRecord(path)
    m = record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log)
    record.serve(m, amnesiac.Request(forget_groups=("b",)), log=log)
    assert _head(path)["requests"] == 2
    good = path.read_text()
    path.write_text(good.splitlines(keepends=True)[0])  # the last line removed: the chain alone still holds
    with pytest.raises(ValueError, match="holds 1 requests but its head says 2: lines were removed"):
        amnesiac.RequestRecord(path)
    path.unlink()
    with pytest.raises(ValueError, match="holds 0 requests but its head says 2: lines were removed"):
        amnesiac.RequestRecord(path)
    path.write_text(good)
    assert len(amnesiac.RequestRecord(path).entries()) == 2


def test_a_removed_head_is_refused_unless_rewritten_on_purpose(saved):
    model, log = _load(saved)
    path = saved / "requests.jsonl"
    head = path.with_name(path.name + ".head")
    record = amnesiac.RequestRecord(path)
    m = record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log)
    record.serve(m, amnesiac.Request(forget_groups=("b",)), log=log)
    head.unlink()
    with pytest.raises(ValueError, match="head .* is missing"):
        amnesiac.RequestRecord(path)
    head.write_text("{not json")
    with pytest.raises(ValueError, match="head .* is not"):
        amnesiac.RequestRecord(path)
    assert len(amnesiac.RequestRecord(path, rewrite_head=True).entries()) == 2
    assert _head(path)["requests"] == 2


def test_an_append_interrupted_before_its_head_is_recovered(saved, monkeypatch):
    import amnesiac.record as rec

    model, log = _load(saved)
    path = saved / "requests.jsonl"
    write_head = rec._write_head

    for served in (0, 1):  # the first request of a new record, then a later one

        def killed(head, requests, last, served=served):  # killed after the line is appended, before the head
            if requests == served + 1:
                raise KeyboardInterrupt
            return write_head(head, requests, last)

        monkeypatch.setattr(rec, "_write_head", killed)
        record = amnesiac.RequestRecord(path)
        with pytest.raises(KeyboardInterrupt):
            record.serve(model, amnesiac.Request(forget_groups=(["a", "b"][served],)), log=log)
        monkeypatch.setattr(rec, "_write_head", write_head)
        assert len(path.read_text().splitlines()) == served + 1
        assert (_head(path)["requests"] if path.with_name(path.name + ".head").exists() else 0) == served
        again = amnesiac.RequestRecord(path)  # one line past the head, chained to it: accepted, head repaired
        assert len(again.entries()) == served + 1 and _head(path)["requests"] == served + 1
        model = rec.unlearn("amnesiac", model, amnesiac.Request(forget_groups=(["a", "b"][served],)), log=log)
    assert again.forgotten() == {"a": 0, "b": 1}


def test_a_record_written_before_heads_and_ledger_binding_is_read_and_adopted(saved):
    model, log = _load(saved)
    path = saved / "requests.jsonl"
    record = amnesiac.RequestRecord(path)
    m = record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log)
    m = record.serve(m, amnesiac.Request(forget_groups=("b",)), log=log)
    old, prev = [], None  # the same record as an older version wrote it: no "ledger" key, no head
    for e in record.entries():
        e = {k: v for k, v in e.items() if k != "ledger"}
        e["prev"] = prev
        e["hash"] = prev = amnesiac.record._line_hash(e)
        old.append(json.dumps(e, sort_keys=True) + "\n")
    path.write_text("".join(old))
    path.with_name(path.name + ".head").unlink()
    legacy = amnesiac.RequestRecord(path)
    assert [e["groups"] for e in legacy.entries()] == [["a"], ["b"]]
    legacy.serve(m, amnesiac.Request(forget_groups=(7,)), log=log)  # bound to the ledger from here on
    entries = legacy.entries()
    assert "ledger" not in entries[1] and entries[2]["ledger"] == amnesiac.ledger.ledger_fingerprint(log)
    assert _head(path)["requests"] == 3


def test_a_request_served_with_another_ledger_is_refused(saved):
    model, log = _load(saved)
    path = saved / "requests.jsonl"
    record = amnesiac.RequestRecord(path)
    m = record.serve(model, amnesiac.Request(forget_groups=("a",)), log=log)
    run = tiny_model()  # another run: the same groups, another data order
    other = amnesiac.DeltaLog(run, {"a": [0, 1, 2], "b": [5, 6], 7: [7]})
    amnesiac.train(run, tiny_dataset().loader(8, seed=2), torch.optim.SGD(run.parameters(), lr=0.1, momentum=0.9),
                   epochs=2, delta_log=other, progress=False)
    size = path.stat().st_size
    with pytest.raises(ValueError, match=r"ledger .* is not the one this record's requests were served from"):
        record.serve(m, amnesiac.Request(forget_groups=("b",)), log=other)
    assert path.stat().st_size == size
    _, same = _load(saved)  # the same ledger, loaded again from its file: accepted
    record.serve(m, amnesiac.Request(forget_groups=("b",)), log=same)
    assert record.entries()[1]["ledger"] == record.entries()[0]["ledger"] == amnesiac.ledger.ledger_fingerprint(log)


def test_a_model_with_batch_norm_has_a_fingerprint():
    model = torch.nn.Sequential(torch.nn.Linear(2, 3), torch.nn.BatchNorm1d(3))  # num_batches_tracked: 0-dim
    fp = amnesiac.model_fingerprint(model)
    model(torch.randn(4, 2))  # a training step's forward pass moves the running statistics and the counter
    assert len(fp) == 64 and amnesiac.model_fingerprint(model) != fp
