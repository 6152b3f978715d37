"""Experiments: the cached, resumable runner of the seed's experiments (their configs are
:mod:`amnesiac_paper.catalogue`), reading results back, summary tables, two diagnostics and the ``run`` command.

An experiment trains the original model once per seed with every log its methods need, applies every
method (with and without repair), evaluates everything against a model retrained from scratch, and writes
the metrics to ``results/<experiment>/<profile>-<hash>/seed<k>.json``. The hash covers the config and
:data:`SEMANTICS_VERSION`; a second run with the same config loads instead of recomputing. Each finished
method is saved as it completes (``seed<k>.partial.json``), and the training's state after every epoch, then the
trained model with its logs and the retrained reference, under the git-ignored ``weights/seed<k>/`` (removed when
the seed is done), so an interrupted seed resumes where it stopped: at its last finished epoch or method, with the
same numbers as an uninterrupted run. Writes are atomic (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import shutil
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from amnesiac.data import ArrayDataset, class_ids, groups_per_sample, random_ids, test_views
from amnesiac.deltalog import DeltaLog
from amnesiac.ledger import Ledger, atomic_torch_save, load_ledger, save_ledger
from amnesiac.training import History, accuracy, pick_device, train
from amnesiac.unlearning import Request, repair, subtract, unlearn

from . import cli
from . import metrics as M
from .catalogue import (
    EXPERIMENTS,
    GRADIENT_LOG,
    OVERRIDES,
    SEMANTICS_VERSION,
    UPDATE_LOG,
    Experiment,
    LogSpec,
    MethodRecord,
    MethodSpec,
    get_experiment,
    parse_overrides,
    seed_log,
)
from .datasets import IN_CHANNELS, NUM_CLASSES, DatasetUnavailable, graves_mnist, load_dataset
from .models import build_model
from .store import PROFILES, atomic_write_json, provenance

# --------------------------------------------------------------------------------------------- data setup


@dataclass
class Split:
    """Everything one seed of an experiment needs: train set, forget/retain, test views."""

    train: ArrayDataset
    forget: ArrayDataset
    retain: ArrayDataset
    test: ArrayDataset
    test_forgotten: ArrayDataset | None
    test_rest: ArrayDataset
    eval_retain: ArrayDataset
    groups_class: dict = field(default_factory=dict)
    groups_sample: dict = field(default_factory=dict)


def _subset(ds: ArrayDataset, n: int | None, seed: int) -> ArrayDataset:
    if n is None or n >= len(ds):
        return ds
    gen = torch.Generator().manual_seed(10_007 + seed)
    return ds.subset(torch.sort(ds.ids[torch.randperm(len(ds), generator=gen)[:n]]).values)


def make_split(exp: Experiment, seed: int) -> Split:
    """Load the data and build the forget/retain split for one seed (raises DatasetUnavailable)."""
    train_set = load_dataset(exp.dataset, "train")
    test_set = load_dataset(exp.dataset, "test")
    if exp.kind == "class":
        if exp.graves_keep is not None:
            train_set = graves_mnist(train_set, forget_class=exp.forget_class, keep=exp.graves_keep)
        forget_all = class_ids(train_set, exp.forget_class)
        if exp.train_subset:  # smoke: a small subset that still holds forget samples
            keep = forget_all[: max(10, exp.train_subset // 50)]
            others = _subset(train_set.without(forget_all), exp.train_subset, seed)
            train_set = train_set.subset(torch.sort(torch.cat([others.ids, keep])).values)
        forget_ids = class_ids(train_set, exp.forget_class)
    else:
        train_set = _subset(train_set, exp.train_subset, seed)
        forget_ids = random_ids(train_set, exp.forget_fraction, seed=seed)
    test_set = _subset(test_set, exp.test_subset, seed)
    forget, retain = train_set.subset(forget_ids), train_set.without(forget_ids)
    if exp.kind == "class":
        test_forgotten, test_rest = test_views(test_set, exp.forget_class)
    else:
        test_forgotten, test_rest = None, test_set
    gen = torch.Generator().manual_seed(20_011 + seed)
    eval_ids = retain.ids[torch.randperm(len(retain), generator=gen)[: exp.eval_retain]]
    return Split(train_set, forget, retain, test_set, test_forgotten, test_rest, retain.subset(eval_ids),
                 groups_class={"forget": forget_ids}, groups_sample=groups_per_sample(forget_ids))


def needed_logs(exp: Experiment) -> dict[str, LogSpec]:
    """Every log the experiment's methods read, by key (methods sharing a log share one)."""
    return {s.log.key: s.log for s in exp.methods if s.log is not None}


