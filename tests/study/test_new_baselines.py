"""The approximate methods added beside the ledger for the frontier: certified last-layer removal (Guo et al.
2020), the class-logit suppression control and ledger-predicted oracle matching (Georgiev et al. 2024), each
against a case with a known answer."""

import copy

import amnesiac_paper  # noqa: F401 - registers the baselines into amnesiac.METHODS
import pytest
import torch
import torch.nn.functional as F
from amnesiac_paper.baselines import fit_last_layer, newton_removal, predicted_outputs
from torch import nn

import amnesiac


def _features(n=30, d=4, classes=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return (torch.randn(n, d, generator=gen, dtype=torch.float64),
            torch.randint(0, classes, (n,), generator=gen))


def _ridge(phi, y, lam, classes):
    """The closed-form minimiser of sum_i 0.5 ||W a_i - onehot(y_i)||^2 + (lam n / 2) ||W||^2, a = [phi, 1]."""
    a = torch.cat([phi, torch.ones(len(phi), 1, dtype=phi.dtype)], 1)
    w = torch.linalg.solve(a.T @ a + lam * len(a) * torch.eye(a.shape[1], dtype=a.dtype),
                           a.T @ F.one_hot(y, classes).to(a)).T  # [C, d+1]
    return torch.cat([w[:, :-1].reshape(-1), w[:, -1]])


def test_certified_removal_with_the_squared_loss_is_the_ridge_refit_on_the_retain_set():
    phi, y = _features()
    lam = 0.05
    w = fit_last_layer(phi, y, lam, loss="squared", num_classes=3)
    assert torch.allclose(w, _ridge(phi, y, lam, 3), atol=1e-10)  # the fit is the closed form on all rows
    forget = torch.zeros(len(y), dtype=torch.bool)
    forget[[1, 4, 9, 20]] = True
    new, residual = newton_removal(phi, y, w, forget, lam, loss="squared")
    assert residual < 1e-9
    assert torch.allclose(new, _ridge(phi[~forget], y[~forget], lam, 3), atol=1e-10)  # one Newton step: exact
    assert not torch.allclose(new, w, atol=1e-3)  # and the removal moved the layer


def test_certified_removal_with_cross_entropy_leaves_a_second_order_residual():
    phi, y = _features(n=60)
    lam = 0.01
    w = fit_last_layer(phi, y, lam, num_classes=3)
    forget = torch.zeros(len(y), dtype=torch.bool)
    forget[:3] = True
    new, residual = newton_removal(phi, y, w, forget, lam)
    refit = fit_last_layer(phi[~forget], y[~forget], lam, num_classes=3)
    step, error = (refit - w).norm(), (refit - new).norm()
    assert error < 0.05 * step  # the Newton step covers all but a second-order part of the way to the refit
    assert residual > 0  # cross-entropy is not quadratic: a residual remains (Guo et al. hide it under noise)


@pytest.fixture(scope="module")
def sequential():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(48, 5, generator=gen)
    y = torch.randint(0, 3, (48,), generator=gen)
    ds = amnesiac.ArrayDataset(x, y, torch.arange(48))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 6), nn.Tanh(), nn.Linear(6, 3))
    amnesiac.train(model, ds.loader(8, seed=0), torch.optim.SGD(model.parameters(), lr=0.1), epochs=3,
                   progress=False)
    return ds, model


def _request(ds, forget, **kw):
    return amnesiac.Request(forget=ds.subset(forget), retain=ds.without(forget), device="cpu",
                            recipe=amnesiac.Recipe(optimizer="sgd", lr=0.05, batch_size=8, epochs=1), **kw)


def test_the_registered_certified_removal_refits_only_the_last_layer(sequential):
    ds, model = sequential
    before = copy.deepcopy(model.state_dict())
    forget = torch.tensor([0, 7, 11])
    new = amnesiac.unlearn("certified_last_layer", model, _request(ds, forget), lam=1e-2)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the input is untouched
    assert all(torch.equal(a, b) for a, b in zip(new[0].parameters(), model[0].parameters()))  # the body frozen
    with torch.no_grad():
        phi = model[:-1](ds.x).double()
    keep = ~torch.isin(ds.ids, forget)
    refit = fit_last_layer(phi[keep], ds.y[keep], 1e-2, num_classes=3)
    got = torch.cat([new[-1].weight.reshape(-1), new[-1].bias]).double()
    assert (got - refit).norm() < 0.05 * refit.norm()  # near the retain set's own minimiser
    with pytest.raises(ValueError, match="nn.Sequential whose last module is an nn.Linear"):
        amnesiac.unlearn("certified_last_layer", nn.Linear(5, 3).requires_grad_(), _request(ds, forget))
    with pytest.raises(ValueError, match="sigma"):
        amnesiac.unlearn("certified_last_layer", model, _request(ds, forget), sigma=1.0, refit=False)
    with pytest.raises(ValueError, match="lam must be a positive"):
        amnesiac.unlearn("certified_last_layer", model, _request(ds, forget), lam=0.0)


