"""The experiment runner: configs, cache, atomic writes, smoke runs, and committed results."""

import dataclasses
import json
from pathlib import Path

import pytest
from test_data import write_fake_mnist

from amnesiac import experiments as E

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def fake_mnist(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("data")
    write_fake_mnist(root, n_train=3000, n_test=600)
    monkeypatch.setenv("AMNESIAC_DATA", str(root))
    return root


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid experiments: mnist-class3-simple"):
        E.get_experiment("nope")
    with pytest.raises(ValueError, match="valid profiles: smoke, full"):
        E.get_experiment("mnist-class3-simple", "huge")
    with pytest.raises(ValueError, match="seeds"):
        E.get_experiment("mnist-class3-simple", seeds=())


def test_config_is_frozen_and_hash_tracks_content():
    exp = E.get_experiment("mnist-class3-simple", "full")
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.repair_epochs = 1
    assert exp.hash == E.get_experiment("mnist-class3-simple", "full", seeds=(7,)).hash  # seeds are files
    assert exp.hash != dataclasses.replace(exp, repair_epochs=1).hash
    assert exp.hash != E.get_experiment("mnist-class3-simple", "smoke").hash
    assert exp.recipe.epochs == 4 and exp.repair_epochs == 4 and len(exp.seeds) >= 3
    assert exp.recipe.optimizer == "adam" and exp.recipe.lr == 1e-3 and exp.recipe.batch_size == 64


@pytest.mark.parametrize("name", list(E.EXPERIMENTS))
def test_smoke_profile_runs(name, fake_mnist, tmp_path):
    result = E.run(name, "smoke", progress=False, results_root=tmp_path)
    if name.startswith("cifar100"):  # no CIFAR-100 files in the fake root: a clear "not available" result
        assert not result.available and "cifar100" in result.reason
        assert (result.folder / "unavailable.json").exists()
        return
    assert result.available and set(result.seeds) == set(result.experiment.seeds)
    record = result.seeds[0]
    assert set(record["methods"]) == {s.label for s in result.experiment.methods}
    for row in record["methods"].values():
        assert 0 <= row["no_repair"]["acc_test"] <= 1
    assert record["memory_bytes"] and record["train_seconds"] > 0
    rows = E.summarize(result, ("acc_test", "mia_loss"))
    assert rows[0]["method"].startswith("After training") and rows[-1]["method"].startswith("Retrain")
    assert "acc_test" in E.format_table(rows, ("acc_test", "mia_loss"))


def test_cache_hit_does_not_retrain_and_atomic_write_survives_a_crash(fake_mnist, tmp_path, monkeypatch):
    first = E.run("mnist-samples1-simple", "smoke", progress=False, results_root=tmp_path)
    path = first.folder / "seed0.json"
    before = path.read_bytes()

    def boom(*args, **kwargs):
        raise AssertionError("a cached result was recomputed")

    monkeypatch.setattr(E, "run_seed", boom)
    again = E.run("mnist-samples1-simple", "smoke", progress=False, results_root=tmp_path)
    assert again.seeds[0] == first.seeds[0]

    def crash(obj, f, **kwargs):  # simulated crash in the middle of writing
        f.write('{"half": ')
        raise KeyboardInterrupt

    monkeypatch.setattr(E.json, "dump", crash)
    with pytest.raises(KeyboardInterrupt):
        E._atomic_write_json(path, {"new": 1})
    assert path.read_bytes() == before  # the old file is intact
    assert not list(path.parent.glob(".*.tmp"))  # and no temporary is left behind


def test_interrupted_seed_resumes_from_finished_methods(fake_mnist, tmp_path, monkeypatch):
    exp = E.get_experiment("mnist-samples1-simple", "smoke")
    calls = []
    real_unlearn = E.unlearn

    interrupted = []

    def counting(method, *args, **kwargs):
        calls.append(method)
        if len(calls) == 3 and not interrupted:  # retrain, first method, then stop once in the second
            interrupted.append(True)
            raise RuntimeError("interrupted")
        return real_unlearn(method, *args, **kwargs)

    monkeypatch.setattr(E, "unlearn", counting)
    with pytest.raises(RuntimeError, match="interrupted"):
        E.run(exp.name, "smoke", progress=False, results_root=tmp_path)
    partial = json.loads((tmp_path / exp.name / f"smoke-{exp.hash}" / "seed0.partial.json").read_text())
    assert len(partial["methods"]) == 1  # the first method finished and was kept
    calls.clear()
    result = E.run(exp.name, "smoke", progress=False, results_root=tmp_path)
    assert len(result.seeds[0]["methods"]) == len(exp.methods)
    assert len(calls) == 1 + len(exp.methods) - 1  # retrain + every method but the one already done


def test_committed_results_match_current_experiment_definitions():
    """A committed result whose config hash no longer matches its experiment is stale: rerun it."""
    folders = sorted(p for p in (ROOT / "results").glob("*/*") if p.is_dir())
    for folder in folders:
        name = folder.parent.name
        if name == "fidelity-mnist-simple":  # the fidelity study has its own check (tests/test_fidelity.py)
            continue
        profile, _, digest = folder.name.partition("-")
        assert name in E.EXPERIMENTS, f"{folder} belongs to no experiment"
        exp = E.get_experiment(name, profile)
        assert digest == exp.hash, (f"{folder} was computed for an older config (hash {digest}, now {exp.hash}); "
                                    f"rerun: python -m amnesiac run {name} --profile {profile}")
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else None
        for seed_file in folder.glob("seed*.json"):
            assert not seed_file.name.endswith(".partial.json"), f"unfinished result committed: {seed_file}"
        if config is not None:
            assert config["hash"] == exp.hash
