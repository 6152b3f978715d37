"""Refusals before anything changes: a wrong number of sample ids, optimizer options the log cannot attribute,
closure optimizers, integer storage, ledgers of another architecture or version, and storage directories that
would fill the disk or replace a ledger. Each refused call leaves the model, the optimizer and the log as they
were."""

import copy
import errno
import os
import shutil

import pytest
import torch
import torch.nn.functional as F
from helpers import attributed_loop, flat, tiny_dataset, tiny_model

import amnesiac


def _groups():
    return amnesiac.groups_by_user(torch.arange(0, 40, 2), 4, seed=1)


def _batch(i=0):
    return list(tiny_dataset().loader(8, seed=1))[i]


def _snapshot(model, inner, log):
    return flat(model).clone(), copy.deepcopy(inner.state_dict()), log.steps, log.samples_seen, log.deltas.clone()


def _unchanged(before, model, inner, log):
    params, state, steps, seen, deltas = before
    assert torch.equal(flat(model), params)
    now = inner.state_dict()
    assert now["param_groups"] == state["param_groups"] and now["state"].keys() == state["state"].keys()
    for k, v in state["state"].items():
        assert all(torch.equal(torch.as_tensor(v[f]), torch.as_tensor(now["state"][k][f])) for f in v)
    assert (log.steps, log.samples_seen) == (steps, seen) and torch.equal(log.deltas, deltas)


# ------------------------------------------------------------------------- the number of sample ids


def _wrong_ids(ids, n):
    return ids[:n] if n < len(ids) else torch.cat([ids, torch.arange(100, 100 + n - len(ids))])


@pytest.mark.parametrize("group_grads,weight_grads", [("auto", "autograd"), ("hooks", "autograd"),
                                                      ("hooks", "partitioned")])
@pytest.mark.parametrize("n", [6, 10])
def test_a_wrong_number_of_sample_ids_is_refused_at_the_step_before_anything_changes(group_grads, weight_grads, n):
    model = tiny_model()
    log = amnesiac.DeltaLog(model, _groups())
    inner = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    opt = amnesiac.AttributedOptimizer(inner, model, log, group_grads=group_grads, weight_grads=weight_grads)
    x, y, ids = _batch()
    before = _snapshot(model, inner, log)
    opt.set_batch(_wrong_ids(ids, n))
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match=rf"set_batch was given {n} sample ids but the batch has 8 rows.*one sample "
                                         r"id per row"):
        opt.step()
    _unchanged(before, model, inner, log)
    assert all(q.requires_grad for q in model.parameters())
    # the loop goes on with the right ids and gives the ledger of a run that never erred
    ref_model = tiny_model()
    ref = amnesiac.DeltaLog(ref_model, _groups())
    ref_opt = amnesiac.AttributedOptimizer(torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9), ref_model,
                                           ref, group_grads=group_grads, weight_grads=weight_grads)
    for o, m in ((opt, model), (ref_opt, ref_model)):
        o.zero_grad()
        o.set_batch(ids)
        F.cross_entropy(m(x), y).backward()
        o.step()
        o.close()
    assert torch.equal(flat(model), flat(ref_model))
    names = list(_groups())
    assert torch.equal(log.delta_vector(names), ref.delta_vector(names))


@pytest.mark.parametrize("group_grads", ["vmap", "auto"])
def test_sample_ids_that_do_not_match_the_inputs_are_refused_in_set_batch(group_grads):
    model = tiny_model()
    log = amnesiac.DeltaLog(model, _groups())
    inner = torch.optim.SGD(model.parameters(), lr=0.1)
    opt = amnesiac.AttributedOptimizer(inner, model, log, group_grads=group_grads)
    x, y, ids = _batch()
    before = _snapshot(model, inner, log)
    with pytest.raises(ValueError, match=r"set_batch was given 6 sample ids but the batch has 8 rows"):
        opt.set_batch(ids[:6], inputs=x, targets=y)
    with pytest.raises(ValueError, match=r"set_batch was given 8 sample ids but the batch has 7 rows"):
        opt.set_batch(ids, inputs=x, targets=y[:7])
    _unchanged(before, model, inner, log)
    opt.close()


# ----------------------------------------------------------------------------- optimizer options


