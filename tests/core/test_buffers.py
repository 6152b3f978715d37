"""Buffers reused from step to step (the groups' shares, the log's flat temporaries, the step's coefficients, the
gradients' float64 norms): reused only once nothing else holds them, and the ledger is the same bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from helpers import OPTIMIZERS, tiny_dataset, tiny_model

import amnesiac
from amnesiac import buffers, grads
from amnesiac.attributed import AttributedOptimizer
from amnesiac.buffers import held_only_by_caller


class Owner:
    def __init__(self):
        self.buf = torch.zeros(4)


def test_a_buffer_counts_as_free_only_while_nothing_else_refers_to_it_or_its_memory():
    # (each answer is taken before it is asserted: pytest's rewritten asserts keep their operands alive)
    o = Owner()
    free = held_only_by_caller(o.buf)
    assert free
    for hold in (lambda t: t, lambda t: [t], lambda t: {"k": t}, lambda t: t[1:], lambda t: t.view(2, 2),
                 lambda t: t.detach()):
        kept = hold(o.buf)
        free = held_only_by_caller(o.buf)
        assert not free
        del kept
        free = held_only_by_caller(o.buf)
        assert free


def _float32(ds):
    return amnesiac.ArrayDataset(ds.x.float(), ds.y, ds.ids, "tiny")


def _backward(model, x, y):
    model.zero_grad()
    F.cross_entropy(model(x), y).backward()


def test_group_sums_reuse_their_result_only_after_the_caller_let_it_go():
    ds = _float32(tiny_dataset(n=16))
    model = tiny_model(dtype=torch.float32)
    assign = torch.tensor([0, 1, -1, 2] * 4)
    with grads.GroupGradients(model) as cap:
        _backward(model, ds.x[:16], ds.y[:16])
        assert cap.reuses == 0
        first = cap.group_sums(assign, 3)
        kept = first.clone()
        cap.clear()
        _backward(model, ds.x[:16].flip(0), ds.y[:16].flip(0))
        second = cap.group_sums(assign, 3)  # the first is still held here: new memory, the first untouched
        assert cap.reuses == 0 and torch.equal(first, kept)
        expected = second.clone()
        ptr = second.data_ptr()
        del first, second
        cap.clear()
        _backward(model, ds.x[:16].flip(0), ds.y[:16].flip(0))
        third = cap.group_sums(assign, 3)  # the second was let go: its memory, zeroed and filled again
        assert cap.reuses == 1 and third.data_ptr() == ptr and torch.equal(third, expected)


def _train(opt_name, reuse: bool, monkeypatch, segment_bytes):
    if not reuse:
        monkeypatch.setattr(buffers, "REUSE", False)
    ds = _float32(tiny_dataset())
    model = tiny_model(dtype=torch.float32)
    log = amnesiac.DeltaLog(model, amnesiac.groups_by_class(ds), segment_bytes=segment_bytes)
    opt = OPTIMIZERS[opt_name](model.parameters())
    caps = []
    enter = grads.GroupGradients.__enter__
    monkeypatch.setattr(grads.GroupGradients, "__enter__", lambda self: caps.append(self) or enter(self))
    amnesiac.train(model, ds.loader(8, seed=1), opt, epochs=2, delta_log=log, progress=False)
    monkeypatch.undo()
    return log.finalize(), sum(cap.reuses for cap in caps)


@pytest.mark.parametrize("opt_name", ["adam", "momentum-dampening-wd", "sgd"])
@pytest.mark.parametrize("segment_steps", [0, 3])
def test_reusing_buffers_leaves_the_ledger_the_same_bit_for_bit(opt_name, segment_steps, monkeypatch):
    """With segments settled every step (every buffer free again at the next) and segments of a few steps (the
    groups' shares held across steps, which must not be overwritten), the ledger equals one recorded with new
    memory at every step."""
    width = amnesiac.ParamLayout.of(tiny_model()).numel
    segment_bytes = segment_steps * 4 * width * 4
    log, n_reused = _train(opt_name, True, monkeypatch, segment_bytes)
    ref, n_ref = _train(opt_name, False, monkeypatch, segment_bytes)
    assert n_ref == 0 and n_reused > 0  # the comparison is not vacuous
    if segment_steps == 0:
        # every step reused the last one's shares (10 steps) but the first and one with more classes than before
        assert n_reused == 8
    assert torch.equal(log.deltas, ref.deltas) and torch.equal(log.remainder_vector, ref.remainder_vector)


def test_new_memory_every_step_switches_reuse_off_for_the_block_and_back_also_after_an_error():
    with pytest.raises(KeyError), buffers.new_memory_every_step():
        assert not buffers.REUSE
        raise KeyError
    assert buffers.REUSE


@pytest.mark.parametrize("shape", [(1,), (7, 3), (300, 129), (2**20 + 3,)])
def test_the_gradient_norms_are_torch_s_float64_norms_to_the_bit(shape):
    gen = torch.Generator().manual_seed(len(shape))
    opt = AttributedOptimizer.__new__(AttributedOptimizer)
    opt._norm_buffer = torch.empty(5, dtype=torch.float64)  # too small: grown on demand
    for scale in (1e-20, 1.0, 1e20):
        g = torch.randn(shape, generator=gen) * scale
        for t in (g, g.t() if g.dim() == 2 else g[::2]):  # contiguous and not (then torch's own call)
            assert torch.equal(opt._norm64(t), torch.linalg.vector_norm(t, dtype=torch.float64))


def test_adam_s_coefficients_in_place_are_the_expression_s_to_the_bit():
    """The Adam rule forms lr / (1 - b1^t) / denom_t in place (one new tensor per parameter instead of four): the
    same operations torch runs for the expression, so the same bits."""
    import math

    from amnesiac.rules import adam

    gen = torch.Generator().manual_seed(0)
    for dtype in (torch.float32, torch.float64):
        p = torch.nn.Parameter(torch.zeros(5000, dtype=dtype))
        opt = torch.optim.Adam([p], lr=3e-3, betas=(0.9, 0.99), eps=1e-8)
        sq = torch.rand(5000, generator=gen, dtype=dtype) * torch.logspace(-14, 2, 5000, dtype=dtype)
        sq[::9] = 0
        for t in (1, 17, 4000):
            state = {"step": torch.tensor(float(t)), "exp_avg_sq": sq}
            c = adam(opt, opt.param_groups[0], state, t).c
            expected = 3e-3 / (1 - 0.9**t) / ((sq.sqrt() / math.sqrt(1 - 0.99**t)).add_(1e-8))
            assert torch.equal(c, expected)
