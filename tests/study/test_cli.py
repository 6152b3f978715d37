"""The command line: bad options are refused with one line on stderr (exit 2) before anything runs, a run whose data
are missing exits non-zero, and ``bench --ledger-read DIR`` never removes what it did not create."""

import json

import pytest
import torch
import torchvision
from amnesiac_paper import __main__ as cli
from amnesiac_paper import bench, comparison, fidelity, membership, propagation, store
from amnesiac_paper import experiments as E

STUDIES = ["fidelity", "propagation", "comparison", "membership"]
COMMANDS = [["run", "mnist-class3-simple", "--profile", "smoke"], ["bench", "--profile", "smoke"]] + [
    [name, "--profile", "smoke"] for name in STUDIES]


def _never(*args, **kwargs):
    raise AssertionError("the command computed instead of refusing its options")


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No results written into the repository, no data, no downloads, no computing, torch's threads restored."""
    monkeypatch.setattr(store, "RESULTS_ROOT", tmp_path / "results")
    (tmp_path / "no-data").mkdir()
    monkeypatch.setenv("AMNESIAC_DATA", str(tmp_path / "no-data"))
    for dataset in (torchvision.datasets.MNIST, torchvision.datasets.CIFAR100):
        monkeypatch.setattr(dataset, "download", lambda self: (_ for _ in ()).throw(RuntimeError("offline test")))
    threads = torch.get_num_threads()
    yield tmp_path
    torch.set_num_threads(threads)


@pytest.fixture
def no_compute(offline, monkeypatch):
    for module in (fidelity, propagation, comparison, membership):
        monkeypatch.setattr(module, "run_study", _never)
    monkeypatch.setattr(E, "run", _never)
    monkeypatch.setattr(bench, "run_bench", _never)
    monkeypatch.setattr(bench, "ledger_read_times", _never)
    return offline


def _refused(argv, capsys) -> str:
    """Run the command line; check that it exits with status 2 and one ``error:`` line (no traceback) on stderr,
    and return that line."""
    try:
        code = cli.main(argv)
    except SystemExit as stop:  # argparse's own errors
        code = stop.code
    out = capsys.readouterr()
    assert code == 2, f"{argv}: exit status {code}\n{out.err}"
    assert "Traceback" not in out.err
    errors = [line for line in out.err.splitlines() if "error:" in line]
    assert len(errors) == 1, out.err
    return errors[0]


@pytest.mark.parametrize("command", [c for c in COMMANDS if c[0] != "bench"], ids=lambda c: c[0])
def test_negative_seeds_are_refused(command, no_compute, capsys):
    line = _refused(command + ["--seeds", "0", "-1"], capsys)
    assert "--seeds" in line and "-1" in line and ">= 0" in line


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_cuda_is_refused_where_it_is_not_available(command, no_compute, capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    line = _refused(command + ["--device", "cuda"], capsys)
    assert "--device" in line and "CUDA is not available" in line and "'cpu'" in line


@pytest.mark.parametrize("threads", ["0", "-3", "two"])
@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: c[0])
def test_threads_below_one_are_refused(command, threads, no_compute, capsys):
    before = torch.get_num_threads()
    line = _refused(command + ["--threads", threads], capsys)
    assert "--threads" in line and repr(threads) in line and ">= 1" in line
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("argv, message", [
    (["fidelity", "--optimizers", "lbfgs"], "unknown optimizer(s) ['lbfgs']; valid: adam, sgd, adamw"),
    (["propagation", "--every", "0"], "propagate_every must be >= 1, got 0"),
    (["comparison", "--methods", "retrain"], "unknown method(s) ['retrain']"),
    (["membership", "--parts", "shadows"], "unknown part(s) ['shadows']; valid: class, canary, lira, methods"),
])
def test_a_studys_own_checks_are_reported_before_it_runs(argv, message, no_compute, capsys):
    line = _refused(argv + ["--profile", "smoke"], capsys)
    assert line.startswith("error: ") and message in line


def test_bench_tables_without_a_committed_bench_say_how_to_make_one(no_compute, capsys):
    line = _refused(["bench", "--tables", "--profile", "smoke"], capsys)
    assert "smoke.json" in line and "python -m amnesiac_paper bench --profile smoke" in line


def test_a_run_without_its_data_exits_non_zero(offline, capsys):
    assert cli.main(["run", "mnist-class3-simple", "--profile", "smoke", "--quiet"]) == 1
    out = capsys.readouterr()
    assert "Traceback" not in out.err
    assert "data not available: mnist (train) is not available under" in out.err
    assert str(offline / "no-data") in out.err and "$AMNESIAC_DATA" in out.err
    assert "data not available" not in out.out


