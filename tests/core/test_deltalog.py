"""The delta log's invariants: conservation, exact forgetting, masks, attribution and errors."""

import pytest
import torch
import torch.nn.functional as F
from helpers import CONSERVATION_OPTIMIZERS, OPTIMIZERS, fast_only, flat, tiny_dataset, tiny_model

import amnesiac
from amnesiac.deltalog import mask_indices

# the fast loop's cases: one optimizer of each update rule, with its options
FAST_OPTIMIZERS = ("momentum-dampening-wd", "adam-coupled-wd", "rmsprop-momentum-centered-wd", "adagrad-lr-decay-wd")


def group_kinds(ds):
    return {
        "samples": amnesiac.groups_per_sample([0, 3, 7, 11, 19, 33]),
        "classes": amnesiac.groups_by_class(ds, [0, 2]),
        "users": amnesiac.groups_by_user(torch.arange(0, 40, 2), 4, seed=1),
    }


def run(opt_name, groups, *, p=None, epochs=3, attribution="update", model=None, ds=None, logs=()):
    ds = ds or tiny_dataset()
    model = model or tiny_model()
    log = amnesiac.DeltaLog(model, groups, p=p, attribution=attribution)
    theta0 = flat(model)
    opt = OPTIMIZERS[opt_name](model.parameters())
    amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=epochs, delta_log=[log, *logs], progress=False)
    return model, log, theta0


@pytest.mark.parametrize("opt_name", fast_only(CONSERVATION_OPTIMIZERS, FAST_OPTIMIZERS))
@pytest.mark.parametrize("kind", fast_only(["samples", "classes", "users"], ["users"]))
@pytest.mark.parametrize("p", fast_only([None, 0.3], [None]))
def test_conservation(opt_name, kind, p):
    groups = group_kinds(tiny_dataset())[kind]
    model, log, theta0 = run(opt_name, groups, p=p)
    change = flat(model) - theta0
    total = log.delta_vector(list(groups)) + log.remainder_vector
    err = (total - change).abs().max().item()
    assert err < 1e-13 * max(1.0, change.abs().max().item()), err
    # the groups really own something: the check is not satisfied by an empty ledger
    assert log.delta_vector(list(groups)).abs().max() > 1e-6
    # it also holds after finalize (storage dtype = float64 here)
    log.finalize()
    total = log.delta_vector(list(groups)) + log.remainder_vector
    assert (total - change).abs().max().item() < 1e-13 * max(1.0, change.abs().max().item())


@pytest.mark.parametrize("opt_name", fast_only(CONSERVATION_OPTIMIZERS, FAST_OPTIMIZERS))
def test_forgetting_nothing_returns_the_trained_model_exactly(opt_name):
    model, log, _ = run(opt_name, {"a": [1, 2]})
    new = amnesiac.unlearn("amnesiac", model, amnesiac.Request(forget_groups=()), log=log)
    assert torch.equal(flat(new), flat(model))


def test_plain_sgd_forgetting_every_group_returns_theta0():
    ds = tiny_dataset()
    groups = amnesiac.groups_by_user(ds.ids, 5, seed=3)  # every sample is in some group
    model, log, theta0 = run("sgd", groups, ds=ds)
    assert log.remainder_vector.abs().max() < 1e-14
    new = amnesiac.unlearn("amnesiac", model, amnesiac.Request(forget_groups=tuple(groups)), log=log)
    torch.testing.assert_close(flat(new), theta0, rtol=0, atol=1e-13)
    assert (flat(model) - theta0).abs().max() > 1e-3


@pytest.mark.parametrize("opt_name", ["momentum", "adamw"])
def test_mask_keeps_exactly_the_full_delta_on_its_coordinates(opt_name):
    groups = {"a": [0, 5], 17: [17], "c": [2, 30, 31]}
    model = tiny_model()
    masked = amnesiac.DeltaLog(model, groups, p=0.25)
    full = amnesiac.DeltaLog(model, groups)
    opt = OPTIMIZERS[opt_name](model.parameters())
    amnesiac.train(model, tiny_dataset().loader(8, seed=1), opt, epochs=2, delta_log=[masked, full], progress=False)
    masked.finalize()  # drops the cached indices: delta() must regenerate the same ones from the seeds
    for g in groups:
        keep = mask_indices(masked.layout, 0.25, amnesiac.deltalog.group_seed(g, 0))
        dm, df = masked.delta_vector([g]), full.delta_vector([g])
        torch.testing.assert_close(dm[keep], df[keep], rtol=1e-12, atol=1e-15)
        rest = torch.ones_like(dm, dtype=torch.bool)
        rest[keep] = False
        assert torch.all(dm[rest] == 0)
        assert len(keep) == sum(int(0.25 * n) for n in masked.layout.sizes())


