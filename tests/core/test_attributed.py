"""AttributedOptimizer: a hand-written loop gives train()'s ledger, the optimizer's interface is kept,
schedulers drive it, hooks are removed, and bad steps are refused before anything changes."""

import pytest
import torch
import torch.nn.functional as F
from helpers import attributed_loop, flat, tiny_dataset, tiny_model, user_groups

import amnesiac


def _schedule(opt):
    return torch.optim.lr_scheduler.StepLR(opt, step_size=2, gamma=0.5)


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
    lambda p: torch.optim.AdamW(p, lr=0.01, weight_decay=0.1),
    lambda p: torch.optim.RMSprop(p, lr=0.01, momentum=0.5),
])
def test_a_hand_written_loop_with_a_scheduler_gives_the_ledger_of_train(make):
    ds = tiny_dataset()
    # train() with a per-step scheduler
    ref_model = tiny_model()
    ref_log = amnesiac.DeltaLog(ref_model, user_groups())
    ref_opt = make(ref_model.parameters())
    amnesiac.train(ref_model, ds.loader(8, seed=1), ref_opt, epochs=2, delta_log=ref_log, progress=False,
                   scheduler=_schedule(ref_opt))
    # the same training in a plain PyTorch loop, the scheduler built on the wrapper
    model = tiny_model()
    log = amnesiac.DeltaLog(model, user_groups())
    opt = amnesiac.AttributedOptimizer(make(model.parameters()), model, log)
    attributed_loop(model, opt, ds.loader(8, seed=1), epochs=2, scheduler=_schedule(opt))
    opt.close()
    assert opt.param_groups[0]["lr"] == ref_opt.param_groups[0]["lr"] < ref_opt.defaults["lr"]
    assert torch.equal(flat(model), flat(ref_model))
    names = list(user_groups())
    assert log.delta_vector(names).abs().max() > 1e-6
    for k in names:
        assert torch.equal(log.delta_vector([k]), ref_log.delta_vector([k])), k
    assert torch.equal(log.remainder_vector, ref_log.remainder_vector)


def test_the_wrapper_keeps_the_optimizers_interface():
    model = tiny_model()
    inner = torch.optim.Adam(model.parameters(), lr=0.01)
    opt = amnesiac.AttributedOptimizer(inner, model, amnesiac.DeltaLog(model, {"a": [1]}))
    assert isinstance(opt, torch.optim.Optimizer)
    assert opt.param_groups is inner.param_groups and opt.state is inner.state and opt.defaults is inner.defaults
    x, y, ids = next(iter(tiny_dataset().loader(8, seed=1)))
    opt.set_batch(ids)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert opt.state_dict()["state"].keys() == inner.state_dict()["state"].keys() and len(opt.state) > 0
    opt.zero_grad()
    assert all(q.grad is None for q in model.parameters())
    fresh = torch.optim.Adam(tiny_model().parameters(), lr=0.01)
    fresh.load_state_dict(opt.state_dict())
    assert int(fresh.state_dict()["state"][0]["step"]) == 1
    with pytest.raises(RuntimeError, match="cannot be added"):
        opt.add_param_group({"params": [torch.zeros(1, requires_grad=True)]})
    with pytest.raises(TypeError, match="already wrapped"):
        amnesiac.AttributedOptimizer(opt, model, [])
    opt.close()


def _hooks(model):
    return sum(len(m._forward_hooks) for m in model.modules())


def test_close_removes_the_hooks_and_refuses_more_steps():
    model = tiny_model()
    with amnesiac.AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                                      amnesiac.DeltaLog(model, {"a": [1]})) as opt:
        assert _hooks(model) > 0
    assert _hooks(model) == 0
    with pytest.raises(RuntimeError, match="closed"):
        opt.set_batch(torch.arange(4))


