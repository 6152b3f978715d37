"""The propagated attribution: exact against the zero-weighted replay where the linearisation is exact (a linear
model with squared loss, SGD with momentum), and against a float64 loop oracle on a 2-layer MLP (SGD, Adam)."""

import pytest
import torch
import torch.nn.functional as F
from helpers import ORACLE_OPTIMIZERS, oracle_step

import amnesiac


def _mse(out, target):
    return F.mse_loss(out, target)


def _linear_data(n=24, d=5, m=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, d, generator=gen, dtype=torch.float64)
    y = torch.randn(n, m, generator=gen, dtype=torch.float64)
    return amnesiac.ArrayDataset(x, y, torch.arange(n), "linear")


def _linear_model():
    torch.manual_seed(0)
    return torch.nn.Linear(5, 3).double()


def _loop(model, ds, opt, *, log=None, zero=(), epochs=3, loss_fn=_mse):
    """A plain loop (optionally with a log); rows in ``zero`` get loss weight 0 while the mean divides by B."""
    wrapped = amnesiac.AttributedOptimizer(opt, model, log, loss_fn=loss_fn) if log is not None else opt
    zero = set(zero)
    loader = ds.loader(8, seed=1)
    for _ in range(epochs):
        for x, y, ids in loader:
            wrapped.zero_grad()
            if log is not None:
                wrapped.set_batch(ids, inputs=x, targets=y)
            keep = torch.tensor([int(i) not in zero for i in ids])
            out = model(x)
            n = int(keep.sum())
            loss = loss_fn(out[keep], y[keep]) * (n / len(y)) if n else (out * 0).sum()
            loss.backward()
            wrapped.step()
    if log is not None:
        wrapped.close()
    return amnesiac.ParamLayout.of(model).vector(model)


GROUPS = {"a": [0, 3, 7, 11], "b": [2, 5, 19]}


@pytest.mark.parametrize("make", [
    lambda p: torch.optim.SGD(p, lr=0.1),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9),
    lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.9, nesterov=True, weight_decay=0.01),
], ids=["sgd", "momentum", "nesterov-wd"])
def test_on_a_linear_model_with_squared_loss_the_propagated_delta_is_the_zero_weighted_replay(make):
    ds = _linear_data()
    model = _linear_model()
    prop = amnesiac.DeltaLog(model, GROUPS, attribution="propagated")
    exact = amnesiac.DeltaLog(model, GROUPS)
    theta = _loop(model, ds, make(model.parameters()), log=[prop, exact])
    for name, ids in GROUPS.items():
        replay_model = _linear_model()
        replay = _loop(replay_model, ds, make(replay_model.parameters()), zero=ids)
        err = float((theta - prop.delta_vector([name]) - replay).abs().max())
        unpropagated = float((theta - exact.delta_vector([name]) - replay).abs().max())
        assert err < 1e-12, err
        assert unpropagated > 1e3 * max(err, 1e-15)  # the propagation term is real here: the control fails
    # the identity the log is built on still holds: deltas + remainder = theta_T - theta_0
    total = prop.delta_vector(list(GROUPS)) + prop.remainder_vector
    torch.testing.assert_close(total, theta - amnesiac.ParamLayout.of(model).vector(_linear_model()),
                               rtol=0, atol=1e-12)


class MLP(torch.nn.Module):
    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.fc2 = torch.nn.Linear(6, 8).double(), torch.nn.Linear(8, 3).double()

    def forward(self, x):
        return self.fc2(torch.tanh(self.fc1(x)))


def _mlp_data(n=24):
    gen = torch.Generator().manual_seed(3)
    return amnesiac.ArrayDataset(torch.randn(n, 6, generator=gen, dtype=torch.float64),
                                 torch.randint(0, 3, (n,), generator=gen), torch.arange(n), "mlp")


