"""The per-batch log stores exactly the parameter change of each step that touched a tracked sample."""

import pytest
import torch
from helpers import flat, tiny_dataset, tiny_model

import amnesiac
from amnesiac.deltalog import mask_indices


def train_recording_changes(model, ds, logs, epochs=2):
    """Train one batch at a time, recording every step's parameter change and its sample ids."""
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    changes = []
    loader = ds.loader(8, seed=4)
    for _ in range(epochs):
        for batch in loader:
            before = flat(model)
            amnesiac.train(model, [batch], opt, epochs=1, delta_log=logs, progress=False)
            changes.append((flat(model) - before, set(batch[2].tolist())))
    return changes


def test_stored_steps_equal_the_recorded_changes():
    ds, model = tiny_dataset(), tiny_model()
    groups = {"a": [0, 1], "b": [20]}
    log = amnesiac.BatchLog(model, groups)
    changes = train_recording_changes(model, ds, log)
    touching = [c for c, ids in changes if ids & {0, 1, 20}]
    assert log.stored_steps == len(touching) == len(log.changes) > 0
    for got, want in zip(log.changes, touching):
        assert torch.equal(got, want)
    want_a = sum(c for c, ids in changes if ids & {0, 1})
    torch.testing.assert_close(log.delta_vector(["a"]), want_a, rtol=0, atol=1e-15)


def test_request_store_and_layer_p():
    ds, model = tiny_dataset(), tiny_model()
    groups = {"a": [0, 1], "b": [20]}
    steps = amnesiac.BatchLog(model, groups)
    summed = amnesiac.BatchLog(model, groups, store="request", request=["a"])
    layer = amnesiac.BatchLog(model, groups, p=0.1, seed=3)
    train_recording_changes(model, ds, [steps, summed, layer])
    torch.testing.assert_close(summed.delta_vector(["a"]), steps.delta_vector(["a"]), rtol=0, atol=1e-15)
    assert summed.nbytes < steps.nbytes
    with pytest.raises(ValueError, match="store='steps'"):
        summed.delta_vector(["b"])
    # Layer p: each stored step keeps a regenerated p-subset of that step's change
    for i, step in enumerate(layer.step_numbers):
        keep = mask_indices(layer.layout, 0.1, layer._step_seed(step))
        assert torch.equal(layer.changes[i], steps.changes[i][keep])
    assert layer.nbytes < steps.nbytes


def test_batch_log_errors():
    model = tiny_model()
    with pytest.raises(ValueError, match="request="):
        amnesiac.BatchLog(model, {"a": [1]}, store="request")
    log = amnesiac.BatchLog(model, {"a": [1]})
    with pytest.raises(KeyError, match="unknown group"):
        log.delta_vector(["nope"])
