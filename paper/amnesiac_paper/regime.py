"""The linear regime of removal: when does the ledger become the counterfactual?

The exact delta of a forget set F is zeroth order in the propagation term (REFERENCE, section 8); the propagated
delta with the trained run's Hessian is the derivative of the trained parameters in F's loss weight w at w = 1
(a metagradient, section 11). Removal is the step from w = 1 to w = 0. This study measures, in float64 on the
CPU (where a replay is deterministic and resolves tiny changes):

1. **the derivative, directly**: replays with F's loss weight ``1 - eps`` (same initialisation and batch order,
   the mean still over the batch) give ``g(eps) = (theta(1) - theta(1 - eps)) / eps``; where it converges it is
   the derivative, and the propagated delta is compared with it (cosine and norm ratio);
2. **the linear-regime radius** ``eps*``: the largest grid ``eps`` at which ``g`` (and every smaller grid ``eps``)
   still agrees with the derivative (:data:`AGREE_COS`, :data:`AGREE_RATIO`); removal is ``eps = 1``;
3. **a phase diagram**: one factor at a time from a default regime (:func:`regimes`): learning rate, batch size,
   horizon (F seen only in the last epoch), activation (ReLU against tanh), optimizer (SGD, momentum, Adam)
   and a convex control (multinomial logistic regression on the pixels); per cell and seed, ``eps*``, and at
   ``alpha = 1`` for the exact, the propagated (the replay's Hessian) and the derivative delta the recovered
   fraction, the output KL to the zero-weighted replay, ``c = cos(delta, theta_T - theta_replay)`` and
   ``r = |delta| / |theta_T - theta_replay|``, beside the same numbers for a random group of the same size that
   is not forgotten (the control). A delta whose norm leaves every bound is reported as diverged, with its step;
4. **stabilisation, measured**: the derivative propagated over the last ``k`` epochs only (``propagate_after``),
   with Gauss–Newton products instead of Hessians, or damped, against the same replays, in the regimes where the
   full recursion is expansive (:func:`stabilised_piece`);
5. **output space**: a linear datamodeling score (Spearman, over random forget subsets, of each held-out
   example's margin change predicted through a Jacobian-vector product at theta_T against the replay's).

With ``r`` and ``c`` the recovered fraction at scale alpha is ``1 - sqrt(1 - 2 alpha r c + alpha^2 r^2)``
(:func:`recovered_from_geometry`): the best alpha recovers ``1 - sqrt(1 - c^2)``, about ``c^2 / 2``.

6. **one sample at a time**: 100 single samples per seed, each with its own zero-weighted and dropped replay,
   the exact and the derivative delta of each measured against them (:func:`singles_piece`).

Results: ``results/regime-mnist-mlp/<profile>-<hash>/{cell,lds,stable,remedy,singles}-<regime>-seed<k>.json``,
resumable per piece (replays cached under ``weights/``).
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from amnesiac.data import ArrayDataset
from amnesiac.deltalog import DeltaLog
from amnesiac.grads import ParamLayout
from amnesiac.training import train

from . import cli
from .datasets import load_dataset
from .setting import assign, divergences, recovered_fraction
from .store import PieceCache, atomic_write_json, cached_tensors, check_profile, config_hash, provenance, results_root

REGIME_SEMANTICS = 1
STUDY_NAME = "regime-mnist-mlp"
AGREE_COS = 0.9  # g(eps) agrees with the derivative: cosine at least this ...
AGREE_RATIO = (0.8, 1.25)  # ... and norm ratio |g| / |derivative| inside this interval
DIVERGED = 1e3  # a delta is diverged once its norm exceeds this multiple of |theta_T - theta_0| (or is not finite)
DELTAS = ("exact", "propagated", "derivative")


@dataclass(frozen=True)
class Regime:
    """One training regime: the model, the optimizer and its schedule, and when the forget sets are seen.

    ``late_epochs > 0``: the tracked groups' rows are left out of the first ``epochs - late_epochs`` epochs and
    seen only in the last ``late_epochs`` (data that arrived in a late fine-tuning stage).
    """

    name: str
    model: str = "mlp"  # "mlp" (one hidden layer) or "logistic" (the convex control: linear on the pixels)
    activation: str = "relu"  # "relu" or "tanh" (smooth)
    width: int = 64
    optimizer: str = "momentum"  # "sgd", "momentum" (0.9) or "adam"
    lr: float = 0.01
    batch_size: int = 64
    epochs: int = 4
    late_epochs: int = 0

    def __post_init__(self):
        if self.model not in ("mlp", "logistic") or self.activation not in ("relu", "tanh"):
            raise ValueError(f"regime {self.name}: model must be mlp|logistic and activation relu|tanh")
        if self.optimizer not in ("sgd", "momentum", "adam"):
            raise ValueError(f"regime {self.name}: optimizer must be sgd, momentum or adam, got {self.optimizer!r}")
        if not 0 <= self.late_epochs < self.epochs or self.lr <= 0 or self.batch_size < 1:
            raise ValueError(f"regime {self.name}: need 0 <= late_epochs < epochs, lr > 0, batch_size >= 1")

    def build(self, n_in: int, n_out: int, init_seed: int) -> nn.Module:
        torch.manual_seed(init_seed)
        if self.model == "logistic":
            model = nn.Linear(n_in, n_out)
        else:
            act = nn.ReLU() if self.activation == "relu" else nn.Tanh()
            model = nn.Sequential(nn.Linear(n_in, self.width), act, nn.Linear(self.width, n_out))
        return model.double()

    def optimizer_for(self, params) -> torch.optim.Optimizer:
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr)
        return torch.optim.SGD(params, lr=self.lr, momentum=0.9 if self.optimizer == "momentum" else 0.0)


DEFAULT = Regime("default")


def regimes() -> tuple[Regime, ...]:
    """The phase diagram's cells: the default (the paper's SGD recipe, lr 0.01 with momentum 0.9, batch 64, 4
    epochs, on a ReLU network) and one factor changed at a time. Plain SGD gets lr 0.1, the same effective step
    as momentum 0.9 at 0.01 (lr / (1 - momentum)); Adam gets the paper's lr 1e-3."""
    r = dataclasses.replace
    return (DEFAULT, r(DEFAULT, name="lr-x0.1", lr=0.001), r(DEFAULT, name="lr-x10", lr=0.1),
            r(DEFAULT, name="batch-16", batch_size=16), r(DEFAULT, name="batch-256", batch_size=256),
            r(DEFAULT, name="late-1-epoch", late_epochs=1), r(DEFAULT, name="tanh", activation="tanh"),
            r(DEFAULT, name="sgd", optimizer="sgd", lr=0.1), r(DEFAULT, name="adam", optimizer="adam", lr=0.001),
            r(DEFAULT, name="convex", model="logistic"))


