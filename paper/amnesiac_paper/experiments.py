"""Experiments: frozen configs, named profiles, and a cached, resumable runner.

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
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from amnesiac.batchlog import BatchLog
from amnesiac.data import ArrayDataset, class_ids, groups_per_sample, random_ids, test_views
from amnesiac.deltalog import DeltaLog
from amnesiac.ledger import Ledger, atomic_torch_save, load_ledger, save_ledger
from amnesiac.training import History, Recipe, accuracy, pick_device, train
from amnesiac.unlearning import Request, repair, subtract, unlearn

from . import cli
from . import metrics as M
from .datasets import IN_CHANNELS, NUM_CLASSES, DatasetUnavailable, graves_mnist, load_dataset
from .models import build_model
from .store import PROFILES, atomic_write_json, check_profile, config_hash, provenance, results_root

SEMANTICS_VERSION = 1
KINDS = ("class", "samples")


LOG_KINDS = ("delta", "batch")


@dataclass(frozen=True)
class LogSpec:
    """Which log a method reads, built by :meth:`build` before training; :attr:`key` names it in results.

    Attributes:
        kind: ``"delta"`` (:class:`~amnesiac.DeltaLog`) or ``"batch"`` (:class:`~amnesiac.BatchLog`).
        attribution: a delta log's ``"update"`` (exact shares) or ``"gradient"`` (the seed's raw record).
        p: keep a random fraction ``p`` of each tensor's coordinates (``None``: all).
        per_sample: one group per forget sample (masked records differ per sample) instead of one group
            holding the whole request (shares add up linearly, so its delta is their sum, at the memory of one).
        indexing: ``"position"``, or ``"seed-misindexed"`` (the seed's bug, an ablation).

    Example:
        >>> LogSpec("delta", "gradient", p=0.1, per_sample=True).key
        'gradient-p0.1'
    """

    kind: str
    attribution: str = "update"
    p: float | None = None
    per_sample: bool = False
    indexing: str = "position"

    def __post_init__(self):
        if self.kind not in LOG_KINDS:
            raise ValueError(f"unknown log kind {self.kind!r}; valid: {', '.join(LOG_KINDS)}")

    @property
    def key(self) -> str:
        """The log's name in results files and in the config hash."""
        if self.kind == "batch":
            return "batch" if self.p is None else "layer"
        if self.indexing == "seed-misindexed":
            return "misindexed"
        if self.attribution == "update":
            return "update"
        return "gradient" if self.p is None else f"gradient-p{self.p:g}"

    def build(self, model: torch.nn.Module, split: Split) -> Ledger:
        """The log, attached to ``model`` before training, tracking ``split``'s forget set."""
        groups = split.groups_sample if self.per_sample else split.groups_class
        if self.kind == "batch":
            return BatchLog(model, groups, store="request", request=list(groups), p=self.p)
        return DeltaLog(model, groups, attribution=self.attribution, p=self.p, indexing=self.indexing)


UPDATE_LOG = LogSpec("delta")
GRADIENT_LOG = LogSpec("delta", "gradient")
BATCH_LOG = LogSpec("batch")


def seed_log(p: float) -> LogSpec:
    """The seed's record: one masked raw-gradient record per forget sample."""
    return LogSpec("delta", "gradient", p=p, per_sample=True)


@dataclass(frozen=True)
class MethodSpec:
    """One row of a results table: a registered method applied with one log and parameters."""

    label: str
    method: str
    log: LogSpec | None = None
    params: tuple[tuple[str, float], ...] = ()
    repair: bool = True  # also evaluate after repair

    @property
    def alpha(self) -> float | None:
        return dict(self.params).get("alpha")

    def to_dict(self) -> dict:
        """As stored in configs and hashed: the log by its key."""
        return {"label": self.label, "method": self.method, "log": None if self.log is None else self.log.key,
                "params": [list(p) for p in self.params], "repair": self.repair}


@dataclass(frozen=True)
class MethodRecord:
    """One method's evaluation in one seed, as read from a results file."""

    label: str
    method: str
    log: str | None
    params: dict
    seconds: float
    no_repair: dict
    after_repair: dict | None = None
    repair_seconds: float | None = None

    @classmethod
    def from_dict(cls, label: str, row: dict) -> MethodRecord:
        return cls(label, row["method"], row.get("log"), dict(row.get("params", {})), float(row["seconds"]),
                   row["no_repair"], row.get("after_repair"), row.get("repair_seconds"))


@dataclass(frozen=True)
class Experiment:
    """A frozen experiment config. Build one with :func:`get_experiment`; see :data:`EXPERIMENTS`."""

    name: str
    dataset: str
    model: str
    kind: str  # "class" or "samples"
    recipe: Recipe
    repair_epochs: int
    seeds: tuple[int, ...]
    methods: tuple[MethodSpec, ...]
    forget_class: int | None = None
    graves_keep: int | None = None  # keep only the first N training images of the forget class
    forget_fraction: float | None = None
    ps: tuple[float, ...] = ()  # mask fractions of the seed's per-sample logs
    misindexed_p: float | None = None
    layer_p: float | None = None
    train_subset: int | None = None  # smoke: a seeded random subset of the training set
    test_subset: int | None = None
    eval_retain: int = 10000  # retain samples used for accuracy (a seeded subset)
    inversion_steps: int = 300
    profile: str = "full"

    def to_dict(self) -> dict:
        out = asdict(self)
        out["methods"] = [m.to_dict() for m in self.methods]
        return out

    def find(self, method: str, log: LogSpec | None = None, **params) -> MethodSpec:
        """The method row applying ``method`` with ``log`` and these parameters (typed, instead of its label).

        Example:
            >>> get_experiment("mnist-class3-simple").find("amnesiac", UPDATE_LOG, alpha=0.1).label
            'Update attribution, alpha=0.1'
        """
        hits = [m for m in self.methods if m.method == method and (log is None or m.log == log)
                and all(dict(m.params).get(k) == v for k, v in params.items())]
        if len(hits) != 1:
            have = "; ".join(f"{m.method} {m.log.key if m.log else '-'} {dict(m.params)}" for m in self.methods)
            raise KeyError(f"{len(hits)} rows of {self.name!r} match method={method!r}, log={log}, {params}; "
                           f"rows: {have}")
        return hits[0]

    # the rows the chapters name, typed (each raises KeyError listing the rows when the experiment lacks it)
    def update(self, alpha: float) -> MethodSpec:
        """The exact update attribution subtracted at ``alpha``."""
        return self.find("amnesiac", UPDATE_LOG, alpha=alpha)

    def gradient_record(self, alpha: float) -> MethodSpec:
        """The seed's full (unmasked) gradient record subtracted at ``alpha``."""
        return self.find("amnesiac", GRADIENT_LOG, alpha=alpha)

    def seed_record(self, p: float) -> MethodSpec:
        """The seed's per-sample record with a p-mask (indexing fixed)."""
        return self.find("amnesiac", seed_log(p))

    def misindexed(self) -> MethodSpec:
        """The seed's record with its indexing bug (an ablation)."""
        return self.find("misindexed")

    def per_batch(self) -> MethodSpec:
        """Graves et al.'s per-batch removal ("Original")."""
        return self.find("batch")

    def layer(self) -> MethodSpec:
        """Graves et al.'s "Layer p" variant."""
        return self.find("layer")

    def finetune(self) -> MethodSpec:
        """The repair-only control."""
        return self.find("finetune")

    def relabel(self) -> MethodSpec:
        """Graves et al.'s relabelling baseline."""
        return self.find("relabel")

    @property
    def hash(self) -> str:
        """Content hash of everything that defines the numbers except the seeds (each seed is its own file)."""
        config = {k: v for k, v in self.to_dict().items() if k != "seeds"}
        return config_hash(config, semantics=SEMANTICS_VERSION)

    @property
    def folder(self) -> Path:
        return results_root() / self.name / f"{self.profile}-{self.hash}"


# ------------------------------------------------------------------------------------------- the catalogue


def _class_methods(alphas, ps, misindexed_p, layer_p, repair_labels) -> tuple[MethodSpec, ...]:
    specs = [MethodSpec("Original (per-batch)", "batch", BATCH_LOG),
             MethodSpec(f"Layer p={layer_p:g}", "layer", LogSpec("batch", p=layer_p))]
    specs += [MethodSpec(f"Per-sample p={p:g} (seed)", "amnesiac", seed_log(p)) for p in ps]
    specs += [MethodSpec(f"Full gradient record, alpha={p:g}", "amnesiac", GRADIENT_LOG, (("alpha", p),)) for p in ps]
    specs.append(MethodSpec(f"Mis-indexed p={misindexed_p:g} (seed bug)", "misindexed",
                            LogSpec("delta", "gradient", p=misindexed_p, per_sample=True, indexing="seed-misindexed")))
    specs += [MethodSpec(f"Update attribution, alpha={a:g}", "amnesiac", UPDATE_LOG, (("alpha", a),)) for a in alphas]
    specs += [MethodSpec("Relabel (1 epoch)", "relabel", None, (("epochs", 1),)),
              MethodSpec("Fine-tune (1 epoch)", "finetune", None, (("epochs", 1),))]
    return tuple(dataclasses.replace(s, repair=s.label in repair_labels or s.method in ("relabel", "finetune"))
                 for s in specs)


def _sample_methods(alphas, repaired_alphas) -> tuple[MethodSpec, ...]:
    specs = [MethodSpec("Original (per-batch)", "batch", BATCH_LOG),
             MethodSpec("Per-sample p=0.1 (seed)", "amnesiac", seed_log(0.1), repair=False)]
    specs += [MethodSpec(f"Update attribution, alpha={a:g}", "amnesiac", UPDATE_LOG, (("alpha", a),),
                         repair=a in repaired_alphas) for a in alphas]
    specs += [MethodSpec("Relabel (1 epoch)", "relabel", None, (("epochs", 1),)),
              MethodSpec("Fine-tune (1 epoch)", "finetune", None, (("epochs", 1),))]
    return tuple(specs)


def _class_experiment(name, dataset, model, forget_class, graves_keep, profile, ps, repaired=None) -> Experiment:
    alphas = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
    if repaired is None:
        repaired = {"Original (per-batch)", "Layer p=0.1", "Mis-indexed p=0.1 (seed bug)",
                    "Update attribution, alpha=1", "Update attribution, alpha=0.1"} | {
            f"Per-sample p={p:g} (seed)" for p in ps}
    methods = _class_methods(alphas, ps, 0.1, 0.1, repaired)
    common = dict(name=name, dataset=dataset, model=model, kind="class", methods=methods, forget_class=forget_class,
                  graves_keep=graves_keep, ps=ps, misindexed_p=0.1, layer_p=0.1, profile=profile)
    if profile == "smoke":
        return Experiment(recipe=Recipe(batch_size=64, epochs=1), repair_epochs=1, seeds=(0,), train_subset=1500,
                          test_subset=500, eval_retain=500, inversion_steps=20, **common)
    return Experiment(recipe=Recipe(batch_size=64, epochs=4), repair_epochs=4, seeds=(0, 1, 2), **common)


def _samples_experiment(name, dataset, model, fraction, profile) -> Experiment:
    alphas = (1.0, 0.3, 0.1, 0.03, 0.01)
    common = dict(name=name, dataset=dataset, model=model, kind="samples", methods=_sample_methods(alphas, (1.0, 0.1)),
                  forget_fraction=fraction, ps=(0.1,), profile=profile)
    if profile == "smoke":
        return Experiment(recipe=Recipe(batch_size=64, epochs=1), repair_epochs=1, seeds=(0,), train_subset=1500,
                          test_subset=500, eval_retain=500, inversion_steps=0, **common)
    return Experiment(recipe=Recipe(batch_size=64, epochs=4), repair_epochs=4, seeds=(0, 1, 2), inversion_steps=0,
                      **common)


SEED_PS = (0.2, 0.1, 0.075, 0.05, 0.025, 0.01)
# ResNet-18 on MNIST: the seed reported p = 0.2, 0.1, 0.075 only. Every repair is four more epochs of an
# 11-million-parameter network, so only the seed's rows (and the repair-only controls, always) are repaired.
RESNET_PS = (0.2, 0.1, 0.075)
RESNET_REPAIRED = frozenset({"Original (per-batch)", "Layer p=0.1"} | {f"Per-sample p={p:g} (seed)" for p in RESNET_PS})

EXPERIMENTS: dict[str, Callable[[str], Experiment]] = {
    "mnist-class3-simple": lambda prof: _class_experiment("mnist-class3-simple", "mnist", "simple", 3, 100, prof,
                                                          SEED_PS),
    "mnist-class3-resnet18": lambda prof: _class_experiment("mnist-class3-resnet18", "mnist", "resnet18", 3, 100,
                                                            prof, RESNET_PS, RESNET_REPAIRED),
    "mnist-samples1-simple": lambda prof: _samples_experiment("mnist-samples1-simple", "mnist", "simple", 0.01, prof),
    "mnist-samples10-simple": lambda prof: _samples_experiment("mnist-samples10-simple", "mnist", "simple", 0.1,
                                                               prof),
    "cifar100-class81-simple": lambda prof: _class_experiment("cifar100-class81-simple", "cifar100", "simple", 81,
                                                              None, prof, SEED_PS),
    "cifar100-class81-resnet18": lambda prof: _class_experiment("cifar100-class81-resnet18", "cifar100",
                                                                "resnet18", 81, None, prof, SEED_PS),
    "cifar100-samples1-simple": lambda prof: _samples_experiment("cifar100-samples1-simple", "cifar100", "simple",
                                                                 0.01, prof),
}


# --------------------------------------------------------------------------------- what a reader can change

_RECIPE_KEYS = ("optimizer", "lr", "batch_size", "epochs")


def _int(v) -> int:
    if isinstance(v, bool) or (isinstance(v, float) and not v.is_integer()):
        raise ValueError("must be an integer")
    return int(v)


def _optional_int(v) -> int | None:
    return None if v is None or (isinstance(v, str) and v.lower() == "none") else _int(v)


def _positive_float(v) -> float:
    x = float(v)
    if not (x > 0 and x == x and x != float("inf")):
        raise ValueError("must be a positive finite number")
    return x


def _alphas(v) -> tuple[float, ...]:
    items = v.split(",") if isinstance(v, str) else list(v)
    out = tuple(_positive_float(a) for a in items if str(a).strip() != "")
    if not out:
        raise ValueError("must list at least one alpha, e.g. 1,0.3,0.1")
    return out


# key -> (parser, what it means); every key is validated and changes the config hash (results are cached apart)
OVERRIDES: dict[str, tuple[Callable, str]] = {
    "forget_class": (_int, "class forgotten (class experiments)"),
    "graves_keep": (_optional_int, "keep only the first N training images of the forget class; none keeps all"),
    "forget_fraction": (_positive_float, "fraction of the training set forgotten at random (sample experiments)"),
    "alphas": (_alphas, "the alphas of the update-attribution rows, e.g. 1,0.3,0.1"),
    "optimizer": (str, "adam, adamw or sgd"),
    "lr": (_positive_float, "learning rate"),
    "batch_size": (_int, "batch size"),
    "epochs": (_int, "training epochs"),
    "repair_epochs": (_int, "epochs of the repair fine-tune"),
    "train_subset": (_optional_int, "a seeded random subset of the training set (none: all)"),
    "test_subset": (_optional_int, "a seeded random subset of the test set (none: all)"),
    "eval_retain": (_int, "retain samples used for accuracy"),
    "inversion_steps": (_int, "model-inversion steps (class experiments)"),
}


def parse_overrides(pairs: Sequence[str]) -> dict[str, object]:
    """``["forget_class=5", "alphas=0.3,0.1"]`` -> typed values (checked by :func:`apply_overrides`)."""
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"--set takes KEY=VALUE, got {pair!r}; keys: {', '.join(OVERRIDES)}")
        out[key.strip()] = value.strip()
    return out


