"""Durable ledgers: a training interrupted at any step and resumed from a checkpoint (model, optimizer, logs,
data order) gives the ledger of the uninterrupted run bit for bit; damaged files are refused."""

import pytest
import torch
from helpers import OPTIMIZERS, attributed_loop, fast_only, flat, tiny_dataset, tiny_model

import amnesiac

GROUPS = amnesiac.groups_by_user(torch.arange(0, 40, 2), 4, seed=1)
SINGLES = amnesiac.groups_per_sample([1, 3, 5, 9])


def _fresh(opt_name):
    model = tiny_model()
    width = amnesiac.ParamLayout.of(model).numel
    logs = [amnesiac.DeltaLog(model, GROUPS, segment_bytes=3 * 8 * width * 2),  # lazy segments of a few steps
            amnesiac.DeltaLog(model, SINGLES, p=0.3),
            amnesiac.BatchLog(model, SINGLES),
            amnesiac.DeltaLog(model, GROUPS, lazy_decay=True, segment_bytes=3 * 8 * width * 2)]  # decay, lazily
    inner = OPTIMIZERS[opt_name](model.parameters())
    return model, logs, inner


@pytest.mark.parametrize("opt_name", fast_only(["adam", "momentum-dampening-wd", "rmsprop-momentum"], ["adam"]))
def test_resuming_from_a_checkpoint_gives_the_uninterrupted_ledger_bit_for_bit(tmp_path, opt_name):
    ds = tiny_dataset()
    per_epoch = len(ds.loader(8))
    total, cut = 3 * per_epoch, per_epoch + 2  # interrupted in the middle of the second epoch
    model, logs, inner = _fresh(opt_name)
    opt = amnesiac.AttributedOptimizer(inner, model, logs)
    attributed_loop(model, opt, ds.loader(8, seed=1), start=0, stop=total)
    opt.close()
    # the same training, interrupted and resumed from files
    model2, logs2, inner2 = _fresh(opt_name)
    opt2 = amnesiac.AttributedOptimizer(inner2, model2, logs2)
    attributed_loop(model2, opt2, ds.loader(8, seed=1), start=0, stop=cut)
    opt2.close()
    torch.save({"model": model2.state_dict(), "optimizer": inner2.state_dict()}, tmp_path / "train.pt")
    for i, log in enumerate(logs2):
        amnesiac.save_ledger(tmp_path / f"log{i}.pt", log)
    model3, logs3, inner3 = _fresh(opt_name)
    ckpt = torch.load(tmp_path / "train.pt", weights_only=True)
    model3.load_state_dict(ckpt["model"])
    inner3.load_state_dict(ckpt["optimizer"])
    for i, log in enumerate(logs3):
        amnesiac.load_ledger(tmp_path / f"log{i}.pt", log)
    opt3 = amnesiac.AttributedOptimizer(inner3, model3, logs3)
    attributed_loop(model3, opt3, ds.loader(8, seed=1), start=cut, stop=total)
    opt3.close()
    assert torch.equal(flat(model3), flat(model))
    names = [list(GROUPS), list(SINGLES), list(SINGLES), list(GROUPS)]
    for a, b, n in zip(logs, logs3, names):
        assert a.delta_vector(n).abs().max() > 0
        for k in n:
            assert torch.equal(a.delta_vector([k]), b.delta_vector([k])), k
    assert torch.equal(logs[0].remainder_vector, logs3[0].remainder_vector)