def test_logit_suppression_silences_one_class_and_nothing_else(sequential):
    ds, model = sequential
    forget = ds.ids[ds.y == 2]
    new = amnesiac.unlearn("logit_suppression", model, _request(ds, forget))
    with torch.no_grad():
        old, out = model(ds.x), new(ds.x)
    assert (out[ds.y == 2].argmax(1) != 2).all()  # no forget example is predicted as its class any more
    assert torch.allclose(out[:, :2], old[:, :2])  # every other logit is unchanged
    shift = (old[:, 2] - out[:, 2])
    assert torch.allclose(shift, shift[0].expand_as(shift)) and float(shift[0]) > 0  # one constant shift
    fixed = amnesiac.unlearn("logit_suppression", model, _request(ds, forget), shift=3.0)
    with torch.no_grad():
        assert torch.allclose(model(ds.x)[:, 2] - fixed(ds.x)[:, 2], torch.full((48,), 3.0), atol=1e-5)
    with pytest.raises(ValueError, match="one class"):
        amnesiac.unlearn("logit_suppression", model, _request(ds, torch.tensor([0, 1, 2, 3, 4])))
    with pytest.raises(ValueError, match="shift must be"):
        amnesiac.unlearn("logit_suppression", model, _request(ds, forget), shift=-1.0)


def test_predicted_outputs_are_exact_for_a_linear_model_and_first_order_otherwise(sequential):
    ds, model = sequential
    lin = nn.Linear(5, 3)
    delta = torch.randn(amnesiac.ParamLayout.of(lin).numel, generator=torch.Generator().manual_seed(1))
    shifted = copy.deepcopy(lin)
    with torch.no_grad():
        for p, d in zip(shifted.parameters(), amnesiac.ParamLayout.of(lin).unflatten(0.5 * delta).values()):
            p -= d
    assert torch.allclose(predicted_outputs(lin, delta, ds.x, alpha=0.5), shifted(ds.x), atol=1e-5)
    layout = amnesiac.ParamLayout.of(model)
    model64 = copy.deepcopy(model).double()
    delta = torch.randn(layout.numel, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    x = ds.x.double()
    pred = predicted_outputs(model64, delta, x, alpha=1.0)
    for eps in (1e-3, 1e-4):  # a finite difference: the error of f(theta) - eps J delta is O(eps^2)
        moved = copy.deepcopy(model64)
        with torch.no_grad():
            for p, d in zip(moved.parameters(), layout.unflatten(eps * delta).values()):
                p -= d
            base = model64(x)
            fd = base + (moved(x) - base) / eps  # f(theta) - J delta, up to O(eps)
        assert (fd - pred).abs().max() < 50 * eps * float(delta.norm()) ** 2
    with pytest.raises(ValueError, match="trainable parameters"):
        predicted_outputs(model, torch.zeros(3), ds.x)


def test_oracle_matching_moves_the_outputs_towards_the_ledgers_prediction(sequential):
    ds, model = sequential
    forget = torch.tensor([3, 5, 8, 13])
    layout = amnesiac.ParamLayout.of(model)
    delta = 0.3 * torch.randn(layout.numel, generator=torch.Generator().manual_seed(3))
    request = _request(ds, forget)
    targets = predicted_outputs(model, delta, ds.x[forget])
    new = amnesiac.unlearn("oracle_matching", model, request, delta=delta, epochs=20, lr=0.05)
    with torch.no_grad():
        before = ((model(ds.x[forget]) - targets) ** 2).sum(1).mean()
        after = ((new(ds.x[forget]) - targets) ** 2).sum(1).mean()
    assert after < 0.5 * before
    same = amnesiac.unlearn("oracle_matching", model, request, delta=delta, alpha=0.0, epochs=1)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(same.parameters(), model.parameters()))  # alpha 0:
    # the targets are the model's own outputs, whose squared error has a zero gradient
    with pytest.raises(ValueError, match="exactly one of log="):
        amnesiac.unlearn("oracle_matching", model, request)
    with pytest.raises(ValueError, match="retain_size"):
        amnesiac.unlearn("oracle_matching", model, request, delta=delta, retain_size=10_000)
