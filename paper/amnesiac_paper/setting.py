"""The shared setting of the counterfactual studies (fidelity, comparison, propagation, membership): one base
configuration (:class:`amnesiac_paper.fidelity.FidelityStudy`, the optimizers' recipes), the forget sets and their
atoms, the references (zero-weighted and dropped replays of the original run), and the evaluator that measures a
candidate model against them.

Every study trains the same original model per (setting, optimizer, seed) (:func:`original`, cached in the study's
``weights/`` folder), asks for the exact delta of a forget set (:func:`set_delta`, a sum of atom deltas), trains or
loads the replays (:func:`replay`) and measures candidates with one :class:`Evaluator`. The names here are the
studies' public interface; what each study does with them lives in its own module.

Forget sets are named ``random-<n>``, ``requests-<j>``, ``class-<c>`` (:func:`class_set`) and ``graves-class-<c>``:
these names are the results files' piece names. A ledger's group for a whole class is
:func:`amnesiac.data.class_group` (``class3``), a different name on purpose: the masked logs' mask seeds derive from
group names, so renaming that group would change every committed masked result.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from amnesiac.data import ArrayDataset, class_ids
from amnesiac.deltalog import DeltaLog
from amnesiac.grads import ParamLayout
from amnesiac.training import Recipe, predict, train

from .datasets import graves_mnist, load_dataset
from .models import build_model
from .store import cached_tensors

if TYPE_CHECKING:
    from .fidelity import FidelityStudy


def class_set(c: int) -> str:
    """The forget set of a whole class ``c`` (every training image of it), as results files name it.

    Example:
        >>> class_set(3), graves_set(3)
        ('class-3', 'graves-class-3')
    """
    return f"class-{int(c)}"


def graves_set(c: int) -> str:
    """The Graves setting's forget set: the few kept images of class ``c``."""
    return "graves-" + class_set(c)


SETTINGS = ("full", "graves")


REFERENCES = ("zero", "drop")


# The three optimizers of the study: the seed's Adam, SGD with momentum and weight decay, and AdamW.
OPTIMIZER_RECIPES = {
    "adam": Recipe(optimizer="adam", lr=1e-3, batch_size=64, epochs=4),
    "sgd": Recipe(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, batch_size=64, epochs=4),
    "adamw": Recipe(optimizer="adamw", lr=1e-3, weight_decay=1e-2, batch_size=64, epochs=4),
}


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


