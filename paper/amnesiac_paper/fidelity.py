"""Counterfactual fidelity: how close does subtracting the ledger come to never having trained on the data?

For each seed and optimizer the study trains the original model once, with one delta log whose groups are
the *atoms* of every forget set it will ask about (the cells of the partition the sets induce), so the delta of
any set is an exact sum of atom deltas. Then, for each forget set F, it trains the references defined in the
Method chapter ("Which model does alpha = 1 aim at?") with the same initialisation and batch order:

* the **zero-weighted replay** (F's rows kept in their batches with loss weight 0): what subtracting the exact
  delta with alpha = 1 matches to first order;
* the **dropped replay** (F's rows removed, the mean over the rows left): retraining with the same seed and
  order, the practical gold standard;

and, once per family of sets, a **retrain floor** (another seed and order, without F), so that every distance
has the scale of SGD noise beside it. Each candidate model (the ledger subtraction at every alpha, and two
controls at the same alphas: the delta of a random group of the same size that is *not* forgotten, and an
equal-norm random direction) is measured against both replays: parameter distance, the recovered fraction
1 - ||theta_m - theta_ref|| / ||theta_T - theta_ref||, mean KL and JS divergence of the test-set softmax,
prediction agreement, and accuracies.

alpha is also chosen without the answer (:func:`loss_parity_alpha`): the smallest alpha of the grid at which
the forget set's mean loss reaches the class-matched mean loss of a validation split carved from the training
data (held out, never trained on), or alpha = 0 (no change: the original model) where no alpha of the grid
reaches it. The summaries recompute it from the losses each piece stores (:func:`record_rule`), and read the
original model's measurements at alpha = 0 (:func:`row_at`). The oracle alpha (closest to the dropped replay) is
reported beside it.

Results go to ``results/<study>/<profile>-<hash>/<setting>/<optimizer>/seed<k>/<piece>.json``, one file per
finished piece (the original model, each forget set, each floor), written atomically; trained weights are
cached in a git-ignored ``weights/`` folder beside them, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from amnesiac.training import Recipe, pick_reproducible_device
from amnesiac.unlearning import Request, unlearn

from . import cli
from .metrics import argmin_finite, mean_ci
from .setting import (
    OPTIMIZER_RECIPES,
    REFERENCES,
    SETTINGS,
    Combo,
    ForgetSet,
    assign,
    class_set,
    evaluator,
    fingerprint,
    graves_set,
    loss_parity_alpha,
    make_setting,
    original,
    replay,
    set_delta,
    vector,
)
from .store import (
    PieceCache,
    atomic_write_json,
    cached_tensors,
    check_profile,
    config_hash,
    provenance,
    read_combos,
    restrict,
    results_root,
)

FIDELITY_SEMANTICS = 1
STUDY_NAME = "fidelity-mnist-simple"



# ------------------------------------------------------------------------------------------------ config


@dataclass(frozen=True)
class FidelityStudy:
    """A frozen fidelity-study config. Build one with :func:`get_study`.

    Attributes:
        sizes: sizes of the nested random forget sets (``random-1`` within ``random-10`` ...).
        forget_class: the class forgotten whole (every training image of it).
        request_size, n_requests: sequential requests A, B, C of this size (A is the random set of this size);
            request j forgets the union of the first j.
        graves_keep: the Graves setting keeps only this many images of ``forget_class`` (None: no such setting).
        graves_optimizers: optimizers the Graves setting is run with.
        alphas: the alpha grid every subtraction (and control) is evaluated at.
        val_size: training images held out as the validation split (never trained on); alpha rules read it.
        train_subset, test_subset: smoke profile: seeded random subsets.
        eval_retain: retain samples used for retain accuracy (a seeded subset).
        epochs: training epochs (every recipe's epochs are set to this).
        determinism_check: for the first optimizer and seed, replay with an empty forget set and record its
            distance to the original (0 when training is bit-reproducible, as replays need).
    """

    name: str
    profile: str
    optimizers: tuple[str, ...]
    seeds: tuple[int, ...]
    sizes: tuple[int, ...]
    forget_class: int
    request_size: int
    n_requests: int
    graves_keep: int | None
    graves_optimizers: tuple[str, ...]
    alphas: tuple[float, ...]
    val_size: int
    train_subset: int | None
    test_subset: int | None
    eval_retain: int
    epochs: int
    determinism_check: bool = True
    dataset: str = "mnist"
    model: str = "simple"

    def recipe(self, optimizer: str) -> Recipe:
        if optimizer not in OPTIMIZER_RECIPES:
            raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(OPTIMIZER_RECIPES)}")
        return dataclasses.replace(OPTIMIZER_RECIPES[optimizer], epochs=self.epochs)

    def to_dict(self) -> dict:
        out = asdict(self)
        out["recipes"] = {o: self.recipe(o).to_dict() for o in OPTIMIZER_RECIPES}
        return out

    @property
    def hash(self) -> str:
        """Content hash of everything that defines the numbers except seeds and the optimizer list."""
        config = {k: v for k, v in self.to_dict().items() if k not in ("seeds", "optimizers", "graves_optimizers")}
        return config_hash(config, semantics=FIDELITY_SEMANTICS)

    def folder(self, root: Path | None = None) -> Path:
        return (root or results_root()) / self.name / f"{self.profile}-{self.hash}"

    def combos(self) -> list[tuple[str, str, int]]:
        """(setting, optimizer, seed) in the order they are computed: every optimizer of a seed before the
        next seed, so a partial run covers all optimizers first."""
        out = []
        for seed in self.seeds:
            out += [("full", o, seed) for o in self.optimizers]
            if self.graves_keep is not None:
                out += [("graves", o, seed) for o in self.graves_optimizers]
        return out


FULL_ALPHAS = (0.003, 0.01, 0.03, 0.1, 0.2, 0.3, 0.5, 0.7, 1.0)


def get_study(profile: str = "full", *, seeds: Sequence[int] | None = None,
              optimizers: Sequence[str] | None = None) -> FidelityStudy:
    """The fidelity study at a profile (``smoke``: a minute on CPU; ``full``: MNIST at the seed's scale).

    Raises:
        ValueError: unknown profile or optimizer, or bad seeds (the message lists the valid values).
    """
    check_profile(profile)
    if profile == "smoke":
        study = FidelityStudy(name=STUDY_NAME, profile="smoke", optimizers=("adam", "sgd"), seeds=(0,),
                              sizes=(1, 10, 40), forget_class=3, request_size=10, n_requests=3, graves_keep=10,
                              graves_optimizers=("adam",), alphas=(0.1, 0.3, 1.0), val_size=200, train_subset=1500,
                              test_subset=500, eval_retain=300, epochs=1)
    else:
        study = FidelityStudy(name=STUDY_NAME, profile="full", optimizers=("adam", "sgd", "adamw"), seeds=(0, 1, 2),
                              sizes=(1, 10, 100, 1000), forget_class=3, request_size=100, n_requests=3, graves_keep=100,
                              graves_optimizers=("adam",), alphas=FULL_ALPHAS, val_size=5000, train_subset=None,
                              test_subset=None, eval_retain=2000, epochs=4)
    study = restrict(study, seeds=seeds, optimizers=optimizers, valid_optimizers=tuple(OPTIMIZER_RECIPES))
    if optimizers is not None:
        study = dataclasses.replace(study, graves_optimizers=tuple(o for o in study.graves_optimizers
                                                                   if o in study.optimizers))
    return study






























def expected_pieces(study: FidelityStudy, setting: str) -> list[str]:
    """The piece names a finished (setting, optimizer, seed) holds (determinism excepted)."""
    c = study.forget_class
    if setting == "graves":
        return [f"set-{graves_set(c)}", "floor-graves"]
    return ([f"set-random-{n}" for n in sorted(study.sizes)]
            + [f"set-requests-{j}" for j in range(2, study.n_requests + 1)]
            + [f"set-{class_set(c)}", "floor-random", "floor-class"])










def _evaluate_set(c: Combo, state: dict, fset: ForgetSet) -> dict:
    refs = {m: replay(c, fset, m) for m in REFERENCES}
    theta = state["theta"].double()
    delta = set_delta(state, fset.name)
    control = set_delta(state, fset.name + "/control")
    gen = torch.Generator().manual_seed(50_021 + c.seed)
    direction = torch.randn(len(delta), generator=gen, dtype=torch.float64)
    direction *= delta.norm() / direction.norm()
    ev = evaluator(c, fset, theta, refs)
    t0 = time.perf_counter()
    rows = {"amnesiac": [], "control_group": [], "random_direction": []}
    for a in c.study.alphas:
        for name, vec in (("amnesiac", delta), ("control_group", control), ("random_direction", direction)):
            rows[name].append(dict(alpha=a, **ev.measure(theta - a * vec)))
    # the repair-only control: one epoch of fine-tuning on the retain set, no subtraction at all
    t1 = time.perf_counter()
    start = assign(c.fresh_model(0), theta)
    retain = c.setting.pool.without(fset.ids)
    tuned = unlearn("finetune", start, Request(retain=retain, recipe=c.recipe, seed=c.seed, device=str(c.device)),
                    epochs=1, progress=c.progress)
    finetune = dict(epochs=1, seconds=time.perf_counter() - t1, **ev.measure(vector(tuned).double()))
    rule = loss_parity_alpha(c.study.alphas, [r["loss_forget"] for r in rows["amnesiac"]],
                             [r["loss_val_matched"] for r in rows["amnesiac"]])
    record = {
        "original_fingerprint": fingerprint(state["theta"]),
        "set": fset.name, "kind": fset.kind, "family": fset.family, "size": len(fset.ids),
        "requests": fset.requests, "alphas": list(c.study.alphas),
        "delta_norm": float(delta.norm()), "control_norm": float(control.norm()),
        "original": ev.measure(theta),
        "references": {m: ev.measure(refs[m]["theta"].double()) for m in REFERENCES},
        "replay_seconds": {m: float(refs[m]["seconds"]) for m in REFERENCES},
        "rule": rule,
        "methods": rows,
        "finetune": finetune,
        "eval_seconds": time.perf_counter() - t0,
    }
    return record


def _floor(c: Combo, family: str, set_name: str) -> dict:
    fset = c.setting.sets[set_name]
    other = c.seed + 1000

    def make():
        model, _, t = c.train(init_seed=other, order_seed=other, data=c.setting.pool.without(fset.ids),
                              desc=f"{c.optimizer} seed {c.seed}: floor (retrain, seed {other}) without {set_name}")
        return {"theta": vector(model), "seconds": torch.tensor(t)}

    floor = cached_tensors(c.weights / f"floor-{family}.pt", make)
    refs = {m: replay(c, fset, m) for m in REFERENCES}
    ev = evaluator(c, fset, original(c)["theta"].double(), refs)
    return {"family": family, "set": set_name, "floor_seed": other, "seconds": float(floor["seconds"]),
            "floor": ev.measure(floor["theta"].double()), "original_fingerprint": fingerprint(original(c)["theta"])}


def _determinism(c: Combo, state: dict) -> dict:
    model, _, t = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool, zero_weight_ids=[],
                          desc=f"{c.optimizer} seed {c.seed}: replay with an empty forget set")
    return {"dist_to_original": float((vector(model).double() - state["theta"].double()).norm()),
            "identical": bool(torch.equal(vector(model), state["theta"])), "seconds": t}


def run_combo(study: FidelityStudy, setting_name: str, optimizer: str, seed: int, *, device: str = "cpu",
              progress: bool = True, results_root: Path | None = None) -> dict[str, dict]:
    """Compute (or load) every piece of one (setting, optimizer, seed); returns piece name -> record."""
    dev = pick_reproducible_device(device)  # replays mean nothing unless training is reproducible
    folder = study.folder(results_root) / setting_name / optimizer / f"seed{seed}"
    weights = study.folder(results_root) / "weights" / setting_name / optimizer / f"seed{seed}"
    setting = make_setting(study, setting_name, seed)
    c = Combo(study, setting, optimizer, seed, weights, dev, progress)
    cache = PieceCache(folder, stamp=dict(provenance=provenance(dev, semantics=FIDELITY_SEMANTICS),
                                          optimizer=optimizer, seed=seed, setting=setting_name))
    piece, out = cache.piece, cache.records

    state = None

    def need_state():
        nonlocal state
        if state is None:
            state = original(c)
        return state

    def original_record():
        s = need_state()
        return {"n_pool": len(setting.pool), "n_val": len(setting.val), "n_test": len(setting.test),
                "n_params": int(s["theta"].numel()), "n_atoms": len(s["names"]), "train_seconds": float(s["seconds"]),
                "log_bytes": int(s["log_bytes"]), "recipe": c.recipe.to_dict(),
                "sets": {k: {"size": len(v.ids), "kind": v.kind, "family": v.family} for k, v in setting.sets.items()}}

    piece("original", original_record)
    first = (optimizer, seed) == (study.optimizers[0], study.seeds[0]) and setting_name == "full"
    if study.determinism_check and first:
        piece("determinism", lambda: _determinism(c, need_state()))
    for name, fset in setting.sets.items():
        piece(f"set-{name}", lambda fset=fset: _evaluate_set(c, need_state(), fset))
    for family, set_name in setting.floors.items():
        piece(f"floor-{family}", lambda family=family, set_name=set_name: _floor(c, family, set_name))
    return out


@dataclass
class FidelityResult:
    """A (possibly partial) fidelity study: records[(setting, optimizer, seed)][piece] -> dict."""

    study: FidelityStudy
    records: dict
    folder: Path

    def seeds_of(self, setting: str, optimizer: str) -> list[int]:
        """The seeds whose every piece is on disk for this setting and optimizer."""
        need = expected_pieces(self.study, setting)
        return sorted(s for (st, o, s), r in self.records.items() if st == setting and o == optimizer
                      and all(p in r for p in need))


def run_study(profile: str = "full", *, seeds: Sequence[int] | None = None, optimizers: Sequence[str] | None = None,
              device: str = "cpu", progress: bool = True, results_root: Path | None = None) -> FidelityResult:
    """Run (or load) the fidelity study, one (setting, optimizer, seed) at a time (see :meth:`FidelityStudy.combos`).

    Example:
        >>> # python -m amnesiac_paper fidelity --profile full --threads 2
    """
    study = get_study(profile, seeds=seeds, optimizers=optimizers)
    folder = study.folder(results_root)
    whole = get_study(profile)  # the folder's config names every seed and optimizer, whatever this run computes
    atomic_write_json(folder / "config.json", {"config": whole.to_dict(), "hash": whole.hash,
                                                "semantics": FIDELITY_SEMANTICS})
    records = {}
    for setting, opt, seed in study.combos():
        records[(setting, opt, seed)] = run_combo(study, setting, opt, seed, device=device, progress=progress,
                                                  results_root=results_root)
    return FidelityResult(study, records, folder)


def load_study(profile: str = "full", *, results_root: Path | None = None) -> FidelityResult:
    """Load whatever pieces of the study are on disk, computing nothing."""
    study = get_study(profile)
    folder = study.folder(results_root)
    records = read_combos(folder, {(st, opt, seed): Path(st, opt, f"seed{seed}") for st, opt, seed in study.combos()})
    return FidelityResult(study, records, folder)


# ------------------------------------------------------------------------------------------------ summaries


def row_at(record: dict, method: str, alpha: float) -> dict:
    """The measurements of ``method`` (a key of ``record["methods"]``) at ``alpha``: its row of the grid, or at
    alpha = 0, which the grid does not hold, the original model's (every method then subtracts nothing).

    Raises:
        KeyError: ``alpha`` is neither 0 nor on the grid.
    """
    if alpha == 0:
        return {"alpha": 0.0, **record["original"]}
    for r in record["methods"][method]:
        if math.isclose(r["alpha"], alpha):
            return r
    raise KeyError(f"alpha {alpha} is not on the grid {record['alphas']}")


def record_rule(record: dict) -> dict:
    """The loss-parity rule (:func:`loss_parity_alpha`) of one forget set's record, recomputed from the losses its
    grid rows store (forget set and class-matched validation split) instead of read from its ``rule`` field, so a
    piece computed under an earlier version of the rule (which fell back to the largest alpha) reads as the
    current rule: alpha = 0, the original model, where parity is never reached."""
    rows = record["methods"]["amnesiac"]
    return loss_parity_alpha([r["alpha"] for r in rows], [r["loss_forget"] for r in rows],
                             [r["loss_val_matched"] for r in rows])


def oracle_alpha(record: dict, reference: str = "drop", metric: str = "dist") -> float:
    """The grid alpha whose subtraction lands closest to ``reference`` (it uses the answer: a bound, not a rule)."""
    rows = record["methods"]["amnesiac"]
    return float(rows[argmin_finite([r[reference][metric] for r in rows])]["alpha"])


def _geometry(norm: float, d: float, d1: float) -> dict:
    """``r = norm / d`` and ``c``, the cosine between a delta of that norm and theta_T - theta_ref, from the
    distance ``d`` of theta_T and ``d1`` of theta_T - delta to the reference (the law of cosines).

    Example:
        >>> g = _geometry(1.0, 2.0, 1.0); g["r"], round(g["c"], 12)  # |delta| = d / 2, along theta_T - theta_ref
        (0.5, 1.0)
    """
    if not (d > 0 and norm > 0):
        return {"r": float("nan"), "c": float("nan")}
    return {"r": norm / d, "c": (d * d + norm * norm - d1 * d1) / (2 * d * norm)}


def set_summary(record: dict, floor: dict, reference: str = "drop") -> dict:
    """One seed's headline numbers for one forget set: at alpha = 1, at the rule's alpha (:func:`record_rule`;
    the original model's numbers where the rule fell back to alpha = 0) and at the oracle's."""
    floor_dist = floor["floor"][reference]["dist"]
    rule = record_rule(record)
    out = {"set": record["set"], "size": record["size"], "kind": record["kind"], "floor_dist": floor_dist,
           "floor_kl": floor["floor"][reference]["kl"], "original_dist": record["original"][reference]["dist"],
           "original_kl": record["original"][reference]["kl"],
           "zero_to_drop_dist": record["references"]["zero"]["drop"]["dist"],
           "rule_alpha": rule["alpha"], "rule_reached": rule["reached"],
           "oracle_alpha": oracle_alpha(record, reference)}
    for tag, a in (("a1", 1.0), ("rule", out["rule_alpha"]), ("oracle", out["oracle_alpha"])):
        r = row_at(record, "amnesiac", a)
        ctrl, rnd = row_at(record, "control_group", a), row_at(record, "random_direction", a)
        out[f"{tag}_recovered"] = r[reference]["recovered"]
        out[f"{tag}_dist"] = r[reference]["dist"]
        out[f"{tag}_floor_ratio"] = r[reference]["dist"] / floor_dist if floor_dist else float("nan")
        out[f"{tag}_kl"] = r[reference]["kl"]
        out[f"{tag}_agreement"] = r[reference]["agreement"]
        out[f"{tag}_acc_forget"] = r["acc_forget"]
        out[f"{tag}_acc_test"] = r["acc_test"]
        out[f"{tag}_control_recovered"] = ctrl[reference]["recovered"]
        out[f"{tag}_random_recovered"] = rnd[reference]["recovered"]
        out[f"{tag}_zero_recovered"] = r["zero"]["recovered"]
    # the geometry (the linear-regime chapter): r = |delta| / d and c = cos(delta, theta_T - theta_ref), from the
    # distances at alpha = 0 and 1 by the law of cosines; the recovered fraction at alpha is
    # 1 - sqrt(1 - 2 alpha r c + alpha^2 r^2)
    out.update(_geometry(record["delta_norm"], out["original_dist"], out["a1_dist"]))
    ctrl = _geometry(record["control_norm"], out["original_dist"],
                     row_at(record, "control_group", 1.0)[reference]["dist"])
    out.update(control_c=ctrl["c"], control_r=ctrl["r"])
    if "finetune" in record:  # the repair-only control
        ft = record["finetune"]
        out.update(ft_recovered=ft[reference]["recovered"], ft_dist=ft[reference]["dist"], ft_kl=ft[reference]["kl"],
                   ft_floor_ratio=ft[reference]["dist"] / floor_dist if floor_dist else float("nan"),
                   ft_acc_forget=ft["acc_forget"], ft_acc_test=ft["acc_test"], ft_seconds=ft["seconds"])
    best = {m: max(r[reference]["recovered"] for r in record["methods"][m]) for m in ("control_group",
                                                                                       "random_direction")}
    out["best_control_recovered"] = max(best.values())
    kls = [r[reference]["kl"] for r in record["methods"]["amnesiac"]]
    out["best_kl"] = min(kls)  # the output-space oracle: the grid's smallest KL to the reference
    out["best_kl_alpha"] = float(record["methods"]["amnesiac"][argmin_finite(kls)]["alpha"])
    out["best_control_kl"] = min(r[reference]["kl"] for m in ("control_group", "random_direction")
                                 for r in record["methods"][m])
    return out


def summary_rows(result: FidelityResult, setting: str, optimizer: str, reference: str = "drop") -> list[dict]:
    """Per forget set, every seed's :func:`set_summary` and the mean with 95% interval of each number."""
    rows = []
    seeds = result.seeds_of(setting, optimizer)
    if not seeds:
        return rows
    first = result.records[(setting, optimizer, seeds[0])]
    rank = {"random": 0, "sequential": 1, "class": 2}
    names = sorted((k[len("set-"):] for k in first if k.startswith("set-")),
                   key=lambda n: (rank[first[f"set-{n}"]["kind"]], first[f"set-{n}"]["size"]))
    for name in names:
        per_seed = []
        for s in seeds:
            rec = result.records[(setting, optimizer, s)]
            fam = rec[f"set-{name}"]["family"]
            per_seed.append(set_summary(rec[f"set-{name}"], rec[f"floor-{fam}"], reference))
        row = {"set": name, "size": per_seed[0]["size"], "kind": per_seed[0]["kind"], "seeds": seeds,
               "per_seed": per_seed}
        for key, v in per_seed[0].items():
            if isinstance(v, (int, float)) and not isinstance(v, bool) and key != "size":
                row[key] = mean_ci([p[key] for p in per_seed])
        row["rule_reached"] = [p["rule_reached"] for p in per_seed]
        rows.append(row)
    return rows


def alpha_curve(result: FidelityResult, setting: str, optimizer: str, set_name: str, method: str = "amnesiac",
                reference: str = "drop", metric: str = "dist") -> tuple[list[float], list[tuple[float, float, int]]]:
    """Mean and 95% interval over seeds of ``metric`` (against ``reference``) at every alpha of the grid."""
    seeds = result.seeds_of(setting, optimizer)
    alphas = list(result.study.alphas)
    curves = []
    for a in alphas:
        vals = []
        for s in seeds:
            r = row_at(result.records[(setting, optimizer, s)][f"set-{set_name}"], method, a)
            vals.append(r[reference][metric] if reference else r[metric])
        curves.append(mean_ci(vals))
    return alphas, curves


def format_summary(result: FidelityResult, reference: str = "drop") -> str:
    """A plain-text table: per setting, optimizer and forget set, recovered fraction and distance / floor at
    alpha = 1, at the rule's alpha and at the oracle's (mean over the seeds computed)."""
    lines = [f"fidelity study ({result.study.profile}) -> {result.folder}",
             f"{'setting':8s} {'opt':6s} {'set':16s} {'n':>6s} {'seeds':>5s} {'rec@1':>8s} {'d/floor@1':>10s} "
             f"{'rule a':>7s} {'rec@rule':>9s} {'oracle a':>9s} {'rec@orc':>8s}"]
    for setting in SETTINGS:
        for opt in OPTIMIZER_RECIPES:
            for row in summary_rows(result, setting, opt, reference):
                lines.append(f"{setting:8s} {opt:6s} {row['set']:16s} {row['size']:6d} {len(row['seeds']):5d} "
                             f"{row['a1_recovered'][0]:8.3f} {row['a1_floor_ratio'][0]:10.3f} "
                             f"{row['rule_alpha'][0]:7.3g} {row['rule_recovered'][0]:9.3f} "
                             f"{row['oracle_alpha'][0]:9.3g} {row['oracle_recovered'][0]:8.3f}")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------- command line


def _cli_arguments(p) -> None:
    p.add_argument("--optimizers", nargs="+", default=None, help="a subset of: adam sgd adamw")


def _cli_check(args) -> None:
    get_study(args.profile, seeds=args.seeds, optimizers=args.optimizers)


def _cli_run(args) -> int:
    result = run_study(args.profile, seeds=args.seeds, optimizers=args.optimizers, device=args.device,
                       progress=not args.quiet)
    print(format_summary(result))
    return 0


COMMAND = cli.Command("fidelity", "the counterfactual-fidelity study: ledger subtraction against replays",
                      _cli_arguments, _cli_run, _cli_check)