def make_logs(exp: Experiment, model: torch.nn.Module, split: Split) -> dict[str, Ledger]:
    """Every log the experiment's methods use, attached to ``model`` before training, by key."""
    return {key: spec.build(model, split) for key, spec in sorted(needed_logs(exp).items())}


def request_groups(log) -> tuple:
    return ("forget",) if "forget" in log.group_names else tuple(log.group_names)


# ---------------------------------------------------------------------------------------------- evaluation


def evaluate(model: torch.nn.Module, split: Split, reference: torch.nn.Module | None, *, seed: int,
             keep_losses: bool = False) -> dict:
    """All metrics of one model: accuracies, membership inference, distance to the retrained reference."""
    out = {
        "acc_forget": accuracy(model, split.forget),
        "acc_retain": accuracy(model, split.eval_retain),
        "acc_test": accuracy(model, split.test),
        "acc_test_rest": accuracy(model, split.test_rest),
    }
    if split.test_forgotten is not None:
        out["acc_test_forgotten"] = accuracy(model, split.test_forgotten)
    forget_loss = M.per_sample_losses(model, split.forget)
    test_loss = M.per_sample_losses(model, split.test)
    out["mia_loss"] = M.loss_mia(forget_loss, test_loss, seed=seed).to_dict()
    out["mia_entropy"] = M.entropy_mia(M.entropies(model, split.eval_retain), M.entropies(model, split.test),
                                       M.entropies(model, split.forget), seed=seed)
    if reference is not None:
        out["dist_param"] = M.param_distance(model, reference)
        out.update({f"{k}_to_retrain": v for k, v in M.output_divergence(model, reference, split.test).items()})
    if keep_losses:
        out["losses"] = {"forget": _round(forget_loss), "test": _round(test_loss[:2000])}
    return out


def _round(arr, digits=5) -> list:
    return [round(float(v), digits) for v in np.asarray(arr).reshape(-1)]


# -------------------------------------------------------------------------------------------------- runner


def _model_fn(exp: Experiment) -> Callable[[], torch.nn.Module]:
    """Builds a fresh model of the experiment (initialised from torch's global generator)."""
    return functools.partial(build_model, exp.model, IN_CHANNELS[exp.dataset], NUM_CLASSES[exp.dataset])


def _train_original(exp: Experiment, seed: int, dev: torch.device, progress: bool, desc: str,
                    checkpoints: Path | None = None):
    """Seed ``seed``'s original training with every log of the experiment attached (finalized after training):
    (split, model, model_fn, logs by key, history). The one place that fixes the data, initialisation and order
    of an experiment's run, so diagnostics retrace :func:`run_seed` exactly.

    With ``checkpoints`` (a folder), the model, optimizer, logs and random state are saved after every epoch but
    the last, and a later call resumes from the newest complete one: the same model and logs bit for bit as an
    uninterrupted run (one epoch is then the longest piece of work that an interruption can lose)."""
    split = make_split(exp, seed)
    model_fn = _model_fn(exp)
    torch.manual_seed(seed)
    model = model_fn()
    logs = make_logs(exp, model, split)
    opt = exp.recipe.make_optimizer(model.parameters())
    loader = split.train.loader(exp.recipe.batch_size, seed=seed)
    done, history = _resume_training(checkpoints, model, opt, logs, dev) if checkpoints else (0, History())
    loader.epoch = done  # each epoch's order comes from the seed and the epoch number
    epochs = exp.recipe.epochs
    for epoch in range(done, epochs):
        history.extend(train(model, loader, opt, epochs=1, delta_log=list(logs.values()), device=dev,
                             progress=progress, desc=f"{desc}, epoch {epoch + 1}/{epochs}"))
        if checkpoints is not None and epoch + 1 < epochs:
            _save_training(checkpoints, epoch + 1, model, opt, logs, history, dev)
    for log in logs.values():
        if isinstance(log, DeltaLog):
            log.finalize()
    return split, model, model_fn, logs, history


