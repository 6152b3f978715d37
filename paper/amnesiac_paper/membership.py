"""The membership study: attacks that can tell the original model from the retrained one, on every method.

Three settings, each cached per piece under ``results/membership-mnist-simple/<profile>-<hash>/``:

* ``class`` (per seed): the Graves setting of the fidelity study (MNIST with only the first 100 threes of the
  pool; those threes are forgotten). The class-conditional loss attack (:mod:`amnesiac_paper.attacks`) compares the
  100 training threes with the test threes under the original, the dropped replay (retraining with the same
  seed and order), the subtraction on the alpha grid and the repair-only control. The original model and
  replays are the fidelity study's, shared through its weights cache.
* ``canary`` (per seed): a training subset with mislabelled canaries, trained long enough to memorise them; the
  canaries are the forget set. Planted- and true-label rates of every model, and the difference attack (an
  attacker who holds the model before and after the request ranks candidates by the alignment of the change
  with their gradients) at alpha = 1, at the rule's alpha, after a repair, and with the request batched among
  other forgotten samples.
* ``lira`` (one seed, K shadow models): an overfit regime (a small pool, many epochs). Each shadow trains on a
  random half of the pool with a per-sample delta log over the candidate targets it holds, so "saw it, then
  forgot it" costs one subtraction per target and method. U-LiRA (Hayes et al. 2024), leave one shadow out:
  each shadow in turn is the target; its forgotten candidates are positives, the candidates it never saw
  negatives, with per-example Gaussians fitted on the other shadows (per-example means, one variance per side,
  as Carlini et al. advise for few shadows).

The rule's alpha (the fidelity study's loss parity, alpha = 0 where parity is never reached) is read back with
:func:`piece_rule`, recomputed from the losses a piece stores, and its measures with :func:`subtraction_at` (the
original model's at alpha = 0). The canary piece's difference attack "at the rule's alpha" was computed from
weights at run time: :func:`difference_rule_alpha` refuses a piece whose stored rule the current one contradicts.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from amnesiac.data import ArrayDataset, class_ids, groups_per_sample
from amnesiac.deltalog import DeltaLog
from amnesiac.grads import ParamLayout, per_sample_grads
from amnesiac.training import Recipe, accuracy, pick_reproducible_device, predict, train
from amnesiac.unlearning import Request, unlearn

from . import attacks as A
from . import cli
from . import fidelity as fi
from . import setting as st
from .datasets import load_dataset
from .models import build_model
from .store import (
    PieceCache,
    atomic_write_json,
    check_profile,
    config_hash,
    provenance,
    read_pieces,
    restrict,
    results_root,
)

MEMBERSHIP_SEMANTICS = 1
STUDY_NAME = "membership-mnist-simple"
RECIPE = Recipe(optimizer="adam", lr=1e-3, batch_size=64, epochs=4)
PARTS = ("class", "canary", "lira", "methods")


@dataclass(frozen=True)
class MembershipStudy:
    """A frozen config. Build one with :func:`get_membership_study`."""

    name: str
    profile: str
    seeds: tuple[int, ...]
    alphas: tuple[float, ...]
    canary_pool: int
    canaries: int
    canary_epochs: int
    canary_val: int
    batched_extra: int  # the batched request forgets the canaries with this many other training samples
    lira_pool: int
    lira_candidates: int
    shadows: int
    lira_epochs: int
    check_targets: int = 3  # candidates whose fast subtraction is checked against unlearn() on a model copy

    @property
    def hash(self) -> str:
        config = {k: v for k, v in asdict(self).items() if k != "seeds"}
        return config_hash(config, semantics=MEMBERSHIP_SEMANTICS, fidelity=fi.get_study(self.profile).hash,
                           recipe=RECIPE.to_dict())

    def folder(self, root: Path | None = None) -> Path:
        return (root or results_root()) / self.name / f"{self.profile}-{self.hash}"


def get_membership_study(profile: str = "full", *, seeds: Sequence[int] | None = None) -> MembershipStudy:
    """The study at a profile (``smoke``: about a minute; ``full``: MNIST, 3 seeds, 16 shadow models).

    Raises:
        ValueError: unknown profile or bad seeds (the message lists the valid values).
    """
    check_profile(profile)
    alphas = fi.get_study(profile).alphas
    if profile == "smoke":
        study = MembershipStudy(STUDY_NAME, "smoke", (0,), alphas, 300, 10, 3, 100, 20, 200, 40, 4, 3)
    else:
        study = MembershipStudy(STUDY_NAME, "full", (0, 1, 2), alphas, 5000, 50, 20, 2000, 200, 2000, 200, 16, 30)
    study = restrict(study, seeds=seeds)
    return study


# ------------------------------------------------------------------------------------------------- helpers


def _model(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model("simple", 1, 10)


def _train(model: torch.nn.Module, data: ArrayDataset, *, seed: int, epochs: int, logs=None, drop_ids=None, device,
           progress, desc):
    """Train ``model`` (fresh, initialised from ``seed`` by the caller, logs attached to it) in place."""
    opt = RECIPE.make_optimizer(model.parameters())
    train(model, data.loader(RECIPE.batch_size, seed=seed), opt, epochs=epochs, delta_log=logs, device=device,
          progress=progress, desc=desc, drop_ids=drop_ids)
    return model


def lira_key(alpha: float) -> str:
    """The key of the U-LiRA piece's entry for models that subtracted ``alpha`` times the delta."""
    return f"alpha={alpha:g}"


