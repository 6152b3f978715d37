"""Ledger files on a bad day: a full disk, a killed save, a crash after the rename, a file from another version;
and the fingerprint that binds a request record to one ledger."""

import os
import stat

import pytest
import torch
from helpers import tiny_dataset, tiny_model

import amnesiac
from amnesiac.ledger import ledger_fingerprint

GROUPS = {"a": [0, 1, 2], "b": [5, 6], 7: [7]}


def _trained(kind=amnesiac.DeltaLog, seed=1, **kw):
    model = tiny_model()
    log = kind(model, GROUPS, **kw)
    amnesiac.train(model, tiny_dataset().loader(8, seed=seed),
                   torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), epochs=1, delta_log=log, progress=False)
    return log


def _temporaries(folder):
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_full_disk_during_save_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = amnesiac.save_ledger(tmp_path / "log.pt", _trained())
    old = path.read_bytes()
    save = torch.save

    def full(obj, f, *args, **kw):
        if isinstance(f, (str, os.PathLike)):  # the temporary file beside the ledger
            with open(f, "wb") as out:
                out.write(b"half a ledger")
            raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 64 vs 0 "
                               "PytorchStreamWriter failed writing file data/0: file write failed")
        return save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", full)
    with pytest.raises(OSError, match=r"(?s)could not write .*log\.pt.*disk is full.*old file at .*log\.pt is "
                                      r"intact") as err:
        amnesiac.save_ledger(path, _trained(seed=2))
    assert "file write failed" in str(err.value)
    assert path.read_bytes() == old and _temporaries(tmp_path) == []
    with pytest.raises(OSError, match="no file was there before"):
        amnesiac.save_ledger(tmp_path / "new.pt", _trained(seed=2))
    assert not (tmp_path / "new.pt").exists() and _temporaries(tmp_path) == []


def test_a_killed_save_leaves_a_temporary_that_the_next_save_removes(tmp_path):
    stale = [".log.pt.k1ll3d_x.tmp", ".log.pt.abcdefgh.tmp"]  # what a save killed mid-write leaves
    kept = [".log.pt.head.abcdefgh.tmp", ".other.pt.abcdefgh.tmp", "log.pt.abcdefgh.tmp", ".log.pt.abc.tmp",
            ".log.pt.abcdefgh.tmp.bak", "notes.tmp"]  # not ours, or another file's
    for name in stale + kept:
        (tmp_path / name).write_bytes(b"x" * 100)
    (tmp_path / ".log.pt.dirdirdi.tmp").mkdir()  # only plain files are removed
    amnesiac.save_ledger(tmp_path / "log.pt", _trained())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept + ["log.pt", ".log.pt.dirdirdi.tmp"])


def test_a_save_is_fsynced_before_the_rename_and_the_directory_after(tmp_path, monkeypatch):
    events = []
    fsync, replace = os.fsync, os.replace

    def logged_fsync(fd):
        events.append("fsync dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "fsync file")
        return fsync(fd)

    def logged_replace(a, b):
        events.append("rename")
        return replace(a, b)

    monkeypatch.setattr(os, "fsync", logged_fsync)
    monkeypatch.setattr(os, "replace", logged_replace)
    amnesiac.save_ledger(tmp_path / "log.pt", _trained())
    assert events == ["fsync file", "rename", "fsync dir"]


def test_a_ledger_file_of_another_format_or_missing_entries_is_refused_by_name(tmp_path):
    good = torch.load(amnesiac.save_ledger(tmp_path / "log.pt", _trained()), weights_only=True)
    target = amnesiac.DeltaLog(tiny_model(), GROUPS)
    cases = {
        "v0.pt": ({**good, "format": "amnesiac-ledger-0"}, r"v0\.pt.*format 'amnesiac-ledger-0'"),
        "nosum.pt": ({k: v for k, v in good.items() if k != "sha256"}, r"nosum\.pt.*amnesiac-ledger-1.*'sha256'"),
        "nopayload.pt": ({k: v for k, v in good.items() if k != "payload"},
                         r"nopayload\.pt.*amnesiac-ledger-1.*'payload'"),
        "noformat.pt": ({k: v for k, v in good.items() if k != "format"}, r"noformat\.pt.*no 'format'"),
        "raw.pt": (_trained().state_dict(), r"raw\.pt.*log\.state_dict\(\).*load_state_dict"),
        "list.pt": ([1, 2], r"list\.pt.*not a ledger written by save_ledger \(it holds a list\)"),
    }
    for name, (obj, match) in cases.items():
        torch.save(obj, tmp_path / name)
        with pytest.raises(ValueError, match=match):
            amnesiac.load_ledger(tmp_path / name, target)
    assert target.steps == 0


@pytest.mark.parametrize("kind", [amnesiac.DeltaLog, amnesiac.BatchLog])
def test_the_ledger_fingerprint_names_one_ledger(tmp_path, kind):
    log = _trained(kind)
    fp = ledger_fingerprint(log)
    assert len(fp) == 64 and ledger_fingerprint(log) == fp
    log.delta_vector(["a"])  # reading out settles a lazy segment: the same ledger, the same fingerprint
    assert ledger_fingerprint(log) == fp
    loaded = amnesiac.load_ledger(amnesiac.save_ledger(tmp_path / "log.pt", log), kind(tiny_model(), GROUPS))
    assert ledger_fingerprint(loaded) == fp
    assert ledger_fingerprint(_trained(kind, seed=2)) != fp  # another run
    assert ledger_fingerprint(kind(tiny_model(), GROUPS)) != fp  # an empty one
    assert ledger_fingerprint(kind(tiny_model(), {"a": [0, 1, 2], "b": [5, 6], "7": [7]})) \
        != ledger_fingerprint(kind(tiny_model(), GROUPS))  # group 7, group "7"
    if kind is amnesiac.DeltaLog:
        done = log.finalize()
        assert ledger_fingerprint(done) == ledger_fingerprint(done) != fp  # finalizing changes the stored bytes
        mapped = _trained(kind, storage=tmp_path / "mapped")
        assert ledger_fingerprint(mapped) == ledger_fingerprint(_trained(kind))


def test_tensor_bytes_are_the_values_bytes_in_c_order_for_any_dtype_and_layout():
    import numpy as np

    from amnesiac.ledger import tensor_bytes

    gen = torch.Generator().manual_seed(0)
    cases = [torch.randn(3, 4, generator=gen).t(), torch.randn(5, dtype=torch.float64, generator=gen)[::2],
             torch.arange(7), torch.tensor(2.5), torch.zeros(0)]
    for t in cases:
        assert tensor_bytes(t) == np.ascontiguousarray(t.numpy()).tobytes()
    half = torch.arange(4, dtype=torch.bfloat16)  # no NumPy dtype: compare through its 16-bit pattern
    assert tensor_bytes(half) == half.view(torch.int16).numpy().tobytes()
