"""Per-sample gradients against a float64 loop oracle."""

import pytest
import torch
import torch.nn.functional as F
from conftest import tiny_dataset, tiny_model

import amnesiac
from amnesiac.grads import ParamLayout, per_sample_grads


def loop_oracle(model, x, y, rows):
    """The obviously-correct way: one backward per sample."""
    layout = ParamLayout.of(model)
    out = []
    for i in rows.tolist():
        model.zero_grad()
        F.cross_entropy(model(x[i : i + 1]), y[i : i + 1]).backward()
        out.append(torch.cat([q.grad.reshape(-1) for q in layout.params(model)]))
    return torch.stack(out)


def small_resnet():
    torch.manual_seed(0)
    return amnesiac.resnet18_gn(1, 3, stem="imagenet").double()


@pytest.mark.parametrize("make_model", [tiny_model, small_resnet], ids=["simple", "resnet18-gn"])
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
