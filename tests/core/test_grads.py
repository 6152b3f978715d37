"""Per-sample gradients against a float64 loop oracle."""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import RESNET, SIMPLE, Scale, fast_only, loop_oracle, small_resnet, tiny_dataset, tiny_model

import amnesiac
from amnesiac.grads import GroupGradients, ParamLayout, per_sample_grads
from amnesiac.layers import hooks_unsupported_reason


@pytest.mark.parametrize("make_model", [SIMPLE, RESNET])
@pytest.mark.parametrize("batch,rows", [(1, [0]), (5, [4, 0, 2]), (7, [1, 3, 5, 6])])
def test_per_sample_grads_match_loop(make_model, batch, rows):
    model = make_model()
    ds = tiny_dataset(n=batch, classes=3, size=16)
    rows = torch.tensor(rows)
    got_rows, got = zip(*per_sample_grads(model, ds.x, ds.y, rows, chunk_size=2))
    got_rows, got = torch.cat(got_rows), torch.cat(got)
    assert torch.equal(got_rows, rows)
    want = loop_oracle(model, ds.x, ds.y, rows)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)


def test_batchnorm_in_training_mode_is_rejected_with_the_fix():
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 2, 3), torch.nn.BatchNorm2d(2), torch.nn.Flatten(), torch.nn.LazyLinear(2)
    )
    model(torch.zeros(2, 1, 5, 5))
    with pytest.raises(TypeError, match="GroupNorm"):
        next(per_sample_grads(model, torch.zeros(2, 1, 5, 5), torch.zeros(2, dtype=torch.long)))


def test_layout_roundtrip():
    model = tiny_model()
    layout = ParamLayout.of(model)
    v = layout.vector(model)
    back = layout.flatten(layout.unflatten(v))
    assert torch.equal(back, v)
    assert layout.numel == sum(q.numel() for q in model.parameters())


# ------------------------------------------------------------------ group sums read off the backward pass


@pytest.mark.parametrize("make_model", [SIMPLE, RESNET])
def test_hook_group_sums_match_summed_per_sample_grads(make_model):
    model = make_model()
    ds = tiny_dataset(n=7, classes=3, size=16)
    layout = ParamLayout.of(model)
    assign = torch.tensor([0, -1, 1, 0, 2, 1, -1])
    with GroupGradients(model, layout) as cap:
        F.cross_entropy(model(ds.x), ds.y).backward()
        got = cap.group_sums(assign, 3)
    want = torch.zeros(3, layout.numel, dtype=torch.float64)
    per_sample = loop_oracle(model, ds.x, ds.y, torch.arange(7))
    for i, k in enumerate(assign.tolist()):
        if k >= 0:
            want[k] += per_sample[i] / 7  # share of the mean-loss batch gradient
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-13)
    assert want.abs().max() > 1e-3