def apply_overrides(exp: Experiment, overrides: Mapping[str, object] | None) -> Experiment:
    """The experiment with these settings changed, every value parsed and checked.

    Raises:
        ValueError: an unknown key (the message lists the valid ones), a value of the wrong type or range, or a
            key that does not apply to this kind of experiment.
    """
    if not overrides:
        return exp
    unknown = sorted(set(overrides) - set(OVERRIDES))
    if unknown:
        listing = "; ".join(f"{k}: {doc}" for k, (_, doc) in OVERRIDES.items())
        raise ValueError(f"unknown setting(s) {unknown}; valid settings: {listing}")
    values = {}
    for key, raw in overrides.items():
        parse, doc = OVERRIDES[key]
        try:
            values[key] = parse(raw)
        except (TypeError, ValueError) as err:
            raise ValueError(f"{key}={raw!r} is not valid ({doc}): {err}") from None
    wrong_kind = {"class": ("forget_fraction",), "samples": ("forget_class", "graves_keep", "inversion_steps")}
    bad = [k for k in wrong_kind[exp.kind] if k in values]
    if bad:
        raise ValueError(f"{', '.join(bad)} does not apply to {exp.name!r}, a {exp.kind} experiment")
    n_classes = NUM_CLASSES[exp.dataset]
    checks = {
        "forget_class": (lambda v: 0 <= v < n_classes, f"a class 0..{n_classes - 1}"),
        "graves_keep": (lambda v: v is None or v >= 1, "at least 1, or none"),
        "forget_fraction": (lambda v: v < 1, "in (0, 1)"),
        "optimizer": (lambda v: v in ("adam", "adamw", "sgd"), "adam, adamw or sgd"),
        "batch_size": (lambda v: v >= 1, "at least 1"),
        "epochs": (lambda v: v >= 1, "at least 1"),
        "repair_epochs": (lambda v: v >= 0, "0 or more"),
        "train_subset": (lambda v: v is None or v >= 10, "at least 10, or none"),
        "test_subset": (lambda v: v is None or v >= 10, "at least 10, or none"),
        "eval_retain": (lambda v: v >= 1, "at least 1"),
        "inversion_steps": (lambda v: v >= 0, "0 or more"),
    }
    for key, value in values.items():
        ok, want = checks.get(key, (lambda v: True, ""))
        if not ok(value):
            raise ValueError(f"{key}={value!r} is out of range for {exp.name!r}: must be {want}")
    recipe = dataclasses.replace(exp.recipe, **{k: values.pop(k) for k in _RECIPE_KEYS if k in values})
    alphas = values.pop("alphas", None)
    exp = dataclasses.replace(exp, recipe=recipe, **values)
    if alphas is not None:
        exp = dataclasses.replace(exp, methods=_with_alphas(exp, alphas))
    return exp