def test_a_damaged_or_mismatched_ledger_file_is_refused_and_the_log_is_untouched(tmp_path):
    model = tiny_model()
    log = amnesiac.DeltaLog(model, GROUPS)
    amnesiac.train(model, tiny_dataset().loader(8, seed=1), torch.optim.Adam(model.parameters(), lr=0.01), epochs=1,
                   delta_log=log, progress=False)
    path = amnesiac.save_ledger(tmp_path / "log.pt", log)
    good = path.read_bytes()
    target = amnesiac.DeltaLog(tiny_model(), GROUPS)
    path.write_bytes(good[: len(good) // 2])
    with pytest.raises(ValueError, match="not a readable ledger file.*truncated"):
        amnesiac.load_ledger(path, target)
    damaged = bytearray(good)
    i = good.index(b"amnesiac-ledger-1") + 20_000 if len(good) > 40_000 else len(good) - 300
    damaged[i] ^= 0xFF
    path.write_bytes(bytes(damaged))
    with pytest.raises(ValueError):
        amnesiac.load_ledger(path, target)
    assert target.steps == 0 and float(target.deltas.abs().max()) == 0.0
    path.write_bytes(good)
    with pytest.raises(ValueError, match="tracks other groups"):
        amnesiac.load_ledger(path, amnesiac.DeltaLog(tiny_model(), SINGLES))
    with pytest.raises(ValueError, match="other settings"):
        amnesiac.load_ledger(path, amnesiac.DeltaLog(tiny_model(), GROUPS, attribution="gradient"))
    assert amnesiac.load_ledger(path, target).steps == log.steps


@pytest.mark.parametrize("opt_name", fast_only(["adam", "momentum-dampening-wd"], ["adam"]))
def test_a_memory_mapped_ledger_equals_the_in_memory_one(tmp_path, opt_name):
    ds = tiny_dataset()
    logs = {}
    for where in ("ram", "disk"):
        model = tiny_model()
        kw = {"storage": tmp_path / "ledger"} if where == "disk" else {}
        logs[where] = amnesiac.DeltaLog(model, SINGLES, dtype="float32", **kw)
        amnesiac.train(model, ds.loader(8, seed=1), OPTIMIZERS[opt_name](model.parameters()), epochs=2,
                       delta_log=logs[where], progress=False)
    disk, ram = logs["disk"], logs["ram"]
    files = {p.name: p.stat().st_size for p in (tmp_path / "ledger").iterdir()}
    assert files["deltas.bin"] == 8 * len(SINGLES) * amnesiac.ParamLayout.of(tiny_model()).numel  # float64 rows
    assert torch.equal(disk.delta_vector(list(SINGLES)), ram.delta_vector(list(SINGLES)))
    disk.finalize()
    ram.finalize()
    assert sorted(p.name for p in (tmp_path / "ledger").iterdir()) == ["deltas.float32.bin"]
    for k in SINGLES:
        assert torch.equal(disk.delta_vector([k]), ram.delta_vector([k]))
    with pytest.raises(ValueError, match="memory-mapped storage is on the CPU"):
        amnesiac.DeltaLog(tiny_model(), SINGLES, storage=tmp_path / "x", device="meta")


def test_a_finalized_masked_ledger_reloads_with_its_bytes_and_deltas(tmp_path):
    model = tiny_model()
    log = amnesiac.DeltaLog(model, SINGLES, p=0.3)
    amnesiac.train(model, tiny_dataset().loader(8, seed=1), torch.optim.Adam(model.parameters(), lr=0.01), epochs=1,
                   delta_log=log, progress=False)
    log.finalize()  # drops the cached mask indices (regenerated from their seeds when read)
    fresh = amnesiac.DeltaLog(tiny_model(), SINGLES, p=0.3)  # a new log caches them
    assert fresh.nbytes > log.nbytes
    amnesiac.load_ledger(amnesiac.save_ledger(tmp_path / "log.pt", log), fresh)
    assert fresh.nbytes == log.nbytes and fresh.finalized
    for k in SINGLES:
        assert torch.equal(fresh.delta_vector([k]), log.delta_vector([k]))
    kept = amnesiac.DeltaLog(tiny_model(), SINGLES, p=0.3).finalize(keep_masks=True)
    again = amnesiac.load_ledger(amnesiac.save_ledger(tmp_path / "kept.pt", kept),
                                 amnesiac.DeltaLog(tiny_model(), SINGLES, p=0.3))
    assert again.nbytes == kept.nbytes


@pytest.mark.parametrize("opt_name", fast_only(["adam", "momentum-dampening-wd"], ["adam"]))
def test_training_one_epoch_per_call_equals_one_call_for_every_epoch(opt_name):
    """The experiment runner trains one epoch per call (to checkpoint between them): the same model and ledgers
    bit for bit as one call over every epoch, the data order continuing from the loader's epoch counter."""
    ds = tiny_dataset()
    model, logs, inner = _fresh(opt_name)
    amnesiac.train(model, ds.loader(8, seed=1), inner, epochs=3, delta_log=logs, progress=False)
    model2, logs2, inner2 = _fresh(opt_name)
    loader = ds.loader(8, seed=1)
    for _ in range(3):
        amnesiac.train(model2, loader, inner2, epochs=1, delta_log=logs2, progress=False)
    assert torch.equal(flat(model2), flat(model))
    for a, b, n in zip(logs, logs2, [list(GROUPS), list(SINGLES), list(SINGLES)]):
        for k in n:
            assert torch.equal(a.delta_vector([k]), b.delta_vector([k])), k
