"""Exact unlearning beside approximate: a cost–exactness frontier, judged by KLOM.

A setting small enough that one model trains in a tenth of a second on one core (a ReLU network of width 64 on
1,000 MNIST images, the paper's SGD recipe: lr 0.01, momentum 0.9, batch 64, 4 epochs, float32 on the CPU), so
that every method can be run on a hundred independently trained originals and judged the way the field now
judges unlearning (Georgiev et al. 2024, :mod:`amnesiac_paper.klom`): per example, the distribution of its
margin under the unlearned models against its distribution under oracles retrained without the forget set.

Per original ``k`` (initialisation and batch order ``k``), trained once with the exact and the propagated
(derivative: the trained run's Hessian) delta logs and a rewind record attached: the rewind result for each
forget set (the dropped replay, bit for bit) and a *neighbour replay* that also drops one other random training
sample, whose distance to the dropped replay is the same-seed floor (as close as retraining itself gets).
Oracles: ``n_oracles`` retrains without the forget set from independent seeds; the first half is the reference of
every method, the second half the floor (oracle against oracle at the same sample size) and the tuning target.

Methods (:data:`METHODS`), exact and approximate, all through the one unlearning registry
(:func:`amnesiac.unlearn`): rewind-and-replay, SISA with 5 and 10 shards, ledger subtraction (exact and
derivative deltas), oracle matching with the ledger's prediction, certified last-layer removal, class-logit
suppression (class only), fine-tuning, NegGrad+, SCRUB, SSD and random relabelling, and doing nothing. Each
method's knobs are tuned on ``n_tune`` originals of their own, twice: against the answer (KLOM on the forget set
against the floor oracles, labelled so) and without it (:func:`~amnesiac_paper.judging.rule_choice`: the forget
set's loss at parity with held-out images of its classes, held-out accuracy on the other classes kept); each
choice is then evaluated on ``n_models`` other originals (the measures: :mod:`amnesiac_paper.judging`). Costs:
seconds per request, plus what training paid for it (logging, checkpoints, the ensemble's extra training) spread
over :attr:`FrontierStudy.requests` requests, and the storage held.

Results: ``results/frontier-mnist-mlp/<profile>-<hash>/`` with ``timing.json``, ``late-seed<k>.json``,
``oracles-<set>.json`` and ``<set>/<method>.json``; the margins behind them are cached under ``weights/``
(git-ignored), per original and per (set, method), so a run resumes where it stopped.
"""

from __future__ import annotations

import copy
import itertools
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from amnesiac.data import ArrayDataset
from amnesiac.deltalog import DeltaLog
from amnesiac.grads import ParamLayout
from amnesiac.rewind import RewindRecord, replayed_fraction
from amnesiac.sisa import sisa_train
from amnesiac.training import Recipe, train
from amnesiac.unlearning import Request, subtract, unlearn

from . import cli
from .datasets import load_dataset
from .judging import klom_bootstrap, margin_loss, margins_of, rms_gap, rule_choice, ulira
from .klom import klom, oracle_floor
from .store import atomic_write_json, check_profile, config_hash, provenance, results_root

FRONTIER_SEMANTICS = 1
STUDY_NAME = "frontier-mnist-mlp"
SPLITS = ("forget", "retain", "val", "test")
SISA_SHARDS = (5, 10)  # the methods sisa-5 and sisa-10
PAIRED_SPLITS = ("forget", "test")  # KLOM's P95 bootstrapped over models and examples, for paired intervals


@dataclass(frozen=True)
class FrontierStudy:
    """A frozen config: data sizes, the recipe, the forget sets, how many models on each side, the costs' terms."""

    name: str
    profile: str
    n_train: int
    n_val: int
    n_test: int
    width: int
    n_models: int  # evaluated originals (and unlearned models) per method and set
    n_tune: int  # originals of their own on which each method's knobs are chosen
    n_oracles: int  # retrains without the forget set: the first half the reference, the second the floor
    random_size: int
    forget_class: int
    sisa_slices: int
    rewind_every: int  # checkpoint every this many batches
    requests: int  # training-time costs are spread over this many requests
    late_seeds: tuple[int, ...]  # late-data rewind: forget set first seen in the last epoch
    timing_repeats: int
    recipe: Recipe = Recipe(optimizer="sgd", lr=0.01, momentum=0.9, batch_size=64, epochs=4)
    bins: int = 20  # KLOM's histogram
    bootstrap: int = 1000  # U-LiRA's interval: resamples of the forget examples
    klom_bootstrap: int = 200  # KLOM's P95: joint resamples of the models on both sides and of the examples
    dataset: str = "mnist"

    @property
    def hash(self) -> str:
        return config_hash(asdict(self), semantics=FRONTIER_SEMANTICS)

    def folder(self, root: Path | None = None) -> Path:
        return (root or results_root()) / self.name / f"{self.profile}-{self.hash}"

    @property
    def sets(self) -> tuple[str, ...]:
        return (f"random-{self.random_size}", f"class-{self.forget_class}")

    def tune_seeds(self) -> range:
        return range(self.n_tune)

    def eval_seeds(self) -> range:
        return range(self.n_tune, self.n_tune + self.n_models)

    def oracle_seeds(self) -> range:
        return range(100_000, 100_000 + self.n_oracles)


