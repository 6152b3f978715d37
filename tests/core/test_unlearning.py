"""Every method runs end to end, returns a new model and leaves its input untouched."""

import pytest
import torch
from conftest import flat, tiny_dataset, tiny_model

import amnesiac
from amnesiac import Recipe, Request, unlearn


@pytest.fixture(scope="module")
def trained():
    ds = tiny_dataset(n=48)
    model = tiny_model()
    forget_ids = ds.ids[ds.y == 1]
    groups = {"class1": forget_ids}
    logs = {
        "delta": amnesiac.DeltaLog(model, groups),
        "gradient": amnesiac.DeltaLog(model, groups, attribution="gradient", p=0.5),
        "misindexed": amnesiac.DeltaLog(model, groups, attribution="gradient", indexing="seed-misindexed"),
        "batch": amnesiac.BatchLog(model, groups),
        "layer": amnesiac.BatchLog(model, groups, p=0.1),
    }
    recipe = Recipe(optimizer="adam", lr=0.01, batch_size=8, epochs=2)
    amnesiac.train(
        model,
        ds.loader(8),
        recipe.make_optimizer(model.parameters()),
        epochs=2,
        delta_log=list(logs.values()),
        progress=False,
    )
    request = Request(
        forget_groups=("class1",),
        forget=ds.subset(forget_ids),
        retain=ds.without(forget_ids),
        recipe=recipe,
        model_fn=lambda: tiny_model(seed=5),
        num_classes=4,
        seed=0,
        device="cpu",
    )
    return model, logs, request


CASES = {
    "amnesiac": {"log": "delta", "alpha": 0.5},
    "misindexed": {"log": "misindexed"},
    "batch": {"log": "batch"},
    "layer": {"log": "layer"},
    "relabel": {"epochs": 1},
    "finetune": {"epochs": 1},
    "retrain": {},
    "neggrad_plus": {"epochs": 1},
    "ssd": {"selection": 1.0},
    "scrub": {"epochs": 1},
}


def test_every_registered_method_is_covered():
    assert set(CASES) == set(amnesiac.METHODS)


@pytest.mark.parametrize("method", CASES)
@pytest.mark.parametrize("repair_epochs", [0, 1])
def test_method_returns_a_new_model_and_leaves_the_input(trained, method, repair_epochs):
    model, logs, request = trained
    params = dict(CASES[method])
    if "log" in params:
        params["log"] = logs[params["log"]]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = unlearn(method, model, request, repair_epochs=repair_epochs, **params)
    assert new is not model
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), f"{method} changed the input model's {k}"
    assert not torch.equal(flat(new), flat(model))
    assert torch.isfinite(flat(new)).all()


def test_amnesiac_alpha_scales_the_subtraction(trained):
    model, logs, request = trained
    d = logs["delta"].delta_vector(["class1"])
    for alpha in (0.25, 1.0):
        new = unlearn("amnesiac", model, request, log=logs["delta"], alpha=alpha)
        torch.testing.assert_close(flat(new), flat(model) - alpha * d, rtol=0, atol=1e-14)


def test_method_errors(trained):
    model, logs, request = trained
    with pytest.raises(ValueError, match="valid methods"):
        unlearn("nope", model, request)
    with pytest.raises(TypeError, match="its parameters"):
        unlearn("amnesiac", model, request, log=logs["delta"], beta=1)
    with pytest.raises(ValueError, match="misindexed"):
        unlearn("amnesiac", model, request, log=logs["misindexed"])
    with pytest.raises(ValueError, match="indexing='seed-misindexed'"):
        unlearn("misindexed", model, request, log=logs["delta"])
    with pytest.raises(TypeError, match="needs log="):
        unlearn("batch", model, request, log=logs["delta"])
    with pytest.raises(ValueError, match="needs request field"):
        unlearn("retrain", model, Request())
    with pytest.raises(KeyError, match="unknown group"):
        unlearn("amnesiac", model, Request(forget_groups=("class9",)), log=logs["delta"])


def test_retrain_is_seeded_and_deterministic_on_cpu(trained):
    model, _, request = trained
    a = unlearn("retrain", model, request)
    b = unlearn("retrain", model, request)
    assert torch.equal(flat(a), flat(b))


def test_a_request_refuses_a_repeated_group_and_a_bare_string():
    with pytest.raises(ValueError, match=r"forget_groups names group 'a' more than once"):
        Request(forget_groups=("a", "b", "a"))
    with pytest.raises(ValueError, match=r"group 3 more than once"):
        Request(forget_groups=[3, 3])
    for bare in ("class3", b"class3"):
        with pytest.raises(TypeError, match=r"forget_groups=\(b?.class3.,\)"):
            Request(forget_groups=bare)
    with pytest.raises(TypeError, match="forget_groups must be a tuple"):
        Request(forget_groups=3)
    with pytest.raises(TypeError, match="hashable"):
        Request(forget_groups=(["a"],))
    assert Request(forget_groups=["a", 7]).forget_groups == ("a", 7)  # a list is kept as a tuple
    assert Request(forget_groups=("class3",)).forget_groups == ("class3",)
    assert Request().forget_groups == ()