def _oracle_propagated(opt_name, ds, epochs=2):
    """Each group's propagated delta by a loop: per-sample shares, and the Hessian-vector product of the batch
    loss without the group's rows by double backward, folded in by the optimizer's published equations."""
    model = MLP()
    params = list(model.parameters())
    opt = ORACLE_OPTIMIZERS[opt_name](params)
    owner = {i: k for k, ids in GROUPS.items() for i in ids}
    P = sum(q.numel() for q in params)
    delta = {k: torch.zeros(P, dtype=torch.float64) for k in GROUPS}
    buf = {k: torch.zeros(P, dtype=torch.float64) for k in GROUPS}
    loader = ds.loader(8, seed=1)
    step = 0
    for _ in range(epochs):
        for x, y, ids in loader:
            step += 1
            B = len(y)
            share = {}
            for k in GROUPS:
                s = torch.zeros(P, dtype=torch.float64)
                rest = [i for i in range(B) if owner.get(int(ids[i])) != k]
                for i in range(B):
                    if owner.get(int(ids[i])) == k:
                        g = torch.autograd.grad(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]), params)
                        s += torch.cat([t.reshape(-1) for t in g]) / B
                loss_rest = sum(F.cross_entropy(model(x[i:i + 1]), y[i:i + 1]) for i in rest) / B
                g = torch.autograd.grad(loss_rest, params, create_graph=True)
                flat_g = torch.cat([t.reshape(-1) for t in g])
                hv = torch.autograd.grad(flat_g @ delta[k], params)
                share[k] = s + torch.cat([t.reshape(-1) for t in hv])
            opt.zero_grad()
            F.cross_entropy(model(x), y).backward()
            opt.step()
            oracle_step(opt, params, step, delta, buf, share)
    return delta


@pytest.mark.parametrize("opt_name", ["momentum", "adam", "adamw-decoupled-wd"])
def test_propagated_deltas_match_the_loop_oracle_on_a_two_layer_mlp(opt_name):
    ds = _mlp_data()
    model = MLP()
    log = amnesiac.DeltaLog(model, GROUPS, attribution="propagated")
    opt = ORACLE_OPTIMIZERS[opt_name](model.parameters())
    amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=2, delta_log=log, progress=False)
    want = _oracle_propagated(opt_name, ds)
    m2 = MLP()
    exact = amnesiac.DeltaLog(m2, GROUPS)
    amnesiac.train(m2, ds.loader(8, seed=1), ORACLE_OPTIMIZERS[opt_name](m2.parameters()), epochs=2,
                   delta_log=exact, progress=False)
    for k in GROUPS:
        got = log.delta_vector([k])
        torch.testing.assert_close(got, want[k], rtol=1e-9, atol=1e-12)
        assert float((got - exact.delta_vector([k])).abs().max()) > 1e-6  # propagation changed something


def test_propagation_options_and_errors():
    ds = _mlp_data()
    deltas = {}
    for name, kw in {"exact": {}, "late": {"attribution": "propagated", "propagate_after": 6},
                     "every1": {"attribution": "propagated"},
                     "every2": {"attribution": "propagated", "propagate_every": 2}}.items():
        model = MLP()
        log = amnesiac.DeltaLog(model, GROUPS, **kw)
        amnesiac.train(model, ds.loader(8, seed=1), torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9),
                       epochs=2, delta_log=log, progress=False)
        deltas[name] = log.delta_vector(["a"])
        if name == "every2":
            assert log.hvp_seconds > 0
    torch.testing.assert_close(deltas["late"], deltas["exact"], rtol=0, atol=1e-15)  # 6 steps: never propagated
    assert float((deltas["every2"] - deltas["every1"]).abs().max()) > 0
    assert float((deltas["every2"] - deltas["exact"]).abs().max()) > 0
    with pytest.raises(ValueError, match="use p=None"):
        amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated", p=0.5)
    with pytest.raises(ValueError, match="propagate_every >= 1"):
        amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated", propagate_every=0)
    model = MLP()
    opt = amnesiac.AttributedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1), model,
                                       amnesiac.DeltaLog(model, GROUPS, attribution="propagated"))
    x, y, ids = next(iter(ds.loader(8, seed=1)))
    opt.set_batch(ids)
    F.cross_entropy(model(x), y).backward()
    with pytest.raises(ValueError, match="inputs=x, targets=y"):
        opt.step()
    opt.close()


def _weighted_replay(opt_name, ds, ids, weight, epochs=2):
    """The MLP trained with the rows ``ids`` at loss weight ``weight`` (the mean still over the batch size)."""
    model = MLP()
    amnesiac.train(model, ds.loader(8, seed=1), ORACLE_OPTIMIZERS[opt_name](model.parameters()), epochs=epochs,
                   zero_weight_ids=ids, forget_weight=weight, progress=False)
    return amnesiac.ParamLayout.of(model).vector(model)


def _rel(a, b):
    return float((a - b).norm() / b.norm())


ADAMS = ("adam", "adam-coupled-wd", "adamw-decoupled-wd")


