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
data (held out, never trained on). The oracle alpha (closest to the dropped replay) is reported beside it.

Results go to ``results/<study>/<profile>-<hash>/<setting>/<optimizer>/seed<k>/<piece>.json``, one file per
finished piece (the original model, each forget set, each floor), written atomically; trained weights are
cached in a git-ignored ``weights/`` folder beside them, so an interrupted study resumes where it stopped.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from amnesiac.data import ArrayDataset, class_ids
from amnesiac.deltalog import DeltaLog
from amnesiac.grads import ParamLayout
from amnesiac.training import Recipe, pick_reproducible_device, predict, train
from amnesiac.unlearning import Request, unlearn

from . import cli
from .datasets import graves_mnist, load_dataset
from .metrics import argmin_finite, mean_ci
from .models import build_model
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
SETTINGS = ("full", "graves")
REFERENCES = ("zero", "drop")

# The three optimizers of the study: the seed's Adam, SGD with momentum and weight decay, and AdamW.
OPTIMIZER_RECIPES = {
    "adam": Recipe(optimizer="adam", lr=1e-3, batch_size=64, epochs=4),
    "sgd": Recipe(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=4),
    "adamw": Recipe(optimizer="adamw", lr=1e-3, weight_decay=1e-2, batch_size=64, epochs=4),
}


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
        study = FidelityStudy(STUDY_NAME, "smoke", ("adam", "sgd"), (0,), (1, 10, 40), 3, 10, 3, 10, ("adam",),
                              (0.1, 0.3, 1.0), 200, 1500, 500, 300, 1)
    else:
        study = FidelityStudy(STUDY_NAME, "full", ("adam", "sgd", "adamw"), (0, 1, 2), (1, 10, 100, 1000), 3, 100,
                              3, 100, ("adam",), FULL_ALPHAS, 5000, None, None, 2000, 4)
    study = restrict(study, seeds=seeds, optimizers=optimizers, valid_optimizers=tuple(OPTIMIZER_RECIPES))
    if optimizers is not None:
        study = dataclasses.replace(study, graves_optimizers=tuple(o for o in study.graves_optimizers
                                                                   if o in study.optimizers))
    return study


# --------------------------------------------------------------------------------------- forget sets, atoms


@dataclass(frozen=True)
class ForgetSet:
    """A named forget set with its control: ``family`` names the retrain floor it is compared with."""

    name: str
    ids: torch.Tensor
    control: torch.Tensor  # a random group of the same size that is NOT forgotten
    family: str
    kind: str  # "random", "class" or "sequential"
    requests: int = 1


