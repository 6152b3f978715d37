"""DistributedDataParallel with a sharded ledger: 2 CPU processes (gloo, loopback) give, to 1e-10 in float64, the
single-process ledger of the same global batches, for SGD with momentum and Adam, class and per-sample groups."""

import json
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from helpers import flat, free_port, tiny_dataset, tiny_model

import amnesiac

WORLD, GLOBAL_BATCH, EPOCHS = 2, 16, 2
# the tests that spawn two processes (mp.spawn) take 10-20 s each on 2 CPU cores: outside the fast loop
TWO_PROCESSES = pytest.mark.slow


def _spawn_json(worker, out):
    """Run ``worker(rank, port, out)`` on both ranks; each rank's JSON report, in rank order."""
    mp.spawn(worker, args=(free_port(), out), nprocs=WORLD, join=True)
    return [json.loads((out / f"rank{r}.json").read_text()) for r in range(WORLD)]



def _groups(kind):
    ds = tiny_dataset()
    return amnesiac.groups_by_class(ds) if kind == "class" else amnesiac.groups_per_sample(range(0, 40, 3))


def _optimizer(name, params):
    if name == "momentum":
        return torch.optim.SGD(params, lr=0.1, momentum=0.9, weight_decay=5e-4)
    return torch.optim.Adam(params, lr=0.01)


def _read(log, names):
    return {"deltas": torch.stack([log.delta_vector([g]) for g in names]), "remainder": log.remainder_vector}


def _single(kind, opt_name, clip):
    ds, model = tiny_dataset(), tiny_model()
    log = amnesiac.DeltaLog(model, _groups(kind))
    opt = amnesiac.AttributedOptimizer(_optimizer(opt_name, model.parameters()), model, log)
    for _ in range(EPOCHS):
        for x, y, ids in ds.loader(GLOBAL_BATCH, seed=1):
            opt.zero_grad()
            opt.set_batch(ids)
            F.cross_entropy(model(x), y).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
    opt.close()
    return {**_read(log, log.group_names), "theta": flat(model), "names": log.group_names, "model": model, "log": log}


