"""The experiment runner: configs, cache, atomic writes, smoke runs, and committed results."""

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from amnesiac_paper import catalogue as C
from amnesiac_paper import experiments as E
from amnesiac_paper import store
from helpers import write_fake_mnist

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def fake_mnist(tmp_path_factory, monkeypatch):
    root = tmp_path_factory.mktemp("data")
    write_fake_mnist(root, n_train=3000, n_test=600)
    monkeypatch.setenv("AMNESIAC_DATA", str(root))
    return root


def test_unknown_names_list_the_valid_ones():
    with pytest.raises(ValueError, match="valid experiments: mnist-class3-simple"):
        C.get_experiment("nope")
    with pytest.raises(ValueError, match="valid profiles: smoke, full"):
        C.get_experiment("mnist-class3-simple", "huge")
    with pytest.raises(ValueError, match="seeds"):
        C.get_experiment("mnist-class3-simple", seeds=())


def test_config_is_frozen_and_hash_tracks_content():
    exp = C.get_experiment("mnist-class3-simple", "full")
    with pytest.raises(dataclasses.FrozenInstanceError):
        exp.repair_epochs = 1
    assert exp.hash == C.get_experiment("mnist-class3-simple", "full", seeds=(7,)).hash  # seeds are files
    assert exp.hash != dataclasses.replace(exp, repair_epochs=1).hash
    assert exp.hash != C.get_experiment("mnist-class3-simple", "smoke").hash
    assert exp.recipe.epochs == 4 and exp.repair_epochs == 4 and len(exp.seeds) >= 3
    assert exp.recipe.optimizer == "adam" and exp.recipe.lr == 1e-3 and exp.recipe.batch_size == 64


@pytest.mark.parametrize("name", [n if n.startswith("cifar100") else pytest.param(n, marks=pytest.mark.slow)
                                  for n in C.EXPERIMENTS])  # an MNIST smoke run takes minutes; CIFAR-100 is absent
def test_smoke_profile_runs(name, fake_mnist, tmp_path):
    result = E.run(name, "smoke", progress=False, results_root=tmp_path)
    if name.startswith("cifar100"):  # no CIFAR-100 files in the fake root: a clear "not available" result
        assert not result.available and "cifar100" in result.reason
        assert (result.folder / "unavailable.json").exists()
        return
    assert result.available and set(result.seeds) == set(result.experiment.seeds)
    record = result.seeds[0]
    assert set(record["methods"]) == {s.stored_name for s in result.experiment.methods}
    for row in record["methods"].values():
        assert 0 <= row["no_repair"]["acc_test"] <= 1
    assert record["memory_bytes"] and record["train_seconds"] > 0
    rows = E.summarize(result, ("acc_test", "mia_loss"))
    assert rows[0]["key"] == E.ORIGINAL_KEY and rows[-1]["key"] == E.RETRAIN_KEY
    assert "acc_test" in E.format_table(rows, ("acc_test", "mia_loss"))


@pytest.mark.slow  # runs a smoke experiment on stand-in MNIST: minutes on 2 CPU cores
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
        store.atomic_write_json(path, {"new": 1})
    assert path.read_bytes() == before  # the old file is intact
    assert not list(path.parent.glob(".*.tmp"))  # and no temporary is left behind


@pytest.mark.slow  # runs a smoke experiment on stand-in MNIST: minutes on 2 CPU cores
def test_interrupted_seed_resumes_from_finished_methods(fake_mnist, tmp_path, monkeypatch):
    exp = C.get_experiment("mnist-samples1-simple", "smoke")
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
    assert len(calls) == len(exp.methods) - 1  # every method but the one already done; the training and the
    # reference come from the seed's checkpoint (removed once the seed is done)
    assert not (tmp_path / exp.name / f"smoke-{exp.hash}" / "weights" / "seed0").exists()


