"""The seed's experiments as data: frozen configs (:class:`Experiment`), their method rows (:class:`MethodSpec`, each
with a key apart from its display label) and logs (:class:`LogSpec`), the catalogue (:data:`EXPERIMENTS`) at the
``smoke`` and ``full`` profiles, and the settings a reader may change (:data:`OVERRIDES`). Running them, and reading
their results back, is :mod:`amnesiac_paper.experiments`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from amnesiac.batchlog import BatchLog
from amnesiac.deltalog import DeltaLog
from amnesiac.ledger import Ledger
from amnesiac.training import Recipe

from .datasets import NUM_CLASSES
from .store import check_profile, config_hash, results_root

if TYPE_CHECKING:
    from .experiments import Split

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

    @property
    def key(self) -> str:
        """The row's identity, from what it is (the method, its log, its parameters), never from its label: code
        selects rows by it (:func:`summarize` rows carry it as ``"key"``). Unique within an experiment.

        Example:
            >>> MethodSpec("Update attribution, alpha=0.1", "amnesiac", UPDATE_LOG, (("alpha", 0.1),)).key
            'amnesiac/update/alpha=0.1'
            >>> MethodSpec("Per-sample p=0.1 (seed)", "amnesiac", seed_log(0.1)).key
            'amnesiac/gradient-p0.1-per-sample'
        """
        parts = [self.method]
        if self.log is not None:
            parts.append(self.log.key + ("-per-sample" if self.log.per_sample else ""))
        parts += [f"{k}={v:g}" for k, v in self.params]
        return "/".join(parts)

    @property
    def stored_name(self) -> str:
        """The row's name in results files: its label as written when the results were computed. The label is also
        part of the config hash (:meth:`Experiment.to_dict`), so a changed label is a new configuration with its
        own folder, never an old file read under a wrong name; ``tests/study/test_committed_results.py`` checks
        that every committed seed file names exactly its experiment's rows."""
        return self.label

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


def _seed_rows_repaired(spec: MethodSpec) -> bool:
    """The class experiments' rows repaired by default: Graves's two, the seed's per-sample records (indexed right
    or not) and the update attribution at alpha = 1 and 0.1."""
    return (spec.method in ("batch", "layer", "misindexed") or (spec.log is not None and spec.log.per_sample)
            or (spec.log == UPDATE_LOG and spec.alpha in (1.0, 0.1)))


def _graves_and_seed_rows_repaired(spec: MethodSpec) -> bool:
    """ResNet-18 on MNIST: every repair is four more epochs of an 11-million-parameter network, so only the seed's
    rows (Graves's two and the per-sample records) are repaired, besides the repair-only controls (always)."""
    return spec.method in ("batch", "layer") or (spec.method == "amnesiac" and spec.log.per_sample)


def _class_methods(alphas, ps, misindexed_p, layer_p, repaired: Callable[[MethodSpec], bool]) -> tuple[MethodSpec, ...]:
    specs = [MethodSpec("Original (per-batch)", "batch", BATCH_LOG),
             MethodSpec(f"Layer p={layer_p:g}", "layer", LogSpec("batch", p=layer_p))]
    specs += [MethodSpec(f"Per-sample p={p:g} (seed)", "amnesiac", seed_log(p)) for p in ps]
    specs += [MethodSpec(f"Full gradient record, alpha={p:g}", "amnesiac", GRADIENT_LOG, (("alpha", p),)) for p in ps]
    specs.append(MethodSpec(f"Mis-indexed p={misindexed_p:g} (seed bug)", "misindexed",
                            LogSpec("delta", "gradient", p=misindexed_p, per_sample=True, indexing="seed-misindexed")))
    specs += [MethodSpec(f"Update attribution, alpha={a:g}", "amnesiac", UPDATE_LOG, (("alpha", a),)) for a in alphas]
    specs += [MethodSpec("Relabel (1 epoch)", "relabel", None, (("epochs", 1),)),
              MethodSpec("Fine-tune (1 epoch)", "finetune", None, (("epochs", 1),))]
    return tuple(dataclasses.replace(s, repair=repaired(s) or s.method in ("relabel", "finetune"))
                 for s in specs)


def _sample_methods(alphas, repaired_alphas) -> tuple[MethodSpec, ...]:
    specs = [MethodSpec("Original (per-batch)", "batch", BATCH_LOG),
             MethodSpec("Per-sample p=0.1 (seed)", "amnesiac", seed_log(0.1), repair=False)]
    specs += [MethodSpec(f"Update attribution, alpha={a:g}", "amnesiac", UPDATE_LOG, (("alpha", a),),
                         repair=a in repaired_alphas) for a in alphas]
    specs += [MethodSpec("Relabel (1 epoch)", "relabel", None, (("epochs", 1),)),
              MethodSpec("Fine-tune (1 epoch)", "finetune", None, (("epochs", 1),))]
    return tuple(specs)


def _class_experiment(name, dataset, model, forget_class, graves_keep, profile, ps,
                      repaired=_seed_rows_repaired) -> Experiment:
    alphas = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)
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
# ResNet-18 on MNIST: the seed reported p = 0.2, 0.1, 0.075 only (and fewer rows are repaired:
# _graves_and_seed_rows_repaired).
RESNET_PS = (0.2, 0.1, 0.075)

EXPERIMENTS: dict[str, Callable[[str], Experiment]] = {
    "mnist-class3-simple": lambda prof: _class_experiment("mnist-class3-simple", "mnist", "simple", 3, 100, prof,
                                                          SEED_PS),
    "mnist-class3-resnet18": lambda prof: _class_experiment("mnist-class3-resnet18", "mnist", "resnet18", 3, 100,
                                                            prof, RESNET_PS, _graves_and_seed_rows_repaired),
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