@pytest.mark.parametrize("make,pretrain,match", [
    (lambda p: torch.optim.SGD(p, lr=0.1, maximize=True), False, "SGD updates with maximize=True"),
    (lambda p: torch.optim.Adam(p, lr=0.01, maximize=True), False, "Adam updates with maximize=True"),
    (lambda p: torch.optim.Adamax(p, lr=0.01), False, "cannot attribute Adamax updates"),
    (lambda p: torch.optim.Adam(p, lr=0.01), True, "taken 5 steps but the log saw 0.*before the optimizer's first"),
    (lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9), True, "momentum_buffer.*before the optimizer's first"),
])
def test_an_unsupported_optimizer_is_refused_before_the_real_step(make, pretrain, match):
    model = tiny_model()
    inner = make(model.parameters())
    if pretrain:  # the optimizer took steps before the log was attached: its buffers are not empty
        amnesiac.train(model, tiny_dataset().loader(8, seed=1), inner, epochs=1, progress=False)
    log = amnesiac.DeltaLog(model, _groups())
    before = _snapshot(model, inner, log)
    x, y, ids = _batch()
    with pytest.raises((ValueError, TypeError), match=match):
        opt = amnesiac.AttributedOptimizer(inner, model, log)
        opt.set_batch(ids)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    _unchanged(before, model, inner, log)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0  # refused at construction: nothing attached


def test_an_option_changed_during_training_is_refused_before_the_real_step():
    model = tiny_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.01)
    log = amnesiac.DeltaLog(model, _groups())
    opt = amnesiac.AttributedOptimizer(inner, model, log)
    x, y, ids = _batch()
    opt.set_batch(ids)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    inner.param_groups[0]["maximize"] = True
    opt.zero_grad()
    opt.set_batch(ids)
    F.cross_entropy(model(x), y).backward()
    before = _snapshot(model, inner, log)
    with pytest.raises(ValueError, match="maximize=True.*maximize=False"):
        opt.step()
    _unchanged(before, model, inner, log)
    assert log.steps == 1
    inner.param_groups[0]["maximize"] = False  # put right, the same step goes through
    opt.step()
    assert log.steps == 2
    opt.close()


def test_a_log_with_the_gradient_attribution_takes_any_optimizer():
    model = tiny_model()
    log = amnesiac.DeltaLog(model, _groups(), attribution="gradient")
    amnesiac.train(model, tiny_dataset().loader(8, seed=1), torch.optim.Adamax(model.parameters()), epochs=1,
                   delta_log=log, progress=False)
    assert log.steps == 5


def test_update_rules_check_a_whole_optimizer():
    from amnesiac.rules import check_optimizer

    model = tiny_model()
    assert check_optimizer(torch.optim.SGD(model.parameters(), lr=0.1)).name == "SGD"
    with pytest.raises(ValueError, match="maximize=True"):
        check_optimizer(torch.optim.RMSprop(model.parameters(), maximize=True))
    with pytest.raises(TypeError, match="NAdam"):
        check_optimizer(torch.optim.NAdam(model.parameters()))


# ---------------------------------------------------------------------------------------- closures


def test_an_optimizer_whose_step_needs_a_closure_is_refused_at_construction():
    model = tiny_model()
    log = amnesiac.DeltaLog(model, _groups())
    with pytest.raises(TypeError, match="LBFGS re-evaluates the loss several times per step through a closure; "
                                        "the log cannot attribute"):
        amnesiac.AttributedOptimizer(torch.optim.LBFGS(model.parameters()), model, log)

    class Reevaluating(torch.optim.SGD):
        def step(self, closure):
            return super().step(closure)

    with pytest.raises(TypeError, match="Reevaluating.step needs a closure"):
        amnesiac.AttributedOptimizer(Reevaluating(model.parameters(), lr=0.1), model, log)
    assert sum(len(m._forward_hooks) for m in model.modules()) == 0