@pytest.mark.parametrize("opt_name", ["momentum", "nesterov-coupled-wd", *ADAMS])
def test_propagating_with_the_trained_hessian_gives_the_finite_difference_derivative_of_the_replays(opt_name):
    """The independent measurement: replays with the group's loss weight 1 - eps (float64, deterministic) give
    g(eps) = (theta(1) - theta(1 - eps)) / eps, which converges to the derivative of the trained parameters in
    that weight; the propagated delta with the trained run's Hessian (and, under Adam, the second moment's
    tangent) is that derivative. The default (the replay's Hessian) is another first-order estimate, farther
    from it by much more than the tolerance; under Adam, so is the delta that takes the denominator as given."""
    ds = _mlp_data()
    model = MLP()
    adam = opt_name in ADAMS
    trained = amnesiac.DeltaLog(model, GROUPS, attribution="propagated", propagate_hessian="trained",
                                propagate_second_moment=adam)
    replay = amnesiac.DeltaLog(model, GROUPS, attribution="propagated")
    logs = [trained, replay]
    if adam:
        frozen = amnesiac.DeltaLog(model, GROUPS, attribution="propagated", propagate_hessian="trained")
        logs.append(frozen)
    amnesiac.train(model, ds.loader(8, seed=1), ORACLE_OPTIMIZERS[opt_name](model.parameters()), epochs=2,
                   delta_log=logs, progress=False)
    for k, ids in GROUPS.items():
        base = _weighted_replay(opt_name, ds, ids, 1.0)
        g = {eps: (base - _weighted_replay(opt_name, ds, ids, 1.0 - eps)) / eps for eps in (1e-4, 1e-6)}
        assert _rel(g[1e-4], g[1e-6]) < 1e-3  # converged: the derivative
        err = _rel(trained.delta_vector([k]), g[1e-6])
        assert err < 1e-5, (k, err)
        assert _rel(replay.delta_vector([k]), g[1e-6]) > 100 * err
        if adam:  # the first-order term the frozen denominator drops is as large as the one it keeps
            assert _rel(frozen.delta_vector([k]), g[1e-6]) > 0.3
    # the tracks still add up to the real change
    theta = amnesiac.ParamLayout.of(model).vector(model)
    total = trained.theta0 + trained.deltas.sum(0) + trained.remainder_vector
    torch.testing.assert_close(total, theta, rtol=0, atol=1e-12)
    # weight 1 is ordinary training up to the order of float sums
    plain = MLP()
    amnesiac.train(plain, ds.loader(8, seed=1), ORACLE_OPTIMIZERS[opt_name](plain.parameters()), epochs=2,
                   progress=False)
    assert _rel(_weighted_replay(opt_name, ds, GROUPS["a"], 1.0), amnesiac.ParamLayout.of(plain).vector(plain)) < 1e-12


def test_the_second_moment_is_a_setting_of_the_propagated_attribution_for_adam_only():
    with pytest.raises(ValueError, match="setting of attribution='propagated'"):
        amnesiac.DeltaLog(MLP(), GROUPS, propagate_second_moment=True)
    ds = _mlp_data()
    for name, match in (("rmsprop", "Adam and AdamW only"), ("amsgrad-coupled-wd", "AMSGrad")):
        model = MLP()
        log = amnesiac.DeltaLog(model, GROUPS, attribution="propagated", propagate_second_moment=True)
        before = amnesiac.ParamLayout.of(model).vector(model)
        with pytest.raises(ValueError, match=match):
            amnesiac.train(model, ds.loader(8, seed=1), ORACLE_OPTIMIZERS[name](model.parameters()), epochs=1,
                           delta_log=log, progress=False)
        assert torch.equal(amnesiac.ParamLayout.of(model).vector(model), before)  # refused before any step
    # SGD has no second moment: the setting changes nothing
    deltas = []
    for second in (False, True):
        model = MLP()
        log = amnesiac.DeltaLog(model, GROUPS, attribution="propagated", propagate_second_moment=second)
        amnesiac.train(model, ds.loader(8, seed=1), ORACLE_OPTIMIZERS["momentum"](model.parameters()), epochs=1,
                       delta_log=log, progress=False)
        deltas.append(log.delta_vector(["a"]))
    assert torch.equal(*deltas)


def test_a_forget_weight_needs_its_rows_and_is_finite_and_not_negative():
    ds = _mlp_data()
    for kw, match in (({"forget_weight": 0.5}, "give zero_weight_ids"),
                      ({"zero_weight_ids": [1], "forget_weight": -0.1}, "finite and >= 0"),
                      ({"zero_weight_ids": [1], "forget_weight": float("nan")}, "finite and >= 0"),
                      ({"drop_ids": [1], "forget_weight": 0.5}, "give zero_weight_ids")):
        with pytest.raises(ValueError, match=match):
            amnesiac.train(MLP(), ds.loader(8, seed=1), torch.optim.SGD(MLP().parameters(), lr=0.1), epochs=1,
                           progress=False, **kw)
    with pytest.raises(ValueError, match="propagate_hessian"):
        amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated", propagate_hessian="full")