def get_frontier_study(profile: str = "full") -> FrontierStudy:
    """The study at a profile (``smoke``: 200 images, 4 evaluated models, a minute; ``full``: 1,000 MNIST images,
    100 evaluated originals and 20 tuning originals per method, 200 oracles per forget set, 100 random samples and
    class 3, SISA with 5 and 10 shards of 4 slices, costs spread over 10 requests).

    Raises:
        ValueError: an unknown profile (the message lists the valid ones).
    """
    check_profile(profile)
    if profile == "smoke":
        return FrontierStudy(STUDY_NAME, "smoke", 200, 60, 60, 16, 4, 2, 8, 10, 3, 2, 2, 10, (0,), 1,
                             bootstrap=50, klom_bootstrap=20)
    return FrontierStudy(STUDY_NAME, "full", 1000, 500, 500, 64, 100, 20, 200, 100, 3, 4, 16, 10,
                         (0, 1, 2), 5)


# ------------------------------------------------------------------------------------------------ data


@dataclass(frozen=True)
class Data:
    """The training pool (ids 0..n-1), validation and test images (held out from every training run), and the
    forget sets: ``random-<n>`` (drawn once, from classes other than the forgotten class) and ``class-<c>``."""

    pool: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    forget: dict[str, torch.Tensor]

    def examples(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Every example whose margin is kept: [pool; validation; test]."""
        return torch.cat([self.pool.x, self.val.x, self.test.x]), torch.cat([self.pool.y, self.val.y, self.test.y])

    def split_index(self, set_name: str) -> dict[str, np.ndarray]:
        """Rows of :meth:`examples` for each split of a forget set: forget, retain, validation, test."""
        n, v = len(self.pool), len(self.val)
        member = np.isin(np.arange(n), self.forget[set_name].numpy())
        return {"forget": np.nonzero(member)[0], "retain": np.nonzero(~member)[0],
                "val": np.arange(n, n + v), "test": np.arange(n + v, n + v + len(self.test))}


def study_data(study: FrontierStudy) -> Data:
    """``n_train`` images drawn once (seed 0) from MNIST's training split; validation and test drawn from its test
    split, disjoint; flattened, float32. The random forget set is drawn once (seed 1) from the other classes."""
    train_split, test_split = load_dataset(study.dataset, "train"), load_dataset(study.dataset, "test")
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(train_split), generator=gen)[: study.n_train]
    held = torch.randperm(len(test_split), generator=gen)[: study.n_val + study.n_test]

    def flat(ds: ArrayDataset, rows: torch.Tensor, name: str) -> ArrayDataset:
        return ArrayDataset(ds.x[rows].reshape(len(rows), -1).float(), ds.y[rows], torch.arange(len(rows)), name)

    pool = flat(train_split, pick, "pool")
    val, test = flat(test_split, held[: study.n_val], "val"), flat(test_split, held[study.n_val:], "test")
    others = torch.nonzero(pool.y != study.forget_class).flatten()
    if len(others) < study.random_size:
        raise ValueError(f"the pool of {len(pool)} images has {len(others)} outside class {study.forget_class}, "
                         f"fewer than the random forget set's {study.random_size}")
    rand = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(1))[: study.random_size]]
    forget = {study.sets[0]: rand.sort().values, study.sets[1]: torch.nonzero(pool.y == study.forget_class).flatten()}
    return Data(pool, val, test, forget)


def model_fn(study: FrontierStudy, seed: int) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        torch.manual_seed(seed)
        return nn.Sequential(nn.Linear(784, study.width), nn.ReLU(), nn.Linear(study.width, 10))

    return build


def _state(model: nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _load(study: FrontierStudy, state: dict) -> nn.Module:
    model = model_fn(study, 0)()
    model.load_state_dict(state)
    return model


# ------------------------------------------------------------------------------------- the late-data loader


class LateLoader:
    """Batches of a loader with ``late`` ids left out of every epoch but the last ``late_epochs``: data that
    arrived in a late stage. The batch count per epoch is the full loader's, so positions and checkpoints line up
    (an early batch is simply smaller)."""

    def __init__(self, loader, late: torch.Tensor, *, epochs: int, late_epochs: int = 1):
        self.loader, self.late, self.epochs, self.late_epochs = loader, late, epochs, late_epochs
        self._epoch = 0

    def __len__(self) -> int:
        return len(self.loader)

    def __iter__(self):
        early = self._epoch < self.epochs - self.late_epochs
        self._epoch += 1
        for x, y, ids in self.loader:
            if early:
                keep = ~torch.isin(ids, self.late)
                x, y, ids = x[keep], y[keep], ids[keep]
            yield x, y, ids


# ------------------------------------------------------------------------------------------- the originals


def original_piece(study: FrontierStudy, data: Data, seed: int, weights: Path) -> dict:
    """Original ``seed`` with both delta logs and a rewind record; per forget set, its exact and derivative
    deltas, the rewind result (the dropped replay) with its cost, and the neighbour replay (also without one other
    random sample). Cached whole in ``weights/original-<seed>.pt``."""
    path = weights / f"original-{seed}.pt"
    if path.exists():
        return torch.load(path, weights_only=False)
    rec = study.recipe
    fresh = model_fn(study, seed)
    model = fresh()
    opt = rec.make_optimizer(model.parameters())
    logs = {"exact": DeltaLog(model, data.forget),
            "derivative": DeltaLog(model, data.forget, attribution="propagated", propagate_hessian="trained")}
    record = RewindRecord(model, opt, every=study.rewind_every)
    loader = data.pool.loader(rec.batch_size, seed=seed)
    train(model, loader, opt, epochs=rec.epochs, delta_log=list(logs.values()), device="cpu", progress=False,
          on_batch=record)
    out = {"seed": seed, "state": _state(model), "sets": {}}
    for name, ids in data.forget.items():
        t0 = time.process_time()
        replay = unlearn("rewind", model, Request(forget=data.pool.subset(ids), recipe=rec, model_fn=fresh),
                         record=record, loader=loader)
        seconds = time.process_time() - t0
        retained = data.pool.ids[~torch.isin(data.pool.ids, ids)]
        extra = retained[torch.randint(len(retained), (1,), generator=torch.Generator().manual_seed(seed))]
        nb = fresh()
        train(nb, loader, rec.make_optimizer(nb.parameters()), epochs=rec.epochs, device="cpu", progress=False,
              drop_ids=torch.cat([ids, extra]))
        out["sets"][name] = {"exact": logs["exact"].delta_vector([name]).clone(),
                             "derivative": logs["derivative"].delta_vector([name]).clone(),
                             "rewind": _state(replay), "rewind_seconds": seconds,
                             "rewind_fraction": replayed_fraction(record, ids.tolist()), "neighbour": _state(nb)}
    out["rewind_bytes"] = record.nbytes
    out["log_bytes"] = {k: int(log.delta_vector([study.sets[0]]).numel() * 4) for k, log in logs.items()}
    weights.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


# --------------------------------------------------------------------------------------------- the methods


@dataclass(frozen=True)
class Method:
    """A method of the frontier: its label, whether it is exact, its knobs' grid (empty: one configuration),
    which forget sets it applies to, and what training paid for it (a key of the timing piece's overheads)."""

    label: str
    kind: str  # "exact", "approximate" or "control"
    grid: dict
    sets: str = "both"  # or "class": a control for class forgetting only
    overhead: str | None = None


METHODS: dict[str, Method] = {
    "original": Method("do nothing (the original)", "control", {}),
    "rewind": Method("rewind and replay", "exact", {}, overhead="rewind"),
    **{f"sisa-{s}": Method(f"SISA, {s} shards", "exact", {}, overhead=f"sisa-{s}") for s in SISA_SHARDS},
    "ledger-exact": Method("ledger subtraction (exact delta)", "approximate",
                           {"alpha": (0.03, 0.1, 0.3, 1.0)}, overhead="exact-log"),
    "ledger-derivative": Method("ledger subtraction (derivative)", "approximate",
                                {"alpha": (0.03, 0.1, 0.3, 1.0)}, overhead="derivative-log"),
    # the squared error on logits has several times cross-entropy's curvature: steps well below the recipe's
    "oracle-matching": Method("oracle matching (ledger-predicted)", "approximate",
                              {"epochs": (1, 3), "lr_scale": (0.01, 0.03, 0.1)}, overhead="derivative-log"),
    # refit: Guo et al.'s certified form (the last layer refitted to the regularised optimum, then the Newton
    # step); without it, the same Newton step from the trained layer (an influence-function removal)
    "certified": Method("certified last-layer removal", "approximate",
                        {"lam": (1e-4, 1e-3, 1e-2), "refit": (True, False)}),
    "suppression": Method("class-logit suppression", "control", {}, sets="class"),
    "finetune": Method("fine-tune (retain set)", "approximate", {"epochs": (1, 2), "lr_scale": (1.0, 3.0)}),
    "neggrad_plus": Method("NegGrad+", "approximate", {"beta": (0.9, 0.99), "lr_scale": (0.1, 1.0)}),
    "scrub": Method("SCRUB", "approximate", {"epochs": (1, 2), "lr_scale": (0.1, 1.0)}),
    "ssd": Method("SSD", "approximate", {"selection": (1.0, 10.0), "dampening": (0.1, 1.0)}),
    "relabel": Method("random relabelling", "approximate", {"lr_scale": (0.3, 1.0, 3.0)}),
}
METHOD_SEMANTICS: dict[str, int] = {m: 1 for m in METHODS}  # bump one to recompute that method's pieces only


def configs(name: str) -> list[dict]:
    """Every configuration of a method's grid (one empty configuration for a method without knobs)."""
    grid = METHODS[name].grid
    return [dict(zip(grid, values)) for values in itertools.product(*grid.values())]


def applies(name: str, set_name: str) -> bool:
    return METHODS[name].sets == "both" or set_name.startswith("class-")


def run_method(name: str, config: dict, study: FrontierStudy, data: Data, orig: dict, set_name: str
               ) -> tuple[nn.Module, float]:
    """Unlearn ``set_name`` from original ``orig`` (a piece of :func:`original_piece`) with one configuration;
    the model and the CPU-seconds the request took (for SISA: the ensemble trained with the original's seed, and
    the seconds of its unlearning only)."""
    rec, ids, seed = study.recipe, data.forget[set_name], orig["seed"]
    fresh = model_fn(study, seed)
    request = Request(forget_groups=(set_name,), forget=data.pool.subset(ids), retain=data.pool.without(ids),
                      recipe=rec, model_fn=fresh, num_classes=10, seed=seed, device="cpu")
    params = dict(config)
    if "lr_scale" in params:
        params["lr"] = rec.lr * params.pop("lr_scale")
    if name.startswith("sisa-"):
        ensemble, record = sisa_train(fresh, data.pool, rec, shards=int(name.split("-")[1]),
                                      slices=study.sisa_slices, seed=seed)
        t0 = time.process_time()
        out = unlearn("sisa", ensemble, request, record=record)
        return out, time.process_time() - t0
    model = _load(study, orig["state"])
    piece = orig["sets"][set_name]
    t0 = time.process_time()
    if name == "original":
        out = copy.deepcopy(model)
    elif name == "rewind":  # computed with the original (the record lives there); its seconds were measured then
        return _load(study, piece["rewind"]), piece["rewind_seconds"]
    elif name.startswith("ledger-"):
        out = subtract(model, piece[name.split("-")[1]], params["alpha"])
    elif name == "oracle-matching":
        out = unlearn("oracle_matching", model, request, delta=piece["derivative"], **params)
    elif name == "certified":
        out = unlearn("certified_last_layer", model, request, **params)
    elif name == "suppression":
        out = unlearn("logit_suppression", model, request, **params)
    else:
        out = unlearn(name, model, request, **params)
    return out, time.process_time() - t0


def _margins_of_runs(name, config, study, data, originals, set_name) -> dict:
    x, y = data.examples()
    rows = [run_method(name, config, study, data, orig, set_name) for orig in originals]
    got = [margins_of(m, x, y) for m, _ in rows]
    return {"margins": np.stack([g[0] for g in got]), "correct": np.stack([g[1] for g in got]),
            "seconds": [s for _, s in rows]}


def rule_inputs(margins: np.ndarray, correct: np.ndarray, data: Data, set_name: str, forget_class: int) -> dict:
    """What the rule without the answer reads, means over the models: the forget set's loss, the loss of held-out
    (validation) images of the same classes, and the validation accuracy on the classes not forgotten."""
    idx = data.split_index(set_name)
    yv = data.val.y.numpy()
    same = (yv == forget_class) if set_name.startswith("class-") else (yv != forget_class)
    val = idx["val"]
    return {"loss_forget": float(margin_loss(margins[:, idx["forget"]]).mean()),
            "loss_heldout": float(margin_loss(margins[:, val[same]]).mean()),
            "acc_val_other": float(correct[:, val[yv != forget_class]].mean())}


def evaluate(runs: dict, oracle_margins: np.ndarray, replay: dict, data: Data, set_name: str,
             study: FrontierStudy) -> dict:
    """A configuration's measures on the evaluated originals against the reference oracles: KLOM per split (95th
    percentile and median), U-LiRA on the forget set, accuracies, the gap to each original's own dropped replay
    against the same-seed floor (RMS margin difference, test and forget), and the seconds per request."""
    from .metrics import mean_ci

    idx = data.split_index(set_name)
    m, c = runs["margins"], runs["correct"]
    out = {"klom": {}, "klom_median": {}, "klom_boot": {}}
    for split in SPLITS:
        k = klom(m[:, idx[split]], oracle_margins[:, idx[split]], bins=study.bins)
        out["klom"][split], out["klom_median"][split] = float(np.percentile(k, 95)), float(np.median(k))
        if split in PAIRED_SPLITS:
            boot = klom_bootstrap(m[:, idx[split]], oracle_margins[:, idx[split]], draws=study.klom_bootstrap,
                                  bins=study.bins)
            out["klom_boot"][split] = [round(float(v), 6) for v in boot]
    out["ulira"] = ulira(m[:, idx["forget"]], oracle_margins[:, idx["forget"]], bootstrap=study.bootstrap)
    for split in ("test", "forget", "retain"):
        mean, half, n = mean_ci(c[:, idx[split]].mean(1).tolist())
        out[f"acc_{split}"] = {"mean": mean, "half": half, "n": n}
    for split in ("test", "forget"):
        gap = rms_gap(m[:, idx[split]], replay["rewind"][:, idx[split]])
        floor = rms_gap(replay["neighbour"][:, idx[split]], replay["rewind"][:, idx[split]])
        mean, half, n = mean_ci((gap / floor).tolist())
        out[f"gap_{split}"] = {"mean_rms": float(gap.mean()), "floor_rms": float(floor.mean()),
                               "ratio": {"mean": mean, "half": half, "n": n},
                               "per_model": [round(float(v), 6) for v in gap / floor]}
    out["seconds"] = {"median": float(statistics.median(runs["seconds"])),
                      "mean": float(np.mean(runs["seconds"]))}
    return out


# ---------------------------------------------------------------------------------------------- the pieces


def _cached_arrays(path: Path, make: Callable[[], dict]) -> dict:
    """``make()``'s arrays, cached in an ``.npz`` beside the weights (written whole, then renamed)."""
    if path.exists():
        with np.load(path) as z:
            return {k: z[k] for k in z.files}
    out = {k: np.asarray(v) for k, v in make().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(path)
    return out


def oracle_margins(study: FrontierStudy, data: Data, set_name: str, weights: Path) -> dict:
    """Margins of the ``n_oracles`` retrains without the forget set (independent seeds), and each one's
    CPU-seconds of training."""
    def make():
        x, y = data.examples()
        ms, cs, secs = [], [], []
        for s in study.oracle_seeds():
            model = model_fn(study, s)()
            opt = study.recipe.make_optimizer(model.parameters())
            t0 = time.process_time()
            train(model, data.pool.loader(study.recipe.batch_size, seed=s), opt, epochs=study.recipe.epochs,
                  device="cpu", progress=False, drop_ids=data.forget[set_name])
            secs.append(time.process_time() - t0)
            m, c = margins_of(model, x, y)
            ms.append(m)
            cs.append(c)
        return {"margins": np.stack(ms), "correct": np.stack(cs), "seconds": np.array(secs)}

    return _cached_arrays(weights / f"oracles-{set_name}.npz", make)


def oracle_piece(study: FrontierStudy, data: Data, set_name: str, weights: Path) -> dict:
    """The oracles' own row: KLOM of the floor half against the reference half (the floor, at the same sample
    size as every method's), their accuracy and U-LiRA, and the retrain's cost."""
    from .metrics import mean_ci

    o = oracle_margins(study, data, set_name, weights)
    half = study.n_oracles // 2
    ref, floor = o["margins"][:half], o["margins"][half:]
    idx = data.split_index(set_name)
    out = {"set": set_name, "n_oracles": study.n_oracles, "klom": {}, "klom_median": {},
           "retrain_seconds": {"median": float(np.median(o["seconds"])), "mean": float(o["seconds"].mean())}}
    out["klom_boot"] = {}
    for split in SPLITS:
        k = klom(floor[:, idx[split]], ref[:, idx[split]], bins=study.bins)
        out["klom"][split], out["klom_median"][split] = float(np.percentile(k, 95)), float(np.median(k))
        if split in PAIRED_SPLITS:  # the same draws as every method's when the floor has n_models models
            boot = klom_bootstrap(floor[:, idx[split]], ref[:, idx[split]], draws=study.klom_bootstrap,
                                  bins=study.bins)
            out["klom_boot"][split] = [round(float(v), 6) for v in boot]
    out["klom_half_split"] = {s: oracle_floor(ref[:, idx[s]], bins=study.bins) for s in SPLITS}
    out["ulira"] = ulira(floor[:, idx["forget"]], ref[:, idx["forget"]], bootstrap=study.bootstrap)
    for split in ("test", "forget", "retain"):
        mean, h, n = mean_ci(o["correct"][:half, idx[split]].mean(1).tolist())
        out[f"acc_{split}"] = {"mean": mean, "half": h, "n": n}
    return out


def replay_margins(study: FrontierStudy, data: Data, set_name: str, originals: dict[int, dict], weights: Path
                   ) -> dict:
    """Margins of each evaluated original's dropped replay (its rewind result) and neighbour replay."""
    def make():
        x, y = data.examples()
        seeds = list(study.eval_seeds())
        return {kind: np.stack([margins_of(_load(study, originals[s]["sets"][set_name][kind]), x, y)[0]
                                for s in seeds]) for kind in ("rewind", "neighbour")}

    return _cached_arrays(weights / f"replays-{set_name}.npz", make)


def method_piece(study: FrontierStudy, data: Data, set_name: str, name: str, originals: dict[int, dict],
                 weights: Path) -> dict:
    """One (set, method): the grid on the tuning originals (KLOM on the forget set against the floor oracles: the
    answer; and the rule's inputs), the two choices, each evaluated on the other originals."""
    oracles = oracle_margins(study, data, set_name, weights)
    half = study.n_oracles // 2
    idx = data.split_index(set_name)
    tune = [originals[s] for s in study.tune_seeds()]
    evals = [originals[s] for s in study.eval_seeds()]
    replays = replay_margins(study, data, set_name, originals, weights)

    def runs(method: str, i: int, config: dict, which: str) -> dict:
        group = tune if which == "tune" else evals
        return _cached_arrays(weights / set_name / f"{method}-{i}-{which}.npz",
                              lambda: _margins_of_runs(method, config, study, data, group, set_name))

    base = runs("original", 0, {}, "tune")
    reference_acc = rule_inputs(base["margins"], base["correct"], data, set_name, study.forget_class)[
        "acc_val_other"]
    grid = []
    for i, config in enumerate(configs(name)):
        r = runs(name, i, config, "tune")
        k = klom(r["margins"][:, idx["forget"]], oracles["margins"][half:, idx["forget"]], bins=study.bins)
        grid.append({"config": config, "answer_klom_forget": float(np.percentile(k, 95)),
                     **rule_inputs(r["margins"], r["correct"], data, set_name, study.forget_class),
                     "seconds_median": float(np.median(r["seconds"]))})
    answer = int(np.argmin([g["answer_klom_forget"] for g in grid]))
    # a method without knobs has nothing to choose: the rule is its one configuration (an exact method must honour
    # the request whatever it costs in accuracy; that cost is reported, not avoided)
    rule = rule_choice(grid, reference_acc) if len(grid) > 1 else 0
    out = {"set": set_name, "method": name, "label": METHODS[name].label, "kind": METHODS[name].kind,
           "method_semantics": METHOD_SEMANTICS[name], "grid": grid, "reference_acc_val_other": reference_acc}
    ref = oracles["margins"][:half]
    out["answer"] = {"index": answer, "config": grid[answer]["config"],
                     **evaluate(runs(name, answer, grid[answer]["config"], "eval"), ref, replays, data, set_name,
                                study)}
    if rule == answer:
        out["rule"] = {"index": rule, "config": grid[rule]["config"], "same_as_answer": True}
    elif rule is None:  # no configuration keeps the accuracy: the rule changes nothing
        out["rule"] = {"index": None, "config": None, "same_as_answer": False,
                       **evaluate(runs("original", 0, {}, "eval"), ref, replays, data, set_name, study)}
    else:
        out["rule"] = {"index": rule, "config": grid[rule]["config"], "same_as_answer": False,
                       **evaluate(runs(name, rule, grid[rule]["config"], "eval"), ref, replays, data, set_name,
                                  study)}
    return out


def timing_piece(study: FrontierStudy, data: Data) -> dict:
    """CPU-seconds of training (medians over ``timing_repeats`` seeds) plain and with what each method needs
    attached (the exact log, the derivative log, the rewind record, the SISA ensembles), their overheads against
    plain training, and the storage each holds (logs: the two forget groups)."""
    rec = study.recipe
    kinds = ["plain", "exact-log", "derivative-log", "rewind", *[f"sisa-{s}" for s in SISA_SHARDS]]
    seconds: dict[str, list[float]] = {k: [] for k in kinds}
    storage: dict[str, int] = {}
    for r in range(study.timing_repeats):
        seed = 200_000 + r
        for kind in kinds:
            fresh = model_fn(study, seed)
            model = fresh()
            opt = rec.make_optimizer(model.parameters())
            loader = data.pool.loader(rec.batch_size, seed=seed)
            extra: dict = {}
            if kind == "exact-log":
                extra["delta_log"] = DeltaLog(model, data.forget)
            elif kind == "derivative-log":
                extra["delta_log"] = DeltaLog(model, data.forget, attribution="propagated", propagate_hessian="trained")
            elif kind == "rewind":
                extra["on_batch"] = RewindRecord(model, opt, every=study.rewind_every)
            t0 = time.process_time()
            if kind.startswith("sisa-"):
                _, record = sisa_train(fresh, data.pool, rec, shards=int(kind.split("-")[1]),
                                       slices=study.sisa_slices, seed=seed)
                storage[kind] = int(record.nbytes)
            else:
                train(model, loader, opt, epochs=rec.epochs, device="cpu", progress=False, **extra)
            seconds[kind].append(time.process_time() - t0)
            if kind == "rewind":
                storage[kind] = int(extra["on_batch"].nbytes)
            elif kind.endswith("-log"):
                storage[kind] = int(extra["delta_log"].delta_vector(list(data.forget)[:1]).numel() * 4
                                    * len(data.forget))
    med = {k: float(statistics.median(v)) for k, v in seconds.items()}
    return {"seconds": seconds, "median": med, "overhead": {k: med[k] - med["plain"] for k in kinds[1:]},
            "storage_bytes": storage, "n_params": int(ParamLayout.of(model_fn(study, 0)()).numel)}


def late_piece(study: FrontierStudy, data: Data, seed: int) -> dict:
    """Rewinding data that arrived late: per forget set, an original whose first ``epochs - 1`` epochs never see
    the set (:class:`LateLoader`), trained with a rewind record; the rewind's fraction and seconds, beside the
    plain training's, and whether it equals the retrain without the set bit for bit; beside it, the same seed
    trained in random order (the set seen from the first epoch), rewound the same way."""
    rec = study.recipe
    out = {"seed": seed, "sets": {}}
    for name, ids in data.forget.items():
        fresh = model_fn(study, seed)
        model = fresh()
        opt = rec.make_optimizer(model.parameters())
        record = record_late = RewindRecord(model, opt, every=study.rewind_every)
        late = LateLoader(data.pool.loader(rec.batch_size, seed=seed), ids, epochs=rec.epochs)
        t0 = time.process_time()
        train(model, late, opt, epochs=rec.epochs, device="cpu", progress=False, on_batch=record)
        train_seconds = time.process_time() - t0
        t0 = time.process_time()
        replay = unlearn("rewind", model, Request(forget=data.pool.subset(ids), recipe=rec, model_fn=fresh),
                         record=record,
                         loader=LateLoader(data.pool.loader(rec.batch_size, seed=seed), ids, epochs=rec.epochs))
        seconds = time.process_time() - t0
        ref = fresh()
        train(ref, data.pool.loader(rec.batch_size, seed=seed), rec.make_optimizer(ref.parameters()),
              epochs=rec.epochs, device="cpu", progress=False, drop_ids=ids)
        # the same seed in random order (the set seen from the first epoch): what the rewind costs there
        model = fresh()
        opt = rec.make_optimizer(model.parameters())
        record = RewindRecord(model, opt, every=study.rewind_every)
        train(model, data.pool.loader(rec.batch_size, seed=seed), opt, epochs=rec.epochs, device="cpu",
              progress=False, on_batch=record)
        t0 = time.process_time()
        again = unlearn("rewind", model, Request(forget=data.pool.subset(ids), recipe=rec, model_fn=fresh),
                        record=record, loader=data.pool.loader(rec.batch_size, seed=seed))
        random_seconds = time.process_time() - t0
        out["sets"][name] = {"fraction": replayed_fraction(record_late, ids.tolist()), "seconds": seconds,
                             "train_seconds": train_seconds,
                             "identical": all(torch.equal(a, b) for a, b in zip(replay.parameters(),
                                                                                ref.parameters())),
                             "random_order": {"fraction": replayed_fraction(record, ids.tolist()),
                                              "seconds": random_seconds,
                                              "identical": all(torch.equal(a, b) for a, b in
                                                               zip(again.parameters(), ref.parameters()))}}
    return out


# ------------------------------------------------------------------------------------------------ the run


@dataclass
class FrontierResult:
    study: FrontierStudy
    pieces: dict[str, dict]
    folder: Path


def _piece_current(rec: dict | None, name: str) -> bool:
    return rec is not None and rec.get("method_semantics") == METHOD_SEMANTICS[name] and \
        [g["config"] for g in rec.get("grid", [])] == configs(name)


def run_study(profile: str = "full", *, methods: Sequence[str] | None = None, progress: bool = True,
              results_root: Path | None = None) -> FrontierResult:
    """Run (or load) every piece on one CPU thread (the costs are per core): the oracles, the originals, the
    timing, the late-data rewinds, then every (set, method); resumable piece by piece."""
    study = get_frontier_study(profile)
    methods = tuple(methods or METHODS)
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; valid: {', '.join(METHODS)}")
    folder = study.folder(results_root)
    weights = folder / "weights"
    stamp = {"provenance": provenance(torch.device("cpu"), semantics=FRONTIER_SEMANTICS)}
    atomic_write_json(folder / "config.json", {"config": asdict(study), "hash": study.hash,
                                               "semantics": FRONTIER_SEMANTICS})
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    say = print if progress else (lambda *a, **k: None)
    pieces: dict[str, dict] = {}

    def piece(key: str, make: Callable[[], dict], *, current=lambda rec: True) -> dict:
        path = folder / f"{key}.json"
        if path.exists():
            import json

            rec = json.loads(path.read_text())
            if current(rec):
                pieces[key] = rec
                return rec
        start = time.perf_counter()
        rec = make()
        rec.update(wall_seconds=time.perf_counter() - start, **stamp)
        atomic_write_json(path, rec)
        pieces[key] = rec
        say(f"{key}: {rec['wall_seconds']:.0f} s", flush=True)
        return rec

    try:
        data = study_data(study)
        for s in study.sets:
            piece(f"oracles-{s}", lambda s=s: oracle_piece(study, data, s, weights))
        originals = {}
        for k in (*study.tune_seeds(), *study.eval_seeds()):
            originals[k] = original_piece(study, data, k, weights)
        say(f"{len(originals)} originals ready", flush=True)
        piece("timing", lambda: timing_piece(study, data))
        for k in study.late_seeds:
            piece(f"late-seed{k}", lambda k=k: late_piece(study, data, k))
        for s in study.sets:
            for name in methods:
                if applies(name, s):
                    piece(f"{s}/{name}", lambda s=s, name=name: method_piece(study, data, s, name, originals,
                                                                             weights),
                          current=lambda rec, name=name: _piece_current(rec, name))
    finally:
        torch.set_num_threads(threads)
    return FrontierResult(study, pieces, folder)


def load_study(profile: str = "full", *, results_root: Path | None = None) -> FrontierResult:
    """Whatever pieces are on disk and current, computing nothing."""
    import json

    study = get_frontier_study(profile)
    folder = study.folder(results_root)
    pieces = {}
    for path in sorted(folder.rglob("*.json")):
        key = str(path.relative_to(folder))[: -len(".json")]
        if key == "config" or "weights" in path.parts:
            continue
        rec = json.loads(path.read_text())
        if "method" in rec and not _piece_current(rec, rec["method"]):
            continue
        pieces[key] = rec
    return FrontierResult(study, pieces, folder)


def amortised(result: FrontierResult, set_name: str, name: str, choice: str = "answer") -> dict:
    """Seconds per request of a method on a set: its own median seconds plus what training paid for it (the
    timing piece's overhead) spread over the study's ``requests``; the storage it holds."""
    timing = result.pieces["timing"]
    rec = result.pieces[f"{set_name}/{name}"]
    ev = rec[choice] if not rec[choice].get("same_as_answer") else rec["answer"]
    own = ev["seconds"]["median"]
    key = METHODS[name].overhead
    overhead = timing["overhead"].get(key, 0.0) if key else 0.0
    return {"request": own, "training_overhead": overhead, "per_request": own + overhead / result.study.requests,
            "storage_bytes": timing["storage_bytes"].get(key, 0) if key else 0}


# ------------------------------------------------------------------------------------------- command line


def _cli_arguments(p) -> None:
    p.add_argument("--methods", nargs="+", default=None, help="a subset of: " + " ".join(METHODS))


def _cli_check(args) -> None:
    bad = [m for m in (args.methods or ()) if m not in METHODS]
    if bad:
        raise ValueError(f"unknown method(s) {bad}; valid: {', '.join(METHODS)}")
    if args.seeds is not None:
        raise ValueError("the frontier study's originals and oracles are numbered by its profile (n_tune, n_models, "
                         "n_oracles); --seeds does not apply")
    if args.device != "cpu":
        raise ValueError("the frontier study measures costs per CPU core; run it with --device cpu")
    get_frontier_study(args.profile)


def _cli_run(args) -> int:
    result = run_study(args.profile, methods=args.methods, progress=not args.quiet)
    for key, rec in sorted(result.pieces.items()):
        if "answer" in rec:
            print(f"{key:32s} KLOM P95 forget {rec['answer']['klom']['forget']:.3f}  "
                  f"U-LiRA {rec['answer']['ulira']['auc']:.3f}")
    print(f"results: {result.folder}")
    return 0


COMMAND = cli.Command("frontier", "exact and approximate unlearning on a cost-exactness frontier, judged by KLOM",
                      _cli_arguments, _cli_run, _cli_check)