def _join(rank, port, kind, optimizer_fn):
    """This process's part of the job: the data, its DDP replica, the sharded log and the wrapped optimizer."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    ds, model = tiny_dataset(), tiny_model()
    ddp = torch.nn.parallel.DistributedDataParallel(model)
    log = amnesiac.ShardedDeltaLog(model, _groups(kind))
    return ds, model, ddp, log, amnesiac.AttributedOptimizer(optimizer_fn(model.parameters()), model, log)


def _train_slices(rank, ds, model, ddp, opt, clip=None):
    """The single-process loop of `_single`, each rank on its slice of every global batch."""
    amnesiac.attach_ddp(ddp, opt)
    for _ in range(EPOCHS):
        for x, y, ids in ds.loader(GLOBAL_BATCH, seed=1):  # every rank sees the global batch, takes its slice
            part = slice(rank * len(ids) // WORLD, (rank + 1) * len(ids) // WORLD)
            opt.zero_grad()
            opt.set_batch(ids[part])
            F.cross_entropy(ddp(x[part]), y[part]).backward()
            if clip:
                torch.nn.utils.clip_grad_norm_(model.parameters(), clip)
            opt.step()
    opt.close()


def _worker(rank, port, kind, opt_name, clip, out):
    ds, model, ddp, log, opt = _join(rank, port, kind, lambda p: _optimizer(opt_name, p))
    try:
        _train_slices(rank, ds, model, ddp, opt, clip)
        got = {**_read(log, log.table.names), "theta": flat(model), "owned": log.owned_groups(),
               "bytes_sent": log.bytes_sent, "steps": log.steps_logged}
        torch.save(got, out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@TWO_PROCESSES
@pytest.mark.parametrize("kind", ["class", "samples"])
@pytest.mark.parametrize("opt_name,clip", [("momentum", None), ("adam", None), ("momentum", 0.5)],
                         ids=["momentum", "adam", "momentum-clipped"])
def test_two_ddp_processes_give_the_single_process_ledger(tmp_path, kind, opt_name, clip):
    want = _single(kind, opt_name, clip)
    mp.spawn(_worker, args=(free_port(), kind, opt_name, clip, tmp_path), nprocs=WORLD, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(WORLD)]
    for got in ranks:
        assert (got["theta"] - want["theta"]).abs().max() < 1e-10
        assert (got["deltas"] - want["deltas"]).abs().max() < 1e-10
        assert (got["remainder"] - want["remainder"]).abs().max() < 1e-10
    assert want["deltas"].abs().max() > 1e-3  # the groups did move
    # sharded: each group on exactly one rank, round robin; shares moved once, never the full matrix
    names = want["names"]
    assert [g for r in ranks for g in r["owned"]] != [] and sorted(map(str, ranks[0]["owned"] + ranks[1]["owned"])) \
        == sorted(map(str, names))
    assert ranks[0]["owned"] == names[0::2] and ranks[1]["owned"] == names[1::2]
    P, per_step = want["theta"].numel(), ranks[0]["bytes_sent"] / ranks[0]["steps"]
    assert 0 < per_step <= len(names) * P * 8


FORGET, ALPHA = ("class1", "class2"), 0.5  # class1 lives on rank 1, class2 on rank 0: both ranks contribute


def _unlearn_worker(rank, port, out):
    ds, model, ddp, log, opt = _join(rank, port, "class", lambda p: _optimizer("adam", p))
    try:
        _train_slices(rank, ds, model, ddp, opt)
        before = flat(model)
        new = amnesiac.unlearn_sharded(model, amnesiac.Request(forget_groups=FORGET), log=log, alpha=ALPHA)
        try:
            amnesiac.unlearn_sharded(model, amnesiac.Request(forget_groups=FORGET), log=log.local)
            refused = ""
        except TypeError as err:
            refused = str(err)
        torch.save({"new": flat(new), "before": before, "after": flat(model), "refused": refused},
                   out / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@TWO_PROCESSES
def test_unlearn_sharded_gives_every_rank_the_single_process_unlearned_model(tmp_path):
    """The public path from a sharded ledger: on every rank, what amnesiac.unlearn('amnesiac') gives from the
    single-process ledger of the same global batches; the trained model is left as it was."""
    want = _single("class", "adam", None)
    expected = flat(amnesiac.unlearn("amnesiac", want["model"], amnesiac.Request(forget_groups=FORGET),
                                     log=want["log"], alpha=ALPHA))
    mp.spawn(_unlearn_worker, args=(free_port(), tmp_path), nprocs=WORLD, join=True)
    for r in range(WORLD):
        got = torch.load(tmp_path / f"rank{r}.pt", weights_only=True)
        assert (got["new"] - expected).abs().max() < 1e-10
        assert torch.equal(got["before"], got["after"])
        assert (got["new"] - got["before"]).abs().max() > 1e-4  # it did subtract something
        assert "needs log=<a ShardedDeltaLog>, got DeltaLog" in got["refused"]


def _mismatch_worker(rank, port, out):
    ds, model, ddp, log, opt = _join(rank, port, "class", lambda p: torch.optim.SGD(p, lr=0.1))
    try:
        said = []
        try:  # the ranks ask for different groups: each would add its own part of a different sum
            log.delta_vector(["class0"] if rank == 0 else ["class1", "class3"])
            said.append("")
        except ValueError as err:
            said.append(str(err))
        if said[0]:  # (without the check the next request would leave rank 0 waiting for rank 1 forever)
            try:
                log.delta_vector(["class0"] if rank == 0 else ["nope"])
                said.append("")
            except (ValueError, KeyError) as err:
                said.append(f"{type(err).__name__}: {err}")
            same = log.delta_vector(["class2", "class1"] if rank == 0 else ["class1", "class2"])  # order is free
            said.append(str(tuple(same.shape)))
        (out / f"rank{rank}.json").write_text(json.dumps(said))
    finally:
        dist.destroy_process_group()


@TWO_PROCESSES
def test_ranks_asking_for_different_groups_get_a_value_error_on_every_rank(tmp_path):
    said = _spawn_json(_mismatch_worker, tmp_path)
    assert "ranks disagree" in said[0][0] and "rank 0 of 2 asked for ['class0'], rank(s) [1]" in said[0][0]
    assert "ranks disagree" in said[1][0] and "rank 1 of 2 asked for ['class1', 'class3'], rank(s) [0]" in said[1][0]
    # a group unknown on one rank: KeyError there, ValueError on the other, and nobody is left waiting
    assert said[0][1].startswith("ValueError") and "ranks disagree" in said[0][1]
    assert said[1][1].startswith("KeyError") and "nope" in said[1][1]
    n = sum(q.numel() for q in tiny_model().parameters())
    assert said[0][2] == said[1][2] == str((n,))  # the same groups in another order are the same request


def test_a_sharded_log_needs_an_initialised_job_and_a_group_per_rank():
    with pytest.raises(RuntimeError, match="init_process_group"):
        amnesiac.ShardedDeltaLog(tiny_model(), {"a": [0]})


def _unattached_worker(rank, port, out):
    ds, model, ddp, log, opt = _join(rank, port, "class", lambda p: torch.optim.SGD(p, lr=0.1))
    try:
        x, y, ids = next(iter(ds.loader(GLOBAL_BATCH, seed=1)))
        part = slice(rank * 8, rank * 8 + 8)
        opt.set_batch(ids[part])
        F.cross_entropy(ddp(x[part]), y[part]).backward()
        try:
            opt.step()
            message = ""
        except RuntimeError as err:
            message = str(err)
        (out / f"rank{rank}.txt").write_text(message)
    finally:
        dist.destroy_process_group()


@TWO_PROCESSES
def test_without_attach_the_averaged_gradient_is_refused_with_the_fix(tmp_path):
    mp.spawn(_unattached_worker, args=(free_port(), tmp_path), nprocs=WORLD, join=True)
    for r in range(WORLD):
        assert "call amnesiac.attach_ddp(ddp_model, optimizer)" in (tmp_path / f"rank{r}.txt").read_text()


def _storage_and_late_worker(rank, port, out):
    """A memory-mapped sharded log keeps each rank's shard in its own folder; an optimizer that stepped before the
    log was attached is refused before the real step, on every rank."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    torch.set_num_threads(1)
    try:
        model = tiny_model()
        log = amnesiac.ShardedDeltaLog(model, _groups("class"), storage=out / "ledger")
        said = [sorted(p.name for p in (out / "ledger" / f"rank{rank}").iterdir())]
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        ds = tiny_dataset()
        x, y, _ = next(iter(ds.loader(GLOBAL_BATCH, seed=1)))
        F.cross_entropy(model(x), y).backward()
        opt.step()  # a step the log never saw
        try:
            amnesiac.AttributedOptimizer(opt, model, log)
            said.append("")
        except ValueError as err:
            said.append(str(err))
        (out / f"rank{rank}.json").write_text(json.dumps(said))
    finally:
        dist.destroy_process_group()


@TWO_PROCESSES
def test_a_sharded_log_stores_each_shard_apart_and_refuses_a_late_optimizer_before_its_step(tmp_path):
    for files, refusal in _spawn_json(_storage_and_late_worker, tmp_path):
        assert files == ["deltas.bin"]
        assert "attach the log before the optimizer's first step" in refusal