def _committed_result_folders() -> list[Path]:
    """results/<experiment>/<profile>-<hash> folders that git tracks (runs with --set are cached beside them)."""
    import subprocess

    out = subprocess.run(["git", "ls-files", "results"], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    return sorted({ROOT / Path(*Path(f).parts[:3]) for f in out.split() if len(Path(f).parts) >= 4})


def test_committed_results_match_current_experiment_definitions():
    """A committed result whose config hash no longer matches its experiment is stale: rerun it."""
    folders = _committed_result_folders()
    assert folders  # the full-profile results are committed
    for folder in folders:
        name = folder.parent.name
        if name in ("fidelity-mnist-simple", "membership-mnist-simple", "propagation-mnist-simple",
                    "comparison-mnist-simple", "regime-mnist-mlp", "frontier-mnist-mlp"):
            continue  # the studies have their own checks (test_fidelity.py, test_membership.py, ...)
        profile, _, digest = folder.name.partition("-")
        assert name in C.EXPERIMENTS, f"{folder} belongs to no experiment"
        exp = C.get_experiment(name, profile)
        assert digest == exp.hash, (f"{folder} was computed for an older config (hash {digest}, now {exp.hash}); "
                                    f"rerun: python -m amnesiac_paper run {name} --profile {profile}")
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").exists() else None
        for seed_file in folder.glob("seed*.json"):
            assert not seed_file.name.endswith(".partial.json"), f"unfinished result committed: {seed_file}"
        if config is not None:
            assert config["hash"] == exp.hash


# ------------------------------------------------------------------------------ settings a reader can change


def test_overrides_are_parsed_checked_and_hashed():
    base = C.get_experiment("mnist-class3-simple", "full")
    same = C.get_experiment("mnist-class3-simple", "full",
                            overrides={"forget_class": 3, "alphas": "1,0.3,0.1,0.03,0.01,0.003"})
    assert same == base and same.hash == base.hash  # restating the defaults changes nothing
    five = C.get_experiment("mnist-class3-simple", "full",
                            overrides=C.parse_overrides(["forget_class=5", "alphas=0.5,0.1", "epochs=2", "lr=3e-4"]))
    assert (five.forget_class, five.recipe.epochs, five.recipe.lr) == (5, 2, 3e-4) and five.hash != base.hash
    update_rows = [m for m in five.methods if m.log == C.UPDATE_LOG]
    assert [m.label for m in update_rows] == ["Update attribution, alpha=0.5", "Update attribution, alpha=0.1"]
    assert [m.repair for m in update_rows] == [False, True]
    assert [m.label for m in five.methods if m.log != C.UPDATE_LOG] == [m.label for m in base.methods
                                                                      if m.log != C.UPDATE_LOG]


@pytest.mark.parametrize("overrides,match", [
    ({"alpha": 1}, r"unknown setting\(s\) \['alpha'\]; valid settings: forget_class"),
    ({"forget_class": 10}, "out of range.*a class 0..9"),
    ({"forget_class": "three"}, "forget_class='three' is not valid"),
    ({"forget_fraction": 0.1}, "does not apply to 'mnist-class3-simple', a class experiment"),
    ({"alphas": "0.1,inf"}, "positive finite"),
    ({"optimizer": "lbfgs"}, "adam, adamw or sgd"),
    ({"epochs": 0}, "at least 1"),
])
def test_bad_overrides_say_what_is_wrong(overrides, match):
    with pytest.raises(ValueError, match=match):
        C.get_experiment("mnist-class3-simple", "smoke", overrides=overrides)
    with pytest.raises(ValueError, match="KEY=VALUE"):
        C.parse_overrides(["forget_class"])


def test_cli_refuses_a_bad_setting_before_running(capsys, tmp_path):
    from amnesiac_paper.__main__ import main

    assert main(["run", "mnist-class3-simple", "--profile", "smoke", "--set", "forget_clas=5"]) == 2
    assert "unknown setting(s) ['forget_clas']" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["run mnist-class3-simple", "bench", "fidelity", "propagation", "comparison",
                                     "membership"])
def test_every_computing_command_takes_the_same_study_options(command):
    from amnesiac_paper import cli
    from amnesiac_paper.__main__ import COMMANDS

    args = cli.parser(COMMANDS).parse_args(command.split() + ["--threads", "1"])
    assert args.threads == 1
    if command in ("fidelity", "propagation", "comparison", "membership"):
        assert (args.profile, args.device, args.quiet, args.seeds) == ("full", "cpu", False, None)


