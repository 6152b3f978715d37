"""Exact unlearning by rewinding: the replay from the rewind point is the dropped retrain, bit for bit."""

import pytest
import torch
from torch import nn

import amnesiac
from amnesiac.rewind import RewindRecord, rewind_unlearn


def _data(n=40):
    gen = torch.Generator().manual_seed(0)
    return amnesiac.ArrayDataset(torch.randn(n, 6, generator=gen), torch.arange(n) % 3, torch.arange(n))


def _fresh(opt_name):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3))
    opt = (torch.optim.Adam(model.parameters(), lr=0.01) if opt_name == "adam"
           else torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3))
    return model, opt


def _params(model):
    return amnesiac.ParamLayout.of(model).vector(model)


@pytest.mark.parametrize("opt_name", ["momentum", "adam"])
def test_rewinding_and_replaying_is_the_dropped_retrain_bit_for_bit(opt_name):
    ds = _data()
    model, opt = _fresh(opt_name)
    record = RewindRecord(model, opt, every=3)
    amnesiac.train(model, ds.loader(8, seed=4), opt, epochs=3, on_batch=record, progress=False)
    assert record.batches == 15 and len(record.checkpoints) == 1 + 5 and record.nbytes > 0
    for forget in ([7], [2, 11, 30], [i for i in range(40) if i % 3 == 1]):  # one sample, a few, a class
        m, o = _fresh(opt_name)
        out = rewind_unlearn(m, o, ds.loader(8, seed=4), record, forget, epochs=3)
        ref, ro = _fresh(opt_name)
        amnesiac.train(ref, ds.loader(8, seed=4), ro, epochs=3, drop_ids=forget, progress=False)
        assert torch.equal(_params(m), _params(ref)), forget
        first = min(record.first_use[i] for i in forget)
        assert out["position"] < first and out["position"] >= first - record.every  # the last checkpoint before
        assert out["fraction"] == (15 - out["position"] - 1) / 15
    assert not torch.equal(_params(m), _params(model))  # the class was really forgotten: not the original


def test_data_first_used_late_is_cheap_to_forget():
    ds = _data()
    model, opt = _fresh("momentum")
    record = RewindRecord(model, opt, every=1)
    amnesiac.train(model, ds.loader(8, seed=4), opt, epochs=1, on_batch=record, progress=False)
    last = [i for i, p in record.first_use.items() if p == 4]  # the last batch of the only epoch
    m, o = _fresh("momentum")
    out = rewind_unlearn(m, o, ds.loader(8, seed=4), record, last, epochs=1)
    assert out == {"position": 3, "replayed_batches": 1, "fraction": 0.2}
    ref, ro = _fresh("momentum")
    amnesiac.train(ref, ds.loader(8, seed=4), ro, epochs=1, drop_ids=last, progress=False)
    assert torch.equal(_params(m), _params(ref))
    early = [i for i, p in record.first_use.items() if p == 0][:1]
    assert rewind_unlearn(*_fresh("momentum"), ds.loader(8, seed=4), record, early, epochs=1)["fraction"] == 1.0


def test_a_rewind_record_refuses_what_it_cannot_replay():
    ds = _data()
    model, opt = _fresh("momentum")
    with pytest.raises(ValueError, match="every must be >= 1"):
        RewindRecord(model, opt, every=0)
    record = RewindRecord(model, opt, every=2)
    amnesiac.train(model, ds.loader(8, seed=4), opt, epochs=1, on_batch=record, progress=False)
    with pytest.raises(ValueError, match="the record saw 5 batches, 2 epochs of this loader make 10"):
        rewind_unlearn(*_fresh("momentum"), ds.loader(8, seed=4), record, [1], epochs=2)
    with pytest.raises(RuntimeError, match="from its start"):  # a second run fed to the same record
        amnesiac.train(model, ds.loader(8, seed=5), opt, epochs=1, on_batch=record, progress=False)
    with pytest.raises(ValueError, match="skip_batches must be >= 0"):
        amnesiac.train(model, ds.loader(8, seed=4), opt, epochs=1, skip_batches=-1, progress=False)


def test_the_registered_rewind_method_is_the_dropped_retrain_and_leaves_the_original_alone():
    ds = _data()
    model, opt = _fresh("momentum")
    record = RewindRecord(model, opt, every=2)
    recipe = amnesiac.Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=8, epochs=2)
    amnesiac.train(model, ds.loader(8, seed=4), opt, epochs=2, on_batch=record, progress=False)
    before = _params(model).clone()
    forget = [3, 17, 25]
    request = amnesiac.Request(forget=ds.subset(torch.tensor(forget)), recipe=recipe)
    new = amnesiac.unlearn("rewind", model, request, record=record, loader=ds.loader(8, seed=4))
    ref, ro = _fresh("momentum")
    amnesiac.train(ref, ds.loader(8, seed=4), ro, epochs=2, drop_ids=forget, progress=False)
    assert torch.equal(_params(new), _params(ref))
    assert torch.equal(_params(model), before)
    with pytest.raises(TypeError, match="needs record="):
        amnesiac.unlearn("rewind", model, request, record=record)
    with pytest.raises(ValueError, match="needs request field"):
        amnesiac.unlearn("rewind", model, amnesiac.Request(forget=request.forget), record=record, loader=ds.loader(8))
