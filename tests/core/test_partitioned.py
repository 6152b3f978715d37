"""weight_grads="partitioned": each hooked layer's weight gradient computed once, as a partition of the batch rows
into the log's groups and the untracked rows. The gradient must equal autograd's, the groups' parts the float64
loop oracle's, the logs those of the default path; the parameters must require gradients again after every
backward pass. (Clipping, and the refusals of gradient accumulation and per-value clipping, are tested for both
paths in test_attributed.py.)"""

import copy

import pytest
import torch
import torch.nn.functional as F
from helpers import RESNET, SIMPLE, Scale, loop_oracle, small_resnet, tiny_dataset, tiny_model, user_groups

import amnesiac
from amnesiac.grads import GroupGradients, ParamLayout


def _twice_with_inplace():
    """The same Linear called twice, an in-place ReLU right after a tapped layer, a LayerNorm, and a layer without
    a rule (PReLU, served by the torch.func fallback and so left to autograd)."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(16, 16)
    return torch.nn.Sequential(torch.nn.Flatten(), lin, torch.nn.ReLU(inplace=True), torch.nn.LayerNorm(16), lin,
                               torch.nn.PReLU(), Scale(), torch.nn.Linear(16, 3)).double()


MODELS = [pytest.param(lambda: tiny_model(classes=3), id="simple"), RESNET,
          pytest.param(_twice_with_inplace, id="twice-inplace-fallback")]
ASSIGNMENTS = {  # batch of 7
    "mixed": ([0, -1, 1, 0, 2, 1, -1], 3),
    "every-row": ([1, 0, 0, 1, 2, 2, 0], 3),
    "no-row": ([-1] * 7, 2),
    "one-group-absent": ([2, -1, 2, -1, 0, 0, -1], 3),
}


@pytest.mark.parametrize("make_model", MODELS)
@pytest.mark.parametrize("assignment", ASSIGNMENTS.values(), ids=ASSIGNMENTS.keys())
def test_one_partitioned_backward_gives_autograds_gradient_and_the_oracles_group_sums(make_model, assignment):
    model = make_model()
    ds = tiny_dataset(n=7, classes=3, size=16 if make_model is small_resnet else 4)
    assign, n = torch.tensor(assignment[0]), assignment[1]
    layout = ParamLayout.of(model)
    plain = copy.deepcopy(model)
    F.cross_entropy(plain(ds.x), ds.y).backward()
    want_grad = torch.cat([q.grad.reshape(-1) for q in layout.params(plain)])
    seen = []
    with GroupGradients(model, layout) as cap:
        cap.arm(assign, n, on_grads=seen.extend)
        assert cap.armed_key == (n, tuple(assignment[0]))
        frozen = [name for name, q in model.named_parameters() if not q.requires_grad]
        assert frozen and "5.weight" not in frozen and "6.gain" not in frozen  # layers without a rule: autograd
        F.cross_entropy(model(ds.x), ds.y).backward()
        assert all(q.requires_grad for q in model.parameters())  # given back at the end of the backward pass
        got = cap.partition()
        assert cap.armed_key is None
        again = cap.group_sums(assign, n)  # other groupings are still formed from the same captured pass
    assert {id(q) for q in seen} == {id(q) for name, q in model.named_parameters() if name in frozen}
    got_grad = torch.cat([q.grad.reshape(-1) for q in layout.params(model)])
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-10, atol=1e-14)
    want = torch.zeros(n, layout.numel, dtype=torch.float64)
    per_sample = loop_oracle(plain, ds.x, ds.y, torch.arange(7))
    for i, k in enumerate(assign.tolist()):
        if k >= 0:
            want[k] += per_sample[i] / 7
    torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-13)  # tapped layers and fallback layers alike
    torch.testing.assert_close(again, want, rtol=1e-9, atol=1e-13)
    if (torch.tensor(assignment[0]) >= 0).any():
        assert want.abs().max() > 1e-3


OPTIMIZERS = {
    "adam": lambda p: torch.optim.Adam(p, lr=0.01),
    "sgd-momentum": lambda p: torch.optim.SGD(p, lr=0.1, momentum=0.9),
}


@pytest.mark.parametrize("make_opt", OPTIMIZERS.values(), ids=OPTIMIZERS.keys())
@pytest.mark.parametrize("make_model", [SIMPLE, RESNET])
def test_training_partitioned_logs_what_the_default_path_logs(make_opt, make_model):
    ds = tiny_dataset(n=24, classes=3, size=16 if make_model is small_resnet else 4)
    classes = amnesiac.groups_by_class(ds)
    singles = amnesiac.groups_per_sample([0, 3, 7, 20])
    out = {}
    for mode in ("autograd", "partitioned"):
        model = make_model()
        # two groupings: the class log covers every row, so it is the one partitioned; the other is a second pass
        logs = [amnesiac.DeltaLog(model, singles), amnesiac.DeltaLog(model, classes)]
        h = amnesiac.train(model, ds.loader(8, seed=1), make_opt(model.parameters()), epochs=2, delta_log=logs,
                           progress=False, weight_grads=mode, device="cpu")
        assert all(q.requires_grad for q in model.parameters())
        assert h.log_seconds == pytest.approx(h.share_seconds + h.update_seconds) and h.update_seconds > 0
        out[mode] = (torch.cat([q.detach().reshape(-1) for q in model.parameters()]),
                     [log.delta_vector(list(log.group_names)) for log in logs])
    (w_a, d_a), (w_p, d_p) = out["autograd"], out["partitioned"]
    torch.testing.assert_close(w_p, w_a, rtol=1e-9, atol=1e-12)
    for a, b in zip(d_a, d_p):
        assert a.abs().max() > 1e-4
        torch.testing.assert_close(b, a, rtol=1e-8, atol=1e-10)


def test_partitioned_is_refused_where_it_cannot_work():
    model = tiny_model()
    log = amnesiac.DeltaLog(model, user_groups())
    sgd = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(ValueError, match="unknown weight_grads 'fused'; valid: autograd, partitioned"):
        amnesiac.AttributedOptimizer(sgd, model, log, weight_grads="fused")
    with pytest.raises(ValueError, match="needs group_grads='auto' or 'hooks', not 'vmap'"):
        amnesiac.train(model, tiny_dataset().loader(8), sgd, epochs=1, delta_log=log, progress=False,
                       group_grads="vmap", weight_grads="partitioned")
    with GroupGradients(model) as cap, pytest.raises(RuntimeError, match="no captured backward pass"):
        cap.arm(torch.tensor([0, -1]), 1)
        cap.partition()