def _rng_state(dev: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None}


def _set_rng_state(state: dict, dev: torch.device) -> None:
    torch.set_rng_state(state["cpu"])
    if dev.type == "cuda" and state["cuda"] is not None:
        torch.cuda.set_rng_state(state["cuda"], dev)


def _save_training(folder: Path, epoch: int, model, opt, logs: dict, history: History, dev: torch.device) -> None:
    """The state after ``epoch`` epochs into ``folder/epoch<k>/`` (its ``training.pt``, written last, marks it
    complete); older epochs' folders are removed once it is."""
    target = folder / f"epoch{epoch}"
    if target.exists():
        shutil.rmtree(target)
    for key, log in logs.items():
        save_ledger(target / f"log-{key}.pt", log)
    atomic_torch_save(target / "training.pt", {"epoch": epoch, "model": model.state_dict(),
                                                "optimizer": opt.state_dict(), "rng": _rng_state(dev),
                                                "history": history.to_dict()})
    for old in folder.glob("epoch*"):
        if old != target:
            shutil.rmtree(old)


def _resume_training(folder: Path, model, opt, logs: dict, dev: torch.device) -> tuple[int, History]:
    """Load the newest complete epoch checkpoint of ``folder`` into the freshly built model, optimizer and logs:
    (epochs done, history so far); (0, empty history) when there is none."""
    complete = [p for p in folder.glob("epoch*") if (p / "training.pt").exists()]
    if not complete:
        return 0, History()
    newest = max(complete, key=lambda p: int(p.name.removeprefix("epoch")))
    state = torch.load(newest / "training.pt", map_location="cpu", weights_only=True)
    model.to(dev)  # before the optimizer's state, which is cast to its parameters' device
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["optimizer"])
    for key, log in logs.items():
        load_ledger(newest / f"log-{key}.pt", log)
    _set_rng_state(state["rng"], dev)
    return int(state["epoch"]), History.from_dict(state["history"])


def _trained_seed(exp: Experiment, seed: int, dev: torch.device, progress: bool, checkpoints: Path | None):
    """The original training (logs finalized) and the retrained reference of one seed: (split, model, model_fn,
    logs, history, reference, retrain seconds, resumed). With ``checkpoints``, both are cached in
    ``checkpoints/trained/`` once done (its ``models.pt``, written last, marks it complete), so a seed interrupted
    in its methods resumes without training again; ``resumed`` says what came from disk."""
    cache = checkpoints / "trained" if checkpoints is not None else None
    desc = f"{exp.name} seed {seed}"
    if cache is not None and (cache / "models.pt").exists():
        split = make_split(exp, seed)
        model_fn = _model_fn(exp)
        state = torch.load(cache / "models.pt", map_location="cpu", weights_only=True)
        model, reference = model_fn(), model_fn()
        logs = make_logs(exp, model, split)
        for key, log in logs.items():
            load_ledger(cache / f"log-{key}.pt", log)
        model.load_state_dict(state["original"])
        reference.load_state_dict(state["reference"])
        model.to(dev)
        reference.to(dev)
        _set_rng_state(state["rng"], dev)  # as the uninterrupted run leaves it for the methods
        return (split, model, model_fn, logs, History.from_dict(state["history"]), reference,
                float(state["retrain_seconds"]), "trained")
    resumed = None
    if checkpoints is not None and any(p.is_dir() for p in checkpoints.glob("epoch*")):
        resumed = "epochs"
    split, model, model_fn, logs, history = _train_original(exp, seed, dev, progress, desc, checkpoints)
    request = _request(exp, split, model_fn, seed, dev)
    t0 = time.perf_counter()
    reference = unlearn("retrain", model, request, progress=progress)
    retrain_seconds = time.perf_counter() - t0
    if cache is not None:
        for key, log in logs.items():
            save_ledger(cache / f"log-{key}.pt", log)
        atomic_torch_save(cache / "models.pt", {"original": model.state_dict(), "reference": reference.state_dict(),
                                                 "history": history.to_dict(), "retrain_seconds": retrain_seconds,
                                                 "rng": _rng_state(dev)})
        for old in checkpoints.glob("epoch*"):
            shutil.rmtree(old)
    return split, model, model_fn, logs, history, reference, retrain_seconds, resumed