def piece_name(kind: str, seed: int) -> str:
    """The file name (without ``.json``) of a per-seed piece: ``kind`` is ``"class"`` or ``"canary"``."""
    return f"{kind}-seed{seed}"


def _attack_dict(result: A.AttackResult) -> dict:
    return result.to_dict(with_curve=True)


# --------------------------------------------------------------------------------------------- the class


def class_piece(study: MembershipStudy, seed: int, *, device, progress, results_root: Path | None = None) -> dict:
    """Class-conditional loss attack on the fidelity study's Graves setting (Adam), every method."""
    base = fi.get_study(study.profile)
    setting = st.make_setting(base, "graves", seed)
    fset = next(iter(setting.sets.values()))
    weights = base.folder(results_root) / "weights" / "graves" / "adam" / f"seed{seed}"  # the fidelity study's
    c = st.Combo(base, setting, "adam", seed, weights, device, progress)
    state = st.original(c)
    theta = state["theta"].double()
    delta = st.set_delta(state, fset.name)
    refs = {m: st.replay(c, fset, m) for m in st.REFERENCES}
    ev = st.evaluator(c, fset, theta, refs)
    members = setting.pool.subset(fset.ids)
    nonmembers = setting.test.subset(class_ids(setting.test, base.forget_class))
    model = _model(0).to(device)

    def attack(vec):
        return A.class_conditional_loss_attack(st.assign(model, vec), members, nonmembers, seed=seed)

    rows = []
    for a in study.alphas:
        m = ev.measure(theta - a * delta)
        rows.append({"alpha": a, "attack": _attack_dict(attack(theta - a * delta)), "loss_forget": m["loss_forget"],
                     "loss_val_matched": m["loss_val_matched"], "acc_test": m["acc_test"]})
    rule = st.loss_parity_alpha(study.alphas, [r["loss_forget"] for r in rows], [r["loss_val_matched"] for r in rows])
    start = st.assign(c.fresh_model(0), theta)
    tuned = unlearn("finetune", start, Request(retain=setting.pool.without(fset.ids), recipe=c.recipe, seed=seed,
                                               device=str(device)), epochs=1, progress=progress)
    return {
        "n_members": len(members), "n_nonmembers": len(nonmembers), "alphas": list(study.alphas), "rule": rule,
        "original": _attack_dict(attack(theta)),
        "retrain": _attack_dict(attack(refs["drop"]["theta"].double())),
        "zero_replay": _attack_dict(attack(refs["zero"]["theta"].double())),
        "amnesiac": rows,
        "finetune": _attack_dict(A.class_conditional_loss_attack(tuned, members, nonmembers, seed=seed)),
    }


# ------------------------------------------------------------------------------------ the rule, read back