def test_a_non_finite_gradient_stops_before_the_step_and_keeps_the_ledger():
    ds = tiny_dataset()
    model = tiny_model()
    log = amnesiac.DeltaLog(model, user_groups())
    opt = amnesiac.AttributedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01), model, log)
    loader = ds.loader(8, seed=1)
    batches = list(loader)
    for x, y, ids in batches[:2]:
        opt.zero_grad()
        opt.set_batch(ids)
        F.cross_entropy(model(x), y).backward()
        opt.step()
    before = (flat(model).clone(), log.delta_vector(list(user_groups())).clone(), log.steps)
    x, y, ids = batches[2]
    x = x.clone()
    x[0] = float("nan")
    opt.zero_grad()
    opt.set_batch(ids)
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(FloatingPointError, match="NaN or infinity.*last finite step"):
        opt.step()
    assert torch.equal(flat(model), before[0]) and log.steps == before[2] == 2
    assert torch.equal(log.delta_vector(list(user_groups())), before[1])
    # training goes on from the last good step
    x, y, ids = batches[3]
    opt.zero_grad()
    opt.set_batch(ids)
    F.cross_entropy(model(x), y).backward()
    opt.step()
    assert log.steps == 3
    opt.close()


def test_a_non_finite_loss_in_train_is_reported():
    ds = tiny_dataset()
    x = ds.x.clone()
    x[5] = float("inf")
    bad = amnesiac.ArrayDataset(x, ds.y, ds.ids, "tiny")
    model = tiny_model()
    log = amnesiac.DeltaLog(model, {"a": [5]})
    with pytest.raises(FloatingPointError, match="NaN or infinity"):
        amnesiac.train(model, bad.loader(8, seed=1), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                       delta_log=log, progress=False)
    assert _hooks(model) == 0  # train() closed the wrapper on the way out


def test_set_batch_is_required_and_checked():
    model = tiny_model()
    opt = amnesiac.AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                                       amnesiac.DeltaLog(model, {"a": [1]}))
    x, y, ids = next(iter(tiny_dataset().loader(8, seed=1)))
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(RuntimeError, match="set_batch"):
        opt.step()
    with pytest.raises(ValueError, match="non-negative"):
        opt.set_batch(torch.tensor([0, -3]))
    with pytest.raises(TypeError, match="integers"):
        opt.set_batch(torch.tensor([0.0, 1.0]))
    opt.close()


def test_the_vmap_path_needs_the_inputs_and_agrees_with_the_hooks():
    ds = tiny_dataset()
    logs = {}
    for mode in ("hooks", "vmap"):
        model = tiny_model()
        log = amnesiac.DeltaLog(model, user_groups())
        opt = amnesiac.AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, log,
                                           group_grads=mode)
        for x, y, ids in ds.loader(8, seed=1):
            opt.zero_grad()
            if mode == "vmap" and "missing" not in logs:
                opt.set_batch(ids)
                F.cross_entropy(model(x), y).backward()
                with pytest.raises(ValueError, match="inputs=x"):
                    opt.step()
                logs["missing"] = True
                opt.zero_grad()
            opt.set_batch(ids, inputs=x, targets=y)
            F.cross_entropy(model(x), y).backward()
            opt.step()
        opt.close()
        logs[mode] = log
    names = list(user_groups())
    torch.testing.assert_close(logs["vmap"].delta_vector(names), logs["hooks"].delta_vector(names),
                               rtol=1e-10, atol=1e-13)


def test_train_checks_its_scheduler():
    model = tiny_model()
    other = torch.optim.SGD(tiny_model().parameters(), lr=0.1)
    with pytest.raises(ValueError, match="another optimizer"):
        amnesiac.train(model, tiny_dataset().loader(8), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                       progress=False, scheduler=_schedule(other))


def _clipped_oracle(groups, ds, max_norm, lr=0.1, mu=0.9):
    """SGD with momentum and global-norm clipping, each group's delta by a loop over single samples: the shares
    are multiplied by the step's realised clip coefficient, min(1, max_norm / (||g|| + 1e-6))."""
    model = tiny_model()
    params = list(model.parameters())
    opt = torch.optim.SGD(params, lr=lr, momentum=mu)
    owner = {int(i): k for k, ids in groups.items() for i in torch.as_tensor(ids).tolist()}
    P = sum(q.numel() for q in params)
    delta = {k: torch.zeros(P, dtype=torch.float64) for k in groups}
    buf = {k: torch.zeros(P, dtype=torch.float64) for k in groups}
    clipped = 0
    for step, (x, y, ids) in enumerate(ds.loader(8, seed=1), start=1):
        share = {k: torch.zeros(P, dtype=torch.float64) for k in groups}
        for i in range(len(y)):
            k = owner.get(int(ids[i]))
            if k is not None:
                g = torch.autograd.grad(F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]), params)
                share[k] += torch.cat([t.reshape(-1) for t in g]) / len(y)
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        norm = float(torch.cat([q.grad.reshape(-1) for q in params]).norm())
        coef = min(1.0, max_norm / (norm + 1e-6))
        clipped += coef < 1
        torch.nn.utils.clip_grad_norm_(params, max_norm)
        opt.step()
        for k in groups:
            s = coef * share[k]
            buf[k] = s.clone() if step == 1 else mu * buf[k] + s
            delta[k] -= lr * buf[k]
    return delta, clipped