def test_gradient_attribution_is_minus_the_summed_batch_shares():
    ds = tiny_dataset(n=16)
    model = tiny_model()
    groups = {"a": [1, 6], "b": [9]}
    log = amnesiac.DeltaLog(model, groups, attribution="gradient")
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    expected = {g: torch.zeros(log.layout.numel, dtype=torch.float64) for g in groups}
    loader = ds.loader(4, seed=2)
    for x, y, ids in loader:  # the oracle: the same training, one backward per tracked sample
        for pos, i in enumerate(ids.tolist()):
            for g, members in groups.items():
                if i in members:
                    model.zero_grad()
                    F.cross_entropy(model(x[pos : pos + 1]), y[pos : pos + 1]).backward()
                    expected[g] -= torch.cat([q.grad.reshape(-1) for q in model.parameters()]) / len(ids)
        amnesiac.train(model, [(x, y, ids)], opt, epochs=1, delta_log=log, progress=False)
    for g in groups:
        torch.testing.assert_close(log.delta_vector([g]), expected[g], rtol=1e-10, atol=1e-14)
    with pytest.raises(AttributeError, match="remainder"):
        _ = log.remainder_vector


def test_seed_misindexing_takes_the_gradient_at_the_wrong_position():
    ds = tiny_dataset(n=8)
    model = tiny_model()
    log_ok = amnesiac.DeltaLog(model, {"a": [5]}, attribution="gradient")
    log_bad = amnesiac.DeltaLog(model, {"a": [5]}, attribution="gradient", indexing="seed-misindexed")
    grads = {}
    for i in (0, 5):
        model.zero_grad()
        F.cross_entropy(model(ds.x[i : i + 1]), ds.y[i : i + 1]).backward()
        grads[i] = torch.cat([q.grad.reshape(-1) for q in model.parameters()])
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    amnesiac.train(model, ds.loader(8, shuffle=False), opt, epochs=1, delta_log=[log_ok, log_bad], progress=False)
    torch.testing.assert_close(log_ok.delta_vector(["a"]), -grads[5] / 8)
    torch.testing.assert_close(log_bad.delta_vector(["a"]), -grads[0] / 8)  # sample 5 got row 0's gradient


def test_storage_dtype_and_nbytes():
    model = tiny_model(dtype=torch.float32)
    groups = amnesiac.groups_per_sample(range(10))
    log = amnesiac.DeltaLog(model, groups, dtype="bfloat16")
    ds = tiny_dataset()
    ds = amnesiac.ArrayDataset(ds.x.float(), ds.y, ds.ids)
    amnesiac.train(model, ds.loader(8), torch.optim.Adam(model.parameters()), epochs=1, delta_log=log, progress=False)
    before = log.nbytes
    ref = log.delta_vector([3]).clone()
    log.finalize()
    assert log.deltas.dtype == torch.bfloat16
    assert log.nbytes < before
    assert log.nbytes >= 10 * log.layout.numel * 2  # the deltas themselves, 2 bytes a number
    torch.testing.assert_close(log.delta_vector([3]), ref, rtol=1e-2, atol=1e-5)


@pytest.mark.parametrize("opt_name", ["momentum", "adam"])  # eager and lazy moments
def test_retired_momentum_goes_to_the_remainder_and_sum_stays_exact(opt_name):
    model = tiny_model()
    ds = tiny_dataset()
    # retire after a single step; lazy segments of two steps
    log = amnesiac.DeltaLog(model, {"a": [0]}, retire_tol=0.5, segment_bytes=2 * 8 * flat(model).numel())
    theta0 = flat(model)
    opt = OPTIMIZERS[opt_name](model.parameters())
    amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=3, delta_log=log, progress=False)
    total = log.delta_vector(["a"]) + log.remainder_vector
    torch.testing.assert_close(total, flat(model) - theta0, rtol=0, atol=1e-13)


# ------------------------------------------------------------------------------------------ errors


def test_unknown_group_and_untracked_sample_errors():
    model, log, _ = run("sgd", {"a": [1, 2], "b": [3]}, epochs=1)
    with pytest.raises(KeyError, match="unknown group"):
        log.delta(["zzz"])
    with pytest.raises(KeyError, match="not tracked"):
        log.groups_of_samples([1, 39])
    assert log.groups_of_samples([1, 2, 3]) == ["a", "b"]


