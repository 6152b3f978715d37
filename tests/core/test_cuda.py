"""On a machine with CUDA: the ledger's identity holds there, and CPU and GPU deltas agree (skipped elsewhere)."""

import os

import pytest
import torch
from helpers import flat, small_resnet, tiny_dataset, tiny_model

import amnesiac

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_auto_device_follows_the_environment(monkeypatch):
    monkeypatch.setenv("AMNESIAC_DEVICE", "cpu")
    assert amnesiac.pick_device("auto") == torch.device("cpu")
    monkeypatch.setenv("AMNESIAC_DEVICE", "tpu")
    with pytest.raises(ValueError, match="unknown device 'tpu'"):
        amnesiac.pick_device("auto")


def test_a_reproducible_device_turns_on_deterministic_algorithms_on_cuda_only(monkeypatch):
    calls = []
    monkeypatch.setattr(torch, "use_deterministic_algorithms", lambda on: calls.append(on))
    monkeypatch.delenv("CUBLAS_WORKSPACE_CONFIG", raising=False)
    assert amnesiac.pick_reproducible_device("cpu") == torch.device("cpu")
    assert calls == [] and "CUBLAS_WORKSPACE_CONFIG" not in os.environ
    monkeypatch.setattr(amnesiac.training, "pick_device", lambda device: torch.device("cuda"))
    assert amnesiac.pick_reproducible_device("auto") == torch.device("cuda")
    assert calls == [True] and os.environ["CUBLAS_WORKSPACE_CONFIG"] == ":4096:8"


def _run(device, opt_fn, weight_grads="autograd"):
    ds = tiny_dataset()
    model = tiny_model()
    groups = amnesiac.groups_by_user(torch.arange(0, 40, 2), 4, seed=1)
    log = amnesiac.DeltaLog(model, groups)
    theta0 = flat(model).clone()
    amnesiac.train(model, ds.loader(8, seed=1), opt_fn(model.parameters()), epochs=2, delta_log=log, device=device,
                   progress=False, weight_grads=weight_grads)
    return flat(model).cpu(), theta0, log, list(groups)


@cuda
def test_partitioned_weight_gradients_on_cuda_agree_with_the_cpus_default_path():
    torch.use_deterministic_algorithms(True, warn_only=True)
    adam = lambda p: torch.optim.Adam(p, lr=0.01)  # noqa: E731
    theta_g, theta0, log_g, names = _run("cuda", adam, "partitioned")
    change = theta_g - theta0
    total = (log_g.delta_vector(names) + log_g.remainder_vector).cpu()
    assert (total - change).abs().max().item() < 1e-12 * max(1.0, change.abs().max().item())
    theta_c, _, log_c, _ = _run("cpu", adam)
    torch.testing.assert_close(theta_g, theta_c, rtol=1e-8, atol=1e-10)
    for k in names:
        torch.testing.assert_close(log_g.delta_vector([k]).cpu(), log_c.delta_vector([k]).cpu(), rtol=1e-8,
                                   atol=1e-10)


@cuda
@pytest.mark.parametrize("opt_fn", [lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
                                    lambda p: torch.optim.Adam(p, lr=0.01)], ids=["momentum", "adam"])
def test_conservation_and_cpu_gpu_agreement_on_cuda(opt_fn):
    torch.use_deterministic_algorithms(True, warn_only=True)
    theta_g, theta0, log_g, names = _run("cuda", opt_fn)
    change = theta_g - theta0
    total = (log_g.delta_vector(names) + log_g.remainder_vector).cpu()
    assert (total - change).abs().max().item() < 1e-12 * max(1.0, change.abs().max().item())
    theta_c, _, log_c, _ = _run("cpu", opt_fn)
    for k in names:  # float64 on both: the two devices' arithmetic differ in the last bits only
        torch.testing.assert_close(log_g.delta_vector([k]).cpu(), log_c.delta_vector([k]).cpu(), rtol=1e-8,
                                   atol=1e-10)


@cuda
def test_a_log_built_on_the_cpu_follows_the_model_to_the_gpu():
    ds, model = tiny_dataset(), tiny_model()
    log = amnesiac.DeltaLog(model, amnesiac.groups_by_user(torch.arange(0, 40, 2), 4, seed=1))
    theta0 = flat(model).clone()
    amnesiac.train(model, ds.loader(8, seed=1), torch.optim.Adam(model.parameters(), lr=0.01), epochs=1,
                   delta_log=log, device="cuda", progress=False)
    assert log.device.type == "cuda" and log.deltas.device.type == "cuda"
    change = flat(model).cpu() - theta0
    total = (log.delta_vector(log.group_names) + log.remainder_vector).cpu()
    assert (total - change).abs().max().item() < 1e-12 * max(1.0, change.abs().max().item())


@cuda
def test_convolution_group_sums_on_cuda_in_one_grouped_call_equal_one_call_per_group(monkeypatch):
    import torch.nn.functional as F

    import amnesiac.grads as G
    import amnesiac.layers as L

    model = small_resnet().cuda()
    ds = tiny_dataset(n=9, classes=3, size=16)
    x, y = ds.x.double().cuda(), ds.y.cuda()
    assign = torch.tensor([3, -1, 0, 3, 3, 0, -1, 1, 3])
    assert L.conv_kernel_for(x.device) == "grouped"  # the default on CUDA
    got = {}
    for kernel in ("loop", "grouped"):
        model.zero_grad()
        with L.conv_kernel(kernel), G.GroupGradients(model) as cap:
            F.cross_entropy(model(x), y).backward()
            got[kernel] = cap.group_sums(assign, 4)
    torch.testing.assert_close(got["grouped"], got["loop"], rtol=1e-9, atol=1e-12)
    assert got["loop"][3].abs().max() > 0