@pytest.mark.parametrize("weight_grads", ["autograd", "partitioned"])
def test_global_norm_clipping_is_attributed_exactly(weight_grads):
    ds = tiny_dataset()
    groups = user_groups()
    want, clipped = _clipped_oracle(groups, ds, max_norm=0.3)
    assert clipped >= 3  # the clipping was really active on several steps
    model = tiny_model()
    log = amnesiac.DeltaLog(model, groups)
    opt = amnesiac.AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), model, log,
                                       weight_grads=weight_grads)
    for x, y, ids in ds.loader(8, seed=1):
        opt.zero_grad()
        opt.set_batch(ids)
        F.cross_entropy(model(x), y).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 0.3)  # partitioned: reads the .grad the taps wrote
        opt.step()
    opt.close()
    for k in groups:
        torch.testing.assert_close(log.delta_vector([k]), want[k], rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("weight_grads", ["autograd", "partitioned"])
def test_per_value_clipping_and_gradient_accumulation_are_refused_before_the_step(weight_grads):
    ds = tiny_dataset()
    batches = list(ds.loader(8, seed=1))
    model = tiny_model()
    log = amnesiac.DeltaLog(model, user_groups())
    opt = amnesiac.AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model, log,
                                       weight_grads=weight_grads)
    x, y, ids = batches[0]
    opt.set_batch(ids)
    F.cross_entropy(model(x), y).backward()
    torch.nn.utils.clip_grad_value_(model.parameters(), 1e-3)
    with pytest.raises(RuntimeError, match="more than one common factor.*clip_grad_norm_"):
        opt.step()
    opt.zero_grad()
    opt.set_batch(ids)
    F.cross_entropy(model(x), y).backward()
    next(model.parameters()).grad.mul_(0.5)  # one parameter rescaled: a common factor would be all of them
    with pytest.raises(RuntimeError, match="more than one common factor"):
        opt.step()
    opt.zero_grad()
    opt.set_batch(ids)
    for x, y, _ in batches[:2]:  # two backward passes into one step
        F.cross_entropy(model(x), y).backward()
    with pytest.raises(RuntimeError, match="accumulated over several backward passes"):
        opt.step()
    assert log.steps == 0 and float(log.delta_vector(list(user_groups())).abs().max()) == 0.0
    opt.zero_grad()
    opt.set_batch(ids)  # then abandoned without a backward pass (partitioned: armed, parameters frozen)
    assert all(q.requires_grad for q in model.parameters()) == (weight_grads == "autograd")
    opt.close()
    assert all(len(q._post_accumulate_grad_hooks or {}) == 0 for q in model.parameters())
    assert all(q.requires_grad for q in model.parameters())  # close gives requires_grad back


def test_the_finiteness_check_reads_the_norms_and_entries_only_where_a_norm_is_not_finite():
    """A finite float64 gradient norm proves every entry finite; a norm that overflowed (float64 gradients of
    1e200) is not taken for a NaN: the entries are read, and only a real NaN or infinity refuses the step."""
    model = tiny_model()  # float64
    opt = amnesiac.AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                                       amnesiac.DeltaLog(model, {"a": [1]}))
    params = list(model.parameters())
    for q in params:
        q.grad = torch.full_like(q, 1e200)
    norms = {id(q): torch.linalg.vector_norm(q.grad, dtype=torch.float64) for q in params}
    assert not any(bool(torch.isfinite(n)) for n in norms.values())  # overflowed, though every entry is finite
    opt._check_finite(norms)  # no error
    params[-1].grad[0] = float("nan")
    with pytest.raises(FloatingPointError, match="NaN or infinity"):
        opt._check_finite(norms)
    for q in params:
        q.grad = torch.ones_like(q)
    opt._check_finite({id(q): torch.linalg.vector_norm(q.grad) for q in params})
    opt.close()