def test_the_threads_option_sets_torchs_threads_before_the_command_runs(capsys):
    from amnesiac_paper.__main__ import main

    before = torch.get_num_threads()
    try:
        assert main(["run", "mnist-class3-simple", "--threads", "1", "--set", "forget_clas=5"]) == 2
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.slow  # runs a smoke experiment on stand-in MNIST: minutes on 2 CPU cores
def test_an_overridden_smoke_run_forgets_the_chosen_class(fake_mnist, tmp_path):
    result = E.run("mnist-class3-simple", "smoke", progress=False, results_root=tmp_path,
                   overrides={"forget_class": 5, "alphas": "0.5"})
    assert result.experiment.forget_class == 5 and result.folder.name.endswith(result.experiment.hash)
    record = result.seeds[0]
    assert "Update attribution, alpha=0.5" in record["methods"]
    config = json.loads((result.folder / "config.json").read_text())["config"]
    assert config["forget_class"] == 5
    # the forget set is class 5's training images (the fake data's labels are known)
    from amnesiac_paper.experiments import make_split

    split = make_split(result.experiment, 0)
    assert record["n_forget"] == len(split.forget) > 0 and set(split.forget.y.tolist()) == {5}


def test_logs_and_rows_are_typed():
    exp = C.get_experiment("mnist-class3-simple", "full")
    assert {k: v.key for k, v in E.needed_logs(exp).items()} == {k: k for k in E.needed_logs(exp)}
    assert C.seed_log(0.1).key == "gradient-p0.1" and C.BATCH_LOG.key == "batch"
    assert C.LogSpec("batch", p=0.1).key == "layer" and C.UPDATE_LOG.key == "update"
    with pytest.raises(ValueError, match="unknown log kind 'x'; valid: delta, batch"):
        C.LogSpec("x")
    row = exp.update(0.1)
    assert (row.method, row.log, row.alpha, row.label) == ("amnesiac", C.UPDATE_LOG, 0.1,
                                                          "Update attribution, alpha=0.1")
    assert exp.seed_record(0.1).log == C.seed_log(0.1) and exp.per_batch().log == C.BATCH_LOG
    with pytest.raises(KeyError, match="0 rows of 'mnist-class3-simple' match"):
        exp.update(0.7)
    with pytest.raises(KeyError, match="6 rows"):
        exp.find("amnesiac", C.UPDATE_LOG)
    # the config (and so the hash) stores each log by its key, as results files do
    assert exp.to_dict()["methods"][0]["log"] == "batch"
    rows = E.summarize(E.Result(exp, {}, {}, Path(".")), ("acc_test",))
    assert rows[0]["spec"] is None and any(r["spec"] == row and r["alpha"] == 0.1 for r in rows)