def _request(exp: Experiment, split: Split, model_fn, seed: int, dev: torch.device) -> Request:
    return Request(forget_groups=("forget",), forget=split.forget, retain=split.retain, recipe=exp.recipe,
                   model_fn=model_fn, num_classes=NUM_CLASSES[exp.dataset], seed=seed, device=str(dev))


def run_seed(exp: Experiment, seed: int, *, device: str = "auto", progress: bool = True,
             partial_path: Path | None = None, checkpoints: Path | None = None) -> dict:
    """Run one seed: train with logs, retrain the reference, apply and evaluate every method.

    ``partial_path`` keeps the finished methods (a rerun skips them); ``checkpoints`` (a folder) keeps the
    training's state after each epoch and, once trained, the original model, its logs and the reference, so a
    rerun neither repeats finished epochs nor trains again (see :func:`_trained_seed`)."""
    dev = pick_device(device)
    done = json.loads(partial_path.read_text()) if partial_path and partial_path.exists() else {}
    split, model, model_fn, deltas, history, reference, retrain_seconds, resumed = _trained_seed(
        exp, seed, dev, progress, checkpoints)
    train_seconds = history.wall_seconds
    memory = {key: log.nbytes for key, log in deltas.items()}  # stored bytes after training
    request = _request(exp, split, model_fn, seed, dev)
    record = {
        "seed": seed, "n_train": len(split.train), "n_forget": len(split.forget), "n_retain": len(split.retain),
        "n_test": len(split.test), "n_params": sum(q.numel() for q in model.parameters()),
        "train_seconds": train_seconds, "log_seconds": history.log_seconds, "retrain_seconds": retrain_seconds,
        "train_history": {"loss": history.loss, "accuracy": history.accuracy},
        "memory_bytes": memory,
        "memory_formula_bytes": {
            "per_batch_all_steps": M.per_batch_formula_bytes(sum(q.numel() for q in model.parameters()),
                                                             len(split.train), exp.recipe.epochs,
                                                             exp.recipe.batch_size),
            "per_sample_p1": M.per_sample_formula_bytes(sum(q.numel() for q in model.parameters()),
                                                        len(split.forget)),
        },
        "original": evaluate(model, split, reference, seed=seed, keep_losses=True),
        "retrain": evaluate(reference, split, None, seed=seed, keep_losses=True),
        "methods": done.get("methods", {}),
    }
    if resumed or record["methods"]:  # what an earlier, interrupted run of this seed had finished
        record["resumed"] = {"from": resumed or "methods", "methods_done": len(record["methods"])}
    if exp.inversion_steps and exp.kind == "class":
        shape = tuple(split.train.x.shape[1:])
        record["inversion"] = {"original": _round(M.invert(model, exp.forget_class, shape,
                                                           steps=exp.inversion_steps, seed=seed), 3),
                               "retrain": _round(M.invert(reference, exp.forget_class, shape,
                                                          steps=exp.inversion_steps, seed=seed), 3),
                               "shape": list(shape)}
    for spec in exp.methods:
        if spec.stored_name in record["methods"]:
            continue
        params, req = dict(spec.params), request
        if spec.log is not None:
            params["log"] = deltas[spec.log.key]
            req = dataclasses.replace(request, forget_groups=request_groups(deltas[spec.log.key]))
        t0 = time.perf_counter()
        new = unlearn(spec.method, model, req, progress=progress, **params)
        seconds = time.perf_counter() - t0
        headline = spec.log == UPDATE_LOG and spec.alpha == 0.1  # its losses and inversion are kept for figures
        row = {"method": spec.method, "log": spec.log.key if spec.log else None, "params": dict(spec.params),
               "seconds": seconds, "no_repair": evaluate(new, split, reference, seed=seed, keep_losses=headline)}
        if spec.repair and exp.repair_epochs:
            t0 = time.perf_counter()
            fixed = repair(new, request, epochs=exp.repair_epochs, progress=progress)
            row["repair_seconds"] = time.perf_counter() - t0
            row["after_repair"] = evaluate(fixed, split, reference, seed=seed)
        if "inversion" in record and headline:
            record["inversion"]["amnesiac"] = _round(M.invert(new, exp.forget_class, tuple(split.train.x.shape[1:]),
                                                              steps=exp.inversion_steps, seed=seed), 3)
        record["methods"][spec.stored_name] = row
        if partial_path is not None:
            atomic_write_json(partial_path, {"methods": record["methods"]})
    return record