def piece_rule(piece: dict) -> dict:
    """The loss-parity rule (:func:`~amnesiac_paper.setting.loss_parity_alpha`) of a class or canary piece,
    recomputed from the losses its grid rows store (class: the forget set against the class-matched validation
    split; canary: the canaries under their planted labels against held-out images of the planted classes)
    instead of read from its ``rule`` field: a piece computed while the rule fell back to the largest alpha reads
    as the current rule, alpha = 0 (no change) where parity is never reached."""
    rows = piece["amnesiac"]
    held = "loss_val_matched" if "loss_val_matched" in rows[0] else "loss_heldout"
    return st.loss_parity_alpha([r["alpha"] for r in rows], [r["loss_forget"] for r in rows],
                                [r[held] for r in rows])


def subtraction_at(piece: dict, alpha: float) -> dict:
    """The row of a class or canary piece's grid at ``alpha``; at alpha = 0 (nothing subtracted: the rule's
    fallback, not on the grid) the original model's measures in a row's shape, ``{"alpha": 0.0, "attack": ...}``
    for a class piece and ``{"alpha": 0.0, "rates": ..., "acc_test": ...}`` for a canary piece.

    Raises:
        KeyError: ``alpha`` is neither 0 nor on the grid.
    """
    if alpha == 0:
        if "n_canaries" in piece:
            return {"alpha": 0.0, "rates": piece["original"], "acc_test": piece["test_accuracy"]["original"]}
        return {"alpha": 0.0, "attack": piece["original"]}
    for r in piece["amnesiac"]:
        if math.isclose(r["alpha"], alpha):
            return r
    raise KeyError(f"alpha {alpha} is not on the grid {piece['alphas']}")


def difference_rule_alpha(piece: dict) -> float:
    """The alpha of a canary piece's difference attack "rule" and "rule + repair" entries: they were computed
    from the weights at run time with the piece's stored rule, and cannot be recomputed from the piece.

    Raises:
        ValueError: the current rule (:func:`piece_rule`) chooses another alpha than the stored one, so those
            entries are stale: the piece must be recomputed.
    """
    stored, now = piece["rule"], piece_rule(piece)
    if not math.isclose(stored["alpha"], now["alpha"]) or stored["reached"] != now["reached"]:
        raise ValueError(f"the canary piece's difference attack was computed at the stored rule alpha "
                         f"{stored['alpha']:g} but the current rule chooses {now['alpha']:g}: remove the piece and "
                         "run python -m amnesiac_paper membership --parts canary")
    return now["alpha"]


# -------------------------------------------------------------------------------------------- canaries


def _canary_data(study: MembershipStudy, seed: int):
    train_set, test_set = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    gen = torch.Generator().manual_seed(70_001 + seed)
    pick = train_set.ids[torch.randperm(len(train_set), generator=gen)[: study.canary_pool + study.canary_val]]
    pool = train_set.subset(torch.sort(pick[: study.canary_pool]).values, name="canary pool")
    val = train_set.subset(torch.sort(pick[study.canary_pool:]).values, name="validation")
    pool, canaries = A.plant_canaries(pool, study.canaries, num_classes=10, seed=seed)
    others = pool.ids[~torch.isin(pool.ids, canaries.ids)]
    extra = others[torch.randperm(len(others), generator=gen)[: study.batched_extra]]
    return pool, val, test_set, canaries, extra