def sample(ids: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    """``n`` of ``ids`` drawn without replacement with ``gen``."""
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
        train_set = train_set.subset(torch.sort(sample(train_set.ids, study.train_subset, gen)).values)
    if study.test_subset is not None:
        test_set = test_set.subset(torch.sort(sample(test_set.ids, study.test_subset, gen)).values)
    val_ids = torch.sort(sample(train_set.ids, study.val_size, gen)).values
    val, pool = train_set.subset(val_ids, name="validation"), train_set.without(val_ids, name="pool")
    c = study.forget_class
    sets: dict[str, ForgetSet] = {}
    if setting == "graves":
        pool = graves_mnist(pool, forget_class=c, keep=study.graves_keep)
        threes = class_ids(pool, c)
        others = pool.ids[pool.y != c]
        sets[graves_set(c)] = ForgetSet(graves_set(c), threes, sample(others, len(threes), gen),
                                              "graves", "class")
        return Setting(setting, pool, val, test_set, sets, {"graves": graves_set(c)})
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
    sets[class_set(c)] = ForgetSet(class_set(c), threes, sample(others, len(threes), gen), "class", "class")
    return Setting(setting, pool, val, test_set, sets, {"random": f"random-{n_rand}", "class": class_set(c)})


def setting_atoms(setting: Setting) -> tuple[dict[str, torch.Tensor], dict[str, list[str]]]:
    """Atoms of every forget set and every control of a setting (controls are named ``<set>/control``)."""
    named = {}
    for s in setting.sets.values():
        named[s.name] = s.ids
        named[s.name + "/control"] = s.control
    return atoms(named)


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
    the original fits it better (that is what membership inference exploits). If parity is never reached on
    the grid, the rule changes nothing: it returns ``alpha = 0`` (the original model) with ``reached=False``,
    never the largest alpha of the grid (subtracting a whole class's delta at alpha = 1 can leave a model at
    chance). The grid need not hold 0: a caller looks up the measurements of the original model there.

    Example:
        >>> loss_parity_alpha([0.1, 0.3, 1.0], [0.1, 0.5, 2.0], [0.4, 0.45, 1.0])
        {'alpha': 0.3, 'reached': True}
        >>> loss_parity_alpha([0.1, 0.3, 1.0], [0.1, 0.2, 0.9], [0.4, 0.45, 1.0])  # never reached: no change
        {'alpha': 0.0, 'reached': False}
    """
    order = np.argsort(alphas)
    for i in order:
        if forget_loss[i] >= val_loss[i]:
            return {"alpha": float(alphas[i]), "reached": True}
    return {"alpha": 0.0, "reached": False}


class Evaluator:
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
        assign(self.model, theta)
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


@dataclass
class Combo:
    """One (setting, optimizer, seed) of a study: what its original model, replays and floors are trained from,
    and where their weights are cached."""

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


def assign(model: torch.nn.Module, theta: torch.Tensor) -> torch.nn.Module:
    """Write a flat parameter vector (layout: :class:`ParamLayout`) into ``model`` in place; returns it."""
    layout = ParamLayout.of(model)
    with torch.no_grad():
        for q, v in zip(layout.params(model), layout.unflatten(theta).values()):
            q.copy_(v.to(q.device, q.dtype))
    return model


def vector(model: torch.nn.Module) -> torch.Tensor:
    """A model's parameters as one flat CPU vector (layout: :class:`ParamLayout`), detached and copied."""
    return ParamLayout.of(model).vector(model).detach().cpu().clone()


def fingerprint(theta: torch.Tensor) -> str:
    """A short hash of a parameter vector's exact bytes: the pieces of one (setting, optimizer, seed) must all
    come from the same original model (a retrained original on another kind of CPU differs in its last bits,
    and training amplifies that)."""
    return hashlib.sha256(theta.detach().cpu().contiguous().numpy().tobytes()).hexdigest()[:16]


def original(c: Combo) -> dict:
    """Train (or load) the original model with the atoms' delta log; returns ``theta`` (theta_T), the atom
    ``deltas`` and, to find a set's atoms, ``members`` and ``index``."""
    cells, members = setting_atoms(c.setting)

    def make():
        model, log, t = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool,
                                make_log=lambda m: DeltaLog(m, cells), desc=f"{c.optimizer} seed {c.seed}: original")
        log.finalize()
        return {"theta": vector(model), "deltas": log.deltas.cpu().clone(),
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


def replay(c: Combo, fset: ForgetSet, mode: str) -> dict[str, torch.Tensor]:
    """Train (or load) a reference without ``fset``: ``mode`` is ``"zero"`` (its rows kept in their batches with
    loss weight 0) or ``"drop"`` (its rows removed), with the original's initialisation and batch order."""
    kw = {"zero_weight_ids": fset.ids} if mode == "zero" else {"drop_ids": fset.ids}

    def make():
        model, _, t = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool,
                              desc=f"{c.optimizer} seed {c.seed}: {mode} replay without {fset.name}", **kw)
        return {"theta": vector(model), "seconds": torch.tensor(t)}

    return cached_tensors(c.weights / f"{fset.name}.{mode}.pt", make)


def neighbour_id(c: Combo, fset: ForgetSet) -> int:
    """The one pool sample, outside ``fset``, that :func:`neighbour_replay` also drops: drawn by a generator fixed
    by the seed, so every optimizer of a seed drops the same one."""
    pool_ids = c.setting.pool.ids
    candidates = torch.sort(pool_ids[~torch.isin(pool_ids, torch.as_tensor(fset.ids))]).values
    gen = torch.Generator().manual_seed(70_001 + c.seed)
    return int(candidates[torch.randint(len(candidates), (1,), generator=gen)])


def neighbour_replay(c: Combo, fset: ForgetSet) -> dict[str, torch.Tensor]:
    """Train (or load) the **same-seed floor** of ``fset``'s dropped replay: the same initialisation and batch order,
    ``fset`` removed and one more random sample (:func:`neighbour_id`) removed with it. Its distance to the dropped
    replay is how far two retrainings land that differ by a change nobody would call a deletion request: the scale
    against which "as close as retraining gets" is judged (a retraining with another seed is far coarser: any
    model derived from the original sits below it)."""
    j = neighbour_id(c, fset)
    ids = torch.cat([torch.as_tensor(fset.ids, dtype=torch.long).flatten(), torch.tensor([j])])

    def make():
        model, _, t = c.train(init_seed=c.seed, order_seed=c.seed, data=c.setting.pool, drop_ids=ids,
                              desc=f"{c.optimizer} seed {c.seed}: drop replay without {fset.name} and sample {j}")
        return {"theta": vector(model), "seconds": torch.tensor(t), "neighbour": torch.tensor(j)}

    return cached_tensors(c.weights / f"{fset.name}.neighbour.pt", make)


def evaluator(c: Combo, fset: ForgetSet, theta: torch.Tensor, refs: dict) -> Evaluator:
    """The :class:`Evaluator` of ``fset`` in this run, with the original ``theta`` and the references ``refs``
    (name -> :func:`replay` record)."""
    model = c.fresh_model(0).to(c.device)
    return Evaluator(c.setting, fset, theta, {k: v["theta"].double() for k, v in refs.items()}, model,
                      ParamLayout.of(model), eval_retain=c.study.eval_retain, seed=c.seed,
                      forget_class=c.study.forget_class)