@dataclass
class Result:
    """A finished (or partly finished) experiment: its config, one record per seed, and provenance."""

    experiment: Experiment
    seeds: dict[int, dict]
    provenance: dict
    folder: Path
    available: bool = True
    reason: str = ""

    def method_records(self, spec: MethodSpec) -> list[MethodRecord]:
        """``spec``'s evaluation in every seed that has it, typed (find ``spec`` with ``experiment.find``)."""
        name = spec.stored_name
        return [MethodRecord.from_dict(spec.label, r["methods"][name]) for r in self.seeds.values()
                if name in r["methods"]]


def run(name: str, profile: str = "full", *, seeds: tuple[int, ...] | None = None, device: str = "auto",
        progress: bool = True, recompute: bool = False, results_root: Path | None = None,
        overrides: Mapping[str, object] | None = None) -> Result:
    """Run (or load from the cache) a named experiment for each of its seeds.

    Example:
        >>> # python -m amnesiac_paper run mnist-class3-simple --profile smoke --set forget_class=5
    """
    exp = get_experiment(name, profile, seeds=seeds, overrides=overrides)
    folder = (results_root / exp.name / f"{exp.profile}-{exp.hash}") if results_root else exp.folder
    dev = pick_device(device)
    prov = provenance(dev, semantics=SEMANTICS_VERSION)
    records: dict[int, dict] = {}
    # the folder's config is the profile's own (every seed) even when this run computes fewer: ``seeds`` is not part
    # of the hash, and a restricted run in a clean checkout must not rewrite a tracked file
    whole = get_experiment(name, profile, overrides=overrides)
    atomic_write_json(folder / "config.json", {"config": whole.to_dict(), "hash": whole.hash,
                                                "semantics": SEMANTICS_VERSION})
    for seed in exp.seeds:
        path = folder / f"seed{seed}.json"
        if path.exists() and not recompute:
            records[seed] = json.loads(path.read_text())
            continue
        if recompute:  # afresh: an interrupted run's finished methods and checkpoints are not reused either
            (folder / f"seed{seed}.partial.json").unlink(missing_ok=True)
            shutil.rmtree(folder / "weights" / f"seed{seed}", ignore_errors=True)
        try:
            start = time.perf_counter()
            partial = folder / f"seed{seed}.partial.json"
            record = run_seed(exp, seed, device=device, progress=progress, partial_path=partial,
                              checkpoints=folder / "weights" / f"seed{seed}")
        except DatasetUnavailable as err:
            result = Result(exp, records, prov, folder, available=False, reason=str(err))
            atomic_write_json(folder / "unavailable.json", {"reason": str(err), "config": exp.to_dict(),
                                                             "hash": exp.hash, "provenance": prov})
            return result
        record["wall_seconds"] = time.perf_counter() - start
        record["provenance"] = prov
        atomic_write_json(path, record)
        (folder / f"seed{seed}.partial.json").unlink(missing_ok=True)
        shutil.rmtree(folder / "weights" / f"seed{seed}", ignore_errors=True)  # checkpoints: the seed is done
        records[seed] = record
    (folder / "unavailable.json").unlink(missing_ok=True)
    return Result(exp, records, prov, folder)