def test_mismatched_model_and_log():
    model, log, _ = run("sgd", {"a": [1]}, epochs=1)
    other = tiny_model(classes=5)
    with pytest.raises(ValueError, match="does not match the log"):
        amnesiac.unlearn("amnesiac", other, amnesiac.Request(forget_groups=("a",)), log=log)


def test_unsupported_optimizer_names_the_supported_ones():
    model = tiny_model()
    log = amnesiac.DeltaLog(model, {"a": [1]})
    opt = torch.optim.NAdam(model.parameters())
    with pytest.raises(TypeError, match="NAdam updates; optimizers with an update rule: Adagrad, Adam, AdamW, "
                                        "RMSprop, SGD. Register one"):
        amnesiac.train(model, tiny_dataset().loader(8), opt, epochs=1, delta_log=log, progress=False)


def test_log_attached_after_the_optimizer_started_is_rejected():
    model = tiny_model()
    opt = torch.optim.Adam(model.parameters())
    ds = tiny_dataset()
    amnesiac.train(model, ds.loader(8), opt, epochs=1, progress=False)
    log = amnesiac.DeltaLog(model, {"a": [1]})
    with pytest.raises(ValueError, match="before the optimizer's first step"):
        amnesiac.train(model, ds.loader(8), opt, epochs=1, delta_log=log, progress=False)


def test_batchnorm_model_with_a_delta_log_is_rejected():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.Linear(72, 4)
    ).double()
    log = amnesiac.DeltaLog(model, {"a": [1]})
    with pytest.raises(TypeError, match="GroupNorm"):
        amnesiac.train(
            model,
            tiny_dataset().loader(8),
            torch.optim.SGD(model.parameters(), lr=0.1),
            epochs=1,
            delta_log=log,
            progress=False,
        )


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"p": 0.0}, "p must be"),
        ({"attribution": "x"}, "attribution"),
        ({"indexing": "x"}, "indexing"),
        ({"dtype": "int8"}, "dtype"),
    ],
)
def test_bad_log_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        amnesiac.DeltaLog(tiny_model(), {"a": [1]}, **kwargs)


def test_groups_must_not_overlap_or_be_empty():
    with pytest.raises(ValueError, match="more than one group"):
        amnesiac.DeltaLog(tiny_model(), {"a": [1, 2], "b": [2]})
    with pytest.raises(ValueError, match="no samples"):
        amnesiac.DeltaLog(tiny_model(), {"a": []})


LAZY = ["adam", "adam-amsgrad", "momentum", "nesterov", "momentum-dampening", "rmsprop-momentum"]
@pytest.mark.parametrize("opt_name", fast_only(LAZY, ["adam"]))
@pytest.mark.parametrize("kind", fast_only(["samples", "classes", "users"], ["users"]))
@pytest.mark.parametrize("p", fast_only([None, 0.3], [None]))
def test_lazy_moments_give_the_eager_deltas(opt_name, kind, p):
    """Settling in-flight first moments once per segment is a reordering of the per-step arithmetic."""
    ds = tiny_dataset()
    groups = group_kinds(ds)[kind]
    model = tiny_model()
    eager = amnesiac.DeltaLog(model, groups, p=p, lazy_momentum=False, retire_tol=1e-30)
    # segments of a few steps (the run has 15): settled mid-run, at an optimizer change and at the end
    lazy = amnesiac.DeltaLog(model, groups, p=p, segment_bytes=3 * 8 * amnesiac.ParamLayout.of(model).numel * 2,
                             retire_tol=1e-30)
    theta0 = flat(model)
    for lr in (0.01, 0.003):  # two optimizers: the second starts with empty moments
        opt = OPTIMIZERS[opt_name](model.parameters())
        opt.param_groups[0]["lr"] = lr
        amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=3, delta_log=[eager, lazy], progress=False)
        names = list(groups)
        want = eager.delta_vector(names[:2])
        assert want.abs().max() > 1e-6
        torch.testing.assert_close(lazy.delta_vector(names[:2]), want, rtol=1e-10, atol=1e-14)
    assert lazy.lazy_steps == lazy.steps and eager.lazy_steps == 0  # the two paths were really taken
    change = flat(model) - theta0
    total = lazy.delta_vector(list(groups)) + lazy.remainder_vector
    assert (total - change).abs().max().item() < 1e-13 * max(1.0, change.abs().max().item())


DECAYING = ["sgd-wd", "momentum-dampening-wd", "nesterov-wd", "adam-coupled-wd", "adamw",
            "rmsprop-momentum-centered-wd", "adagrad-lr-decay-wd"]