def test_step_with_a_closure_runs_it_once_before_the_logging_work():
    ds = tiny_dataset()
    ref_model = tiny_model()
    ref = amnesiac.DeltaLog(ref_model, _groups())
    ref_opt = amnesiac.AttributedOptimizer(torch.optim.SGD(ref_model.parameters(), lr=0.1, momentum=0.9), ref_model,
                                           ref)
    attributed_loop(ref_model, ref_opt, ds.loader(8, seed=1), epochs=1)
    ref_opt.close()
    model = tiny_model()
    log = amnesiac.DeltaLog(model, _groups())
    opt = amnesiac.AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, log)
    calls = []
    for x, y, ids in ds.loader(8, seed=1):

        def closure(x=x, y=y):
            calls.append(1)
            opt.zero_grad()
            loss = F.cross_entropy(model(x), y)
            loss.backward()
            return loss

        opt.set_batch(ids)
        loss = opt.step(closure)
        assert torch.is_tensor(loss) and loss.ndim == 0
    opt.close()
    assert len(calls) == log.steps == 5
    assert torch.equal(flat(model), flat(ref_model))
    names = list(_groups())
    assert torch.equal(log.delta_vector(names), ref.delta_vector(names))


# ---------------------------------------------------------------------------------- storage dtype


@pytest.mark.parametrize("dtype", [torch.int8, torch.int64, torch.bool, torch.uint8, torch.complex64, "int8",
                                   "bool"])
def test_a_storage_dtype_that_is_not_floating_is_refused(dtype):
    with pytest.raises(ValueError, match=r"dtype.*float32, float64, bfloat16, float16"):
        amnesiac.DeltaLog(tiny_model(), {"a": [1]}, dtype=dtype)


@pytest.mark.parametrize("dtype", [torch.float16, "float16", torch.bfloat16, torch.float64])
def test_floating_storage_dtypes_are_taken_as_dtype_or_name(dtype):
    log = amnesiac.DeltaLog(tiny_model(), {"a": [1]}, dtype=dtype)
    assert log.storage_dtype == (amnesiac.storage.STORAGE_DTYPES[dtype] if isinstance(dtype, str) else dtype)


# ------------------------------------------------------------------------ states of another layout


def _trained_log(model, **kw):
    log = amnesiac.DeltaLog(model, _groups(), **kw)
    ds = tiny_dataset()
    if next(model.parameters()).dtype != ds.x.dtype:
        ds = amnesiac.ArrayDataset(ds.x.to(next(model.parameters()).dtype), ds.y, ds.ids)
    amnesiac.train(model, ds.loader(8, seed=1), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                   delta_log=log, progress=False)
    return log


def _other_arch():  # the same parameter names as tiny_model(), another classifier shape
    return tiny_model(classes=5)


@pytest.mark.parametrize("other,kw,match", [
    (_other_arch, {}, r"'classifier.weight' has shape \[4, 24\] in the saved log but \[5, 24\] in this model"),
    (lambda: tiny_model(dtype=torch.float32), {}, r"compute dtype torch.float64.*torch.float32"),
    (tiny_model, {"dtype": "float32"}, r"storage dtype torch.float64.*torch.float32"),
    (lambda: torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).double(), {},
     r"the saved log has 6 parameter tensors, this model 2"),
])
def test_a_delta_log_state_of_another_layout_is_refused_naming_the_difference(other, kw, match):
    state = _trained_log(tiny_model()).state_dict()
    target = amnesiac.DeltaLog(other(), _groups(), **kw)
    deltas = target.deltas.clone()
    with pytest.raises(ValueError, match=match):
        target.load_state_dict(state)
    assert target.steps == 0 and torch.equal(target.deltas, deltas)


@pytest.mark.parametrize("drop", [("dtypes",), ("layout",), ("layout", "shapes"), ("config", "propagate_after"),
                                  ("counters", "lazy_steps"), ("tensors", "base_moment"), ("groups",)])
def test_a_delta_log_state_missing_a_key_is_refused_as_another_version(drop):
    state = _trained_log(tiny_model()).state_dict()
    where = state
    for k in drop[:-1]:
        where = where[k]
    del where[drop[-1]]
    target = amnesiac.DeltaLog(tiny_model(), _groups())
    with pytest.raises(ValueError, match=rf"older or other version.*{'/'.join(drop)}"):
        target.load_state_dict(state)
    assert target.steps == 0


def _trained_batch_log(model):
    log = amnesiac.BatchLog(model, _groups())
    amnesiac.train(model, tiny_dataset().loader(8, seed=1), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                   delta_log=log, progress=False)
    return log