def load(name: str, profile: str = "full", *, results_root: Path | None = None,
         overrides: Mapping[str, object] | None = None) -> Result:
    """Load committed results without computing; missing seeds are simply absent (see ``Result.seeds``)."""
    exp = get_experiment(name, profile, overrides=overrides)
    folder = (results_root / exp.name / f"{exp.profile}-{exp.hash}") if results_root else exp.folder
    records = {s: json.loads((folder / f"seed{s}.json").read_text()) for s in exp.seeds
               if (folder / f"seed{s}.json").exists()}
    unavailable = folder / "unavailable.json"
    if not records and unavailable.exists():
        info = json.loads(unavailable.read_text())
        return Result(exp, {}, info.get("provenance", {}), folder, available=False, reason=info["reason"])
    prov = next(iter(records.values()))["provenance"] if records else {}
    return Result(exp, records, prov, folder)


# ------------------------------------------------------------------------------------------------- tables


def metric_value(entry: dict, metric: str) -> float:
    """A metric of one evaluation entry; ``mia_loss`` reads its mean."""
    v = entry.get(metric, float("nan"))
    return float(v["mean"]) if isinstance(v, dict) else float(v)


# the summary rows of the two reference models (their spec is None): key and display label
ORIGINAL_KEY, ORIGINAL_LABEL = "original", "After training (original)"
RETRAIN_KEY, RETRAIN_LABEL = "retrain", "Retrain from scratch (reference)"


def summarize(result: Result, metrics: tuple[str, ...], stage: str = "no_repair") -> list[dict]:
    """Rows (the original first, one per method, the retrained model last) with, for each metric, the mean over
    seeds, the sample standard deviation (``<metric>_std``, ddof=1) and the half-width of the 95% t-interval of the
    mean (``<metric>_ci``); both NaN with fewer than two seeds.

    Each row carries its ``key`` (:attr:`MethodSpec.key`; :data:`ORIGINAL_KEY` and :data:`RETRAIN_KEY` for the
    reference models), its display ``label``, its typed ``spec`` (``None`` for the reference models) and ``alpha``,
    so rows are selected by what they are, not by their label's text.

    ``stage`` is ``"no_repair"`` or ``"after_repair"``; methods not repaired give NaN at that stage.
    """
    if stage not in ("no_repair", "after_repair"):
        raise ValueError(f"unknown stage {stage!r}; valid: no_repair, after_repair")
    records = list(result.seeds.values())
    rows = []

    def row(key, label, entries, spec=None):
        out = {"key": key, "label": label, "seeds": len(entries), "spec": spec, "alpha": spec.alpha if spec else None}
        for m in metrics:
            vals = np.array([metric_value(e, m) for e in entries], dtype=float)
            ok = vals[~np.isnan(vals)]
            out[m], out[m + "_ci"], _ = M.mean_ci(ok)
            out[m + "_std"] = float(ok.std(ddof=1)) if len(ok) > 1 else float("nan")
        return out

    rows.append(row(ORIGINAL_KEY, ORIGINAL_LABEL, [r["original"] for r in records]))
    for spec in result.experiment.methods:
        name = spec.stored_name
        entries = [r["methods"][name].get(stage, {}) for r in records if name in r["methods"]]
        rows.append(row(spec.key, spec.label, entries, spec))
    rows.append(row(RETRAIN_KEY, RETRAIN_LABEL, [r["retrain"] for r in records]))
    return rows


def format_table(rows: list[dict], metrics: tuple[str, ...]) -> str:
    """A plain-text table of :func:`summarize` rows (mean +- half-width of the 95% interval over seeds)."""
    width = max(len(r["label"]) for r in rows) + 2
    lines = ["method".ljust(width) + "".join(m[:22].rjust(24) for m in metrics)]
    for r in rows:
        cells = []
        for m in metrics:
            mean, half = r[m], r[m + "_ci"]
            cell = "-" if np.isnan(mean) else f"{mean:.3f}" if np.isnan(half) else f"{mean:.3f} +- {half:.3f}"
            cells.append(cell.rjust(24))
        lines.append(r["label"].ljust(width) + "".join(cells))
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------- diagnostics