def canary_piece(study: MembershipStudy, seed: int, *, device, progress) -> dict:
    """Canary rates of every model, and the difference attack with its mitigations."""
    pool, val, test_set, canaries, extra = _canary_data(study, seed)
    cids = canaries.ids
    batched = torch.cat([cids, extra])
    original = _model(seed)
    logs = [DeltaLog(original, {"canaries": cids}), DeltaLog(original, {"batched": batched})]
    _train(original, pool, seed=seed, epochs=study.canary_epochs, logs=logs, device=device, progress=progress,
           desc=f"canaries seed {seed}: original")
    retrained = _train(_model(seed), pool, seed=seed, epochs=study.canary_epochs, drop_ids=cids, device=device,
                       progress=progress, desc=f"canaries seed {seed}: retrained without the canaries")
    theta = ParamLayout.of(original).vector(original).double().cpu()
    delta = logs[0].delta_vector(["canaries"]).double().cpu()
    delta_batched = logs[1].delta_vector(["batched"]).double().cpu()
    xc = pool.subset(cids)
    val_classes = torch.isin(val.y, canaries.planted)

    def rates(model):
        return A.canary_rates(predict(model, xc.x), canaries)

    def losses(model):  # the rule's inputs: forget loss (planted labels, as trained) vs class-matched held-out loss
        forget = float(F.cross_entropy(predict(model, xc.x), xc.y).item())
        held = float(F.cross_entropy(predict(model, val.x[val_classes]), val.y[val_classes]).item())
        return forget, held

    model = _model(0).to(device)
    grid = []
    for a in study.alphas:
        m = st.assign(model, theta - a * delta)
        f, h = losses(m)
        grid.append({"alpha": a, "rates": rates(m), "loss_forget": f, "loss_heldout": h,
                     "acc_test": accuracy(m, test_set)})
    rule = st.loss_parity_alpha(study.alphas, [g["loss_forget"] for g in grid], [g["loss_heldout"] for g in grid])
    request = Request(retain=pool.without(cids), recipe=dataclasses.replace(RECIPE), seed=seed, device=str(device))
    tuned = unlearn("finetune", original, request, epochs=1, progress=progress)
    # the difference attack: forgotten canaries against retained training samples of the pool
    retained = pool.ids[~torch.isin(pool.ids, batched)]
    negatives = retained[torch.randperm(len(retained), generator=torch.Generator().manual_seed(seed))[: len(cids)]]
    cand = pool.subset(torch.cat([cids, negatives]))
    grads = torch.cat([g for _, g in per_sample_grads(original, cand.x.to(device), cand.y.to(device))]).double()
    pos, neg = grads[: len(cids)].cpu(), grads[len(cids):].cpu()
    after = {"alpha=1": theta - delta, "rule": theta - rule["alpha"] * delta,
             "rule + repair": None, "batched (alpha=1)": theta - delta_batched}
    repaired = unlearn("finetune", st.assign(_model(0), after["rule"]), request, epochs=1, progress=progress)
    after["rule + repair"] = ParamLayout.of(repaired).vector(repaired).double().cpu()
    difference = {k: _attack_dict(A.difference_attack(theta.cpu(), v.cpu(), pos, neg, seed=seed))
                  for k, v in after.items()}
    return {
        "n_pool": len(pool), "n_canaries": len(cids), "epochs": study.canary_epochs, "alphas": list(study.alphas),
        "rule": rule, "original": rates(original), "retrain": rates(retrained), "finetune": rates(tuned),
        "amnesiac": grid, "train_accuracy": accuracy(original, pool.without(cids)),
        "test_accuracy": {"original": accuracy(original, test_set), "retrain": accuracy(retrained, test_set)},
        "difference": difference, "batched_size": len(batched),
    }


# -------------------------------------------------------------------------------------------------- U-LiRA


def _lira_pool(study: MembershipStudy):
    train_set, test_set = load_dataset("mnist", "train"), load_dataset("mnist", "test")
    gen = torch.Generator().manual_seed(80_021)
    pool = train_set.subset(torch.sort(train_set.ids[torch.randperm(len(train_set), generator=gen)[
        : study.lira_pool]]).values, name="lira pool")
    candidates = torch.sort(pool.ids[torch.randperm(len(pool), generator=gen)[: study.lira_candidates]]).values
    return pool, test_set, candidates


