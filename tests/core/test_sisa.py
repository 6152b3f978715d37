"""SISA: unlearning retrains only the shards that held the forget set; it equals SISA trained without it bit for bit."""

import pytest
import torch
import torch.nn.functional as F
from helpers import assert_a_new_model_and_the_input_untouched
from torch import nn

import amnesiac
from amnesiac import Recipe, Request, SisaEnsemble, SisaRecord, sisa_train, sisa_unlearn, unlearn
from amnesiac.sisa import stage_epochs

N, SHARDS, SLICES = 96, 3, 4
RECIPES = {
    "momentum": Recipe(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=1e-3, batch_size=8, epochs=3),
    "adam": Recipe(optimizer="adam", lr=0.01, batch_size=8, epochs=3),
}


def _data(n=N):
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=gen, dtype=torch.float64)
    return amnesiac.ArrayDataset(x, torch.arange(n) % 3, torch.arange(n), "sisa-tiny")


def _model():  # dropout: replaying from a checkpoint must also restore the random state
    return nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.2), nn.Linear(8, 3)).double()


def _train(recipe="momentum", drop_ids=None, **kw):
    kw = {"shards": SHARDS, "slices": SLICES, "seed": 5, **kw}
    return sisa_train(_model, _data(), RECIPES[recipe], drop_ids=drop_ids, **kw)