def _fake_ledger(storage, *, dtype):
    storage.mkdir()
    (storage / "deltas.bin").write_bytes(b"x" * 16)
    return {"dtype": dtype, "reads": {}}


def _broken_ledger(storage, *, dtype):
    storage.mkdir()
    (storage / "deltas.bin").write_bytes(b"x" * 16)
    raise OSError("disk full")


def test_bench_ledger_read_keeps_everything_it_did_not_create(offline, monkeypatch, capsys):
    folder = offline / "scratch"
    (folder / "mine").mkdir(parents=True)
    (folder / "notes.txt").write_text("keep me")
    (folder / "mine" / "data.bin").write_bytes(b"keep me too")
    before = sorted(p.relative_to(folder) for p in folder.rglob("*"))

    monkeypatch.setattr(bench, "ledger_read_times", _fake_ledger)
    assert cli.main(["bench", "--ledger-read", str(folder), "--dtype", "float16"]) == 0
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before
    assert (folder / "notes.txt").read_text() == "keep me"
    assert json.loads((offline / "results" / "bench" / "ledger-read-float16.json").read_text())["dtype"] == "float16"

    monkeypatch.setattr(bench, "ledger_read_times", _broken_ledger)
    with pytest.raises(OSError, match="disk full"):
        cli.main(["bench", "--ledger-read", str(folder)])
    assert sorted(p.relative_to(folder) for p in folder.rglob("*")) == before  # the partial ledger is gone


def test_bench_ledger_read_refuses_a_path_that_is_not_a_folder(no_compute, capsys):
    file = no_compute / "ledger.bin"
    file.write_text("keep me")
    line = _refused(["bench", "--ledger-read", str(file)], capsys)
    assert "--ledger-read" in line and "not a directory" in line and str(file) in line
    assert file.read_text() == "keep me"
    line = _refused(["bench", "--ledger-read", str(no_compute / "missing" / "ledger")], capsys)
    assert "--ledger-read" in line and "does not exist" in line
    assert not (no_compute / "missing").exists()


def test_a_tiny_ledger_read_benchmark_leaves_only_its_results(offline):
    folder = offline / "scratch"
    folder.mkdir()
    (folder / "notes.txt").write_text("keep me")
    result = bench.ledger_read_bench(folder, "float16", model="simple", n_samples=6, reads=(1, 2), repeats=1)
    assert result["model"] == "simple" and result["n_samples"] == 6 and result["dtype"] == "float16"
    assert result["file_bytes"] > 0 and set(result["reads"]) == {"1", "2"} and "git" in result["provenance"]
    saved = json.loads((offline / "results" / "bench" / "ledger-read-float16.json").read_text())
    assert saved["file_bytes"] == result["file_bytes"]
    assert [p.name for p in folder.iterdir()] == ["notes.txt"]
    # a folder that did not exist is made for the ledger and removed with it
    made = offline / "made"
    bench.ledger_read_bench(made, "float32", model="simple", n_samples=4, reads=(1,), repeats=1)
    assert not made.exists()


@pytest.mark.parametrize("module, restricted, whole", [
    (fidelity, dict(seeds=[1], optimizers=["adam"]), lambda: fidelity.get_study("full")),
    (propagation, dict(seeds=[2], optimizers=["sgd"]), lambda: propagation.get_propagation_study("full")),
    (comparison, dict(seeds=[2], optimizers=["adam"], methods=["finetune"], floors_only=True),
     lambda: comparison.get_comparison_study("full")),
])
def test_a_restricted_run_leaves_the_folders_config_naming_the_whole_study(module, restricted, whole, tmp_path,
                                                                          monkeypatch):
    """The trap a session fell into: a run restricted to some seeds or optimizers rewrote the study folder's
    tracked ``config.json`` with its restricted lists before stamping provenance, so every piece it wrote said
    ``+dirty``. The folder's config is the profile's own (restriction is not part of its hash)."""
    ran = []
    monkeypatch.setattr(module, "run_combo", lambda study, *a, **k: ran.append((study.optimizers, study.seeds)) or {})
    if module is fidelity:
        monkeypatch.setattr(module, "run_combo", lambda study, setting, opt, seed, **k: ran.append((opt, seed)) or {})
    module.run_study("full", results_root=tmp_path, progress=False, **restricted)
    assert ran, "the restricted run computed nothing"
    study = whole()
    written = json.loads((study.folder(tmp_path) / "config.json").read_text())
    assert written["hash"] == study.hash
    assert tuple(written["config"]["seeds"]) == study.seeds == (0, 1, 2)
    assert tuple(written["config"]["optimizers"]) == study.optimizers
    if module is comparison:
        assert tuple(written["config"]["methods"]) == study.methods and set(written["spaces"]) == set(study.methods)