def test_layer_called_twice_and_layernorm_are_summed_over_calls():
    torch.manual_seed(0)
    lin, norm = torch.nn.Linear(4, 4).double(), torch.nn.LayerNorm(4).double()
    model = torch.nn.Sequential(lin, torch.nn.Tanh(), norm, lin)  # the same Linear twice
    x, y = torch.randn(5, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0])
    with GroupGradients(model) as cap:
        F.cross_entropy(model(x), y).backward()
        got = cap.group_sums(torch.tensor([1, 0, 0, -1, 1]), 2)
    want = loop_oracle(model, x, y, torch.arange(5)) / 5
    torch.testing.assert_close(got[0], want[1] + want[2], rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(got[1], want[0] + want[4], rtol=1e-9, atol=1e-13)


def test_layers_without_a_rule_fall_back_alone_and_hooks_alone_refuse():
    torch.manual_seed(0)
    # PReLU and Scale hold parameters and have no layer rule; the Linear layers keep theirs
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.PReLU(), Scale(), torch.nn.Linear(16, 3)).double()
    assert "PReLU has no layer rule (rules: Conv1d, Conv2d, Conv3d, GroupNorm, LayerNorm, Linear)" in \
        hooks_unsupported_reason(model)
    with pytest.raises(TypeError, match="PReLU"):
        GroupGradients(model, fallback=False)
    cap = GroupGradients(model)
    assert cap.fallback_layers == ["1", "2"]  # only the two layers without a rule, not the whole model
    x, y = torch.randn(6, 1, 4, 4, dtype=torch.float64), torch.tensor([0, 1, 2, 0, 1, 2])
    assign = torch.tensor([1, -1, 0, 0, 1, -1])
    with cap:
        F.cross_entropy(model(x), y).backward()
        got = cap.group_sums(assign, 2)
    want = loop_oracle(model, x, y, torch.arange(6)) / 6
    torch.testing.assert_close(got[0], want[2] + want[3], rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(got[1], want[0] + want[4], rtol=1e-9, atol=1e-13)
    ds = tiny_dataset(n=8, classes=3, size=4)
    logs = {}
    for method in ("auto", "vmap"):
        m = copy.deepcopy(model)
        logs[method] = amnesiac.DeltaLog(m, {"a": [0, 5]})
        amnesiac.train(m, ds.loader(4), torch.optim.SGD(m.parameters(), lr=0.1), epochs=1,
                       delta_log=logs[method], progress=False, group_grads=method)
    assert logs["auto"].delta_vector(["a"]).abs().max() > 1e-6
    torch.testing.assert_close(logs["auto"].delta_vector(["a"]), logs["vmap"].delta_vector(["a"]))
    m = copy.deepcopy(model)
    with pytest.raises(TypeError, match="PReLU"):
        amnesiac.train(m, ds.loader(4), torch.optim.SGD(m.parameters(), lr=0.1), epochs=1,
                       delta_log=amnesiac.DeltaLog(m, {"a": [0]}), progress=False, group_grads="hooks")


@pytest.mark.parametrize("indexing", fast_only(["position", "seed-misindexed"], ["position"]))
@pytest.mark.parametrize("p", fast_only([None, 0.3], [0.3]))  # None: on the ResNet, minutes
def test_training_with_hooks_and_with_vmap_log_the_same_deltas(indexing, p):
    ds = tiny_dataset(n=24, classes=3, size=16)
    cls = amnesiac.groups_by_class(ds, [2])
    singles = [i for i in (0, 3, 7, 11, 12) if i not in set(cls["class2"].tolist())]
    groups = {**amnesiac.groups_per_sample(singles), **cls}
    out = {}
    for method in ("hooks", "vmap"):
        model = small_resnet() if p is None else tiny_model()
        logs = [amnesiac.DeltaLog(model, groups, p=p, indexing=indexing),
                amnesiac.DeltaLog(model, groups, p=p, indexing=indexing, attribution="gradient")]
        amnesiac.train(model, ds.loader(8, seed=1), torch.optim.Adam(model.parameters(), lr=0.01), epochs=1,
                       delta_log=logs, progress=False, group_grads=method)
        out[method] = [log.delta_vector(list(groups)) for log in logs]
    for a, b in zip(out["hooks"], out["vmap"]):
        assert a.abs().max() > 1e-6
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_group_sums_without_a_backward_pass_is_a_clear_error():
    with GroupGradients(tiny_model()) as cap, pytest.raises(RuntimeError, match="backward"):
        cap.group_sums(torch.tensor([0]), 1)


@pytest.mark.parametrize("conv", [
    lambda: torch.nn.Conv1d(4, 6, 3, stride=2, padding=1),
    lambda: torch.nn.Conv2d(4, 6, 3, stride=(2, 1), padding=2, dilation=2, groups=2, bias=False),
    lambda: torch.nn.Conv3d(2, 3, 2, padding=1),
], ids=["conv1d", "conv2d-grouped-dilated", "conv3d"])
def test_convolution_group_sums_in_one_grouped_call_equal_one_call_per_group(conv, monkeypatch):
    import amnesiac.layers as L

    torch.manual_seed(0)
    layer = conv().double()
    spatial = {torch.nn.Conv1d: (9,), torch.nn.Conv2d: (7, 6), torch.nn.Conv3d: (4, 5, 3)}[type(layer)]
    model = torch.nn.Sequential(layer, torch.nn.Tanh(), torch.nn.Flatten(), torch.nn.LazyLinear(3)).double()
    x = torch.randn(9, layer.in_channels, *spatial, dtype=torch.float64)
    model(x)
    y = torch.tensor([0, 1, 2, 0, 1, 2, 0, 1, 2])
    assign = torch.tensor([3, -1, 0, 3, 3, 0, -1, 1, 3])  # uneven groups, untracked rows, group 2 absent
    got = {}
    for kernel in ("loop", "grouped"):
        model.zero_grad()
        with L.conv_kernel(kernel), GroupGradients(model) as cap:
            F.cross_entropy(model(x), y).backward()
            got[kernel] = cap.group_sums(assign, 4)
        assert L.conv_group_kernel == "auto"  # restored on leaving
    want = torch.zeros_like(got["loop"])
    per_sample = loop_oracle(model, x, y, torch.arange(9))
    for i, k in enumerate(assign.tolist()):
        if k >= 0:
            want[k] += per_sample[i] / 9
    torch.testing.assert_close(got["loop"], want, rtol=1e-9, atol=1e-13)
    torch.testing.assert_close(got["grouped"], want, rtol=1e-9, atol=1e-13)
    assert got["grouped"][2].abs().max() == 0 and want[3].abs().max() > 1e-3
    assert L.conv_kernel_for(x.device) == "loop" and L.conv_kernel_for("cuda:0") == "grouped"  # what "auto" resolves to
    with pytest.raises(RuntimeError, match="inside"), L.conv_kernel("grouped"):
        assert L.conv_kernel_for("cpu") == "grouped"
        raise RuntimeError("inside")
    assert L.conv_group_kernel == "auto"  # restored after an error too
    with pytest.raises(ValueError, match="must be one of auto, loop, grouped, got 'batched'"), L.conv_kernel("batched"):
        pass
    monkeypatch.setattr(L, "conv_group_kernel", "batched")
    with pytest.raises(ValueError, match="must be one of auto, loop, grouped, got 'batched'"):
        L.conv_kernel_for(x.device)