def _same(a: nn.Module, b: nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def _state(ensemble):
    return {k: v.clone() for k, v in ensemble.state_dict().items()}


@pytest.fixture(scope="module")
def trained():
    return {name: _train(name) for name in RECIPES}


def _forget_sets(record):
    """One sample, a few across shards and slices, a class."""
    one = [int(record.slice_ids[1][2][0])]
    few = [int(record.slice_ids[0][1][0]), int(record.slice_ids[0][3][1]), int(record.slice_ids[2][3][0])]
    return {"one": one, "few": few, "class": list(range(1, N, 3))}


@pytest.mark.parametrize("recipe", RECIPES)
def test_unlearning_is_sisa_trained_without_the_forget_set_bit_for_bit(trained, recipe):
    ensemble, record = trained[recipe]
    where = record.locations()
    for name, forget in _forget_sets(record).items():
        new, new_record, info = sisa_unlearn(ensemble, record, forget)
        ref, ref_record = _train(recipe, drop_ids=forget)
        holding = sorted({where[i][0] for i in forget})
        assert info["shards_retrained"] == tuple(holding), name
        assert info["rewound_to"] == {s: min(where[i][1] for i in forget if where[i][0] == s) for s in holding}
        for s in range(SHARDS):
            assert _same(new.shards[s], ref.shards[s]), (name, s)  # every parameter and buffer, torch.equal
            if s in holding:
                assert not _same(new.shards[s], ensemble.shards[s]), (name, s)  # really retrained
            else:
                assert _same(new.shards[s], ensemble.shards[s]), (name, s)  # untouched: as before
                assert new.shards[s] is not ensemble.shards[s]  # a copy, not the input's module
                assert new_record.checkpoints[s] is record.checkpoints[s]  # its checkpoints are shared, not redone
        assert new_record.removed == ref_record.removed == frozenset(forget)
        assert new_record.fingerprints == ref_record.fingerprints
        assert torch.equal(new_record.data.ids, ref_record.data.ids)
        assert not bool(torch.isin(new_record.data.ids, torch.tensor(forget)).any())  # no forgotten sample kept
        x = _data().x[:10]
        torch.testing.assert_close(amnesiac.predict(new, x), amnesiac.predict(ref, x), rtol=0, atol=0)


def test_a_sample_in_a_last_slice_costs_less_than_one_shard_and_a_class_costs_a_full_retrain(trained):
    ensemble, record = trained["momentum"]
    e = record.stage_epochs
    assert e == stage_epochs(3, SLICES) == 2  # ceil(2 * 3 / 5)
    late = int(record.slice_ids[0][SLICES - 1][0])
    _, _, info = sisa_unlearn(ensemble, record, [late])
    assert info["shards_retrained"] == (0,) and info["rewound_to"] == {0: SLICES - 1}
    shard0 = sum(len(t) for t in record.slice_ids[0])
    assert info["samples_replayed"] == e * (shard0 - 1) and info["stage_epochs_replayed"] == e
    full = e * sum(sum(len(t) for t in shard[: r + 1]) for shard in record.slice_ids for r in range(SLICES))
    assert info["fraction"] == e * (shard0 - 1) / (full - e)  # the sample's one stage left out of the full cost
    assert info["fraction"] < 1 / SHARDS
    classes = list(range(1, N, 3))
    _, _, info = sisa_unlearn(ensemble, record, classes)
    assert info["rewound_to"] == {s: 0 for s in range(SHARDS)}  # the class reaches every shard's first slice
    assert info["fraction"] == 1.0 and info["stage_epochs_replayed"] == SHARDS * SLICES * e


def test_a_second_request_removes_more_and_stays_sisa_trained_without_both(trained):
    ensemble, record = trained["adam"]
    first = [int(record.slice_ids[1][3][2]), int(record.slice_ids[2][1][0])]
    second = [int(record.slice_ids[1][1][4]), int(record.slice_ids[0][3][0])]
    once, record1, _ = sisa_unlearn(ensemble, record, first)
    twice, record2, info = sisa_unlearn(once, record1, second)
    assert info["shards_retrained"] == (0, 1) and record2.removed == frozenset(first + second)
    ref, _ = _train("adam", drop_ids=first + second)
    assert all(_same(a, b) for a, b in zip(twice.shards, ref.shards))
    assert _same(twice.shards[2], once.shards[2])  # untouched by the second request
    with pytest.raises(ValueError, match=rf"already removed: \[{first[0]}\]"):
        sisa_unlearn(twice, record2, [first[0]])


def test_the_inputs_are_left_as_they_were(trained):
    ensemble, record = trained["momentum"]
    before, blobs, data_x = _state(ensemble), record.checkpoints, record.data.x.clone()
    forget = _forget_sets(record)["few"]
    new, new_record, _ = sisa_unlearn(ensemble, record, forget)
    assert new is not ensemble and new_record is not record
    assert all(torch.equal(v, before[k]) for k, v in ensemble.state_dict().items())
    assert record.checkpoints is blobs and record.removed == frozenset()
    assert torch.equal(record.data.x, data_x) and len(record.data) == N
    with pytest.raises(AttributeError):
        record.removed = frozenset({1})  # frozen
    # the registry's form: the same new ensemble, the contract's checks
    via = unlearn("sisa", ensemble, Request(forget=_data().subset(forget)), record=record)
    assert_a_new_model_and_the_input_untouched("sisa", ensemble, via, before)
    assert isinstance(via, SisaEnsemble) and all(_same(a, b) for a, b in zip(via.shards, new.shards))
    assert amnesiac.method_params("sisa") == {"record": None}


def test_sisa_training_assigns_each_sample_once_in_near_equal_seeded_shards_and_slices():
    ensemble, record = sisa_train(_model, _data(62), RECIPES["momentum"], shards=3, slices=2, seed=1)
    assert isinstance(record, SisaRecord) and record.shards == 3 and record.slices == 2 and record.nbytes > 0
    ids = torch.cat([t for shard in record.slice_ids for t in shard])
    assert sorted(ids.tolist()) == list(range(62))  # every sample exactly once
    assert [sum(len(t) for t in shard) for shard in record.slice_ids] == [21, 21, 20]
    assert [[len(t) for t in shard] for shard in record.slice_ids] == [[11, 10], [11, 10], [10, 10]]
    assert all(len(shard) == 1 + 2 for shard in record.checkpoints)  # before training, after each stage
    _, again = sisa_train(_model, _data(62), RECIPES["momentum"], shards=3, slices=2, seed=1)
    _, other = sisa_train(_model, _data(62), RECIPES["momentum"], shards=3, slices=2, seed=2)
    assert all(torch.equal(a, b) for a, b in zip(record.slice_ids[0], again.slice_ids[0]))
    assert not torch.equal(record.slice_ids[0][0], other.slice_ids[0][0])
    state = torch.get_rng_state()
    sisa_train(_model, _data(62), RECIPES["momentum"], shards=3, slices=2, seed=1)
    assert torch.equal(torch.get_rng_state(), state)  # the caller's random state is left alone


def test_stage_epochs_follow_sisas_two_e_over_r_plus_one_rounded_up():
    assert [stage_epochs(4, r) for r in (1, 2, 3, 4, 7, 8)] == [4, 3, 2, 2, 1, 1]
    assert stage_epochs(20, 4) == 8  # 2 * 20 / 5
    with pytest.raises(ValueError, match="epochs >= 1"):
        stage_epochs(0, 3)


def test_the_ensemble_outputs_the_log_of_the_mean_softmax():
    torch.manual_seed(0)
    shards = [nn.Linear(5, 4).double() for _ in range(3)]
    ensemble = SisaEnsemble(shards)
    x = torch.randn(7, 5, dtype=torch.float64) * 10  # large logits: the log-sum-exp must stay stable
    manual = torch.log(torch.stack([F.softmax(m(x), dim=1) for m in shards]).mean(0))
    out = ensemble(x)
    assert out.shape == (7, 4)
    torch.testing.assert_close(out, manual, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out.exp().sum(1), torch.ones(7, dtype=torch.float64))
    assert torch.equal(F.cross_entropy(out, torch.zeros(7, dtype=torch.long)), -out[:, 0].mean())
    with pytest.raises(ValueError, match="at least one shard"):
        SisaEnsemble([])


def test_sisa_refuses_what_it_cannot_do(trained):
    ensemble, record = trained["momentum"]
    data = _data()
    for bad, match in (({"shards": 0}, "shards must be an integer >= 1, got 0"),
                       ({"slices": 0}, "slices must be an integer >= 1"),
                       ({"shards": 2.5}, "shards must be an integer"),
                       ({"shards": 10, "slices": 10}, r"shards \* slices = 100 exceeds the 96 samples")):
        with pytest.raises(ValueError, match=match):
            sisa_train(_model, data, RECIPES["momentum"], **{"shards": 2, "slices": 2, "seed": 0, **bad})
    with pytest.raises(ValueError, match=r"drop_ids not in the data: \[500\]"):
        sisa_train(_model, data, RECIPES["momentum"], shards=2, slices=2, seed=0, drop_ids=[3, 500])
    with pytest.raises(ValueError, match="recipe.epochs must be >= 1"):
        sisa_train(_model, data, Recipe(epochs=0), shards=2, slices=2, seed=0)
    twice = amnesiac.ArrayDataset(data.x, data.y, data.ids % 50)
    with pytest.raises(ValueError, match="data.ids repeat"):
        sisa_train(_model, twice, RECIPES["momentum"], shards=2, slices=2, seed=0)
    with pytest.raises(ValueError, match="forgets no sample"):
        sisa_unlearn(ensemble, record, [])
    with pytest.raises(ValueError, match=r"not in the SISA training: \[96, 1000\]"):
        sisa_unlearn(ensemble, record, [3, 96, 1000])
    with pytest.raises(ValueError, match="repeat"):
        sisa_unlearn(ensemble, record, [3, 3])
    new, new_record, _ = sisa_unlearn(ensemble, record, [3])
    with pytest.raises(ValueError, match=r"already removed: \[3\]"):
        sisa_unlearn(new, new_record, [3, 4])
    with pytest.raises(ValueError, match="not the one its record's last checkpoint holds"):
        sisa_unlearn(new, record, [4])  # the old record with the new ensemble
    with pytest.raises(ValueError, match="the record 3 shards"):
        sisa_unlearn(SisaEnsemble(list(ensemble.shards)[:2]), record, [4])
    with pytest.raises(TypeError, match="needs record="):
        unlearn("sisa", ensemble, Request(forget=data.subset([4])))
    with pytest.raises(TypeError, match="unlearns a SisaEnsemble"):
        unlearn("sisa", _model(), Request(forget=data.subset([4])), record=record)
    with pytest.raises(ValueError, match="needs request field"):
        unlearn("sisa", ensemble, Request(), record=record)


def test_a_shard_emptied_by_removal_keeps_its_initial_model():
    data = _data(24)
    ensemble, record = sisa_train(_model, data, RECIPES["momentum"], shards=2, slices=2, seed=0)
    whole = torch.cat(record.slice_ids[1]).tolist()
    new, new_record, info = sisa_unlearn(ensemble, record, whole)
    ref, _ = sisa_train(_model, data, RECIPES["momentum"], shards=2, slices=2, seed=0, drop_ids=whole)
    assert all(_same(a, b) for a, b in zip(new.shards, ref.shards))
    torch.manual_seed(1)  # shard 1's initialisation: seed + 1
    assert _same(new.shards[1], _model())
    assert info["samples_replayed"] == info["stage_epochs_replayed"] == 0 and info["fraction"] == 0.0
    assert 2 * new_record.sample_passes() == record.sample_passes()  # shard 1 has nothing left to train
