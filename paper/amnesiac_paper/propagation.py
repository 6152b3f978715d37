"""Propagated attribution against the replays: does carrying each delta forward land on the model that never
saw the data?

For each optimizer and seed, the original model of the fidelity study's ``full`` setting is trained again (same
initialisation, batch order and recipe, so the same parameters) with, for each forget set, two delta logs that
hold the set as one group: the exact ``"update"`` attribution and the ``"propagated"`` one (nested sets cannot
share a log). Each set's two deltas are subtracted on the fidelity alpha grid and measured against the
zero-weighted replay, which the propagated delta estimates to first order, and the dropped replay (the
fidelity study's references, :func:`amnesiac_paper.setting.replay`); the repair-only control (one epoch of
fine-tuning on the retain set) is measured beside them. Training time with the logs, the time inside the
Hessian-vector products and plain training time are recorded, so the overhead is a measured ratio.

Results: ``results/propagation-mnist-simple/<profile>-<hash>/<optimizer>/seed<k>/{original,set-<name>}.json``,
resumable per piece; weights (git-ignored) under ``weights/``.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from amnesiac.deltalog import DeltaLog
from amnesiac.training import pick_reproducible_device
from amnesiac.unlearning import Request, unlearn

from . import cli
from . import fidelity as fi
from . import setting as st
from .metrics import argmin_finite
from .store import (
    PieceCache,
    cached_tensors,
    check_profile,
    config_hash,
    provenance,
    read_combos,
    restrict,
    results_root,
    run_combos,
)

PROPAGATION_SEMANTICS = 1
STUDY_NAME = "propagation-mnist-simple"
METHODS = ("exact", "propagated")


@dataclass(frozen=True)
class PropagationStudy:
    """A frozen config: the fidelity profile it builds on, optimizers, seeds, forget sets, HVP cadence."""

    name: str
    profile: str
    optimizers: tuple[str, ...]
    seeds: tuple[int, ...]
    sets: tuple[str, ...]
    propagate_every: int = 1

    @property
    def base(self) -> fi.FidelityStudy:
        return fi.get_study(self.profile)

    @property
    def hash(self) -> str:
        config = {k: v for k, v in asdict(self).items() if k not in ("seeds", "optimizers")}
        return config_hash(config, semantics=PROPAGATION_SEMANTICS, base=self.base.hash)

    def folder(self, root: Path | None = None) -> Path:
        return (root or results_root()) / self.name / f"{self.profile}-{self.hash}"


def get_propagation_study(profile: str = "full", *, seeds: Sequence[int] | None = None,
                          optimizers: Sequence[str] | None = None,
                          propagate_every: int | None = None) -> PropagationStudy:
    """The study at a profile (``smoke``: a minute; ``full``: MNIST, SGD with momentum and Adam, 3 seeds).

    Raises:
        ValueError: unknown profile or optimizer, bad seeds or cadence (the message lists the valid values).
    """
    check_profile(profile)
    c = fi.get_study(profile).forget_class
    if profile == "smoke":
        study = PropagationStudy(STUDY_NAME, "smoke", ("sgd", "adam"), (0,), ("random-10", st.class_set(c)))
    else:
        study = PropagationStudy(STUDY_NAME, "full", ("sgd", "adam"), (0, 1, 2),
                                 ("random-10", "random-100", "random-1000", st.class_set(c)))
    study = restrict(study, seeds=seeds, optimizers=optimizers, valid_optimizers=tuple(st.OPTIMIZER_RECIPES))
    if propagate_every is not None:
        if int(propagate_every) < 1:
            raise ValueError(f"propagate_every must be >= 1, got {propagate_every}")
        study = dataclasses.replace(study, propagate_every=int(propagate_every))
    return study


def _original(c: st.Combo, study: PropagationStudy) -> dict:
    """Train (or load) the original with an exact and a propagated log per set; also time plain training."""
    sets = {name: c.setting.sets[name] for name in study.sets}

    def make():
        logs = {}

        def make_logs(model):
            for name, fset in sets.items():
                logs[("exact", name)] = DeltaLog(model, {name: fset.ids})
                logs[("propagated", name)] = DeltaLog(model, {name: fset.ids}, attribution="propagated",
                                                      propagate_every=study.propagate_every)
            return list(logs.values())

        model, _, seconds = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool, make_log=make_logs,
                                    desc=f"{c.optimizer} seed {c.seed}: original with propagated logs")
        _, _, plain = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool,
                              desc=f"{c.optimizer} seed {c.seed}: plain training (timing)")
        out = {"theta": st.vector(model), "seconds": torch.tensor(seconds), "plain_seconds": torch.tensor(plain)}
        for (method, name), log in logs.items():
            out[f"{method}/{name}"] = log.delta_vector([name]).detach().cpu().clone()
            out[f"{method}/{name}/hvp_seconds"] = torch.tensor(getattr(log, "hvp_seconds", 0.0))
        return out

    state = cached_tensors(c.weights / "propagation-original.pt", make)
    shared = c.weights / "original.pt"  # the fidelity study's original, when its weights folder is shared
    if shared.exists():
        theirs = torch.load(shared, weights_only=True)["theta"]
        if st.fingerprint(theirs) != st.fingerprint(state["theta"]):
            raise RuntimeError(
                f"the fidelity study's original in {c.weights} differs from this run's (another machine or thread "
                "count?): its cached replays cannot serve as references here; use a results root of its own")
    return state


def _evaluate_set(c: st.Combo, study: PropagationStudy, state: dict, fset: st.ForgetSet) -> dict:
    refs = {m: st.replay(c, fset, m) for m in st.REFERENCES}
    theta = state["theta"].double()
    ev = st.evaluator(c, fset, theta, refs)
    t0 = time.perf_counter()
    methods = {}
    for method in METHODS:
        delta = state[f"{method}/{fset.name}"].double()
        methods[method] = [dict(alpha=a, **ev.measure(theta - a * delta)) for a in c.study.alphas]
    start = st.assign(c.fresh_model(0), theta)
    tuned = unlearn("finetune", start, Request(retain=c.setting.pool.without(fset.ids), recipe=c.recipe, seed=c.seed,
                                               device=str(c.device)), epochs=1, progress=c.progress)
    return {
        "original_fingerprint": st.fingerprint(state["theta"]),
        "set": fset.name, "kind": fset.kind, "size": len(fset.ids), "alphas": list(c.study.alphas),
        "delta_norm": {m: float(state[f"{m}/{fset.name}"].double().norm()) for m in METHODS},
        "hvp_seconds": float(state[f"propagated/{fset.name}/hvp_seconds"]),
        "original": ev.measure(theta),
        "references": {m: ev.measure(refs[m]["theta"].double()) for m in st.REFERENCES},
        "methods": methods,
        "finetune": ev.measure(st.vector(tuned).double()),
        "eval_seconds": time.perf_counter() - t0,
    }


def run_combo(study: PropagationStudy, optimizer: str, seed: int, *, device: str = "cpu", progress: bool = True,
              results_root: Path | None = None) -> dict[str, dict]:
    """Compute (or load) every piece of one (optimizer, seed); returns piece name -> record."""
    dev = pick_reproducible_device(device)  # replays mean nothing unless training is reproducible
    base = study.base
    folder = study.folder(results_root) / optimizer / f"seed{seed}"
    # the fidelity study's weights folder for this combo: its replays (same initialisation, order and recipe) are
    # the references here too, computed once for both studies
    weights = study.base.folder(results_root) / "weights" / "full" / optimizer / f"seed{seed}"
    setting = st.make_setting(base, "full", seed)
    missing = [s for s in study.sets if s not in setting.sets]
    if missing:
        raise ValueError(f"forget sets {missing} are not in the fidelity setting; valid: {', '.join(setting.sets)}")
    c = st.Combo(base, setting, optimizer, seed, weights, dev, progress)
    prov = provenance(dev, semantics=PROPAGATION_SEMANTICS)
    state = None

    def need_state():
        nonlocal state
        if state is None:
            state = _original(c, study)
        return state

    cache = PieceCache(folder, stamp=dict(provenance=prov, optimizer=optimizer, seed=seed))
    piece, out = cache.piece, cache.records

    def original_record():
        s = need_state()
        return {"original_fingerprint": st.fingerprint(s["theta"]),
                "train_seconds": float(s["seconds"]), "plain_seconds": float(s["plain_seconds"]),
                "overhead": float(s["seconds"]) / float(s["plain_seconds"]), "n_logs": 2 * len(study.sets),
                "propagate_every": study.propagate_every, "n_params": int(s["theta"].numel()),
                "recipe": c.recipe.to_dict()}

    piece("original", original_record)
    for name in study.sets:
        piece(f"set-{name}", lambda name=name: _evaluate_set(c, study, need_state(), setting.sets[name]))
    return out


@dataclass
class PropagationResult:
    study: PropagationStudy
    records: dict  # (optimizer, seed) -> piece name -> record
    folder: Path


def run_study(profile: str = "full", *, seeds: Sequence[int] | None = None, optimizers: Sequence[str] | None = None,
              propagate_every: int | None = None, device: str = "cpu", progress: bool = True,
              results_root: Path | None = None) -> PropagationResult:
    """Run (or load) the study, one (optimizer, seed) at a time, every optimizer of a seed first.

    Example:
        >>> # python -m amnesiac_paper propagation --profile full --threads 2
    """
    study = get_propagation_study(profile, seeds=seeds, optimizers=optimizers, propagate_every=propagate_every)
    whole = get_propagation_study(profile, propagate_every=propagate_every)  # every seed and optimizer
    config = {"config": asdict(whole), "hash": whole.hash, "base_hash": whole.base.hash,
              "semantics": PROPAGATION_SEMANTICS}
    folder, records = run_combos(study, run_combo, config, results_root=results_root, device=device,
                                 progress=progress)
    return PropagationResult(study, records, folder)


def load_study(profile: str = "full", *, results_root: Path | None = None) -> PropagationResult:
    """Whatever pieces are on disk, computing nothing."""
    study = get_propagation_study(profile)
    folder = study.folder(results_root)
    records = read_combos(folder, {(opt, seed): Path(opt, f"seed{seed}") for opt in study.optimizers
                                   for seed in study.seeds})
    return PropagationResult(study, records, folder)


def set_summary(record: dict, reference: str = "zero") -> dict:
    """One seed's headline numbers for one set: recovered fraction and KL to ``reference`` for the exact delta at
    alpha = 1 and at its best grid alpha (the oracle, which uses the answer), the propagated delta at alpha = 1
    and at its best alpha, and the repair-only control."""

    def at(method, alpha):
        return fi.row_at({"methods": record["methods"], "alphas": record["alphas"]}, method, alpha)[reference]

    def best(method):
        rows = record["methods"][method]
        i = argmin_finite([r[reference]["dist"] for r in rows])
        return rows[i]["alpha"], rows[i][reference]

    out = {"set": record["set"], "size": record["size"], "kind": record["kind"]}
    for method in METHODS:
        one = at(method, 1.0)
        a, b = best(method)
        out.update({f"{method}_recovered": one["recovered"], f"{method}_kl": one["kl"],
                    f"{method}_best_alpha": a, f"{method}_best_recovered": b["recovered"],
                    f"{method}_best_kl": b["kl"]})
    out.update(finetune_recovered=record["finetune"][reference]["recovered"],
               finetune_kl=record["finetune"][reference]["kl"], original_kl=record["original"][reference]["kl"])
    return out


def summary_rows(result: PropagationResult, optimizer: str, reference: str = "zero") -> list[dict]:
    """Per forget set: mean and 95% interval over the finished seeds of every :func:`set_summary` number, and the
    training overhead (x plain training) of the whole original run."""
    rows = []
    seeds = sorted(s for (o, s), r in result.records.items() if o == optimizer
                   and all(f"set-{n}" in r for n in result.study.sets))
    for name in result.study.sets:
        per_seed = [set_summary(result.records[(optimizer, s)][f"set-{name}"], reference) for s in seeds]
        if not per_seed:
            continue
        row = {"set": name, "size": per_seed[0]["size"], "kind": per_seed[0]["kind"], "seeds": seeds,
               "per_seed": per_seed}
        for key, value in per_seed[0].items():  # (mean, 95% half-width, n), as fidelity.summary_rows
            if isinstance(value, float):
                row[key] = fi.mean_ci([p[key] for p in per_seed])
        row["overhead"] = fi.mean_ci([result.records[(optimizer, s)]["original"]["overhead"] for s in seeds])
        rows.append(row)
    return rows


def log_memory(optimizer: str, *, groups: tuple[int, int] = (2, 6), seed: int = 0) -> dict:
    """Memory per group of the exact and the propagated log under ``optimizer``'s recipe, in vectors of the
    model's size (SimpleModel on MNIST-shaped inputs): each log is attached to one epoch of training on a few
    random images split into ``groups[0]`` and then ``groups[1]`` groups, and the difference of the bytes held
    after training, per added group, is divided by the bytes of one parameter vector. What a log holds once per
    model (the base copy, the remainder) cancels in the difference.

    Example:
        >>> m = log_memory("sgd"); round(m["update"], 2), round(m["propagated"], 2)
        (2.0, 2.0)
    """
    from amnesiac.data import ArrayDataset
    from amnesiac.training import train

    from .models import SimpleModel

    recipe = st.OPTIMIZER_RECIPES[optimizer] if optimizer in st.OPTIMIZER_RECIPES else None
    if recipe is None:
        raise ValueError(f"unknown optimizer {optimizer!r}; valid: {', '.join(st.OPTIMIZER_RECIPES)}")
    out = {}
    for attribution in ("update", "propagated"):
        held = []
        for g in groups:
            gen = torch.Generator().manual_seed(seed)
            data = ArrayDataset(torch.randn(4 * g, 1, 28, 28, generator=gen), torch.arange(4 * g) % 10,
                                torch.arange(4 * g))
            torch.manual_seed(seed)
            model = SimpleModel()
            log = DeltaLog(model, {f"g{k}": data.ids[4 * k:4 * k + 4] for k in range(g)}, attribution=attribution)
            train(model, data.loader(8, seed=seed), recipe.make_optimizer(model.parameters()), epochs=1,
                  delta_log=log, device="cpu", progress=False)
            held.append(log.nbytes)
        vector = sum(q.numel() for q in model.parameters()) * torch.finfo(torch.float32).bits // 8
        out[attribution] = (held[1] - held[0]) / (groups[1] - groups[0]) / vector
    out["n_params"] = sum(q.numel() for q in model.parameters())
    return out


# ------------------------------------------------------------------------------------------- command line


def _cli_arguments(p) -> None:
    p.add_argument("--optimizers", nargs="+", default=None, help="a subset of: adam sgd adamw")
    p.add_argument("--every", type=int, default=None, help="Hessian-vector products every k-th step (default 1)")


def _cli_check(args) -> None:
    get_propagation_study(args.profile, seeds=args.seeds, optimizers=args.optimizers, propagate_every=args.every)


def _cli_run(args) -> int:
    result = run_study(args.profile, seeds=args.seeds, optimizers=args.optimizers, propagate_every=args.every,
                       device=args.device, progress=not args.quiet)
    for opt in result.study.optimizers:
        for row in summary_rows(result, opt):
            print(f"{opt:6s} {row['set']:12s} recovered (zero-weighted replay): exact a=1 "
                  f"{row['exact_recovered'][0]:+.3f}, propagated a=1 {row['propagated_recovered'][0]:+.3f}, "
                  f"fine-tune {row['finetune_recovered'][0]:+.3f}; overhead {row['overhead'][0]:.1f}x")
    return 0


COMMAND = cli.Command("propagation", "the propagated attribution against the replays (and the exact delta)",
                      _cli_arguments, _cli_run, _cli_check)
