"""Every method runs end to end, returns a new model and leaves its input untouched."""

import pytest
import torch
from helpers import assert_a_new_model_and_the_input_untouched, flat, unlearning_setup

import amnesiac
from amnesiac import Request, unlearn


@pytest.fixture(scope="module")
def trained():
    return unlearning_setup()


CASES = {
    "amnesiac": {"log": "delta", "alpha": 0.5},
    "misindexed": {"log": "misindexed"},
    "batch": {"log": "batch"},
    "layer": {"log": "layer"},
}


def test_every_method_of_the_library_is_covered():
    """The library registers the ledger methods, sisa and rewind (each needs its training record: covered in
    test_sisa.py and test_rewind.py); packages built on it (the paper's baselines) add their own."""
    library = {name for name, fn in amnesiac.METHODS.items()
               if getattr(fn, "func", fn).__module__.startswith("amnesiac.")}
    assert set(CASES) | {"sisa", "rewind"} == library


@pytest.mark.parametrize("method", CASES)
@pytest.mark.parametrize("repair_epochs", [0, 1])
def test_method_returns_a_new_model_and_leaves_the_input(trained, method, repair_epochs):
    model, logs, request = trained
    params = dict(CASES[method])
    if "log" in params:
        params["log"] = logs[params["log"]]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    new = unlearn(method, model, request, repair_epochs=repair_epochs, **params)
    assert_a_new_model_and_the_input_untouched(method, model, new, before)


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
        unlearn("amnesiac", model, Request(forget_groups=("class1",)), log=logs["delta"], repair_epochs=1)
    with pytest.raises(KeyError, match="unknown group"):
        unlearn("amnesiac", model, Request(forget_groups=("class9",)), log=logs["delta"])


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