def log_norms(name: str, profile: str = "full", *, seed: int = 0, device: str = "auto", progress: bool = False,
              recompute: bool = False, results_root: Path | None = None,
              overrides: Mapping[str, object] | None = None) -> dict:
    """Size and direction of every log's record of the request, on the experiment's own training run.

    Trains seed ``seed``'s original model exactly as :func:`run_seed` does (same data, order and logs), then
    records the norm of each log's forget-set record and the cosine between every pair of records. This tests
    explanations that rest on how large or how aligned two records are (e.g. why the seed's mis-indexed
    per-sample records damaged the rest less than correctly indexed ones). Cached as
    ``lognorms-seed<k>.json`` beside the experiment's seeds; the methods are not run.
    """
    exp = get_experiment(name, profile, overrides=overrides)
    folder = (results_root / exp.name / f"{exp.profile}-{exp.hash}") if results_root else exp.folder
    path = folder / f"lognorms-seed{seed}.json"
    if path.exists() and not recompute:
        return json.loads(path.read_text())
    dev = pick_device(device)
    t0 = time.perf_counter()
    split, _, _, logs, _ = _train_original(exp, seed, dev, progress, f"{exp.name} seed {seed} (log norms)")
    vectors = {key: log.delta_vector(request_groups(log)).double().cpu() for key, log in logs.items()}
    keys = sorted(vectors)
    cos = {f"{a}|{b}": float(torch.nn.functional.cosine_similarity(vectors[a], vectors[b], dim=0))
           for i, a in enumerate(keys) for b in keys[i + 1:]}
    record = {"seed": seed, "norms": {k: float(vectors[k].norm()) for k in keys}, "cosines": cos,
              "n_forget": len(split.forget), "train_seconds": time.perf_counter() - t0,
              "provenance": provenance(dev, semantics=SEMANTICS_VERSION)}
    atomic_write_json(path, record)
    return record


MASK_CONTROL_PS = (0.0001, 0.0003, 0.001, 0.002, 0.005, 0.01)


def mask_control(name: str, profile: str = "full", *, seed: int = 0, ps: Sequence[float] = MASK_CONTROL_PS,
                 device: str = "auto", progress: bool = False, recompute: bool = False,
                 results_root: Path | None = None, overrides: Mapping[str, object] | None = None) -> dict:
    """Is a p-mask more than a step size? The seed's masked per-sample records against scale-matched controls,
    below the p where everything saturates.

    Retraces seed ``seed``'s original run of a class experiment (same data, initialisation and order) with the
    seed's per-sample masked gradient records at every ``p`` and the full (unmasked) record, then compares, for
    each p, subtracting the masked record (coefficient 1, as the seed did) with subtracting the full record
    scaled by ``alpha = p`` (a mask keeps p of its expected value) and by ``alpha = sqrt(p)`` (it keeps about
    sqrt(p) of its norm), and a random direction with the masked record's norm. Each gets its norm and the test
    accuracies on the forgotten class and on the rest. Cached as ``maskcontrol-seed<k>.json`` beside the
    experiment's seeds; the experiment's own methods are not run.
    """
    exp = get_experiment(name, profile, overrides=overrides)
    if exp.kind != "class":
        raise ValueError(f"the mask control needs a class experiment; {name!r} forgets {exp.kind}")
    ps = tuple(float(p) for p in ps)
    if not ps or any(not 0.0 < p < 1.0 for p in ps):
        raise ValueError(f"every p must be in (0, 1), got {ps}")
    folder = (results_root / exp.name / f"{exp.profile}-{exp.hash}") if results_root else exp.folder
    path = folder / f"maskcontrol-seed{seed}.json"
    if path.exists() and not recompute:
        record = json.loads(path.read_text())
        if tuple(record["ps"]) == ps:
            return record
    specs = tuple(MethodSpec(f"p={p:g}", "amnesiac", seed_log(p)) for p in ps)
    diag = dataclasses.replace(exp, methods=specs + (MethodSpec("full", "amnesiac", GRADIENT_LOG),))
    dev = pick_device(device)
    t0 = time.perf_counter()
    split, model, _, logs, _ = _train_original(diag, seed, dev, progress, f"{exp.name} seed {seed} (masks)")
    full_log = logs[GRADIENT_LOG.key]
    full = full_log.delta_vector(request_groups(full_log)).double().cpu()
    gen = torch.Generator().manual_seed(60_013 + seed)

    def measure(vector: torch.Tensor) -> dict:
        new = subtract(model, vector)
        return {"norm": float(vector.norm()), "acc_test_forgotten": accuracy(new, split.test_forgotten),
                "acc_test_rest": accuracy(new, split.test_rest)}

    rows = []
    for p in ps:
        log = logs[seed_log(p).key]
        masked = log.delta_vector(request_groups(log)).double().cpu()
        direction = torch.randn(len(masked), generator=gen, dtype=torch.float64)
        direction *= masked.norm() / direction.norm()
        rows.append({"p": p, "masked": measure(masked), "full_times_p": measure(p * full),
                     "full_times_sqrt_p": measure(p ** 0.5 * full), "random_direction": measure(direction),
                     "cosine_masked_full": float(torch.nn.functional.cosine_similarity(masked, full, dim=0))})
    record = {"seed": seed, "ps": list(ps), "full_norm": float(full.norm()), "rows": rows,
              "original": {"acc_test_forgotten": accuracy(model, split.test_forgotten),
                           "acc_test_rest": accuracy(model, split.test_rest)},
              "seconds": time.perf_counter() - t0, "provenance": provenance(dev, semantics=SEMANTICS_VERSION)}
    atomic_write_json(path, record)
    return record