def _with_alphas(exp: Experiment, alphas: tuple[float, ...]) -> tuple[MethodSpec, ...]:
    """The experiment's method rows with the update-attribution rows at these alphas (the others unchanged;
    alpha = 1 and 0.1 are repaired, as in the catalogue)."""
    first = next(i for i, m in enumerate(exp.methods) if m.log == UPDATE_LOG)
    kept = [m for m in exp.methods if m.log != UPDATE_LOG]
    new = [MethodSpec(f"Update attribution, alpha={a:g}", "amnesiac", UPDATE_LOG, (("alpha", a),),
                      repair=a in (1.0, 0.1)) for a in alphas]
    return tuple(kept[:first] + new + kept[first:])


def get_experiment(name: str, profile: str = "full", *, seeds: tuple[int, ...] | None = None,
                   overrides: Mapping[str, object] | None = None) -> Experiment:
    """The named experiment at a profile; ``seeds`` overrides the profile's seeds, ``overrides`` its settings
    (:data:`OVERRIDES`, e.g. ``{"forget_class": 5, "alphas": "0.3,0.1"}``).

    Raises:
        ValueError: unknown experiment, profile or setting, or a bad value (the message lists the valid ones).
    """
    if name not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {name!r}; valid experiments: {', '.join(EXPERIMENTS)}")
    check_profile(profile)
    exp = EXPERIMENTS[name](profile)
    if seeds is not None:
        seeds = tuple(int(s) for s in seeds)
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {seeds}")
        exp = dataclasses.replace(exp, seeds=seeds)
    return apply_overrides(exp, overrides)


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
        if spec.label in record["methods"]:
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
        record["methods"][spec.label] = row
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
        return [MethodRecord.from_dict(spec.label, r["methods"][spec.label]) for r in self.seeds.values()
                if spec.label in r["methods"]]


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
    atomic_write_json(folder / "config.json", {"config": exp.to_dict(), "hash": exp.hash,
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


ORIGINAL_LABEL = "After training (original)"  # the summary rows of the two reference models (their spec is None)
RETRAIN_LABEL = "Retrain from scratch (reference)"


def summarize(result: Result, metrics: tuple[str, ...], stage: str = "no_repair") -> list[dict]:
    """Rows (method label first, then original and retrain) with, for each metric, the mean over seeds, the
    sample standard deviation (``<metric>_std``, ddof=1) and the half-width of the 95% t-interval of the mean
    (``<metric>_ci``); both NaN with fewer than two seeds.

    Each row also carries its typed ``spec`` (:class:`MethodSpec`; ``None`` for the original and retrained
    models) and ``alpha``, so rows are selected by what they are, not by their label's text.

    ``stage`` is ``"no_repair"`` or ``"after_repair"``; methods not repaired give NaN at that stage.
    """
    if stage not in ("no_repair", "after_repair"):
        raise ValueError(f"unknown stage {stage!r}; valid: no_repair, after_repair")
    records = list(result.seeds.values())
    rows = []

    def row(label, entries, spec=None):
        out = {"method": label, "seeds": len(entries), "spec": spec, "alpha": spec.alpha if spec else None}
        for m in metrics:
            vals = np.array([metric_value(e, m) for e in entries], dtype=float)
            ok = vals[~np.isnan(vals)]
            out[m], out[m + "_ci"], _ = M.mean_ci(ok)
            out[m + "_std"] = float(ok.std(ddof=1)) if len(ok) > 1 else float("nan")
        return out

    rows.append(row(ORIGINAL_LABEL, [r["original"] for r in records]))
    for spec in result.experiment.methods:
        entries = [r["methods"][spec.label].get(stage, {}) for r in records if spec.label in r["methods"]]
        rows.append(row(spec.label, entries, spec))
    rows.append(row(RETRAIN_LABEL, [r["retrain"] for r in records]))
    return rows


def format_table(rows: list[dict], metrics: tuple[str, ...]) -> str:
    """A plain-text table of :func:`summarize` rows (mean +- half-width of the 95% interval over seeds)."""
    width = max(len(r["method"]) for r in rows) + 2
    lines = ["method".ljust(width) + "".join(m[:22].rjust(24) for m in metrics)]
    for r in rows:
        cells = []
        for m in metrics:
            mean, half = r[m], r[m + "_ci"]
            cell = "-" if np.isnan(mean) else f"{mean:.3f}" if np.isnan(half) else f"{mean:.3f} +- {half:.3f}"
            cells.append(cell.rjust(24))
        lines.append(r["method"].ljust(width) + "".join(cells))
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