def atoms(sets: Mapping[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """The cells of the partition that (possibly overlapping) sets induce, and each set's cells.

    Two samples share a cell when they belong to exactly the same sets; samples in no set are in no cell.
    A set is then the disjoint union of its cells, so with one delta-log group per cell the delta of any set is
    an exact sum of group deltas.

    Example:
        >>> cells, members = atoms({"a": torch.tensor([1, 2, 3]), "b": torch.tensor([3, 4])})
        >>> {k: v.tolist() for k, v in cells.items()}, members
        ({'atom0': [1, 2], 'atom1': [3], 'atom2': [4]}, {'a': ['atom0', 'atom1'], 'b': ['atom1', 'atom2']})
    """
    names = list(sets)
    if not names:
        raise ValueError("no sets given")
    everything = torch.unique(torch.cat([torch.as_tensor(v, dtype=torch.long).reshape(-1) for v in sets.values()]))
    signature = torch.zeros(len(everything), len(names), dtype=torch.bool)
    for j, n in enumerate(names):
        signature[:, j] = torch.isin(everything, torch.as_tensor(sets[n], dtype=torch.long))
    keys, inverse = torch.unique(signature, dim=0, return_inverse=True)
    first = torch.full((len(keys),), len(everything), dtype=torch.long)
    first.scatter_reduce_(0, inverse, torch.arange(len(everything)), reduce="amin")
    order = torch.argsort(first)  # cells numbered by their smallest sample id: stable across runs
    cells, members = {}, {n: [] for n in names}
    for k, cell in enumerate(order.tolist()):
        cells[f"atom{k}"] = everything[inverse == cell]
        for j, n in enumerate(names):
            if bool(keys[cell, j]):
                members[n].append(f"atom{k}")
    return cells, members


@dataclass
class Setting:
    """One training pool with its forget sets, the validation split and the test set."""

    name: str
    pool: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    sets: dict[str, ForgetSet]
    floors: dict[str, str]  # family -> the set whose dropped replay the floor is compared with


def _sample(ids: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    if n > len(ids):
        raise ValueError(f"asked for {n} samples from a pool of {len(ids)}")
    return ids[torch.randperm(len(ids), generator=gen)[:n]]


def make_setting(study: FidelityStudy, setting: str, seed: int) -> Setting:
    """Load the data and draw the forget sets of one setting for one seed (deterministic in the seed)."""
    if setting not in SETTINGS:
        raise ValueError(f"unknown setting {setting!r}; valid: {', '.join(SETTINGS)}")
    train_set, test_set = load_dataset(study.dataset, "train"), load_dataset(study.dataset, "test")
    gen = torch.Generator().manual_seed(30_011 + seed)
    if study.train_subset is not None:
        train_set = train_set.subset(torch.sort(_sample(train_set.ids, study.train_subset, gen)).values)
    if study.test_subset is not None:
        test_set = test_set.subset(torch.sort(_sample(test_set.ids, study.test_subset, gen)).values)
    val_ids = torch.sort(_sample(train_set.ids, study.val_size, gen)).values
    val, pool = train_set.subset(val_ids, name="validation"), train_set.without(val_ids, name="pool")
    c = study.forget_class
    sets: dict[str, ForgetSet] = {}
    if setting == "graves":
        pool = graves_mnist(pool, forget_class=c, keep=study.graves_keep)
        threes = class_ids(pool, c)
        others = pool.ids[pool.y != c]
        sets[f"graves-class-{c}"] = ForgetSet(f"graves-class-{c}", threes, _sample(others, len(threes), gen),
                                              "graves", "class")
        return Setting(setting, pool, val, test_set, sets, {"graves": f"graves-class-{c}"})
    perm = pool.ids[torch.randperm(len(pool), generator=gen)]
    n_rand, n_req = max(study.sizes), study.request_size
    need = n_rand + (study.n_requests - 1) * n_req
    if n_req not in study.sizes:
        raise ValueError(f"request_size {n_req} must be one of the random set sizes {study.sizes}")
    forgotten, rest = perm[:need], perm[need:]
    controls = rest[:n_rand]  # nested controls, disjoint from every random and sequential set
    for n in sorted(study.sizes):
        sets[f"random-{n}"] = ForgetSet(f"random-{n}", forgotten[:n], controls[:n], "random", "random")
    requests = [forgotten[:n_req]] + [forgotten[n_rand + j * n_req: n_rand + (j + 1) * n_req]
                                      for j in range(study.n_requests - 1)]
    for j in range(2, study.n_requests + 1):
        union = torch.cat(requests[:j])
        sets[f"requests-{j}"] = ForgetSet(f"requests-{j}", union, rest[n_rand: n_rand + len(union)], "random",
                                          "sequential", requests=j)
    threes = class_ids(pool, c)
    others = pool.ids[pool.y != c]
    sets[f"class-{c}"] = ForgetSet(f"class-{c}", threes, _sample(others, len(threes), gen), "class", "class")
    return Setting(setting, pool, val, test_set, sets, {"random": f"random-{n_rand}", "class": f"class-{c}"})


def setting_atoms(setting: Setting) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Atoms of every forget set and every control of a setting (controls are named ``<set>/control``)."""
    named = {}
    for s in setting.sets.values():
        named[s.name] = s.ids
        named[s.name + "/control"] = s.control
    return atoms(named)


# ------------------------------------------------------------------------------------------------ measures


def divergences(p_ref: torch.Tensor, p_model: torch.Tensor) -> dict[str, float]:
    """Mean KL(ref || model) and Jensen-Shannon divergence (nats) of softmax rows [N, C], and label agreement.

    Example:
        >>> p = torch.tensor([[0.5, 0.5], [0.9, 0.1]], dtype=torch.float64)
        >>> divergences(p, p)
        {'kl': 0.0, 'js': 0.0, 'agreement': 1.0}
    """
    a, b = p_ref.double(), p_model.double()
    la, lb = a.clamp_min(1e-300).log(), b.clamp_min(1e-300).log()
    m = 0.5 * (a + b)
    lm = m.clamp_min(1e-300).log()
    kl = (a * (la - lb)).sum(1)
    js = 0.5 * ((a * (la - lm)).sum(1) + (b * (lb - lm)).sum(1))
    agree = (a.argmax(1) == b.argmax(1)).double()
    return {"kl": float(kl.mean()), "js": float(js.mean()), "agreement": float(agree.mean())}


def recovered_fraction(theta_m: torch.Tensor, theta_ref: torch.Tensor, theta_orig: torch.Tensor) -> float:
    """1 - ||theta_m - theta_ref|| / ||theta_orig - theta_ref||: 1 = reached the reference, 0 = no closer than
    the original, negative = farther than the original (NaN if the original already equals the reference).

    Example:
        >>> recovered_fraction(torch.tensor([1.0]), torch.tensor([0.0]), torch.tensor([4.0]))
        0.75
    """
    base = float((theta_orig.double() - theta_ref.double()).norm())
    if base == 0.0:
        return float("nan")
    return 1.0 - float((theta_m.double() - theta_ref.double()).norm()) / base


def loss_parity_alpha(alphas: Sequence[float], forget_loss: Sequence[float], val_loss: Sequence[float]) -> dict:
    """The oracle-free rule: the smallest alpha whose forget-set mean loss reaches the held-out (validation)
    mean loss of the same classes, evaluated under the unlearned model at that alpha.

    A model that never saw the forget set has no reason to fit it better than held-out data of its classes;
    the original fits it better (that is what membership inference exploits). Returns ``alpha`` (the largest
    alpha of the grid, with ``reached=False``, if parity is never reached).

    Example:
        >>> loss_parity_alpha([0.1, 0.3, 1.0], [0.1, 0.5, 2.0], [0.4, 0.45, 1.0])
        {'alpha': 0.3, 'reached': True}
    """
    order = np.argsort(alphas)
    for i in order:
        if forget_loss[i] >= val_loss[i]:
            return {"alpha": float(alphas[i]), "reached": True}
    return {"alpha": float(alphas[order[-1]]), "reached": False}


class _Evaluator:
    """Predicts every candidate model once on [test; forget; retain subset; validation] and measures it."""

    def __init__(self, setting: Setting, fset: ForgetSet, theta_orig: torch.Tensor, refs: dict[str, torch.Tensor],
                 model: torch.nn.Module, layout: ParamLayout, *, eval_retain: int, seed: int, forget_class: int):
        self.setting, self.fset, self.model, self.layout = setting, fset, model, layout
        pool = setting.pool
        forget = pool.subset(fset.ids)
        retain_ids = pool.ids[~torch.isin(pool.ids, fset.ids)]
        gen = torch.Generator().manual_seed(40_009 + seed)
        retain = pool.subset(retain_ids[torch.randperm(len(retain_ids), generator=gen)[:eval_retain]])
        parts = [setting.test, forget, retain, setting.val]
        self.x = torch.cat([p.x for p in parts])
        self.y = torch.cat([p.y for p in parts])
        cuts = np.cumsum([0] + [len(p) for p in parts])
        self.slices = {k: slice(int(cuts[i]), int(cuts[i + 1])) for i, k in enumerate(("test", "forget", "retain",
                                                                                        "val"))}
        # class-matched validation loss: each class weighted by its share of the forget set
        counts = torch.bincount(forget.y, minlength=int(self.y.max()) + 1).double()
        self.class_weights = counts / counts.sum()
        self.val_y = setting.val.y
        self.test_class_mask = setting.test.y == forget_class if fset.kind == "class" else None
        self.theta_orig = theta_orig
        self.refs = refs
        self.ref_probs = {k: self._probs(v)[self.slices["test"]] for k, v in refs.items()}

    def _logits(self, theta: torch.Tensor) -> torch.Tensor:
        _assign(self.model, theta)
        return predict(self.model, self.x)

    def _probs(self, theta: torch.Tensor) -> torch.Tensor:
        return F.softmax(self._logits(theta).double(), 1)

    def measure(self, theta: torch.Tensor, logits: torch.Tensor | None = None) -> dict:
        """Every measure of the model with parameters ``theta`` (``logits``: its outputs on :attr:`x`, when the
        caller already computed them)."""
        logits = (self._logits(theta) if logits is None else logits).double()
        losses = F.cross_entropy(logits, self.y, reduction="none")
        pred = logits.argmax(1)
        s = self.slices
        out = {f"acc_{k}": float((pred[s[k]] == self.y[s[k]]).double().mean()) for k in ("test", "forget", "retain")}
        if self.test_class_mask is not None:
            test_pred, test_y = pred[s["test"]], self.y[s["test"]]
            m = self.test_class_mask
            out["acc_test_class"] = float((test_pred[m] == test_y[m]).double().mean())
            out["acc_test_rest"] = float((test_pred[~m] == test_y[~m]).double().mean())
        out["loss_forget"] = float(losses[s["forget"]].mean())
        val_losses = losses[s["val"]]
        per_class = torch.zeros_like(self.class_weights)
        present = torch.bincount(self.val_y, minlength=len(per_class)) > 0
        per_class.index_add_(0, self.val_y, val_losses)
        per_class[present] /= torch.bincount(self.val_y, minlength=len(per_class))[present].double()
        w = self.class_weights * present
        out["loss_val_matched"] = float((per_class * w).sum() / w.sum()) if float(w.sum()) > 0 else float("nan")
        p = F.softmax(logits[s["test"]], 1)
        for name, theta_ref in self.refs.items():
            d = divergences(self.ref_probs[name], p)
            d["dist"] = float((theta.double() - theta_ref.double()).norm())
            d["recovered"] = recovered_fraction(theta, theta_ref, self.theta_orig)
            out[name] = d
        return out


# -------------------------------------------------------------------------------------------------- runner


@dataclass
class _Combo:
    study: FidelityStudy
    setting: Setting
    optimizer: str
    seed: int
    weights: Path
    device: torch.device
    progress: bool

    @property
    def recipe(self) -> Recipe:
        return self.study.recipe(self.optimizer)

    def fresh_model(self, init_seed: int) -> torch.nn.Module:
        torch.manual_seed(init_seed)
        return build_model(self.study.model, int(self.setting.pool.x.shape[1]), int(self.setting.test.y.max()) + 1)

    def train(self, *, init_seed: int, order_seed: int, data: ArrayDataset, make_log=None, desc: str,
              **exclusion) -> tuple[torch.nn.Module, DeltaLog | None, float]:
        """Train a fresh model (initialised from ``init_seed``, batches ordered by ``order_seed``) on ``data``."""
        model = self.fresh_model(init_seed)
        log = make_log(model) if make_log is not None else None
        opt = self.recipe.make_optimizer(model.parameters())
        t0 = time.perf_counter()
        train(model, data.loader(self.recipe.batch_size, seed=order_seed), opt, epochs=self.recipe.epochs,
              delta_log=log, device=self.device, progress=self.progress, desc=desc, **exclusion)
        return model, log, time.perf_counter() - t0


def _assign(model: torch.nn.Module, theta: torch.Tensor) -> torch.nn.Module:
    """Write a flat parameter vector (layout: :class:`ParamLayout`) into ``model`` in place; returns it."""
    layout = ParamLayout.of(model)
    with torch.no_grad():
        for q, v in zip(layout.params(model), layout.unflatten(theta).values()):
            q.copy_(v.to(q.device, q.dtype))
    return model


def _vector(model: torch.nn.Module) -> torch.Tensor:
    return ParamLayout.of(model).vector(model).detach().cpu().clone()


def fingerprint(theta: torch.Tensor) -> str:
    """A short hash of a parameter vector's exact bytes: the pieces of one (setting, optimizer, seed) must all
    come from the same original model (a retrained original on another kind of CPU differs in its last bits,
    and training amplifies that)."""
    return hashlib.sha256(theta.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def expected_pieces(study: FidelityStudy, setting: str) -> list[str]:
    """The piece names a finished (setting, optimizer, seed) holds (determinism excepted)."""
    c = study.forget_class
    if setting == "graves":
        return [f"set-graves-class-{c}", "floor-graves"]
    return ([f"set-random-{n}" for n in sorted(study.sizes)]
            + [f"set-requests-{j}" for j in range(2, study.n_requests + 1)]
            + [f"set-class-{c}", "floor-random", "floor-class"])


def _original(c: _Combo) -> dict:
    """Train (or load) the original model with the atoms' delta log; returns theta_T and the atom deltas."""
    cells, members = setting_atoms(c.setting)

    def make():
        model, log, t = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool,
                                make_log=lambda m: DeltaLog(m, cells), desc=f"{c.optimizer} seed {c.seed}: original")
        log.finalize()
        return {"theta": _vector(model), "deltas": log.deltas.cpu().clone(),
                "names": torch.tensor([int(n[4:]) for n in log.group_names]), "seconds": torch.tensor(t),
                "log_bytes": torch.tensor(log.nbytes)}

    state = cached_tensors(c.weights / "original.pt", make)
    state["members"] = members
    state["index"] = {f"atom{int(k)}": i for i, k in enumerate(state["names"].tolist())}
    return state


def set_delta(state: dict, set_name: str) -> torch.Tensor:
    """The exact delta of a forget set: the sum of its atoms' deltas."""
    rows = [state["index"][a] for a in state["members"][set_name]]
    return state["deltas"][rows].double().sum(0)


def _replay(c: _Combo, fset: ForgetSet, mode: str) -> torch.Tensor:
    kw = {"zero_weight_ids": fset.ids} if mode == "zero" else {"drop_ids": fset.ids}

    def make():
        model, _, t = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool,
                              desc=f"{c.optimizer} seed {c.seed}: {mode} replay without {fset.name}", **kw)
        return {"theta": _vector(model), "seconds": torch.tensor(t)}

    return cached_tensors(c.weights / f"{fset.name}.{mode}.pt", make)


def _evaluator(c: _Combo, fset: ForgetSet, theta: torch.Tensor, refs: dict) -> _Evaluator:
    model = c.fresh_model(0).to(c.device)
    return _Evaluator(c.setting, fset, theta, {k: v["theta"].double() for k, v in refs.items()}, model,
                      ParamLayout.of(model), eval_retain=c.study.eval_retain, seed=c.seed,
                      forget_class=c.study.forget_class)


def _evaluate_set(c: _Combo, state: dict, fset: ForgetSet) -> dict:
    refs = {m: _replay(c, fset, m) for m in REFERENCES}
    theta = state["theta"].double()
    delta = set_delta(state, fset.name)
    control = set_delta(state, fset.name + "/control")
    gen = torch.Generator().manual_seed(50_021 + c.seed)
    direction = torch.randn(len(delta), generator=gen, dtype=torch.float64)
    direction *= delta.norm() / direction.norm()
    ev = _evaluator(c, fset, theta, refs)
    t0 = time.perf_counter()
    rows = {"amnesiac": [], "control_group": [], "random_direction": []}
    for a in c.study.alphas:
        for name, vec in (("amnesiac", delta), ("control_group", control), ("random_direction", direction)):
            rows[name].append(dict(alpha=a, **ev.measure(theta - a * vec)))
    # the repair-only control: one epoch of fine-tuning on the retain set, no subtraction at all
    t1 = time.perf_counter()
    start = _assign(c.fresh_model(0), theta)
    retain = c.setting.pool.without(fset.ids)
    tuned = unlearn("finetune", start, Request(retain=retain, recipe=c.recipe, seed=c.seed, device=str(c.device)),
                    epochs=1, progress=c.progress)
    finetune = dict(epochs=1, seconds=time.perf_counter() - t1, **ev.measure(_vector(tuned).double()))
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


def _floor(c: _Combo, family: str, set_name: str) -> dict:
    fset = c.setting.sets[set_name]
    other = c.seed + 1000

    def make():
        model, _, t = c.train(init_seed=other, order_seed=other, data=c.setting.pool.without(fset.ids),
                              desc=f"{c.optimizer} seed {c.seed}: floor (retrain, seed {other}) without {set_name}")
        return {"theta": _vector(model), "seconds": torch.tensor(t)}

    floor = cached_tensors(c.weights / f"floor-{family}.pt", make)
    refs = {m: _replay(c, fset, m) for m in REFERENCES}
    ev = _evaluator(c, fset, _original(c)["theta"].double(), refs)
    return {"family": family, "set": set_name, "floor_seed": other, "seconds": float(floor["seconds"]),
            "floor": ev.measure(floor["theta"].double()), "original_fingerprint": fingerprint(_original(c)["theta"])}


def _determinism(c: _Combo, state: dict) -> dict:
    model, _, t = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool, zero_weight_ids=[],
                          desc=f"{c.optimizer} seed {c.seed}: replay with an empty forget set")
    return {"dist_to_original": float((_vector(model).double() - state["theta"].double()).norm()),
            "identical": bool(torch.equal(_vector(model), state["theta"])), "seconds": t}