def test_a_batch_log_state_of_another_layout_or_version_is_refused():
    state = _trained_batch_log(tiny_model()).state_dict()
    target = amnesiac.BatchLog(_other_arch(), _groups())
    with pytest.raises(ValueError, match=r"'classifier.weight' has shape \[4, 24\] in the saved log but \[5, 24\]"):
        target.load_state_dict(state)
    target = amnesiac.BatchLog(tiny_model(dtype=torch.float32), _groups())
    with pytest.raises(ValueError, match=r"dtype torch.float64.*torch.float32"):
        target.load_state_dict(state)
    assert target.steps == 0 and target.changes == []
    for key in ("layout", "dtype", "steps"):
        old = dict(state)
        del old[key]
        with pytest.raises(ValueError, match=rf"older or other version.*{key}"):
            amnesiac.BatchLog(tiny_model(), _groups()).load_state_dict(old)
    same = amnesiac.BatchLog(tiny_model(), _groups()).load_state_dict(state)
    assert same.stored_steps == state["stored_steps"] > 0


# ---------------------------------------------------------------------------------------- storage


def _ledger_bytes(model, groups, itemsize=8):
    return len(groups) * amnesiac.ParamLayout.of(model).numel * itemsize


def test_storage_without_room_for_the_ledger_is_refused_before_any_file_is_made(tmp_path, monkeypatch):
    model = tiny_model()
    need = _ledger_bytes(model, _groups())
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9 - 100, 100))
    with pytest.raises(OSError, match=rf"needs {need} bytes.*100 bytes are free") as err:
        amnesiac.DeltaLog(model, _groups(), storage=tmp_path / "ledger")
    assert err.value.errno == errno.ENOSPC
    assert not any((tmp_path / "ledger").glob("*.bin"))


@pytest.mark.skipif(not hasattr(os, "posix_fallocate"), reason="no posix_fallocate on this platform")
def test_storage_files_are_allocated_when_created(tmp_path, monkeypatch):
    model = tiny_model()
    calls = []
    real = os.posix_fallocate

    def spy(fd, offset, length):
        calls.append((offset, length))
        return real(fd, offset, length)

    monkeypatch.setattr(os, "posix_fallocate", spy)
    log = amnesiac.DeltaLog(model, _groups(), storage=tmp_path / "a")
    assert calls == [(0, _ledger_bytes(model, _groups()))]
    assert (tmp_path / "a" / "deltas.bin").stat().st_size == calls[0][1] and log.deltas.abs().max() == 0

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(OSError, match=r"needs \d+ bytes.*free") as err:
        amnesiac.DeltaLog(model, _groups(), storage=tmp_path / "b")
    assert err.value.errno == errno.ENOSPC and not (tmp_path / "b" / "deltas.bin").exists()


def test_the_moments_file_is_checked_too(tmp_path, monkeypatch):
    model = tiny_model()
    log = amnesiac.DeltaLog(model, _groups(), storage=tmp_path / "l")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: shutil._ntuple_diskusage(10**9, 10**9, 0))
    with pytest.raises(OSError, match=r"moments.bin.*needs \d+ bytes"):
        amnesiac.train(model, tiny_dataset().loader(8, seed=1), torch.optim.Adam(model.parameters()), epochs=1,
                       delta_log=log, progress=False)


def test_a_storage_directory_holding_a_ledger_is_not_replaced_unless_asked(tmp_path):
    where = tmp_path / "ledger"
    log = _trained_log(tiny_model(), storage=where, dtype="float32")
    log.finalize()
    assert sorted(p.name for p in where.iterdir()) == ["deltas.float32.bin"]
    kept = log.delta_vector(list(_groups())).clone()
    for name in ("deltas.float32.bin", "deltas.bin", "moments.bin"):
        (where / name).touch()
        with pytest.raises(FileExistsError, match=rf"{where}.*{name}.*overwrite=True"):
            amnesiac.DeltaLog(tiny_model(), _groups(), storage=where)
    assert torch.equal(log.delta_vector(list(_groups())), kept)
    fresh = amnesiac.DeltaLog(tiny_model(), _groups(), storage=where, overwrite=True)
    assert sorted(p.name for p in where.iterdir()) == ["deltas.bin"]  # the stale files are gone
    assert float(fresh.deltas.abs().max()) == 0.0