@pytest.mark.slow  # runs a smoke experiment on stand-in MNIST: minutes on 2 CPU cores
def test_log_norms_trains_the_experiments_run_and_caches_the_norms(fake_mnist, tmp_path, monkeypatch):
    got = E.log_norms("mnist-class3-simple", "smoke", results_root=tmp_path)
    exp = C.get_experiment("mnist-class3-simple", "smoke")
    assert set(got["norms"]) == set(E.needed_logs(exp)) and all(v > 0 for v in got["norms"].values())
    assert "gradient-p0.1|misindexed" in got["cosines"] and all(-1 <= c <= 1 for c in got["cosines"].values())
    assert (tmp_path / exp.name / f"smoke-{exp.hash}" / "lognorms-seed0.json").exists()
    monkeypatch.setattr(E, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    assert E.log_norms("mnist-class3-simple", "smoke", results_root=tmp_path) == got


@pytest.mark.slow  # runs a smoke experiment on stand-in MNIST: minutes on 2 CPU cores
def test_the_mask_control_retraces_the_run_and_scales_the_full_record(fake_mnist, tmp_path, monkeypatch):
    ps = (0.01, 0.1)
    got = E.mask_control("mnist-class3-simple", "smoke", ps=ps, device="cpu", results_root=tmp_path)
    norms = E.log_norms("mnist-class3-simple", "smoke", device="cpu", results_root=tmp_path)
    # the same original run as the experiment's: the full record's norm is the one log_norms measured
    assert got["full_norm"] == pytest.approx(norms["norms"]["gradient"], rel=1e-6)
    at = {r["p"]: r for r in got["rows"]}
    assert at[0.1]["masked"]["norm"] == pytest.approx(norms["norms"]["gradient-p0.1"], rel=1e-6)
    for p, r in at.items():
        assert r["full_times_p"]["norm"] == pytest.approx(p * got["full_norm"])
        assert r["full_times_sqrt_p"]["norm"] == pytest.approx(p ** 0.5 * got["full_norm"])
        assert r["random_direction"]["norm"] == pytest.approx(r["masked"]["norm"])
        assert -1 <= r["cosine_masked_full"] <= 1
        assert all(0 <= v[k] <= 1 for v in r.values() if isinstance(v, dict) for k in v if k.startswith("acc"))
    assert at[0.01]["masked"]["norm"] < at[0.1]["masked"]["norm"]
    monkeypatch.setattr(E, "train", lambda *a, **k: (_ for _ in ()).throw(AssertionError("trained again")))
    assert E.mask_control("mnist-class3-simple", "smoke", ps=ps, results_root=tmp_path) == got
    with pytest.raises(ValueError, match="needs a class experiment"):
        E.mask_control("mnist-samples1-simple", "smoke", results_root=tmp_path)
    with pytest.raises(ValueError, match=r"every p must be in \(0, 1\)"):
        E.mask_control("mnist-class3-simple", "smoke", ps=(0.0,), results_root=tmp_path)


def test_the_ledger_read_benchmark_writes_its_json_and_always_removes_the_ledger(monkeypatch, tmp_path, capsys):
    from amnesiac_paper import bench
    from amnesiac_paper.__main__ import main

    monkeypatch.setattr(store, "RESULTS_ROOT", tmp_path / "results")
    ledger = tmp_path / "ledger"

    def fake(storage, *, dtype):
        storage.mkdir()
        (storage / "rows.bin").write_bytes(b"x")
        return {"dtype": dtype, "reads": {"1": 0.5}}

    monkeypatch.setattr(bench, "ledger_read_times", fake)
    assert main(["bench", "--ledger-read", str(ledger), "--dtype", "float16"]) == 0
    saved = json.loads((tmp_path / "results" / "bench" / "ledger-read-float16.json").read_text())
    assert saved["dtype"] == "float16" and saved["reads"] == {"1": 0.5} and "git" in saved["provenance"]
    assert not ledger.exists()

    def broken(storage, *, dtype):
        storage.mkdir()
        raise OSError("disk full")

    monkeypatch.setattr(bench, "ledger_read_times", broken)
    with pytest.raises(OSError, match="disk full"):
        main(["bench", "--ledger-read", str(ledger)])
    assert not ledger.exists()  # tens of GB are never left behind
    assert not (tmp_path / "results" / "bench" / "ledger-read-float32.json").exists()


def test_summaries_give_the_95_percent_t_interval_over_seeds():
    from amnesiac_paper.book import common
    from scipy import stats

    exp = C.get_experiment("mnist-samples1-simple", "smoke")
    accs = [0.90, 0.94, 0.95]
    seeds = {s: {"original": {"acc_test": a}, "retrain": {"acc_test": a - 0.1}, "methods": {}}
             for s, a in enumerate(accs)}
    row = E.summarize(E.Result(exp, seeds, {}, Path(".")), ("acc_test",))[0]
    half = stats.t.ppf(0.975, 2) * np.std(accs, ddof=1) / np.sqrt(3)
    assert row["acc_test"] == pytest.approx(np.mean(accs)) and row["acc_test_ci"] == pytest.approx(half)
    assert row["acc_test_std"] == pytest.approx(np.std(accs, ddof=1))
    assert common.pm(row, "acc_test", 3) == f"{np.mean(accs):.3f} ± {half:.3f}"
    assert f"+- {half:.3f}" in E.format_table([row], ("acc_test",))
    one = E.summarize(E.Result(exp, {0: seeds[0]}, {}, Path(".")), ("acc_test",))[0]
    assert np.isnan(one["acc_test_ci"]) and common.pm(one, "acc_test", 2) == "0.90"


def test_run_combos_writes_the_config_and_runs_every_optimizer_of_a_seed_first(tmp_path):
    import json
    from dataclasses import dataclass

    from amnesiac_paper.store import run_combos

    @dataclass
    class Study:
        seeds: tuple = (0, 1)
        optimizers: tuple = ("adam", "sgd")

        def folder(self, root):
            return root / "study"

    calls = []

    def run_combo(study, opt, seed, *, results_root, device):
        calls.append((opt, seed, results_root, device))
        return f"{opt}{seed}"

    folder, records = run_combos(Study(), run_combo, {"hash": "h"}, results_root=tmp_path, device="cpu")
    assert folder == tmp_path / "study" and json.loads((folder / "config.json").read_text()) == {"hash": "h"}
    assert [c[:2] for c in calls] == [("adam", 0), ("sgd", 0), ("adam", 1), ("sgd", 1)]
    assert all(c[2:] == (tmp_path, "cpu") for c in calls)
    assert records == {("adam", 0): "adam0", ("sgd", 0): "sgd0", ("adam", 1): "adam1", ("sgd", 1): "sgd1"}


def test_the_resnet_experiment_repairs_the_seed_reports_rows_and_the_controls_only():
    from amnesiac_paper.book import published

    exp = C.get_experiment("mnist-class3-resnet18", "full")
    seed_rows = {row.ours(exp).key for row in published.SEED_REPORT["mnist-class3-resnet18"]}
    assert {m.key for m in exp.methods if m.repair} == seed_rows | {exp.relabel().key, exp.finetune().key}
    assert exp.ps == (0.2, 0.1, 0.075)
    assert exp.recipe.epochs == exp.repair_epochs == 4 and exp.graves_keep == 100
    simple = C.get_experiment("mnist-class3-simple", "full")  # SimpleModel keeps every p and repair
    assert len([m for m in simple.methods if m.repair]) == 13 and simple.ps == C.SEED_PS


def _without_timings(x):
    """A record without its wall times (and the note of what was resumed): what must not depend on interruptions."""
    timing = {"seconds", "train_seconds", "log_seconds", "retrain_seconds", "repair_seconds", "resumed"}
    if isinstance(x, dict):
        return {k: _without_timings(v) for k, v in x.items() if k not in timing}
    if isinstance(x, list):
        return [_without_timings(v) for v in x]
    return x


@pytest.mark.slow  # three runs of a seed: 7 minutes on 2 CPU cores
def test_a_seed_interrupted_in_training_and_in_its_methods_resumes_with_the_uninterrupted_numbers(
        fake_mnist, tmp_path, monkeypatch):
    exp = dataclasses.replace(C.get_experiment("mnist-samples1-simple", "smoke"),
                              recipe=C.Recipe(batch_size=64, epochs=3))
    whole = E.run_seed(exp, 0, device="cpu", progress=False)
    ck, partial = tmp_path / "weights" / "seed0", tmp_path / "seed0.partial.json"
    real_train, epochs_run = E.train, []

    def train_until(stop):
        def fake(*args, **kwargs):
            if len(epochs_run) == stop:
                raise KeyboardInterrupt("interrupted in training")
            epochs_run.append(kwargs["desc"])
            return real_train(*args, **kwargs)
        return fake

    monkeypatch.setattr(E, "train", train_until(2))  # stopped in the third epoch
    with pytest.raises(KeyboardInterrupt):
        E.run_seed(exp, 0, device="cpu", progress=False, partial_path=partial, checkpoints=ck)
    assert [p.name for p in ck.iterdir()] == ["epoch2"]  # the newest complete epoch only
    assert (ck / "epoch2" / "training.pt").exists()
    assert len(list((ck / "epoch2").glob("log-*.pt"))) == len(E.needed_logs(exp)) == 3
    real_unlearn, methods_run = E.unlearn, []

    def unlearn_until(method, *args, **kwargs):
        if len(methods_run) == 3:  # the retraining, two methods, then stopped in the third
            raise KeyboardInterrupt("interrupted in the methods")
        methods_run.append(method)
        return real_unlearn(method, *args, **kwargs)

    epochs_run.clear()
    monkeypatch.setattr(E, "train", train_until(99))
    monkeypatch.setattr(E, "unlearn", unlearn_until)
    with pytest.raises(KeyboardInterrupt):
        E.run_seed(exp, 0, device="cpu", progress=False, partial_path=partial, checkpoints=ck)
    assert epochs_run == ["mnist-samples1-simple seed 0, epoch 3/3"]  # resumed at the last epoch
    assert sorted(p.name for p in ck.iterdir()) == ["trained"]  # the epochs' checkpoints are dropped once trained
    epochs_run.clear()
    retrains = []
    monkeypatch.setattr(E, "unlearn", lambda m, *a, **k: retrains.append(m) or real_unlearn(m, *a, **k))
    resumed = E.run_seed(exp, 0, device="cpu", progress=False, partial_path=partial, checkpoints=ck)
    assert epochs_run == [] and "retrain" not in retrains  # neither trained nor retrained again
    assert len(retrains) == len(exp.methods) - 2 and resumed["resumed"] == {"from": "trained", "methods_done": 2}
    assert _without_timings(resumed) == _without_timings(whole)
    assert resumed["train_history"]["loss"] == whole["train_history"]["loss"]
    assert len(whole["train_history"]["loss"]) == 3