# ------------------------------------------------------------------------------------------- command line


def _run_arguments(r) -> None:
    r.add_argument("experiment", choices=list(EXPERIMENTS) + ["all-mnist"], metavar="EXPERIMENT",
                   help="one of: " + ", ".join(EXPERIMENTS) + ", or all-mnist")
    r.add_argument("--profile", default="full", choices=PROFILES)
    r.add_argument("--seeds", type=cli.seed, nargs="+", default=None, help="override the profile's seeds")
    r.add_argument("--device", default="auto", type=cli.device, help="auto (CUDA if available), cpu or cuda")
    r.add_argument("--recompute", action="store_true", help="ignore cached results")
    r.add_argument("--quiet", action="store_true", help="no progress bars")
    r.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", dest="overrides",
                   help="change a setting (repeatable), e.g. --set forget_class=5 --set alphas=0.3,0.1; keys: "
                        + ", ".join(OVERRIDES))


def _run_names(args) -> list[str]:
    return [n for n in EXPERIMENTS if n.startswith("mnist")] if args.experiment == "all-mnist" else [args.experiment]


def _run_check(args) -> None:
    args.overrides = parse_overrides(args.overrides)
    for name in _run_names(args):  # check every setting before anything runs
        get_experiment(name, args.profile, seeds=args.seeds, overrides=args.overrides)


def _run_command(args) -> int:
    status = 0
    for name in _run_names(args):
        result = run(name, args.profile, seeds=tuple(args.seeds) if args.seeds else None, device=args.device,
                     progress=not args.quiet, recompute=args.recompute, overrides=args.overrides)
        print(f"\n== {name} ({args.profile}, seeds {sorted(result.seeds)}) -> {result.folder}")
        if not result.available:
            print(f"data not available: {result.reason}", file=sys.stderr)
            status = 1
            continue
        metrics = (("acc_test_forgotten", "acc_test_rest", "mia_loss") if result.experiment.kind == "class"
                   else ("acc_forget", "acc_test", "mia_loss", "dist_param"))
        for stage in ("no_repair", "after_repair"):
            print(f"-- {stage}")
            print(format_table(summarize(result, metrics, stage), metrics))
    return status


def _list_command(args) -> int:
    for name in EXPERIMENTS:
        exp = get_experiment(name)
        print(f"{name:28s} {exp.dataset:9s} {exp.model:9s} {exp.kind:8s} {len(exp.methods)} methods")
    return 0


RUN_COMMAND = cli.Command("run", "run (or load) an experiment and print its summary table", _run_arguments,
                          _run_command, _run_check, options="common")
LIST_COMMAND = cli.Command("list", "list experiments and profiles", lambda p: None, _list_command, options="none")
