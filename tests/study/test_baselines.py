"""The baselines of the field (NegGrad+, SSD, SCRUB): the one contract, end to end on tiny data, and each
against its published update rule on a hand-checkable case."""

import copy

import amnesiac_paper  # noqa: F401 - registers the baselines into amnesiac.METHODS
import pytest
import torch
import torch.nn.functional as F
from helpers import (
    assert_a_new_model_and_the_input_untouched,
    fast_only,
    flat,
    tiny_dataset,
    tiny_model,
    unlearning_setup,
)

import amnesiac

BASELINES = {
    "relabel": {"epochs": 1},
    "finetune": {"epochs": 1},
    "retrain": {},
    "neggrad_plus": {"epochs": 1},
    "ssd": {"selection": 1.0},
    "scrub": {"epochs": 1},
}
SGD = amnesiac.Recipe(optimizer="sgd", lr=0.1, batch_size=64, epochs=1)  # one batch holds each tiny split


def _request(ds, forget_ids, recipe=SGD):
    return amnesiac.Request(forget=ds.subset(forget_ids), retain=ds.without(forget_ids), recipe=recipe, seed=0,
                            device="cpu", num_classes=4)


@pytest.mark.parametrize("method,params", [("neggrad_plus", {}), ("ssd", {"selection": 1.0}), ("scrub", {"epochs": 2})])
def test_baselines_keep_the_contract_end_to_end(method, params):
    ds = tiny_dataset()
    model = tiny_model()
    amnesiac.train(model, ds.loader(8, seed=1), torch.optim.Adam(model.parameters(), lr=0.01), epochs=3,
                   progress=False)
    before = flat(model).clone()
    rec = amnesiac.Recipe(optimizer="adam", lr=1e-3, batch_size=8, epochs=1)
    new = amnesiac.unlearn(method, model, _request(ds, list(range(8)), rec), **params)
    assert new is not model and torch.equal(flat(model), before)  # the input model is untouched
    assert not torch.equal(flat(new), before)  # and the method did something
    assert set(amnesiac.method_params(method)) >= set(params)


def test_neggrad_plus_is_one_weighted_descent_ascent_step():
    ds = tiny_dataset(n=12)
    forget = [0, 5, 7]
    model = tiny_model()
    new = amnesiac.unlearn("neggrad_plus", model, _request(ds, forget), beta=0.8)
    fset, rset = ds.subset(forget), ds.without(forget)
    ref = copy.deepcopy(model)
    params = list(ref.parameters())
    # the loaders shuffle, but a batch holding a whole split gives the same mean loss in any order
    loss = 0.8 * F.cross_entropy(ref(rset.x), rset.y) - 0.2 * F.cross_entropy(ref(fset.x), fset.y)
    grads = torch.autograd.grad(loss, params)
    want = torch.cat([(q - 0.1 * g).reshape(-1) for q, g in zip(params, grads)]).detach()
    torch.testing.assert_close(flat(new), want, rtol=1e-12, atol=1e-12)


def test_ssd_dampens_exactly_the_parameters_important_to_the_forget_set():
    """A linear model on two features: feature 0 only in the forget set, so its weights' forget importance
    dwarfs the full-data importance and they are shrunk by lambda * I_D / I_f; feature 1's are untouched."""
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(2, 2, bias=False)).double()
    x = torch.zeros(6, 1, 1, 2, dtype=torch.float64)
    x[:2, 0, 0, 0] = 3.0  # forget rows: feature 0
    x[2:, 0, 0, 1] = 1.0  # retain rows: feature 1
    ds = amnesiac.ArrayDataset(x, torch.tensor([0, 1, 0, 1, 1, 0]), torch.arange(6))
    req = _request(ds, [0, 1], amnesiac.Recipe(optimizer="sgd", lr=0.1, batch_size=64, epochs=1))
    new = amnesiac.unlearn("ssd", model, req, selection=1.5, dampening=1.0)
    w = model[1].weight
    full, forget = ds, ds.subset([0, 1])

    def importance(data):
        model.zero_grad()
        F.cross_entropy(model(data.x), data.y).backward()
        return w.grad.detach() ** 2

    i_d, i_f = importance(full), importance(forget)
    chosen = i_f > 1.5 * i_d
    assert chosen[:, 0].all() and not chosen[:, 1].any()  # the case is what it claims to be
    want = torch.where(chosen, w.detach() * torch.clamp(i_d / i_f, max=1.0), w.detach())
    torch.testing.assert_close(new[1].weight.detach(), want, rtol=1e-12, atol=1e-14)