def _shadow(study: MembershipStudy, j: int, *, device, progress):
    """Train shadow model ``j`` (deterministic in ``j``): a random half of the pool, a per-sample log over the
    candidates it holds. Returns (model, log, its data, the candidates inside, all candidates, seconds)."""
    pool, _, candidates = _lira_pool(study)
    gen = torch.Generator().manual_seed(90_007 + j)
    half = torch.sort(pool.ids[torch.randperm(len(pool), generator=gen)[: len(pool) // 2]]).values
    data = pool.subset(half)
    inside = candidates[torch.isin(candidates, half)]
    model = _model(j)
    log = DeltaLog(model, groups_per_sample(inside.tolist()))
    t0 = time.perf_counter()
    _train(model, data, seed=j, epochs=study.lira_epochs, logs=log, device=device, progress=progress,
           desc=f"shadow {j}")
    seconds = time.perf_counter() - t0
    log.finalize()
    return model, log, data, inside, pool.subset(candidates), seconds


def shadow_piece(study: MembershipStudy, j: int, *, device, progress) -> dict:
    """Shadow model ``j``: trained on a random half of the pool with a per-sample log over its candidates; the
    logit-scaled confidence of every candidate under the model and, for those it holds, after forgetting it."""
    _, test_set, candidates = _lira_pool(study)
    model, log, data, inside, cand, seconds = _shadow(study, j, device=device, progress=progress)
    conf = A.logit_confidence(predict(model, cand.x), cand.y)
    theta = ParamLayout.of(model).vector(model).cpu()
    probe = _model(0).to(next(model.parameters()).device)
    forgot = {str(a): [] for a in study.alphas}
    pos = {int(i): k for k, i in enumerate(candidates.tolist())}
    for i in inside.tolist():
        d = log.delta_vector([i]).cpu()
        x, y = cand.x[pos[i]: pos[i] + 1], cand.y[pos[i]: pos[i] + 1]
        for a in study.alphas:
            forgot[str(a)].append(float(A.logit_confidence(predict(st.assign(probe, theta - a * d), x), y)[0]))
    # the fast path is the method: check a few targets against unlearn() on a copy of the model
    checks = []
    for i in inside.tolist()[: study.check_targets]:
        new = unlearn("amnesiac", model, Request(forget_groups=(i,)), log=log, alpha=1.0)
        x, y = cand.x[pos[i]: pos[i] + 1], cand.y[pos[i]: pos[i] + 1]
        checks.append(abs(float(A.logit_confidence(predict(new, x), y)[0]) - forgot["1.0"][inside.tolist().index(i)]))
    return {"shadow": j, "inside": inside.tolist(), "confidence": conf.tolist(), "forgot": forgot,
            "train_accuracy": accuracy(model, data), "test_accuracy": accuracy(model, test_set),
            "seconds": seconds, "log_bytes": log.nbytes, "check_max_abs_diff": max(checks) if checks else None}


def _ulira_scores(conf: np.ndarray, member: np.ndarray, in_matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Leave-one-shadow-out (U-)LiRA scores: each shadow in turn is the target; its candidates' scores
    (``in_matrix`` where it held them, ``conf`` where not) are likelihood ratios against Gaussians fitted over the
    other shadows (``in_matrix`` where they held a candidate, ``conf`` where not). [K, N] arrays, NaN where
    undefined. Returns the [K, N] scores and where they are defined (a candidate with shadows on both sides)."""
    K = conf.shape[0]
    scores, defined = np.full(conf.shape, np.nan), np.zeros(conf.shape, dtype=bool)
    for k in range(K):
        others = np.arange(K) != k
        in_c = np.where(member[others], in_matrix[others], np.nan)
        out_c = np.where(~member[others], conf[others], np.nan)
        ok = ((~np.isnan(in_c)).sum(0) >= 1) & ((~np.isnan(out_c)).sum(0) >= 1)
        # one variance per side for every example (Carlini et al.'s choice with few shadows); per-example means
        scores[k, ok] = A.lira_scores(np.where(member[k], in_matrix[k], conf[k])[ok], in_c[:, ok], out_c[:, ok],
                                      global_variance=True)
        defined[k] = ok
    return scores, defined


def _ulira(conf: np.ndarray, member: np.ndarray, in_matrix: np.ndarray) -> A.AttackResult:
    """:func:`_ulira_scores` pooled over the targets: held candidates are members, the others non-members."""
    scores, defined = _ulira_scores(conf, member, in_matrix)
    return A.threshold_attack(scores[member & defined], scores[~member & defined])


def _lira_arrays(shadows: list[dict], candidates: Sequence[int]) -> tuple[np.ndarray, np.ndarray, dict]:
    """The shadows' confidences ``[K, N]``, which shadow held which candidate, and candidate id -> column."""
    K, N = len(shadows), len(candidates)
    col = {int(c): k for k, c in enumerate(candidates)}
    conf = np.array([s["confidence"] for s in shadows])  # [K, N]
    member = np.zeros((K, N), dtype=bool)
    for k, s in enumerate(shadows):
        member[k, [col[i] for i in s["inside"]]] = True
    return conf, member, col


def _forgotten(pieces: list[dict], col: dict, shape: tuple, key: str) -> np.ndarray:
    """The confidence of each candidate a shadow held after it forgot it (``piece["forgot"][key]``), NaN elsewhere."""
    out = np.full(shape, np.nan)
    for k, p in enumerate(pieces):
        out[k, [col[i] for i in p["inside"]]] = p["forgot"][key]
    return out


def lira_summary(study: MembershipStudy, shadows: list[dict], candidates: Sequence[int]) -> dict:
    """Leave-one-shadow-out U-LiRA for every alpha, and the plain LiRA on the unmodified models (the signal)."""
    conf, member, col = _lira_arrays(shadows, candidates)

    def loo(in_matrix):
        return _ulira(conf, member, in_matrix)

    out = {"original": _attack_dict(loo(np.where(member, conf, np.nan)))}
    for a in study.alphas:
        out[lira_key(a)] = _attack_dict(loo(_forgotten(shadows, col, conf.shape, str(a))))
    out["train_accuracy"] = float(np.mean([s["train_accuracy"] for s in shadows]))
    out["test_accuracy"] = float(np.mean([s["test_accuracy"] for s in shadows]))
    out["shadow_seconds"] = float(np.median([s["seconds"] for s in shadows]))
    out["check_max_abs_diff"] = max((s["check_max_abs_diff"] or 0.0) for s in shadows)
    return out


def lira_candidates(result: MembershipResult) -> list[int]:
    """The U-LiRA candidates of the shadows on disk: every candidate some shadow held, when that accounts for all
    of them (nearly certain with 16 shadows holding half each), else the candidate draw itself (loads MNIST)."""
    shadows = [result.pieces[f"shadow{j}"] for j in range(result.study.shadows)]
    held = sorted({int(i) for s in shadows for i in s["inside"]})
    if len(held) == len(shadows[0]["confidence"]):
        return held
    return _lira_pool(result.study)[2].tolist()


def lira_intervals(result: MembershipResult, *, draws: int = 1000, seed: int = 0) -> dict:
    """Bootstrap intervals (:func:`amnesiac_paper.attacks.bootstrap_attack`: target shadows and candidates
    resampled jointly, the Gaussians of the leave-one-out fit kept) of U-LiRA's AUC and TPR at low FPR, from the
    shadow pieces on disk: ``"original"`` (plain LiRA), each :func:`lira_key` of the study's alphas, and, where
    the method pieces are on disk, each method of :data:`SET_METHODS` under its name. Empty where a shadow is
    missing."""
    names = [f"shadow{j}" for j in range(result.study.shadows)]
    if not all(n in result.pieces for n in names):
        return {}
    shadows = [result.pieces[n] for n in names]
    conf, member, col = _lira_arrays(shadows, lira_candidates(result))

    def ci(in_matrix):
        scores, defined = _ulira_scores(conf, member, in_matrix)
        return A.bootstrap_attack(scores, member, defined, draws=draws, seed=seed)

    out = {"original": ci(np.where(member, conf, np.nan))}
    for a in result.study.alphas:
        out[lira_key(a)] = ci(_forgotten(shadows, col, conf.shape, str(a)))
    methods = [result.pieces.get(f"methods{j}") for j in range(result.study.shadows)]
    if all(methods):  # the method pieces retrain the same shadows (lira_methods_summary checks it)
        for name in SET_METHODS:
            out[name] = ci(_forgotten(methods, col, conf.shape, name))
    return out


# --------------------------------------------------------------- U-LiRA for every method, a forget set at once

# Each shadow forgets every candidate it holds at once (a random forget set of about half the candidates, as in
# Hayes et al.'s U-LiRA), with each method at its registry defaults (one setting each: an untuned first reading,
# the same for every method); the amnesiac rows subtract the summed deltas at three scales.
SET_METHODS: dict[str, tuple[str, dict]] = {
    "amnesiac α=1": ("amnesiac", {"alpha": 1.0}),
    "amnesiac α=0.3": ("amnesiac", {"alpha": 0.3}),
    "amnesiac α=0.1": ("amnesiac", {"alpha": 0.1}),
    "fine-tune (1 epoch)": ("finetune", {"epochs": 1}),
    "NegGrad+": ("neggrad_plus", {}),
    "SSD": ("ssd", {}),
    "SCRUB": ("scrub", {}),
}
SET_SEMANTICS = 1


def set_methods_config() -> dict:
    """What a method piece was computed with (stored in it; the summary refuses pieces that differ)."""
    return {"methods": {k: [m, dict(sorted(p.items()))] for k, (m, p) in SET_METHODS.items()},
            "semantics": SET_SEMANTICS, "recipe": RECIPE.to_dict()}


def shadow_methods_piece(study: MembershipStudy, j: int, *, device, progress) -> dict:
    """Shadow model ``j`` trained again (the same model as ``shadow<j>``), then each of :data:`SET_METHODS`
    forgets all the candidates it holds at once, the rest of its data being the retain set; the logit-scaled
    confidence of each forgotten candidate under each method's model, and each method's time."""
    from amnesiac.unlearning import LEDGER_METHODS

    model, log, data, inside, cand, seconds = _shadow(study, j, device=device, progress=progress)
    conf = A.logit_confidence(predict(model, cand.x), cand.y)
    keep = ~torch.isin(data.ids, inside)
    request = Request(forget_groups=tuple(inside.tolist()), forget=data.subset(inside),
                      retain=data.subset(data.ids[keep]), recipe=RECIPE, num_classes=10, seed=j,
                      device=str(device))
    pos = {int(i): k for k, i in enumerate(cand.ids.tolist())}
    rows = torch.tensor([pos[int(i)] for i in inside.tolist()], dtype=torch.long)
    forgot, method_seconds = {}, {}
    for name, (method, params) in SET_METHODS.items():
        kwargs = dict(params, log=log) if method in LEDGER_METHODS else dict(params)
        t0 = time.perf_counter()
        new = unlearn(method, model, request, **kwargs)
        method_seconds[name] = time.perf_counter() - t0
        forgot[name] = A.logit_confidence(predict(new, cand.x[rows]), cand.y[rows]).tolist()
    return {"shadow": j, "inside": inside.tolist(), "confidence": conf.tolist(), "forgot": forgot,
            "method_seconds": method_seconds, "train_seconds": seconds, "config": set_methods_config()}


def lira_methods_summary(shadows: list[dict], pieces: list[dict], candidates: Sequence[int]) -> dict:
    """U-LiRA (leave one shadow out) of every method of :data:`SET_METHODS`: models that held a candidate and
    forgot it with the method, against the shadows that never held it. Refuses method pieces computed with
    other settings, or from shadow models that differ from the ``shadow<j>`` pieces (another machine)."""
    want = json.loads(json.dumps(set_methods_config()))  # as stored: tuples become lists
    for p in pieces:
        if json.loads(json.dumps(p["config"])) != want:
            raise ValueError(f"method piece of shadow {p['shadow']} was computed with other settings: recompute it")
    conf, member, col = _lira_arrays(shadows, candidates)
    gap = float(np.max(np.abs(np.array([p["confidence"] for p in pieces]) - conf)))
    if gap > 1e-4:
        raise ValueError(f"the method pieces' shadow models differ from the shadow pieces' (confidence gap {gap:.2g}):"
                         " they were trained on another machine; recompute both on one")
    out = {"shadow_gap": gap, "forget_set_size": float(np.mean([len(p["inside"]) for p in pieces])), "methods": {}}
    for name in SET_METHODS:
        out["methods"][name] = {**_attack_dict(_ulira(conf, member, _forgotten(pieces, col, conf.shape, name))),
                                "seconds": float(np.median([p["method_seconds"][name] for p in pieces]))}
    return out


# -------------------------------------------------------------------------------------------------- runner


@dataclass
class MembershipResult:
    study: MembershipStudy
    pieces: dict  # name -> record
    folder: Path


def run_study(profile: str = "full", *, seeds: Sequence[int] | None = None, device: str = "cpu",
              progress: bool = True, results_root: Path | None = None,
              parts: Sequence[str] = ("class", "canary", "lira", "methods")) -> MembershipResult:
    """Run (or load) every piece: class and canary per seed, the shadows one by one, then the U-LiRA summary.

    Example:
        >>> # python -m amnesiac_paper membership --profile full --threads 2
    """
    bad = [p for p in parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown part(s) {bad}; valid: {', '.join(PARTS)}")
    study = get_membership_study(profile, seeds=seeds)
    dev = pick_reproducible_device(device)  # replays mean nothing unless training is reproducible
    folder = study.folder(results_root)
    whole = get_membership_study(profile)  # the folder's config names every seed, whatever this run computes
    atomic_write_json(folder / "config.json", {"config": asdict(whole), "hash": whole.hash,
                                                "semantics": MEMBERSHIP_SEMANTICS})
    cache = PieceCache(folder, stamp=dict(provenance=provenance(dev, semantics=MEMBERSHIP_SEMANTICS)))
    piece, pieces = cache.piece, cache.records

    for seed in study.seeds:
        if "class" in parts:
            piece(piece_name("class", seed), lambda seed=seed: class_piece(study, seed, device=dev, progress=progress,
                                                                     results_root=results_root))
        if "canary" in parts:
            piece(piece_name("canary", seed),
                  lambda seed=seed: canary_piece(study, seed, device=dev, progress=progress))
    if "lira" in parts:
        for j in range(study.shadows):
            piece(f"shadow{j}", lambda j=j: shadow_piece(study, j, device=dev, progress=progress))
        _, _, candidates = _lira_pool(study)
        shadows = [pieces[f"shadow{j}"] for j in range(study.shadows)]
        piece("lira", lambda: lira_summary(study, shadows, candidates.tolist()))
    if "methods" in parts:
        for j in range(study.shadows):
            piece(f"shadow{j}", lambda j=j: shadow_piece(study, j, device=dev, progress=progress))
            piece(f"methods{j}", lambda j=j: shadow_methods_piece(study, j, device=dev, progress=progress))
        _, _, candidates = _lira_pool(study)
        shadows = [pieces[f"shadow{j}"] for j in range(study.shadows)]
        done = [pieces[f"methods{j}"] for j in range(study.shadows)]
        piece("lira-methods", lambda: lira_methods_summary(shadows, done, candidates.tolist()))
    return MembershipResult(study, pieces, folder)


def load_study(profile: str = "full", *, results_root: Path | None = None) -> MembershipResult:
    """Whatever pieces are on disk, computing nothing."""
    study = get_membership_study(profile)
    folder = study.folder(results_root)
    return MembershipResult(study, read_pieces(folder), folder)


# ------------------------------------------------------------------------------------------- command line


def _cli_arguments(p) -> None:
    p.add_argument("--parts", nargs="+", default=list(PARTS), help="a subset of: " + " ".join(PARTS))


def _cli_check(args) -> None:
    bad = [p for p in args.parts if p not in PARTS]
    if bad:
        raise ValueError(f"unknown part(s) {bad}; valid: {', '.join(PARTS)}")
    get_membership_study(args.profile, seeds=args.seeds)


def _cli_run(args) -> int:
    result = run_study(args.profile, seeds=args.seeds, device=args.device, progress=not args.quiet,
                       parts=args.parts)
    for name, rec in sorted(result.pieces.items()):
        if "original" in rec and isinstance(rec["original"], dict) and "auc" in rec["original"]:
            print(f"{name:16s} attack AUC on the original {rec['original']['auc']:.3f}")
    print(f"results: {result.folder}")
    return 0


COMMAND = cli.Command("membership", "membership attacks that can detect forgetting (class, canaries, U-LiRA)",
                      _cli_arguments, _cli_run, _cli_check)