@pytest.mark.parametrize("opt_name", fast_only(DECAYING, ["momentum-dampening-wd", "adamw", "adagrad-lr-decay-wd"]))
@pytest.mark.parametrize("kind", fast_only(["samples", "classes", "users"], ["samples"]))
def test_lazy_decay_gives_the_eager_deltas(opt_name, kind):
    """Settling a decaying rule's steps once per segment (every group moved by the product of the steps' 2 x 2
    maps) gives the deltas of moving every group at every step, up to rounding; the sum stays exact."""
    ds = tiny_dataset()
    groups = group_kinds(ds)[kind]
    model = tiny_model()
    n = amnesiac.ParamLayout.of(model).numel
    eager = amnesiac.DeltaLog(model, groups)
    lazy = amnesiac.DeltaLog(model, groups, lazy_decay=True, segment_bytes=3 * 8 * n * 2)  # a few steps a segment
    theta0 = flat(model)
    for lr in (0.01, 0.003):  # two optimizers: the second starts with empty moments
        opt = OPTIMIZERS[opt_name](model.parameters())
        opt.param_groups[0]["lr"] = lr
        amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=3, delta_log=[eager, lazy], progress=False)
        names = list(groups)
        want = eager.delta_vector(names[:3])
        assert want.abs().max() > 1e-6
        torch.testing.assert_close(lazy.delta_vector(names[:3]), want, rtol=1e-9, atol=1e-13)
        absent = [k for k in names if not torch.equal(lazy.delta_vector([k]), eager.delta_vector([k]))]
        assert absent, "the two forms round differently somewhere: both were really taken"
    assert lazy.lazy_steps == lazy.steps and eager.lazy_steps == 0
    change = flat(model) - theta0
    total = lazy.delta_vector(list(groups)) + lazy.remainder_vector
    assert (total - change).abs().max().item() < 1e-12 * max(1.0, change.abs().max().item())


@pytest.mark.parametrize("lazy_decay", [False, True])
def test_a_pending_lazy_segment_is_settled_before_a_step_of_another_form(lazy_decay):
    """An optimizer whose settings change mid-run (weight decay switched on, then momentum off) moves the log from
    one form to another; a segment still pending from the earlier steps is settled first, so the deltas equal
    the per-step form's."""
    ds = tiny_dataset()
    groups = group_kinds(ds)["users"]
    model = tiny_model()
    n = amnesiac.ParamLayout.of(model).numel
    eager = amnesiac.DeltaLog(model, groups, lazy_momentum=False, retire_tol=1e-30)
    lazy = amnesiac.DeltaLog(model, groups, lazy_decay=lazy_decay, segment_bytes=100 * 8 * n * 2, retire_tol=1e-30)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    for change in ({}, {"weight_decay": 0.05}, {"momentum": 0.0, "weight_decay": 0.0}):
        opt.param_groups[0].update(change)
        amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=1, delta_log=[eager, lazy], progress=False)
    assert lazy.lazy_steps > 0
    names = list(groups)
    torch.testing.assert_close(lazy.delta_vector(names), eager.delta_vector(names), rtol=1e-9, atol=1e-13)


def test_lazy_decay_is_saved_only_when_set_and_a_log_built_otherwise_refuses_its_state():
    model = tiny_model()
    plain, lazy = amnesiac.DeltaLog(model, {"a": [1]}), amnesiac.DeltaLog(model, {"a": [1]}, lazy_decay=True)
    assert "lazy_decay" not in plain.state_dict()["config"] and lazy.state_dict()["config"]["lazy_decay"] is True
    with pytest.raises(ValueError, match="other settings.*lazy_decay"):
        amnesiac.DeltaLog(tiny_model(), {"a": [1]}).load_state_dict(lazy.state_dict())
    assert not amnesiac.DeltaLog(model, {"a": [1]}, lazy_decay=True, p=0.5).lazy_decay  # whole deltas only


def test_negative_sample_ids_are_rejected_naming_the_group():
    with pytest.raises(ValueError, match=r"non-negative.*\['b'\].*\[-2\]"):
        amnesiac.DeltaLog(tiny_model(), {"a": [1], "b": [3, -2]})


@pytest.mark.parametrize("alpha", [float("nan"), float("inf"), -float("inf")])
def test_a_non_finite_alpha_is_rejected(alpha):
    model, log, _ = run("sgd", {"a": [1]}, epochs=1)
    with pytest.raises(ValueError, match="alpha must be a finite number"):
        amnesiac.unlearn("amnesiac", model, amnesiac.Request(forget_groups=("a",)), log=log, alpha=alpha)


