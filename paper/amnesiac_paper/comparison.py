"""A fair comparison: every method gets the same tuning budget, is chosen on validation data and reported on test.

For each optimizer and seed of the fidelity study's ``full`` setting, and for each forget set of the comparison
(100 random samples and the whole class at the full profile), every unlearning method is run with the same
number of trials (``budget``) over its own hyper-parameters: its defaults first, then configurations drawn
without replacement, by a fixed generator, from the method's declared search space (:data:`SPACES`). Each
trial starts from the same trained model; the trial chosen is the one whose softmax outputs on the validation
split (training images held out from every training run) are closest to the dropped replay's (mean KL, the
fidelity study's practical gold standard: same initialisation and batch order, forget set removed). The test
set is measured for every trial and reported for the chosen one, beside the trial that would have been chosen
on the test set itself (the oracle), so the cost of choosing without the answer is visible.

The trained model, its exact delta ledger and the replays are the fidelity study's own (its cached weights,
the same parameters bit for bit): this study adds no reference, only methods and their tuning.

Beside the methods, each (optimizer, seed, set) holds the **same-seed floor** (``neighbour.json``): the dropped replay
trained again with one more random sample removed (:func:`amnesiac_paper.setting.neighbour_replay`), measured
against the dropped replay like every trial. A method's test KL to the replay is read on that scale (the book's
"x floor"); retraining with another seed and order, the fidelity study's floor, is far coarser (the original model
itself sits below it).

Results: ``results/comparison-mnist-simple/<profile>-<hash>/<optimizer>/seed<k>/<set>/<method>.json``, one
piece per (set, method), and ``<set>/neighbour.json``, resumable. The folder's hash covers what every method
shares (the fidelity study underneath, the forget sets, the budget, the protocol's semantics); each piece is
current while its stored trials are the configurations :func:`trials` draws from the method's space today and its
``method_semantics`` is the method's entry of :data:`METHOD_SEMANTICS`. Changing one method's space or code so
recomputes that method's pieces only; a stale piece is never shown (:func:`load_study` leaves it out and lists it
in ``stale``).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import time
import zlib
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from amnesiac.training import pick_reproducible_device
from amnesiac.unlearning import Request, method_params, unlearn

from . import cli
from . import fidelity as fi
from . import setting as st
from .metrics import argmin_finite
from .store import (
    atomic_write_json,
    check_profile,
    config_hash,
    provenance,
    read_pieces,
    restrict,
    results_root,
    run_combos,
)

COMPARISON_SEMANTICS = 1
STUDY_NAME = "comparison-mnist-simple"

# Each method's search space: hyper-parameter -> candidate values. ``lr_scale`` multiplies the recipe's learning
# rate (Adam's and SGD's differ tenfold, so a scale is the comparable quantity); ``alpha`` of the ledger is the
# fidelity study's grid. Configurations a method refuses (SCRUB's max_epochs > epochs) are left out. The two
# methods that *ascend* a loss on the forget set (NegGrad+, SCRUB's max steps) maximise an unbounded objective, and
# their papers train at rates far below training's (SCRUB: 5e-4 with SGD), so their grid reaches 100x below the
# recipe: at 0.3-3x every trial of both diverged on the whole class in the first computation of this study.
ASCENT_LR_SCALES = (0.01, 0.03, 0.1, 0.3, 1.0)
SPACES: dict[str, dict[str, tuple]] = {
    "amnesiac": {"alpha": fi.FULL_ALPHAS},
    "finetune": {"epochs": (1, 2, 3), "lr_scale": (0.3, 1.0, 3.0)},
    "relabel": {"epochs": (1, 2, 3), "lr_scale": (0.3, 1.0, 3.0)},
    "neggrad_plus": {"epochs": (1, 2), "beta": (0.9, 0.95, 0.99), "lr_scale": ASCENT_LR_SCALES},
    "ssd": {"selection": (1.0, 3.0, 10.0, 30.0, 100.0), "dampening": (0.1, 0.3, 1.0, 3.0)},
    "scrub": {"epochs": (1, 2, 3), "max_epochs": (1, 2), "alpha": (0.3, 1.0), "lr_scale": ASCENT_LR_SCALES},
}
METHODS = tuple(SPACES)
# Bump a method's entry when its unlearning code or how its trials are measured changes: its pieces recompute,
# the other methods' stay.
METHOD_SEMANTICS: dict[str, int] = {m: 1 for m in METHODS}
# Bump when the same-seed floor (``<set>/neighbour.json``, :func:`_neighbour_floor`) is computed differently.
NEIGHBOUR_SEMANTICS = 1
LABELS = {"amnesiac": "ledger subtraction", "finetune": "fine-tune (retain set)", "relabel": "random relabelling",
          "neggrad_plus": "NegGrad+", "ssd": "SSD", "scrub": "SCRUB"}


@dataclass(frozen=True)
class ComparisonStudy:
    """A frozen config: the fidelity profile it builds on, optimizers, seeds, forget sets, methods, budget."""

    name: str
    profile: str
    optimizers: tuple[str, ...]
    seeds: tuple[int, ...]
    sets: tuple[str, ...]
    methods: tuple[str, ...]
    budget: int

    @property
    def base(self) -> fi.FidelityStudy:
        return fi.get_study(self.profile)

    @property
    def hash(self) -> str:
        """What every method's pieces share: the config but the seeds, optimizers and methods, the fidelity study
        underneath and the protocol's semantics. Each method's space and code are checked per piece
        (:func:`piece_is_current`), so changing one method recomputes that method only."""
        config = {k: v for k, v in asdict(self).items() if k not in ("seeds", "optimizers", "methods")}
        return config_hash(config, semantics=COMPARISON_SEMANTICS, base=self.base.hash)

    def folder(self, root: Path | None = None) -> Path:
        return (root or results_root()) / self.name / f"{self.profile}-{self.hash}"


def get_comparison_study(profile: str = "full", *, seeds: Sequence[int] | None = None,
                         optimizers: Sequence[str] | None = None, methods: Sequence[str] | None = None,
                         budget: int | None = None) -> ComparisonStudy:
    """The study at a profile (``smoke``: minutes on the fidelity study's smoke data; ``full``: MNIST, Adam and SGD
    with momentum, 3 seeds, 100 random samples and the whole class, 6 trials per method).

    Raises:
        ValueError: unknown profile, optimizer or method, bad seeds, or a budget some method's space cannot fill
            (the message lists the valid values).
    """
    check_profile(profile)
    c = fi.get_study(profile).forget_class
    if profile == "smoke":
        study = ComparisonStudy(STUDY_NAME, "smoke", ("adam",), (0,), ("random-10", f"class-{c}"), METHODS, 3)
    else:
        study = ComparisonStudy(STUDY_NAME, "full", ("adam", "sgd"), (0, 1, 2), ("random-100", f"class-{c}"),
                                METHODS, 6)
    study = restrict(study, seeds=seeds, optimizers=optimizers, valid_optimizers=tuple(st.OPTIMIZER_RECIPES))
    if methods is not None:
        bad = [m for m in methods if m not in SPACES]
        if bad or not methods:
            raise ValueError(f"unknown method(s) {bad}; valid: {', '.join(SPACES)}")
        study = dataclasses.replace(study, methods=tuple(methods))
    if budget is not None:
        study = dataclasses.replace(study, budget=int(budget))
    for m in study.methods:
        n = len(_configurations(m))
        if not 1 <= study.budget <= n:
            raise ValueError(f"budget must be between 1 and the size of every method's space; {m!r} has {n} "
                             f"configurations, budget is {study.budget}")
    return study


# ---------------------------------------------------------------------------------------------------- trials


def _valid(method: str, config: dict) -> bool:
    return not (method == "scrub" and config["max_epochs"] > config["epochs"])


def _configurations(method: str) -> list[dict]:
    space = SPACES[method]
    out = [dict(zip(space, values)) for values in itertools.product(*space.values())]
    return [c for c in out if _valid(method, c)]


def defaults(method: str) -> dict:
    """The method's own defaults in its search space's terms (``lr_scale`` 1 = the recipe's learning rate;
    the ledger's alpha = 1 subtracts the whole delta)."""
    own = method_params(method)
    return {k: (1.0 if k == "lr_scale" else own[k]) for k in SPACES[method]}


def trials(method: str, budget: int) -> list[dict]:
    """The ``budget`` configurations a method is tried with: its defaults first, then configurations of its space
    drawn without replacement by a generator fixed per method (the same trials for every seed and optimizer).

    Example:
        >>> trials("amnesiac", 3)[0]
        {'alpha': 1.0}
        >>> len({json.dumps(t, sort_keys=True) for t in trials("scrub", 6)})
        6
    """
    if method not in SPACES:
        raise ValueError(f"unknown method {method!r}; valid: {', '.join(SPACES)}")
    configs = _configurations(method)
    if not 1 <= budget <= len(configs):
        raise ValueError(f"budget must be between 1 and {len(configs)} for {method!r}, got {budget}")
    first = defaults(method)
    if first not in configs:
        raise ValueError(f"{method!r}'s defaults {first} are not in its search space {SPACES[method]}")
    rest = [c for c in configs if c != first]
    gen = torch.Generator().manual_seed(zlib.crc32(method.encode()))
    order = torch.randperm(len(rest), generator=gen).tolist()
    return [first] + [rest[i] for i in order[:budget - 1]]


def piece_is_current(record: dict, budget: int) -> bool:
    """Whether a stored (set, method) piece is what the method would compute today: its trials are the
    configurations :func:`trials` draws from the method's current space with this ``budget``, in order, and its
    ``method_semantics`` (1 where a piece predates the field) is the method's entry of :data:`METHOD_SEMANTICS`.

    Example:
        >>> piece_is_current({"method": "amnesiac", "trials": [{"params": p} for p in trials("amnesiac", 2)]}, 2)
        True
    """
    method = record["method"]
    if method not in SPACES or record.get("method_semantics", 1) != METHOD_SEMANTICS[method]:
        return False
    try:
        expected = trials(method, budget)
    except ValueError:  # the budget no longer fits the method's space
        return False
    return [t["params"] for t in record["trials"]] == expected


def _call_params(config: dict, lr: float) -> dict:
    """A trial's configuration as the method's keyword arguments (``lr_scale`` becomes ``lr``)."""
    out = {k: v for k, v in config.items() if k != "lr_scale"}
    if "lr_scale" in config:
        out["lr"] = config["lr_scale"] * lr
    return out


def retain_passes(method: str, config: dict) -> float:
    """Passes over the retain set a trial makes (forward and backward; SSD's importance pass counts one)."""
    if method in ("finetune", "neggrad_plus", "scrub"):
        return float(config["epochs"])
    return 1.0 if method == "ssd" else 0.0


# ---------------------------------------------------------------------------------------------------- runner


def chosen_index(record: dict, which: str = "chosen") -> int:
    """The trial chosen on validation (``"chosen"``) or on the test set (``"oracle"``), derived from the trials
    with :func:`amnesiac_paper.metrics.argmin_finite`: a diverged trial (non-finite divergence) ranks last, and where
    every
    trial diverged the defaults (index 0) stand. Pieces computed before that fix stored an index that could point at
    a diverged trial, so the stored one is never read."""
    key = {"chosen": lambda t: t["val"]["kl"], "oracle": lambda t: t["test"]["drop"]["kl"]}[which]
    return argmin_finite([key(t) for t in record["trials"]])


def diverged(record: dict) -> bool:
    """Whether the trial chosen on validation has non-finite test outputs (KL to the replay): every trial did."""
    return not np.isfinite(record["trials"][chosen_index(record)]["test"]["drop"]["kl"])


def _measure(ev: st.Evaluator, theta: torch.Tensor, ref_val: torch.Tensor) -> tuple[dict, dict]:
    """(divergence to the reference on the validation split, every test measure) from one forward pass."""
    logits = ev._logits(theta)
    val = st.divergences(ref_val, torch.softmax(logits.double()[ev.slices["val"]], 1))
    return val, ev.measure(theta, logits)


@dataclass
class _SetContext:
    """What every method of one forget set shares: the dropped replay, the evaluator, the replay's validation
    softmax, the request, and the test measures of the original model and of the replay."""

    fset: st.ForgetSet
    theta: torch.Tensor
    drop: dict
    ev: st.Evaluator
    ref_val: torch.Tensor
    request: Request
    original: dict
    reference: dict


def _set_context(c: st.Combo, state: dict, fset: st.ForgetSet) -> _SetContext:
    drop = st.replay(c, fset, "drop")
    theta = state["theta"].double()
    ev = st.evaluator(c, fset, theta, {"drop": drop})
    ref_val = ev._probs(drop["theta"].double())[ev.slices["val"]]
    pool = c.setting.pool
    request = Request(forget_groups=(fset.name,), forget=pool.subset(fset.ids), retain=pool.without(fset.ids),
                      recipe=c.recipe, num_classes=int(c.setting.test.y.max()) + 1, seed=c.seed, device=str(c.device))
    return _SetContext(fset, theta, drop, ev, ref_val, request, ev.measure(theta), ev.measure(drop["theta"].double()))


def _evaluate_method(c: st.Combo, state: dict, ctx: _SetContext, method: str, budget: int) -> dict:
    fset, theta, ev = ctx.fset, ctx.theta, ctx.ev
    delta = st.set_delta(state, fset.name) if method == "amnesiac" else None
    rows = []
    for config in trials(method, budget):
        t0 = time.perf_counter()
        if method == "amnesiac":  # the ledger's subtraction, on the flat vector (as the fidelity study)
            new_theta = theta - config["alpha"] * delta
        else:
            start = st.assign(c.fresh_model(0), theta)
            new = unlearn(method, start, ctx.request, progress=c.progress, **_call_params(config, c.recipe.lr))
            new_theta = st.vector(new).double()
        seconds = time.perf_counter() - t0
        val, test = _measure(ev, new_theta, ctx.ref_val)
        rows.append({"params": config, "seconds": seconds, "retain_passes": retain_passes(method, config),
                     "val": val, "test": test})
    chosen = argmin_finite([r["val"]["kl"] for r in rows])
    oracle = argmin_finite([r["test"]["drop"]["kl"] for r in rows])
    return {"original_fingerprint": st.fingerprint(state["theta"]), "set": fset.name, "kind": fset.kind,
            "size": len(fset.ids), "method": method, "method_semantics": METHOD_SEMANTICS[method],
            "space": {k: list(v) for k, v in SPACES[method].items()}, "budget": budget, "trials": rows,
            "chosen": chosen, "oracle": oracle, "criterion": "validation KL(dropped replay || method)",
            "original": ctx.original, "reference": ctx.reference, "replay_seconds": float(ctx.drop["seconds"])}


def _neighbour_floor(c: st.Combo, state: dict, ctx: _SetContext) -> dict:
    """The same-seed floor of one forget set: the neighbour replay (:func:`amnesiac_paper.setting.neighbour_replay`)
    measured against the dropped replay on the validation split and the test set, as every trial is."""
    nb = st.neighbour_replay(c, ctx.fset)
    val, test = _measure(ctx.ev, nb["theta"].double(), ctx.ref_val)
    return {"original_fingerprint": st.fingerprint(state["theta"]),
            "replay_fingerprint": st.fingerprint(ctx.drop["theta"]),
            "set": ctx.fset.name, "kind": ctx.fset.kind, "size": len(ctx.fset.ids),
            "neighbour_id": int(nb["neighbour"]), "neighbour_semantics": NEIGHBOUR_SEMANTICS,
            "seconds": float(nb["seconds"]), "val": val, "test": test,
            "original": ctx.original, "reference": ctx.reference}


def neighbour_is_current(record: dict) -> bool:
    """Whether a stored same-seed floor was computed by today's :func:`_neighbour_floor`."""
    return record.get("neighbour_semantics") == NEIGHBOUR_SEMANTICS


def run_combo(study: ComparisonStudy, optimizer: str, seed: int, *, device: str = "cpu", progress: bool = True,
              results_root: Path | None = None) -> dict[str, dict]:
    """Compute (or load) every (set, method) piece of one (optimizer, seed); returns ``"<set>/<method>"`` ->
    record, and ``"<set>/neighbour"`` -> the set's same-seed floor. The fidelity study's cached original and
    dropped replays (same results root) are used, or made."""
    dev = pick_reproducible_device(device)  # the replay is a reference only if training is reproducible
    base = study.base
    folder = study.folder(results_root) / optimizer / f"seed{seed}"
    weights = base.folder(results_root) / "weights" / "full" / optimizer / f"seed{seed}"
    setting = st.make_setting(base, "full", seed)
    missing = [s for s in study.sets if s not in setting.sets]
    if missing:
        raise ValueError(f"forget sets {missing} are not in the fidelity setting; valid: {', '.join(setting.sets)}")
    c = st.Combo(base, setting, optimizer, seed, weights, dev, progress)
    prov = provenance(dev, semantics=COMPARISON_SEMANTICS)
    out: dict[str, dict] = {}
    state = None
    for name in study.sets:
        ctx = None
        for method in study.methods:
            path = folder / name / f"{method}.json"
            if path.exists():
                record = json.loads(path.read_text())
                if piece_is_current(record, study.budget):
                    out[f"{name}/{method}"] = record
                    continue
                if progress:
                    print(f"{path}: computed under another search space or code of {method!r}; recomputing",
                          flush=True)
            if state is None:
                state = st.original(c)
            start = time.perf_counter()
            if ctx is None:
                ctx = _set_context(c, state, setting.sets[name])
            record = _evaluate_method(c, state, ctx, method, study.budget)
            record.update(wall_seconds=time.perf_counter() - start, provenance=prov, optimizer=optimizer, seed=seed)
            atomic_write_json(path, record)
            out[f"{name}/{method}"] = record
        path = folder / name / "neighbour.json"
        record = json.loads(path.read_text()) if path.exists() else None
        if record is None or not neighbour_is_current(record):
            if state is None:
                state = st.original(c)
            start = time.perf_counter()
            if ctx is None:
                ctx = _set_context(c, state, setting.sets[name])
            record = _neighbour_floor(c, state, ctx)
            record.update(wall_seconds=time.perf_counter() - start, provenance=prov, optimizer=optimizer, seed=seed)
            atomic_write_json(path, record)
        out[f"{name}/neighbour"] = record
    return out


@dataclass
class ComparisonResult:
    study: ComparisonStudy
    records: dict  # (optimizer, seed) -> "<set>/<method>" -> record (current pieces only)
    folder: Path
    stale: list[str] = dataclasses.field(default_factory=list)  # "<opt>/seed<k>/<set>/<method>" not shown


def run_study(profile: str = "full", *, seeds: Sequence[int] | None = None, optimizers: Sequence[str] | None = None,
              methods: Sequence[str] | None = None, floors_only: bool = False, device: str = "cpu",
              progress: bool = True, results_root: Path | None = None) -> ComparisonResult:
    """Run (or load) the study, one (optimizer, seed) at a time, every optimizer of a seed first;
    ``floors_only``: the same-seed floors alone, no method.

    Example:
        >>> # python -m amnesiac_paper comparison --profile full --threads 2
    """
    study = get_comparison_study(profile, seeds=seeds, optimizers=optimizers, methods=methods)
    # the folder's config names every seed, optimizer and method of the profile, whatever this run computes
    config = study_config(get_comparison_study(profile))
    if floors_only:
        study = dataclasses.replace(study, methods=())
    folder, records = run_combos(study, run_combo, config, results_root=results_root, device=device,
                                 progress=progress)
    return ComparisonResult(study, records, folder)


def study_config(study: ComparisonStudy) -> dict:
    """The study folder's ``config.json``: the config, its hash, and each method's space and semantics today."""
    return {"config": asdict(study), "hash": study.hash, "spaces": {m: SPACES[m] for m in study.methods},
            "method_semantics": {m: METHOD_SEMANTICS[m] for m in study.methods}, "base_hash": study.base.hash,
            "semantics": COMPARISON_SEMANTICS}


def load_study(profile: str = "full", *, results_root: Path | None = None) -> ComparisonResult:
    """Whatever pieces are on disk, computing nothing."""
    study = get_comparison_study(profile)
    folder = study.folder(results_root)
    records, stale = {}, []
    for opt in study.optimizers:
        for seed in study.seeds:
            pieces = {}
            for name in study.sets:
                for key, rec in read_pieces(folder / opt / f"seed{seed}" / name).items():
                    if key == "neighbour" and neighbour_is_current(rec):
                        pieces[f"{name}/neighbour"] = rec
                    elif key in study.methods and piece_is_current(rec, study.budget):
                        pieces[f"{name}/{key}"] = rec
                    else:
                        stale.append(f"{opt}/seed{seed}/{name}/{key}")
            if pieces:
                records[(opt, seed)] = pieces
    return ComparisonResult(study, records, folder, stale)


# ------------------------------------------------------------------------------------------------ summaries


def trial_summary(record: dict, which: str = "chosen") -> dict:
    """One seed's numbers for one (set, method) at the trial chosen on validation (``which="chosen"``) or on the
    test set (``"oracle"``): recovered fraction and test KL to the dropped replay, accuracies, seconds."""
    row = record["trials"][chosen_index(record, which)]
    t = row["test"]
    out = {"recovered": t["drop"]["recovered"], "kl": t["drop"]["kl"], "agreement": t["drop"]["agreement"],
           "acc_forget": t["acc_forget"], "acc_test": t["acc_test"], "seconds": row["seconds"],
           "retain_passes": row["retain_passes"], "val_kl": row["val"]["kl"],
           "tuning_seconds": float(sum(r["seconds"] for r in record["trials"]))}
    if "acc_test_class" in t:
        out.update(acc_test_class=t["acc_test_class"], acc_test_rest=t["acc_test_rest"])
    return out


def complete_seeds(result: ComparisonResult, optimizer: str) -> list[int]:
    """Seeds of ``optimizer`` whose every (set, method) piece is on disk."""
    need = [f"{s}/{m}" for s in result.study.sets for m in result.study.methods]
    return sorted(s for (o, s), r in result.records.items() if o == optimizer and all(k in r for k in need))


def summary_rows(result: ComparisonResult, optimizer: str, set_name: str) -> list[dict]:
    """Per method: mean and 95% interval over the complete seeds of every :func:`trial_summary` number at the
    chosen trial (``chosen_*``) and the oracle trial (``oracle_*``), the configurations chosen, how many seeds
    diverged, the replay's seconds and the original model's test KL to the replay (``original_kl``, doing
    nothing: the same in every method's row)."""
    seeds = complete_seeds(result, optimizer)
    rows = []
    for method in result.study.methods:
        recs = [result.records[(optimizer, s)][f"{set_name}/{method}"] for s in seeds]
        if not recs:
            continue
        row = {"method": method, "label": LABELS[method], "seeds": seeds,
               "chosen_params": [r["trials"][chosen_index(r)]["params"] for r in recs],
               "diverged": sum(diverged(r) for r in recs)}
        for which in ("chosen", "oracle"):
            per_seed = [trial_summary(r, which) for r in recs]
            for key in per_seed[0]:
                row[f"{which}_{key}"] = fi.mean_ci([p[key] for p in per_seed])
            row[f"{which}_kl_values"] = [p["kl"] for p in per_seed]  # per seed: KL is shown on a log scale
        row["replay_seconds"] = fi.mean_ci([r["replay_seconds"] for r in recs])
        row["original_kl"] = fi.mean_ci([r["original"]["drop"]["kl"] for r in recs])  # doing nothing
        row["original_kl_values"] = [r["original"]["drop"]["kl"] for r in recs]
        rows.append(row)
    return rows


def same_seed_floor(result: ComparisonResult, optimizer: str, set_name: str) -> dict | None:
    """The same-seed floor of one (optimizer, forget set) over the complete seeds that hold one: ``kl`` (test KL
    from the neighbour replay to the dropped replay, mean and 95% interval) and ``kl_values`` (per seed),
    ``original_kl_values`` (per seed, the original model of the same run against the same replay: doing nothing,
    measured beside the floor on the same machine),
    ``agreement``, ``seeds``, and
    ``same_original`` (whether each floor's original model is the one its methods were run from, bit for bit: False
    where the floor was trained on another kind of CPU, whose rounding gives another original; the floor is then a
    scale measured in the same setting, not around the same models). None where no seed has one."""
    seeds = [s for s in complete_seeds(result, optimizer)
             if f"{set_name}/neighbour" in result.records[(optimizer, s)]]
    if not seeds:
        return None
    recs = [result.records[(optimizer, s)] for s in seeds]
    floors = [r[f"{set_name}/neighbour"] for r in recs]
    same = all(f["original_fingerprint"] == r[f"{set_name}/{result.study.methods[0]}"]["original_fingerprint"]
               for f, r in zip(floors, recs))
    return {"kl": fi.mean_ci([f["test"]["drop"]["kl"] for f in floors]),
            "kl_values": [f["test"]["drop"]["kl"] for f in floors],
            "original_kl_values": [f["original"]["drop"]["kl"] for f in floors],
            "agreement": fi.mean_ci([f["test"]["drop"]["agreement"] for f in floors]),
            "seeds": seeds, "same_original": same, "cpu": sorted({f["provenance"].get("cpu", "?") for f in floors})}


def format_summary(result: ComparisonResult) -> str:
    """A plain-text table per (optimizer, set): each method's chosen trial on the test set."""
    lines = []
    for opt in result.study.optimizers:
        for name in result.study.sets:
            rows = summary_rows(result, opt, name)
            if not rows:
                continue
            lines.append(f"{opt}, {name} ({len(rows[0]['seeds'])} seed(s); chosen on validation, test numbers)")
            for r in rows:
                lines.append(f"  {r['label']:24s} recovered {r['chosen_recovered'][0]:+.3f}  KL to the replay "
                             f"{r['chosen_kl'][0]:.4f} (oracle trial {r['oracle_kl'][0]:.4f})  acc forget "
                             f"{r['chosen_acc_forget'][0]:.3f} test {r['chosen_acc_test'][0]:.3f}  "
                             f"{r['chosen_seconds'][0]:.2f} s")
    return "\n".join(lines) if lines else "no complete seed yet"


# ------------------------------------------------------------------------------------------- command line


def _cli_arguments(p) -> None:
    p.add_argument("--optimizers", nargs="+", default=None, help="a subset of: adam sgd adamw")
    p.add_argument("--methods", nargs="+", default=None, help="a subset of: " + " ".join(METHODS))
    p.add_argument("--floors-only", action="store_true",
                   help="compute the same-seed floors (one neighbour replay per seed and set) and no method")


def _cli_check(args) -> None:
    get_comparison_study(args.profile, seeds=args.seeds, optimizers=args.optimizers, methods=args.methods)


def _cli_run(args) -> int:
    print(format_summary(run_study(args.profile, seeds=args.seeds, optimizers=args.optimizers, methods=args.methods,
                                   floors_only=args.floors_only, device=args.device, progress=not args.quiet)))
    return 0


COMMAND = cli.Command("comparison", "every method with the same tuning budget, chosen on validation, reported on test",
                      _cli_arguments, _cli_run, _cli_check)