def test_scrub_starts_at_the_teacher_so_its_first_max_step_is_still_and_min_step_is_plain_cross_entropy():
    ds = tiny_dataset(n=12)
    forget = [1, 2]
    model = tiny_model()
    # the KL to the teacher has zero gradient where the student equals it: a max epoch alone changes nothing
    still = amnesiac.unlearn("scrub", model, _request(ds, forget), epochs=1, max_epochs=1, alpha=1.0, gamma=0.0)
    torch.testing.assert_close(flat(still), flat(model), rtol=0, atol=1e-15)
    # a min epoch from the teacher: only the cross-entropy term moves the student (one batch, SGD)
    new = amnesiac.unlearn("scrub", model, _request(ds, forget), epochs=1, max_epochs=0, alpha=1.0, gamma=0.5)
    ref = copy.deepcopy(model)
    rset = ds.without(forget)
    grads = torch.autograd.grad(0.5 * F.cross_entropy(ref(rset.x), rset.y), list(ref.parameters()))
    want = torch.cat([(q - 0.1 * g).reshape(-1) for q, g in zip(ref.parameters(), grads)]).detach()
    torch.testing.assert_close(flat(new), want, rtol=1e-10, atol=1e-12)


def test_baseline_arguments_are_checked():
    ds = tiny_dataset(n=12)
    with pytest.raises(ValueError, match="beta must be in"):
        amnesiac.unlearn("neggrad_plus", tiny_model(), _request(ds, [0]), beta=1.5)
    with pytest.raises(ValueError, match="max_epochs <= epochs"):
        amnesiac.unlearn("scrub", tiny_model(), _request(ds, [0]), epochs=1, max_epochs=2)
    with pytest.raises(ValueError, match="needs request field"):
        amnesiac.unlearn("ssd", tiny_model(), amnesiac.Request(recipe=SGD))


@pytest.fixture(scope="module")
def trained():
    return unlearning_setup()


def test_every_registered_method_is_the_librarys_or_a_baseline_here():
    library = {"amnesiac", "misindexed", "batch", "layer"}  # tests/core/test_unlearning.py runs these
    exact = {"sisa", "rewind"}  # tests/core/test_sisa.py and test_rewind.py
    frontier = {"certified_last_layer", "logit_suppression", "oracle_matching"}  # tests/study/test_new_baselines.py
    assert set(amnesiac.METHODS) == library | exact | frontier | set(BASELINES)


@pytest.mark.parametrize("method", fast_only(BASELINES, ["retrain", "scrub"]))
@pytest.mark.parametrize("repair_epochs", fast_only([0, 1], [0]))
def test_baseline_returns_a_new_model_and_leaves_the_input(trained, method, repair_epochs):
    model, _, request = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = amnesiac.unlearn(method, model, request, repair_epochs=repair_epochs, **BASELINES[method])
    assert_a_new_model_and_the_input_untouched(method, model, new, before)


def test_retrain_needs_its_data_and_is_seeded_and_deterministic_on_cpu(trained):
    model, _, request = trained
    with pytest.raises(ValueError, match="needs request field"):
        amnesiac.unlearn("retrain", model, amnesiac.Request())
    a = amnesiac.unlearn("retrain", model, request)
    b = amnesiac.unlearn("retrain", model, request)
    assert torch.equal(flat(a), flat(b))


def test_the_library_tests_tiny_model_is_the_papers_simple_model_bit_for_bit():
    """tests/helpers.TinyCNN rebuilds SimpleModel so the library's tests need no paper package: same names, same
    initialisation from a seed."""
    from amnesiac_paper.models import SimpleModel
    from helpers import TinyCNN

    for seed in (0, 3):
        torch.manual_seed(seed)
        ours = TinyCNN(1, 4, width=6)
        torch.manual_seed(seed)
        theirs = SimpleModel(1, 4, width=6)
        assert list(ours.state_dict()) == list(theirs.state_dict())
        assert all(torch.equal(a, b) for a, b in zip(ours.state_dict().values(), theirs.state_dict().values()))