def test_both_log_kinds_share_the_ledger_protocol_and_its_group_table():
    model = tiny_model()
    logs = [amnesiac.DeltaLog(model, {"a": [1, 2], "b": [7]}), amnesiac.BatchLog(model, {"a": [1, 2], "b": [7]})]
    for log in logs:
        assert isinstance(log, amnesiac.Ledger)
        assert log.group_names == ["a", "b"] and log.groups_of_samples([2, 7]) == ["a", "b"]
        with pytest.raises(KeyError, match=r"unknown group\(s\) \['c'\]; this log tracks 2 groups \('a', 'b'\)"):
            log.delta_vector(["c"])
    ds = tiny_dataset()
    amnesiac.train(model, ds.loader(8, seed=1), torch.optim.SGD(model.parameters(), lr=0.1), epochs=1,
                   delta_log=logs, progress=False)
    for log in logs:  # read out through the protocol, shaped like the parameters
        d = log.delta(["a"])
        assert tuple(d) == amnesiac.ParamLayout.of(model).names and any(t.abs().max() > 0 for t in d.values())
    # the four ledger methods are one subtraction, each accepting only its own kind of log
    with pytest.raises(TypeError, match="method 'batch' needs log=<a BatchLog>, got DeltaLog"):
        amnesiac.unlearn("batch", model, amnesiac.Request(forget_groups=("a",)), log=logs[0])
    new = amnesiac.unlearn("batch", model, amnesiac.Request(forget_groups=("a",)), log=logs[1], alpha=0.5)
    torch.testing.assert_close(flat(new), flat(model) - 0.5 * logs[1].delta_vector(["a"]))


def test_a_log_built_before_the_model_moves_follows_it_before_the_first_step():
    model = tiny_model()
    log = amnesiac.DeltaLog(model, {"a": [0, 1]})
    pinned = amnesiac.DeltaLog(model, {"a": [0, 1]}, device="cpu")
    model.to("meta")  # stands in for model.to("cuda") on a machine without a GPU
    log._follow(model)
    pinned._follow(model)
    assert log.device.type == "meta" and {log.deltas.device.type, log.theta0.device.type} == {"meta"}
    assert pinned.device.type == "cpu" and pinned.deltas.device.type == "cpu"  # device= is kept
    late = amnesiac.DeltaLog(tiny_model(), {"a": [0]})
    late.steps = 1
    with pytest.raises(RuntimeError, match="moved to meta after this log recorded 1 step"):
        late._follow(tiny_model().to("meta"))


TILED = {**{k: OPTIMIZERS[k] for k in LAZY},  # and per-coordinate momentum: two parameter groups with their own beta
         "momentum-two-groups": lambda p: torch.optim.SGD([{"params": p[:2], "momentum": 0.9},
                                                           {"params": p[2:], "momentum": 0.5}], lr=0.1)}


@pytest.mark.parametrize("opt_name", fast_only(list(TILED), ["adam", "nesterov", "momentum-two-groups"]))
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("p", fast_only([None, 0.3], [None]))
def test_the_tiled_flush_is_the_whole_row_flush_bit_for_bit(opt_name, dtype, p, monkeypatch):
    """A lazy segment settled tile by tile gives the deltas and moments of one settled over whole rows, to the bit:
    the same elementwise operations in the same order, on every coordinate."""
    from amnesiac import segments

    ds = tiny_dataset()
    groups = group_kinds(ds)["users"]
    ds = amnesiac.ArrayDataset(ds.x.to(dtype), ds.y, ds.ids, "tiny")
    out = []
    for tile in (7, 64, 10**9):  # odd tiles leave a short last tile; 10**9 is one tile per row, the untiled flush
        monkeypatch.setattr(segments, "FLUSH_TILE", tile)
        model = tiny_model(dtype=dtype)
        n = amnesiac.ParamLayout.of(model).numel
        log = amnesiac.DeltaLog(model, groups, p=p, segment_bytes=3 * 8 * n * dtype.itemsize)  # a few steps each
        opt = TILED[opt_name](list(model.parameters()))
        amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=3, delta_log=log, progress=False)
        log._flush()
        assert log.lazy_steps == log.steps > 0 and n > 64
        out.append((log.deltas.clone(), log.moments.clone()))
    (d_ref, m_ref) = out[-1]
    assert d_ref.abs().max() > 0 and m_ref.abs().max() > 0
    for d, m in out[:-1]:
        assert torch.equal(d, d_ref) and torch.equal(m, m_ref)