@dataclass(frozen=True)
class RegimeStudy:
    """A frozen config: data sizes, the cells, seeds, forget-set sizes, the eps grid and the LDS design."""

    name: str
    profile: str
    n_train: int
    n_test: int
    regimes: tuple[Regime, ...]
    seeds: tuple[int, ...]
    set_sizes: tuple[int, ...]
    forget_class: int
    eps: tuple[float, ...]
    lds_regimes: tuple[str, ...]
    lds_atoms: int  # the LDS pool: this many atoms of lds_atom_size images
    lds_atom_size: int
    lds_subset_atoms: int  # each random forget subset: this many atoms
    lds_subsets: int
    dataset: str = "mnist"
    stabilise_regimes: tuple[str, ...] = ()  # truncated propagation measured against the replays in these
    truncations: tuple[int, ...] = (1, 2)  # propagate over the last k epochs only
    dampings: tuple[float, ...] = (0.01, 0.1, 1.0)  # (H + lambda I) d: the remedies' damping strengths
    singles_regimes: tuple[str, ...] = ()  # one sample at a time (singles_piece) in these regimes
    singles: int = 100  # ... this many single samples per seed

    @property
    def hash(self) -> str:
        config = {k: v for k, v in asdict(self).items()
                  if k not in ("seeds", "regimes", "lds_regimes", "stabilise_regimes", "truncations", "dampings",
                               "singles_regimes", "singles")}
        return config_hash(config, semantics=REGIME_SEMANTICS)

    def folder(self, root: Path | None = None) -> Path:
        return (root or results_root()) / self.name / f"{self.profile}-{self.hash}"

    def regime(self, name: str) -> Regime:
        """A regime by name: one of this study's cells, or else one of :func:`regimes` (an LDS or truncation may
        be asked of a regime whose cell is not run)."""
        for reg in (*self.regimes, *regimes()):
            if reg.name == name:
                return reg
        raise KeyError(f"unknown regime {name!r}; valid: {', '.join(r.name for r in regimes())}")


EPS_GRID = (1.0, 0.3, 0.1, 0.03, 0.01, 3e-3, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10, 1e-11, 1e-12)


def get_regime_study(profile: str = "full", *, seeds: Sequence[int] | None = None,
                     regimes_: Sequence[str] | None = None, lds_regimes: Sequence[str] | None = None,
                     stabilise_regimes: Sequence[str] | None = None,
                     singles_regimes: Sequence[str] | None = None) -> RegimeStudy:
    """The study at a profile (``smoke``: two cells on 300 images, a minute; ``full``: 2000 MNIST images, every
    cell, 3 seeds, eps from 1 to 1e-12, LDS over 50 subsets in the default regime, the smooth (tanh) one and the
    convex control).

    Raises:
        ValueError: unknown profile, regime or seeds (the message lists the valid values).
    """
    check_profile(profile)
    cells = regimes()
    if profile == "smoke":
        study = RegimeStudy(STUDY_NAME, "smoke", 300, 100, (cells[0], cells[-1]), (0,), (5, 20), 3,
                            (1.0, 0.1, 1e-2, 1e-4, 1e-6, 1e-8), ("default",), 20, 3, 4, 12,
                            stabilise_regimes=("default",), singles_regimes=("default",), singles=8)
    else:
        study = RegimeStudy(STUDY_NAME, "full", 2000, 500, cells, (0, 1, 2), (10, 100), 3, EPS_GRID,
                            ("default", "tanh", "convex"), 100, 5, 10, 50,
                            stabilise_regimes=("default", "lr-x10", "batch-16", "adam"), singles_regimes=("default",))
    if seeds is not None:
        seeds = tuple(int(s) for s in seeds)
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {seeds}")
        study = dataclasses.replace(study, seeds=seeds)
    known = {r.name: r for r in cells}
    for given in (regimes_, lds_regimes, stabilise_regimes, singles_regimes):
        bad = [n for n in (given or ()) if n not in known]
        if bad:
            raise ValueError(f"unknown regime(s) {bad}; valid: {', '.join(known)}")
    if regimes_ is not None:
        study = dataclasses.replace(study, regimes=tuple(known[n] for n in regimes_))
    if lds_regimes is not None:
        study = dataclasses.replace(study, lds_regimes=tuple(lds_regimes))
    if stabilise_regimes is not None:
        study = dataclasses.replace(study, stabilise_regimes=tuple(stabilise_regimes))
    if singles_regimes is not None:
        study = dataclasses.replace(study, singles_regimes=tuple(singles_regimes))
    return study