def run_combo(study: FidelityStudy, setting_name: str, optimizer: str, seed: int, *, device: str = "cpu",
              progress: bool = True, results_root: Path | None = None) -> dict[str, dict]:
    """Compute (or load) every piece of one (setting, optimizer, seed); returns piece name -> record."""
    dev = pick_reproducible_device(device)  # replays mean nothing unless training is reproducible
    folder = study.folder(results_root) / setting_name / optimizer / f"seed{seed}"
    weights = study.folder(results_root) / "weights" / setting_name / optimizer / f"seed{seed}"
    setting = make_setting(study, setting_name, seed)
    c = _Combo(study, setting, optimizer, seed, weights, dev, progress)
    cache = PieceCache(folder, stamp=dict(provenance=provenance(dev, semantics=FIDELITY_SEMANTICS),
                                          optimizer=optimizer, seed=seed, setting=setting_name))
    piece, out = cache.piece, cache.records

    state = None

    def need_state():
        nonlocal state
        if state is None:
            state = _original(c)
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
    atomic_write_json(folder / "config.json", {"config": study.to_dict(), "hash": study.hash,
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


def _row_at(record: dict, method: str, alpha: float) -> dict:
    for r in record["methods"][method]:
        if math.isclose(r["alpha"], alpha):
            return r
    raise KeyError(f"alpha {alpha} is not on the grid {record['alphas']}")


def oracle_alpha(record: dict, reference: str = "drop", metric: str = "dist") -> float:
    """The grid alpha whose subtraction lands closest to ``reference`` (it uses the answer: a bound, not a rule)."""
    rows = record["methods"]["amnesiac"]
    return float(rows[argmin_finite([r[reference][metric] for r in rows])]["alpha"])


def set_summary(record: dict, floor: dict, reference: str = "drop") -> dict:
    """One seed's headline numbers for one forget set: at alpha = 1, at the rule's alpha and at the oracle's."""
    floor_dist = floor["floor"][reference]["dist"]
    out = {"set": record["set"], "size": record["size"], "kind": record["kind"], "floor_dist": floor_dist,
           "floor_kl": floor["floor"][reference]["kl"], "original_dist": record["original"][reference]["dist"],
           "original_kl": record["original"][reference]["kl"],
           "zero_to_drop_dist": record["references"]["zero"]["drop"]["dist"],
           "rule_alpha": record["rule"]["alpha"], "rule_reached": record["rule"]["reached"],
           "oracle_alpha": oracle_alpha(record, reference)}
    for tag, a in (("a1", 1.0), ("rule", out["rule_alpha"]), ("oracle", out["oracle_alpha"])):
        r = _row_at(record, "amnesiac", a)
        ctrl, rnd = _row_at(record, "control_group", a), _row_at(record, "random_direction", a)
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
            r = _row_at(result.records[(setting, optimizer, s)][f"set-{set_name}"], method, a)
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