def test_a_saved_log_keeps_its_hessian_choice_and_the_default_state_is_unchanged():
    ds = _mlp_data()
    model = MLP()
    log = amnesiac.DeltaLog(model, GROUPS, attribution="propagated", propagate_hessian="trained")
    amnesiac.train(model, ds.loader(8, seed=1), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                   delta_log=log, progress=False)
    state = log.state_dict()
    assert state["config"]["propagate_hessian"] == "trained"
    with pytest.raises(ValueError, match="propagate_hessian"):
        amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated").load_state_dict(state)
    assert "propagate_hessian" not in amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated").state_dict()["config"]


def test_a_saved_log_keeps_its_second_moment_tangents():
    ds = _mlp_data()
    model = MLP()
    log = amnesiac.DeltaLog(model, GROUPS, attribution="propagated", propagate_hessian="trained",
                            propagate_second_moment=True)
    amnesiac.train(model, ds.loader(8, seed=1), torch.optim.Adam(model.parameters(), lr=0.01), epochs=1,
                   delta_log=log, progress=False)
    state = log.state_dict()
    assert state["config"]["propagate_second_moment"] is True
    assert float(state["tensors"]["second_moments"].abs().sum()) > 0
    with pytest.raises(ValueError, match="propagate_second_moment"):
        amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated", propagate_hessian="trained").load_state_dict(state)
    again = amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated", propagate_hessian="trained",
                              propagate_second_moment=True).load_state_dict(state)
    assert torch.equal(again.second_moments, log.second_moments) and torch.equal(again.deltas, log.deltas)
    assert "propagate_second_moment" not in amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated").state_dict()[
        "config"]


def test_gauss_newton_products_are_the_hessian_for_a_linear_model_and_a_stabiliser_otherwise():
    """For a model linear in its parameters the Gauss-Newton matrix is the Hessian: the two propagations agree.
    On the MLP they differ (the model's own curvature is dropped); damping 0 changes nothing and damping > 0
    decays the carried delta."""
    ds = _linear_data()
    deltas = {}
    for name in ("trained", "gauss-newton"):
        model = _linear_model()
        log = amnesiac.DeltaLog(model, GROUPS, attribution="propagated", propagate_hessian=name)
        _loop(model, ds, torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9), log=log)
        deltas[name] = log.delta_vector(["a"])
    torch.testing.assert_close(deltas["gauss-newton"], deltas["trained"], rtol=1e-10, atol=1e-13)
    ds = _mlp_data()
    out = {}
    for name, kw in {"trained": {}, "gn": {"propagate_hessian": "gauss-newton"},
                     "damped0": {"propagate_damping": 0.0}, "damped": {"propagate_damping": 0.5}}.items():
        model = MLP()
        kw = {"propagate_hessian": "trained", **kw}
        log = amnesiac.DeltaLog(model, GROUPS, attribution="propagated", **kw)
        amnesiac.train(model, ds.loader(8, seed=1), ORACLE_OPTIMIZERS["momentum"](model.parameters()), epochs=2,
                       delta_log=log, progress=False)
        out[name] = log
    a = {k: v.delta_vector(["a"]) for k, v in out.items()}
    assert torch.equal(a["damped0"], a["trained"])
    assert _rel(a["gn"], a["trained"]) > 1e-3
    # damping adds lambda * d to what is carried: it decays the delta, as weight decay decays parameters
    assert float(a["damped"].norm()) < float(a["trained"].norm())
    state = out["damped"].state_dict()
    assert state["config"]["propagate_damping"] == 0.5 and out["gn"].state_dict()["config"]["propagate_hessian"] \
        == "gauss-newton"
    with pytest.raises(ValueError, match="propagate_damping"):
        amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated").load_state_dict(state)
    for bad in (-1.0, float("nan")):
        with pytest.raises(ValueError, match="propagate_damping must be finite"):
            amnesiac.DeltaLog(MLP(), GROUPS, attribution="propagated", propagate_damping=bad)
    with pytest.raises(ValueError, match="setting of attribution='propagated'"):
        amnesiac.DeltaLog(MLP(), GROUPS, propagate_damping=1.0)