# ------------------------------------------------------------------------------------------------ data


def study_data(study: RegimeStudy) -> tuple[ArrayDataset, ArrayDataset]:
    """The training pool (``n_train`` images drawn once, seed 0, from MNIST's training split, ids 0..n-1) and
    the held-out images (``n_test`` from the test split), flattened and in float64."""
    train_split, test_split = load_dataset(study.dataset, "train"), load_dataset(study.dataset, "test")
    gen = torch.Generator().manual_seed(0)
    pick = torch.randperm(len(train_split), generator=gen)[: study.n_train]
    held = torch.randperm(len(test_split), generator=gen)[: study.n_test]

    def flat(ds: ArrayDataset, rows: torch.Tensor, name: str) -> ArrayDataset:
        return ArrayDataset(ds.x[rows].reshape(len(rows), -1).double(), ds.y[rows], torch.arange(len(rows)), name)

    return flat(train_split, pick, "pool"), flat(test_split, held, "held-out")


def forget_groups(study: RegimeStudy, pool: ArrayDataset, seed: int) -> dict[str, torch.Tensor]:
    """Disjoint groups that share one log: ``random-<n>`` per set size and ``class-<c>`` (every pool image of the
    class), each with ``control-<name>``, a random group of the same size that is not forgotten. Random groups
    are drawn (by ``seed``) from the other classes, so that no two groups overlap."""
    in_class = torch.nonzero(pool.y == study.forget_class).flatten()
    others = torch.nonzero(pool.y != study.forget_class).flatten()
    others = others[torch.randperm(len(others), generator=torch.Generator().manual_seed(1000 + seed))]
    sizes = [*study.set_sizes, len(in_class)]
    if 2 * sum(sizes) - len(in_class) > len(others):
        raise ValueError(f"the pool of {len(pool)} images is too small for disjoint groups of sizes {sizes}")
    groups, at = {}, 0
    for n in study.set_sizes:
        groups[f"random-{n}"] = others[at: at + n].sort().values
        at += n
    groups[f"class-{study.forget_class}"] = in_class
    for name in list(groups):
        n = len(groups[name])
        groups[f"control-{name}"] = others[at: at + n].sort().values
        at += n
    return groups


def forget_sets(groups: dict) -> list[str]:
    return [k for k in groups if not k.startswith("control-")]


# ---------------------------------------------------------------------------------------------- training


class TracedLog(DeltaLog):
    """A :class:`DeltaLog` that records every group's delta norm after each step (to find where one diverged)."""

    def end_step(self, optimizer) -> None:
        super().end_step(optimizer)
        if not hasattr(self, "trace"):
            self.trace = []
        self.trace.append(self.deltas.norm(dim=1).cpu())


def run_regime(reg: Regime, pool: ArrayDataset, *, seed: int, tracked: torch.Tensor, make_logs=None,
               forget: torch.Tensor | None = None, weight: float = 0.0, drop: bool = False) -> nn.Module:
    """Train ``reg`` from initialisation ``seed`` with batch order ``seed``: ``forget`` rows at loss weight
    ``weight`` (the mean still over the batch), or removed from their batches (``drop``), or, without ``forget``,
    ordinary training. Under a late horizon the ``tracked`` rows are left out of the first epochs."""
    model = reg.build(pool.x.shape[1], int(pool.y.max()) + 1, seed)
    logs = make_logs(model) if make_logs is not None else None
    opt = reg.optimizer_for(model.parameters())
    exclusion = ({} if forget is None else {"drop_ids": forget} if drop
                 else {"zero_weight_ids": forget, "forget_weight": weight})
    loader = pool.loader(reg.batch_size, seed=seed)
    early = reg.epochs - reg.late_epochs
    if reg.late_epochs:
        train(model, loader, opt, epochs=early, delta_log=logs, device="cpu", progress=False, drop_ids=tracked)
        early = reg.late_epochs
    train(model, loader, opt, epochs=early, delta_log=logs, device="cpu", progress=False, **exclusion)
    return model


def vec(model: nn.Module) -> torch.Tensor:
    return ParamLayout.of(model).vector(model).detach().clone()


def _logits(model: nn.Module, theta: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return assign(model, theta)(x)


def margins(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """The correct class's logit minus the log-sum-exp of the others (the datamodels' margin)."""
    correct = logits.gather(1, y[:, None]).squeeze(1)
    other = logits.scatter(1, y[:, None], float("-inf")).logsumexp(1)
    return correct - other


def recovered_from_geometry(r: float, c: float, alpha: float = 1.0) -> float:
    """The recovered fraction of subtracting ``alpha`` times a delta with norm ratio ``r`` and cosine ``c`` to
    the counterfactual direction: ``1 - sqrt(1 - 2 alpha r c + alpha^2 r^2)`` (the law of cosines).

    Example:
        >>> recovered_from_geometry(1.0, 1.0)  # the counterfactual direction, at its length
        1.0
        >>> round(recovered_from_geometry(2.0, 0.05), 3), round(recovered_from_geometry(2.0, 0.05, alpha=0.025), 5)
        (-1.191, 0.00125)
    """
    return 1.0 - math.sqrt(max(0.0, 1.0 - 2 * alpha * r * c + alpha**2 * r**2))


def geometry(delta: torch.Tensor, target: torch.Tensor) -> dict:
    """``c`` = cos(delta, target) and ``r`` = |delta| / |target|, where target = theta_T - theta_replay."""
    dn, tn = float(delta.norm()), float(target.norm())
    if not math.isfinite(dn) or dn == 0.0 or tn == 0.0:
        return {"c": float("nan"), "r": dn / tn if tn else float("nan")}
    return {"c": float(delta @ target) / (dn * tn), "r": dn / tn}


def divergence_step(trace: torch.Tensor, scale: float) -> int | None:
    """The first step (1-based) at which a delta norm trace is not finite or exceeds ``DIVERGED * scale``."""
    bad = ~torch.isfinite(trace) | (trace > DIVERGED * scale)
    return int(torch.nonzero(bad).flatten()[0]) + 1 if bool(bad.any()) else None


def agreement(g: torch.Tensor, d: torch.Tensor) -> dict:
    """cos and norm ratio of a finite difference ``g`` against the derivative ``d``, and whether they agree."""
    gn, dn = float(g.norm()), float(d.norm())
    cos = float(g @ d) / (gn * dn) if gn > 0 and dn > 0 and math.isfinite(gn * dn) else float("nan")
    ratio = gn / dn if dn > 0 else float("nan")
    ok = bool(cos >= AGREE_COS and AGREE_RATIO[0] <= ratio <= AGREE_RATIO[1])
    return {"cos": cos, "ratio": ratio, "agrees": ok}


def linear_radius(rows: list[dict]) -> float | None:
    """``eps*``: the largest grid eps such that g agrees with the derivative there and at every smaller grid eps
    (rows sorted by eps, each with ``eps`` and ``agrees``); ``None`` when even the smallest does not agree."""
    star = None
    for row in sorted(rows, key=lambda r: r["eps"]):
        if not row["agrees"]:
            break
        star = row["eps"]
    return star


# ------------------------------------------------------------------------------------------------ a cell


def cell_piece(study: RegimeStudy, reg: Regime, seed: int, pool: ArrayDataset, held: ArrayDataset,
               weights: Path) -> dict:
    """One (regime, seed): the original run with the three logs, the eps replays per forget set, and per delta
    at alpha = 1 the recovered fraction, KL, c and r (and the same for each set's control group)."""
    groups = forget_groups(study, pool, seed)
    tracked = torch.cat(list(groups.values()))
    adam = reg.optimizer == "adam"
    logs: dict[str, DeltaLog] = {}

    def make_logs(model):
        logs["exact"] = DeltaLog(model, groups)
        logs["propagated"] = TracedLog(model, groups, attribution="propagated", propagate_second_moment=adam)
        logs["derivative"] = TracedLog(model, groups, attribution="propagated", propagate_hessian="trained",
                                       propagate_second_moment=adam)
        return list(logs.values())

    theta0 = vec(reg.build(pool.x.shape[1], int(pool.y.max()) + 1, seed))
    model = run_regime(reg, pool, seed=seed, tracked=tracked, make_logs=make_logs)
    theta_t = vec(model)
    moved = float((theta_t - theta0).norm())
    probe = reg.build(pool.x.shape[1], int(pool.y.max()) + 1, seed)
    p_orig = F.softmax(_logits(probe, theta_t, held.x), 1)
    acc = float((p_orig.argmax(1) == held.y).double().mean())

    def replay(name: str, weight: float) -> torch.Tensor:
        def make():
            m = run_regime(reg, pool, seed=seed, tracked=tracked, forget=groups[name], weight=weight)
            return {"theta": vec(m)}
        return cached_tensors(weights / f"{reg.name}-seed{seed}-{name}-w{weight!r}.pt", make)["theta"]

    sets = {}
    for name in forget_sets(groups):
        one = replay(name, 1.0)
        zero = replay(name, 0.0)
        target = theta_t - zero
        p_zero = F.softmax(_logits(probe, zero, held.x), 1)
        deltas = {k: log.delta_vector([name]) for k, log in logs.items()}
        controls = {k: log.delta_vector([f"control-{name}"]) for k, log in logs.items()}
        fd_rows = []
        for eps in study.eps:
            w = 1.0 - eps
            actual = 1.0 - w  # the eps the float64 weight really differs by
            theta_w = zero if w == 0.0 else replay(name, w)
            g = (one - theta_w) / actual
            fd_rows.append({"eps": eps, "eps_actual": actual, "g_norm": float(g.norm()),
                            **agreement(g, deltas["derivative"]),
                            "propagated": agreement(g, deltas["propagated"])})
        per = {}
        for kind in DELTAS:
            row = {}
            for role, delta in (("set", deltas[kind]), ("control", controls[kind])):
                theta = theta_t - delta
                finite = bool(torch.isfinite(theta).all())
                geo = geometry(delta, target)
                kl = divergences(p_zero, F.softmax(_logits(probe, theta, held.x), 1))["kl"] if finite else None
                row[role] = {"recovered": recovered_fraction(theta, zero, theta_t) if finite else None,
                             "kl": kl, "norm": float(delta.norm()), **geo}
            if kind != "exact":
                trace = torch.stack([t[logs[kind].rows_of([name])[0]] for t in logs[kind].trace])
                row["diverged_at"] = divergence_step(trace, moved)
                row["trace"] = trace[:: max(1, len(trace) // 100)].tolist()
            per[kind] = row
        sets[name] = {"size": len(groups[name]), "distance": float(target.norm()),
                      "kl_original": divergences(p_zero, p_orig)["kl"], "fd": fd_rows,
                      "eps_star": linear_radius(fd_rows), "deltas": per,
                      "weight_one_vs_original": float((one - theta_t).norm() / max(float(target.norm()), 1e-300))}
    return {"regime": asdict(reg), "seed": seed, "steps": logs["exact"].steps, "moved": moved, "accuracy": acc,
            "hvp_seconds": {k: logs[k].hvp_seconds for k in ("propagated", "derivative")}, "sets": sets}


def exact_and_derivative(reg: Regime, pool: ArrayDataset, seed: int, groups: dict,
                         tracked: torch.Tensor) -> tuple[torch.Tensor, dict[str, DeltaLog]]:
    """The original run of ``reg`` with two logs over ``groups``: ``"exact"`` (the ledger) and ``"derivative"``
    (propagated with the trained run's Hessian; under Adam also the second moment's tangent). Returns the trained
    parameters and the two logs."""
    adam = reg.optimizer == "adam"
    logs: dict[str, DeltaLog] = {}

    def make_logs(model):
        logs["exact"] = DeltaLog(model, groups)
        logs["derivative"] = DeltaLog(model, groups, attribution="propagated", propagate_hessian="trained",
                                      propagate_second_moment=adam)
        return list(logs.values())

    model = run_regime(reg, pool, seed=seed, tracked=tracked, make_logs=make_logs)
    return vec(model), logs


# ----------------------------------------------------------------------------------- one sample at a time

SINGLES_SEMANTICS = 1  # bump when singles_piece measures differently: its pieces are then stale
SINGLE_DELTAS = ("exact", "derivative")


def single_ids(study: RegimeStudy, pool: ArrayDataset, seed: int) -> torch.Tensor:
    """The ``study.singles`` pool samples asked about one at a time in seed ``seed`` (sorted)."""
    gen = torch.Generator().manual_seed(7_000 + seed)
    return pool.ids[torch.randperm(len(pool), generator=gen)[: study.singles]].sort().values


def singles_piece(study: RegimeStudy, reg: Regime, seed: int, pool: ArrayDataset, held: ArrayDataset,
                  weights: Path) -> dict:
    """One sample at a time (the fidelity study's "random-1" has one sample per seed; this has ``study.singles``):
    the original run with a per-sample exact log and a per-sample derivative log (the trained run's Hessian) over
    the singles, and for each single its zero-weighted and its dropped replay. Per single and delta at alpha = 1:
    the recovered fraction, the held-out KL to each replay, ``c`` and ``r`` against each replay; and the original
    model's KL to each replay (doing nothing)."""
    ids = single_ids(study, pool, seed)
    groups = {int(i): ids[k: k + 1] for k, i in enumerate(ids)}
    theta_t, logs = exact_and_derivative(reg, pool, seed, groups, ids)
    probe = reg.build(pool.x.shape[1], int(pool.y.max()) + 1, seed)
    p_orig = F.softmax(_logits(probe, theta_t, held.x), 1)

    def replay(i: int, mode: str) -> torch.Tensor:
        def make():
            m = run_regime(reg, pool, seed=seed, tracked=ids, forget=torch.tensor([i]), weight=0.0,
                           drop=mode == "drop")
            return {"theta": vec(m)}
        return cached_tensors(weights / f"single-{reg.name}-seed{seed}-{i}-{mode}.pt", make)["theta"]

    rows = []
    for i in groups:
        refs = {mode: replay(i, mode) for mode in ("zero", "drop")}
        probs = {mode: F.softmax(_logits(probe, t, held.x), 1) for mode, t in refs.items()}
        row = {"id": i, "original": {m: {"kl": divergences(probs[m], p_orig)["kl"],
                                          "distance": float((theta_t - refs[m]).norm())} for m in refs}}
        for kind in SINGLE_DELTAS:
            delta = logs[kind].delta_vector([i])
            theta = theta_t - delta
            finite = bool(torch.isfinite(theta).all())
            row[kind] = {"norm": float(delta.norm())}
            for m, ref in refs.items():
                kl = divergences(probs[m], F.softmax(_logits(probe, theta, held.x), 1))["kl"] if finite else None
                row[kind][m] = {"recovered": recovered_fraction(theta, ref, theta_t) if finite else None, "kl": kl,
                                **geometry(delta, theta_t - ref)}
        rows.append(row)
    return {"regime": asdict(reg), "seed": seed, "singles_semantics": SINGLES_SEMANTICS, "n_singles": len(rows),
            "accuracy": float((p_orig.argmax(1) == held.y).double().mean()), "singles": rows}


def singles_summary(result: RegimeResult, regime: str = "default", reference: str = "drop") -> dict | None:
    """The singles of one regime pooled over its seeds (None where none is computed), against the ``reference``
    replay: per delta the recovered fraction at alpha = 1 (mean and 95% interval over the singles), the median
    ``c`` and ``r``, the log ratio of its held-out KL to the original model's (mean and 95% interval: below zero
    is closer to the replay than doing nothing), and how many singles it brought closer; ``n`` singles,
    ``seeds``."""
    from .metrics import mean_ci

    recs = [r for (name, _), r in sorted(result.singles.items()) if name == regime
            and r.get("singles_semantics") == SINGLES_SEMANTICS]
    if not recs:
        return None
    rows = [row for r in recs for row in r["singles"]]
    out = {"n": len(rows), "seeds": [r["seed"] for r in recs], "reference": reference,
           "original_kl": mean_ci([row["original"][reference]["kl"] for row in rows])}
    for kind in SINGLE_DELTAS:
        got = [row[kind][reference] for row in rows]
        ok = [(g, row["original"][reference]["kl"]) for g, row in zip(got, rows)
              if g["kl"] is not None and g["kl"] > 0 and row["original"][reference]["kl"] > 0]
        out[kind] = {
            "recovered": mean_ci([g["recovered"] for g in got if g["recovered"] is not None]),
            "c": float(np.median([g["c"] for g in got])), "r": float(np.median([g["r"] for g in got])),
            "log_kl_ratio": mean_ci([math.log(g["kl"] / o) for g, o in ok]),
            "closer": sum(g["kl"] < o for g, o in ok), "finite": len(ok)}
    return out


# ------------------------------------------------------------------------------------------ stabilising


def truncations(study: RegimeStudy, reg: Regime, per_epoch: int) -> dict[str, dict]:
    """The truncation variants: the derivative propagated over the last ``k`` epochs only (``propagate_after``;
    before them each group's share is the exact one), named ``str(k)``."""
    return {str(k): {"propagate_after": (reg.epochs - k) * per_epoch} for k in study.truncations
            if 0 <= k <= reg.epochs}


def remedies(study: RegimeStudy) -> dict[str, dict]:
    """The other stabilisations: the whole batch's Gauss–Newton matrix instead of its Hessian, and damping
    ``(H + lambda I) d`` for each lambda of ``dampings``."""
    out = {"gauss-newton": {"propagate_hessian": "gauss-newton"}}
    out.update({f"damping-{lam:g}": {"propagate_damping": lam} for lam in study.dampings})
    return out


def stabilised_piece(study: RegimeStudy, reg: Regime, seed: int, pool: ArrayDataset, held: ArrayDataset,
                     weights: Path, variants: dict[str, dict] | None = None) -> dict:
    """Stabilisation measured, not assumed: each variant of the derivative (``variants``: name -> DeltaLog
    settings over the trained run's Hessian; default: :func:`truncations`) subtracted at alpha = 1 and measured
    against the same zero-weighted replays as the cell (loaded from its cache, or trained again: the same
    initialisation and order give the same replay)."""
    groups = forget_groups(study, pool, seed)
    tracked = torch.cat(list(groups.values()))
    per_epoch = len(pool.loader(reg.batch_size, seed=seed))
    variants = truncations(study, reg, per_epoch) if variants is None else variants
    adam = reg.optimizer == "adam"
    logs: dict[str, DeltaLog] = {}

    def make_logs(model):
        for name, kw in variants.items():
            kw = {"propagate_hessian": "trained", **kw}
            logs[name] = TracedLog(model, groups, attribution="propagated", propagate_second_moment=adam, **kw)
        return list(logs.values())

    model = run_regime(reg, pool, seed=seed, tracked=tracked, make_logs=make_logs)
    theta_t = vec(model)
    theta0 = vec(reg.build(pool.x.shape[1], int(pool.y.max()) + 1, seed))
    moved = float((theta_t - theta0).norm())
    probe = reg.build(pool.x.shape[1], int(pool.y.max()) + 1, seed)
    sets = {}
    for name in forget_sets(groups):
        def make(name=name):
            return {"theta": vec(run_regime(reg, pool, seed=seed, tracked=tracked, forget=groups[name], weight=0.0))}

        zero = cached_tensors(weights / f"{reg.name}-seed{seed}-{name}-w0.0.pt", make)["theta"]
        p_zero = F.softmax(_logits(probe, zero, held.x), 1)
        rows = {}
        for k, log in logs.items():
            delta = log.delta_vector([name])
            theta = theta_t - delta
            finite = bool(torch.isfinite(theta).all())
            trace = torch.stack([t[log.rows_of([name])[0]] for t in log.trace])
            rows[k] = {"recovered": recovered_fraction(theta, zero, theta_t) if finite else None,
                       "kl": divergences(p_zero, F.softmax(_logits(probe, theta, held.x), 1))["kl"] if finite
                       else None, "norm": float(delta.norm()), **geometry(delta, theta_t - zero),
                       "diverged_at": divergence_step(trace, moved),
                       "propagated_steps": log.steps - log.propagate_after}
        sets[name] = rows
    return {"regime": asdict(reg), "seed": seed, "steps": next(iter(logs.values())).steps if logs else 0,
            "truncations": [int(k) for k in variants if k.isdigit()], "variants": list(variants), "sets": sets}


# ------------------------------------------------------------------------------------------------- LDS


def _ranks(a: np.ndarray) -> np.ndarray:
    """Ranks 0..n-1, ties sharing their average rank."""
    _, inverse, counts = np.unique(a, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    return ((ends - counts + ends - 1) / 2.0)[inverse]


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two vectors (average ranks for ties; NaN if either is constant).

    Example:
        >>> spearman(np.array([1.0, 2.0, 3.0]), np.array([10.0, 30.0, 20.0]))
        0.5
    """
    if np.ptp(a) == 0 or np.ptp(b) == 0:
        return float("nan")
    return float(np.corrcoef(_ranks(a), _ranks(b))[0, 1])


def lds_piece(study: RegimeStudy, reg: Regime, seed: int, pool: ArrayDataset, held: ArrayDataset,
              weights: Path) -> dict:
    """The linear datamodeling score of the exact and the derivative delta: ``lds_atoms`` atoms of the pool
    logged as groups, ``lds_subsets`` random subsets of ``lds_subset_atoms`` atoms removed by zero-weighted
    replays; per held-out image, Spearman over the subsets between the margin change predicted from the subset's
    delta through a Jacobian-vector product at theta_T and the replay's margin change. The propagated delta with
    the replay's Hessian is not additive over atoms (each group's Hessian leaves out its own rows), so it has no
    LDS here."""
    gen = torch.Generator().manual_seed(2000 + seed)
    perm = torch.randperm(len(pool), generator=gen)[: study.lds_atoms * study.lds_atom_size]
    atoms = {f"atom{k}": perm[k * study.lds_atom_size:(k + 1) * study.lds_atom_size].sort().values
             for k in range(study.lds_atoms)}
    tracked = perm
    theta_t, logs = exact_and_derivative(reg, pool, seed, atoms, tracked)
    probe = reg.build(pool.x.shape[1], int(pool.y.max()) + 1, seed)
    layout = ParamLayout.of(probe)
    base = margins(_logits(probe, theta_t, held.x), held.y)

    def margin_of(theta_flat):
        params = layout.unflatten(theta_flat)
        return margins(torch.func.functional_call(probe, params, (held.x,)), held.y)

    names = list(atoms)
    predicted = {k: [] for k in logs}
    actual = []
    sub_gen = torch.Generator().manual_seed(3000 + seed)
    for j in range(study.lds_subsets):
        pick = sorted(torch.randperm(len(names), generator=sub_gen)[: study.lds_subset_atoms].tolist())
        chosen = [names[i] for i in pick]
        ids = torch.cat([atoms[a] for a in chosen])

        def make(ids=ids):
            return {"theta": vec(run_regime(reg, pool, seed=seed, tracked=tracked, forget=ids, weight=0.0))}

        theta_r = cached_tensors(weights / f"lds-{reg.name}-seed{seed}-subset{j}.pt", make)["theta"]
        actual.append((margins(_logits(probe, theta_r, held.x), held.y) - base).numpy())
        for k, log in logs.items():
            delta = log.delta_vector(chosen)
            _, jvp = torch.func.jvp(margin_of, (theta_t,), (-delta,))
            predicted[k].append(jvp.detach().numpy())
    actual_m = np.stack(actual)  # [subsets, held-out]
    out = {"regime": asdict(reg), "seed": seed, "subsets": study.lds_subsets,
           "subset_size": study.lds_subset_atoms * study.lds_atom_size}
    for k, rows in predicted.items():
        pred = np.stack(rows)
        per_example = [spearman(pred[:, i], actual_m[:, i]) for i in range(pred.shape[1])]
        out[k] = {"lds": float(np.nanmean(per_example)), "examples": int(np.isfinite(per_example).sum()),
                  "pearson_pooled": float(np.corrcoef(pred.ravel(), actual_m.ravel())[0, 1])}
    return out


# -------------------------------------------------------------------------------------------- the study


@dataclass
class RegimeResult:
    study: RegimeStudy
    folder: Path
    cells: dict  # (regime, seed) -> cell record
    lds: dict  # (regime, seed) -> LDS record
    stable: dict = dataclasses.field(default_factory=dict)  # (regime, seed) -> truncated-propagation record
    remedy: dict = dataclasses.field(default_factory=dict)  # (regime, seed) -> Gauss-Newton and damping record
    singles: dict = dataclasses.field(default_factory=dict)  # (regime, seed) -> one-sample-at-a-time record


def run_study(profile: str = "full", *, seeds: Sequence[int] | None = None, regimes_: Sequence[str] | None = None,
              lds_regimes: Sequence[str] | None = None, stabilise_regimes: Sequence[str] | None = None,
              singles_regimes: Sequence[str] | None = None, results_root: Path | None = None,
              progress: bool = True) -> RegimeResult:
    """Run (or load) every cell, LDS, truncation and single-sample piece, one at a time, each cached as soon as it
    is finished."""
    study = get_regime_study(profile, seeds=seeds, regimes_=regimes_, lds_regimes=lds_regimes,
                             stabilise_regimes=stabilise_regimes, singles_regimes=singles_regimes)
    folder = study.folder(results_root)
    whole = get_regime_study(profile)  # the folder's config names every seed and regime, whatever this run computes
    atomic_write_json(folder / "config.json", {"study": asdict(whole), "hash": whole.hash})
    pool, held = study_data(study)
    cache = PieceCache(folder, {"provenance": provenance(torch.device("cpu"), semantics=REGIME_SEMANTICS)})
    weights = folder / "weights"
    remedy_piece = functools.partial(stabilised_piece, variants=remedies(study))
    makers = {  # piece kind -> (its progress line, the regimes it covers, how one piece is made)
        "cell": ("regime", [r.name for r in study.regimes], cell_piece),
        "lds": ("LDS", study.lds_regimes, lds_piece),
        "stable": ("truncated propagation", study.stabilise_regimes, stabilised_piece),
        "remedy": ("remedies", study.stabilise_regimes, remedy_piece),
        "singles": ("single samples", study.singles_regimes, singles_piece),
    }
    found = {kind: {} for kind in makers}
    for seed in study.seeds:
        for kind, (label, names, make) in makers.items():
            for name in names:
                if progress:
                    print(f"{label} {name} seed {seed}", flush=True)
                reg = study.regime(name)
                found[kind][(name, seed)] = cache.piece(
                    f"{kind}-{name}-seed{seed}",
                    lambda make=make, reg=reg, seed=seed: make(study, reg, seed, pool, held, weights))
    return RegimeResult(study, folder, cells=found["cell"], lds=found["lds"], stable=found["stable"],
                        remedy=found["remedy"], singles=found["singles"])


def load_study(profile: str = "full", *, results_root: Path | None = None) -> RegimeResult:
    """The committed pieces of the study at ``profile`` (nothing is computed)."""
    import json

    study = get_regime_study(profile)
    folder = study.folder(results_root)
    kinds = {"cell": {}, "lds": {}, "stable": {}, "remedy": {}, "singles": {}}
    for path in sorted(folder.glob("*.json")):
        if path.stem == "config":
            continue
        rec = json.loads(path.read_text())
        kinds[path.stem.split("-", 1)[0]][(rec["regime"]["name"], int(rec["seed"]))] = rec
    return RegimeResult(study, folder, kinds["cell"], kinds["lds"], kinds["stable"], kinds["remedy"],
                        kinds["singles"])


# ------------------------------------------------------------------------------------------- command line


def _cli_arguments(p) -> None:
    p.add_argument("--regimes", nargs="+", default=None, help="a subset of the cells: " +
                   " ".join(r.name for r in regimes()))
    p.add_argument("--lds", nargs="*", default=None, help="regimes to measure the LDS in (default: the profile's)")
    p.add_argument("--stabilise", nargs="*", default=None,
                   help="regimes to measure truncated propagation in (default: the profile's)")
    p.add_argument("--singles", nargs="*", default=None,
                   help="regimes to measure single samples, one at a time, in (default: the profile's)")


def _cli_check(args) -> None:
    get_regime_study(args.profile, seeds=args.seeds, regimes_=args.regimes, lds_regimes=args.lds,
                     stabilise_regimes=args.stabilise, singles_regimes=args.singles)


def _cli_run(args) -> int:
    result = run_study(args.profile, seeds=args.seeds, regimes_=args.regimes, lds_regimes=args.lds,
                       stabilise_regimes=args.stabilise, singles_regimes=args.singles, progress=not args.quiet)
    for (name, seed), rec in result.cells.items():
        for set_name, s in rec["sets"].items():
            d = s["deltas"]
            print(f"{name:12s} seed {seed} {set_name:10s} eps* {s['eps_star']}  recovered a=1: exact "
                  f"{d['exact']['set']['recovered']}, propagated {d['propagated']['set']['recovered']}, "
                  f"derivative {d['derivative']['set']['recovered']}")
    for (name, seed), rec in result.lds.items():
        print(f"LDS {name} seed {seed}: exact {rec['exact']['lds']:.3f}, derivative {rec['derivative']['lds']:.3f}")
    return 0


COMMAND = cli.Command("regime", "the linear regime of removal: finite-difference derivatives, eps*, the phase "
                      "diagram and the LDS", _cli_arguments, _cli_run, _cli_check)
