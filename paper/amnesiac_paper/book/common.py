"""Support for the book's chapters: parameter validation, results loading, tables and provenance.

Chapters stay thin: a ``parameters`` cell, then calls into this module, :mod:`amnesiac_paper.experiments` and
:mod:`amnesiac_paper.plotting`. papermill only warns about unknown parameters, so :func:`validate` checks values.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping, Sequence

import numpy as np
import torch
from torch import nn

from amnesiac.data import ArrayDataset
from amnesiac.deltalog import DeltaLog
from amnesiac.training import predict
from amnesiac.unlearning import Request, unlearn

from .datasets import data_root, dataset_available
from .experiments import PROFILES, UPDATE_LOG, LogSpec, Result, get_experiment, load, run, summarize
from .metrics import class_accuracies, mean_ci

DEVICES = ("auto", "cpu", "cuda")

# The seed report's published MNIST and CIFAR-100 tables (Marincione 2024): accuracy
# on the forgotten class / on the rest after training, right after unlearning ("no retrain") and after 4 epochs of
# training on the remaining data ("after retrain"). Quoted for comparison; every other number is computed.
SEED_REPORT = {
    "mnist-class3-simple": [
        ("Original (per-batch)", (.67, .98), (.00, .83), (.00, .98)),
        ("Layer p=0.1", (.56, .98), (.07, .98), (.02, .98)),
        ("Per-sample p=0.1 (seed)", (.60, .98), (.00, .83), (.04, .98)),
        ("Per-sample p=0.075 (seed)", (.63, .98), (.03, .96), (.03, .98)),
        ("Per-sample p=0.05 (seed)", (.60, .98), (.06, .96), (.04, .98)),
        ("Per-sample p=0.01 (seed)", (.57, .98), (.52, .98), (.04, .98)),
    ],
    "mnist-class3-resnet18": [
        ("Original (per-batch)", (.78, .99), (.00, .97), (.00, .99)),
        ("Layer p=0.1", (.83, .99), (.69, .99), (.00, .99)),
        ("Per-sample p=0.2 (seed)", (.81, .99), (.24, .97), (.00, .99)),
        ("Per-sample p=0.1 (seed)", (.85, .98), (.73, .97), (.00, .99)),
        ("Per-sample p=0.075 (seed)", (.83, .98), (.77, .98), (.02, .99)),
    ],
    "cifar100-class81-simple": [
        ("Original (per-batch)", (.17, .33), (.00, .04), (.00, .35)),
        ("Layer p=0.1", (.19, .33), (.00, .32), (.00, .35)),
        ("Per-sample p=0.1 (seed)", (.24, .33), (.00, .14), (.00, .36)),
        ("Per-sample p=0.075 (seed)", (.23, .33), (.00, .19), (.00, .36)),
        ("Per-sample p=0.05 (seed)", (.22, .33), (.00, .23), (.00, .36)),
        ("Per-sample p=0.01 (seed)", (.24, .33), (.04, .32), (.00, .36)),
    ],
    # Original and Layer were summed into one tensor to fit memory (as the report says).
    "cifar100-class81-resnet18": [
        ("Original (per-batch)", (.18, .33), (.00, .02), (.00, .41)),
        ("Layer p=0.1", (.12, .32), (.00, .30), (.00, .39)),
        ("Per-sample p=0.1 (seed)", (.21, .33), (.00, .17), (.00, .41)),
        ("Per-sample p=0.075 (seed)", (.16, .34), (.00, .23), (.00, .40)),
        ("Per-sample p=0.05 (seed)", (.15, .33), (.00, .30), (.00, .40)),
        ("Per-sample p=0.025 (seed)", (.22, .33), (.01, .31), (.00, .40)),
        ("Per-sample p=0.01 (seed)", (.18, .33), (.11, .33), (.00, .40)),
    ],
}
SEED_REPORT_REPAIR_EPOCHS = 4  # the seed report's "after retrain": 4 further epochs on the remaining data


# Graves et al. (AAAI 2021): recall of their Shokri-style membership inference attack on
# CIFAR-100 (forgetting class 11) before and right after amnesiac unlearning. Quoted, not computed here.
GRAVES_REPORT = {"mia_recall_before": 0.975, "mia_recall_after": 0.0, "mia_dataset": "CIFAR-100", "mia_class": 11}

# Published reference figures of the NeurIPS 2023 Machine Unlearning Challenge starting kit (Triantafillou et al.
# 2024): CIFAR-10, ResNet-18, a random 10% forget set. Test accuracy and loss-MIA accuracy
# (forget vs test losses, 10-fold logistic regression; 0.5 = indistinguishable). Quoted, not computed here.
STARTING_KIT = {
    "Original model": {"acc_test": .883, "mia_loss": .579},
    "Fine-tune on the retain set (5 epochs)": {"acc_test": .840, "mia_loss": .512},
    "Retrain from scratch": {"acc_test": .88, "mia_loss": .502},
}

def validate(*, profile: str = "full", seeds: Sequence[int] | None = None, recompute: bool = False,
             device: str = "auto", forget_class: int | None = None, num_classes: int = 10,
             alpha: float | None = None, p: float | None = None, fraction: float | None = None) -> dict:
    """Check a chapter's parameters; raise ValueError naming the bad value and the valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not a profile; valid profiles: {', '.join(PROFILES)}")
    if seeds is not None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
            raise ValueError(f"seeds={seeds!r} must be a non-empty list of integers, e.g. [0, 1, 2]")
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
            raise ValueError(f"seeds={seeds!r} must hold non-negative integers")
    if not isinstance(recompute, bool):
        raise ValueError(f"recompute={recompute!r} must be True or False")
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not valid; use one of {', '.join(DEVICES)}")
    if forget_class is not None and not (isinstance(forget_class, int) and 0 <= forget_class < num_classes):
        raise ValueError(f"forget_class={forget_class!r} is out of range: valid classes are 0..{num_classes - 1}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha!r} must be a positive number")
    if p is not None and not (isinstance(p, (int, float)) and 0 < p <= 1):
        raise ValueError(f"p={p!r} must be in (0, 1]")
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    return dict(profile=profile, seeds=None if seeds is None else tuple(seeds), recompute=recompute, device=device)


def results(name: str, *, profile: str = "full", seeds: Sequence[int] | None = None, recompute: bool = False,
            device: str = "auto", progress: bool = True, overrides: Mapping[str, object] | None = None) -> Result:
    """The results a chapter renders: committed ones by default, computed when asked or when missing.

    With ``recompute=False`` committed results are loaded (restricted to ``seeds``, if given); seeds that are
    missing are computed only for the smoke profile (full runs are long: ask for them with recompute=True).
    ``overrides`` are the experiment settings a chapter's parameters map onto (e.g. ``forget_class``; see
    :data:`amnesiac_paper.experiments.OVERRIDES`); a changed setting is a different config, cached apart.
    """
    validate(profile=profile, seeds=seeds, recompute=recompute, device=device)
    seeds = tuple(seeds) if seeds is not None else None
    if recompute:
        return run(name, profile, seeds=seeds, device=device, progress=progress, recompute=True, overrides=overrides)
    res = load(name, profile, overrides=overrides)
    wanted = seeds if seeds is not None else res.experiment.seeds
    if not res.available or all(s in res.seeds for s in wanted):
        res.seeds = {s: res.seeds[s] for s in wanted if s in res.seeds}
        return res
    if profile == "smoke":
        return run(name, profile, seeds=seeds, device=device, progress=progress, overrides=overrides)
    res.seeds = {s: res.seeds[s] for s in wanted if s in res.seeds}
    return res


def other_class_note(chosen: int, written_for: int) -> str:
    """The note a chapter shows when executed for another class than its prose was written for."""
    return (f"**This execution forgets class {chosen}** (the chapter parameter `forget_class`). The prose was written "
            f"for class {written_for}: where it names {written_for}, read {chosen}; every number, table and figure "
            f"below is computed for class {chosen}. The seed's published table exists for class {written_for} only "
            "and is left out.")


def misindexing_sentence(res: Result, norms: dict | None) -> str:
    """The class chapter's account of the seed's indexing bug: which record (correctly indexed or mis-indexed,
    p = 0.1) costs the rest more when added back, and whether the records' norms explain it (``norms``: a
    :func:`amnesiac_paper.experiments.log_norms` record, or ``None`` when it was not computed)."""
    if not res.seeds:
        return "*No seed of this experiment is on disk.*"
    exp = res.experiment
    rows = {r["method"]: r for r in summarize(res, ("acc_test_rest",), "no_repair")}
    seed_rest = rows[exp.seed_record(0.1).label]["acc_test_rest"]
    mis_rest = rows[exp.misindexed().label]["acc_test_rest"]
    names = ("correctly indexed", "mis-indexed")
    worse, better = names if seed_rest < mis_rest else names[::-1]
    text = (f"Added back with coefficient 1, the {worse} p = 0.1 records cost the rest more than the {better} ones "
            f"(rest {min(seed_rest, mis_rest):.3f} against {max(seed_rest, mis_rest):.3f})")
    if not norms:
        return text + "; the records' norms, which would say why, are not computed at this profile."
    n_ok, n_mis = norms["norms"]["gradient-p0.1"], norms["norms"]["misindexed"]
    cos = norms["cosines"].get("gradient-p0.1|misindexed")
    explained = (n_ok > n_mis) == (seed_rest < mis_rest)
    text += (f". Their sizes (seed {norms['seed']}'s training run): the correctly indexed record of the "
             f"{norms['n_forget']} forget images has norm {n_ok:.3g}, the mis-indexed one {n_mis:.3g}, cosine "
             f"{cos:.2f} between them. ")
    if explained and n_ok > n_mis:
        text += ("The forget images' own gradients add up coherently; the gradients of whichever images sat at their "
                 "batch positions, mostly of other classes, partly cancel. So the seed's bug limited the damage: "
                 "its records were smaller, not better aimed.")
    elif explained:
        text += "The larger record does the more damage, as a matter of size rather than of which images it holds."
    else:
        text += "Size does not explain the difference: the smaller record does the more damage."
    return text


def class_discussion(res: Result, *, forget_tol: float, rest_drop: float) -> dict[str, str]:
    """The Discussion chapter's sentences about the MNIST class experiment, each computed from ``res``:
    ``overshoot``, ``best_sentence``, ``conclusion``, ``repair_sentence``, ``mia_sentence``, ``memory_sentence``
    (each says plainly that no number is quoted when ``res`` has no seeds)."""
    metrics = ("acc_test_forgotten", "acc_test_rest", "mia_loss")
    rows = {r["method"]: r for r in summarize(res, metrics, "no_repair")} if res.seeds else {}
    repaired = {r["method"]: r for r in summarize(res, metrics, "after_repair")} if res.seeds else {}
    best = smallest_alpha_matching(res, forget_tol=forget_tol, rest_drop=rest_drop)
    unavailable = "The MNIST class-3 results are not available in this build, so no number is quoted here."
    if rows:
        original, retrain = rows["After training (original)"], rows["Retrain from scratch (reference)"]
        full_delta = rows[res.experiment.update(1).label]
        drop = original["acc_test_rest"] - full_delta["acc_test_rest"]
        overshoot = (f"In the MNIST class-3 experiment, subtracting the whole class delta (α = 1) leaves "
                     f"{full_delta['acc_test_rest']:.3f} test accuracy on the other classes, against "
                     f"{original['acc_test_rest']:.3f} before unlearning and {retrain['acc_test_rest']:.3f} for the "
                     "retrained model")
        overshoot += (", consistent with the overshoot that the ignored terms predict." if drop >= rest_drop
                      else "; in this setting the full subtraction does not overshoot by that measure.")
        if abs(original["acc_test_forgotten"] - retrain["acc_test_forgotten"]) <= forget_tol:
            conclusion = (f"In the MNIST class-3 run rendered here the original model already meets the rule stated "
                          f"above (forgotten class {original['acc_test_forgotten']:.3f}, retrained model "
                          f"{retrain['acc_test_forgotten']:.3f}), so these results cannot say which α forgets best.")
            best_sentence = (f"In the run rendered here the original model already meets the forgetting half of the "
                             f"rule: its accuracy on the forgotten class, {original['acc_test_forgotten']:.3f}, "
                             f"is within {forget_tol:g} of the retrained model's, "
                             f"{retrain['acc_test_forgotten']:.3f}, so there is "
                             "nothing to forget by this measure and the rule cannot rank the values of α.")
            reference_row, reference_label = rows[res.experiment.update(0.1).label], "α = 0.1"
        elif best is None:
            conclusion = ("In the MNIST class-3 experiment no α of the sweep meets the rule stated above, so "
                          "subtraction alone did not both forget like retraining and keep the other classes there.")
            best_sentence = (f"No α of the sweep meets the rule: every α either leaves the forgotten class's test "
                             f"accuracy more than {forget_tol:g} away from the retrained model's "
                             f"({retrain['acc_test_forgotten']:.3f}) or "
                             f"costs the other classes {rest_drop:g} or more of accuracy.")
            reference_row, reference_label = rows[res.experiment.update(0.1).label], "α = 0.1"
        else:
            conclusion = (f"In the MNIST class-3 experiment the smallest α meeting the rule stated above is "
                          f"{best['alpha']:g}: with no repair, {best['acc_test_forgotten']:.3f} accuracy on the "
                          f"forgotten class (retrained model {best['retrain_forgotten']:.3f}) and "
                          f"{best['acc_test_rest']:.3f} on the "
                          f"other classes (original {best['original_rest']:.3f}).")
            best_sentence = (f"The smallest α that meets the rule is α = {best['alpha']:g}: without any repair, the "
                             f"forgotten class's test accuracy is {best['acc_test_forgotten']:.3f} "
                             f"(retrained model {best['retrain_forgotten']:.3f}, "
                             f"original {best['original_forgotten']:.3f}) and the other classes' is "
                             f"{best['acc_test_rest']:.3f} (retrained {best['retrain_rest']:.3f}, original "
                             f"{best['original_rest']:.3f}).")
            reference_row, reference_label = best, f"α = {best['alpha']:g}"
        finetune = rows[res.experiment.finetune().label]
        after = [r["acc_test_forgotten"] for label, r in repaired.items()  # methods evaluated after repair (NaN: not)
                 if not label.startswith(("After training", "Retrain")) and r["acc_test_forgotten"] >= 0]
        repair_sentence = (f"One epoch of fine-tuning on the retain set, with no unlearning step at all, takes the "
                           f"forgotten class's test accuracy from {original['acc_test_forgotten']:.3f} to "
                           f"{finetune['acc_test_forgotten']:.3f} "
                           f"(retrained model: {retrain['acc_test_forgotten']:.3f}).")
        if after:
            epochs = res.experiment.repair_epochs
            repair_sentence += (f" After {epochs} epoch{'s' if epochs != 1 else ''} of repair, the {len(after)} "
                                "repaired "
                                f"methods lie between {min(after):.3f} and {max(after):.3f} on the forgotten class"
                                + (", whatever their unlearning step was." if max(after) - min(after) <= forget_tol
                                   else "; repair does not make the methods indistinguishable here."))
        mia_sentence = (f"The loss-based attack tells the forgotten training images from test images with accuracy "
                        f"{original['mia_loss']:.3f} on the original model, {retrain['mia_loss']:.3f} on the retrained "
                        f"one, and {reference_row['mia_loss']:.3f} after subtracting the class delta with "
                        f"{reference_label}.")
        stored = {key: sum(r["memory_bytes"][key] for r in res.seeds.values()) / len(res.seeds)
                  for key in ("update", "gradient-p0.1", "batch")}
        memory_sentence = (f"In the MNIST class-3 runs ({res.seeds[min(res.seeds)]['n_params']:,} parameters, "
                           f"{res.seeds[min(res.seeds)]['n_forget']} forget images) the group log held "
                           f"{format_bytes(stored['update'])} (the class's delta and the remainder), the seed's "
                           f"per-sample record at p = 0.1 {format_bytes(stored['gradient-p0.1'])}, and the per-batch "
                           "changes summed for this one "
                           f"request {format_bytes(stored['batch'])}.")
    else:
        overshoot = best_sentence = repair_sentence = mia_sentence = memory_sentence = unavailable
        conclusion = "The MNIST class-3 results were not available when this page was built, so no number is quoted."
    return {"overshoot": overshoot, "best_sentence": best_sentence, "conclusion": conclusion,
            "repair_sentence": repair_sentence, "mia_sentence": mia_sentence, "memory_sentence": memory_sentence}


def sample_forgetting_values(res1: Result, res10: Result) -> dict[str, object]:
    """Every number and phrase the random-sample chapter glues into its prose, computed from the 1% and 10%
    results (and the starting kit's published numbers), keyed by glue name."""
    metrics = ("acc_forget", "acc_retain", "acc_test", "mia_loss", "mia_entropy", "dist_param", "js_to_retrain",
               "agreement_to_retrain")
    kit = STARTING_KIT
    values = {
        "kit_orig_test": kit["Original model"]["acc_test"], "kit_orig_mia": kit["Original model"]["mia_loss"],
        "kit_ft_test": kit["Fine-tune on the retain set (5 epochs)"]["acc_test"],
        "kit_ft_mia": kit["Fine-tune on the retain set (5 epochs)"]["mia_loss"],
        "kit_retrain_test": kit["Retrain from scratch"]["acc_test"],
        "kit_retrain_mia": kit["Retrain from scratch"]["mia_loss"],
        "kit_gap": kit["Original model"]["mia_loss"] - kit["Retrain from scratch"]["mia_loss"],
    }
    for tag, res in (("1", res1), ("10", res10)):
        nr = {r["method"]: r for r in summarize(res, metrics, "no_repair")}
        ar = {r["method"]: r for r in summarize(res, metrics, "after_repair")}
        orig, ref = nr["After training (original)"], nr["Retrain from scratch (reference)"]
        ex = res.experiment
        batch, a1, a01 = nr[ex.per_batch().label], nr[ex.update(1).label], nr[ex.update(0.1).label]
        ft = nr[ex.finetune().label]
        seed_row, relabel = nr[ex.seed_record(0.1).label], nr[ex.relabel().label]
        best = best_row(list(nr.values()), "js_to_retrain", family=UPDATE_LOG)
        fraction = res.experiment.forget_fraction
        hit = 1 - (1 - fraction) ** res.experiment.recipe.batch_size
        fold_std = float(np.mean([r["original"]["mia_loss"]["std"] for r in res.seeds.values()]))
        # Methods that push the forget set's accuracy clearly below the retrained model's (by more than 0.01).
        under = [label for label, r in nr.items() if r["acc_forget"] < ref["acc_forget"] - 0.01
                 and label != "Retrain from scratch (reference)"]
        # Update-attribution scales whose test accuracy stays within 0.005 of the original model's.
        harmless = [f"{r['alpha']:g}" for r in nr.values() if r["spec"] is not None and r["spec"].log == UPDATE_LOG
                    and r["acc_test"] >= orig["acc_test"] - 0.005]
        repaired_test = [r["acc_test"] for label, r in ar.items() if not np.isnan(r["acc_test"])
                         and label not in ("After training (original)", "Retrain from scratch (reference)")]
        close = (abs(orig["acc_forget"] - ref["acc_forget"]) < 0.01
                 and abs(orig["mia_loss"] - ref["mia_loss"]) < 2 * fold_std)
        values.update({
            f"frac_{tag}": fraction, f"hit_{tag}": hit,
            f"orig_forget_{tag}": orig["acc_forget"], f"orig_test_{tag}": orig["acc_test"],
            f"orig_mia_{tag}": orig["mia_loss"], f"orig_js_{tag}": orig["js_to_retrain"],
            f"retrain_forget_{tag}": ref["acc_forget"], f"retrain_test_{tag}": ref["acc_test"],
            f"retrain_mia_{tag}": ref["mia_loss"],
            f"orig_gap_{tag}": orig["acc_forget"] - ref["acc_forget"],
            f"retrain_gap_{tag}": ref["acc_forget"] - ref["acc_test"],
            f"mia_fold_std_{tag}": fold_std, f"mia_gap_{tag}": orig["mia_loss"] - ref["mia_loss"],
            f"batch_test_{tag}": batch["acc_test"], f"batch_test_drop_{tag}": orig["acc_test"] - batch["acc_test"],
            f"batch_test_rep_{tag}": ar[ex.per_batch().label]["acc_test"],
            f"a1_forget_{tag}": a1["acc_forget"], f"a1_test_{tag}": a1["acc_test"],
            f"a1_test_rep_{tag}": ar[ex.update(1).label]["acc_test"],
            f"a01_forget_{tag}": a01["acc_forget"], f"a01_test_{tag}": a01["acc_test"],
            f"seed_forget_{tag}": seed_row["acc_forget"], f"seed_test_{tag}": seed_row["acc_test"],
            f"relabel_forget_{tag}": relabel["acc_forget"], f"relabel_test_{tag}": relabel["acc_test"],
            f"ft_forget_{tag}": ft["acc_forget"], f"ft_test_{tag}": ft["acc_test"], f"ft_mia_{tag}": ft["mia_loss"],
            f"best_label_{tag}": best["method"], f"best_js_{tag}": best["js_to_retrain"],
            f"best_forget_{tag}": best["acc_forget"],
            f"best_vs_orig_{tag}": (
                ("closer to" if best["js_to_retrain"] < orig["js_to_retrain"] else "no closer to")
                + " the retrained model than the original model itself is (one seed: no spread to judge the "
                "difference by)"
                if orig["seeds"] < 2 else
                "closer to the retrained model than the original model itself is, by more than the original's spread "
                "over seeds" if best["js_to_retrain"] < orig["js_to_retrain"] - orig["js_to_retrain_std"] else
                "not clearly closer to the retrained model than the original model itself is (the difference is within "
                "the original's spread over seeds)"),
            f"orig_dist_{tag}": orig["dist_param"],
            f"under_{tag}": ", ".join(under) if under else "none of the methods",
            f"a1_vs_retrain_{tag}": "below" if a1["acc_forget"] < ref["acc_forget"] else "at or above",
            f"harmless_{tag}": "α = " + ", ".join(harmless) if harmless else "none of the swept scales",
            f"repair_min_{tag}": min(repaired_test), f"repair_max_{tag}": max(repaired_test),
            f"orig_close_{tag}": ("already close to it (forget accuracy within 0.01, loss-MIA within two fold standard "
                                  "deviations)" if close else "measurably different from it (forget accuracy off by "
                                  "0.01 or more, or loss-MIA off by more than two fold standard deviations)"),
        })
    values["gap_vs_kit"] = "smaller than" if abs(values["mia_gap_10"]) < values["kit_gap"] else "at least as large as"
    return values


MASK_VARIANTS = (("masked", "masked record (coefficient 1)"), ("full_times_p", "full record × p"),
                 ("full_times_sqrt_p", "full record × √p"), ("random_direction", "random direction, same norm"))


def _mask_means(records: Sequence[dict]) -> dict[float, dict]:
    """{p: {variant: {norm, acc_test_forgotten, acc_test_rest} averaged over the records (seeds)}}."""
    out: dict[float, dict] = {}
    for p in records[0]["ps"]:
        rows = [next(r for r in rec["rows"] if r["p"] == p) for rec in records]
        out[p] = {v: {k: float(np.mean([r[v][k] for r in rows])) for k in rows[0][v]} for v, _ in MASK_VARIANTS}
        out[p]["cosine"] = float(np.mean([r["cosine_masked_full"] for r in rows]))
    return out


def mask_control_table(records: Sequence[dict]) -> str:
    """Per p (mean over seeds): for the masked per-sample record and its three controls, the vector's norm and
    the test accuracy on the forgotten class / on the rest (:func:`amnesiac_paper.experiments.mask_control` records)."""
    if not records:
        return "*The mask control is not computed at this profile: `amnesiac_paper.experiments.mask_control`.*"
    means = _mask_means(records)
    body = [[f"{p:g}"] + [f"{m[v]['norm']:.3g}: {m[v]['acc_test_forgotten']:.2f} / {m[v]['acc_test_rest']:.3f}"
                          for v, _ in MASK_VARIANTS] + [f"{m['cosine']:.2f}"] for p, m in means.items()]
    return markdown_table(["p"] + [label for _, label in MASK_VARIANTS] + ["cosine(masked, full)"], body)


def mask_control_sentence(records: Sequence[dict]) -> str:
    """Which scale-matched control the masked record behaves like below saturation, from the accuracies."""
    if not records:
        return "The unsaturated mask control is not computed at this profile."
    means = _mask_means(records)

    def gap(m, v):
        return max(abs(m["masked"][k] - m[v][k]) for k in ("acc_test_forgotten", "acc_test_rest"))

    closest = {p: min(("full_times_p", "full_times_sqrt_p", "random_direction"), key=lambda v: gap(m, v))
               for p, m in means.items()}
    label = dict(MASK_VARIANTS)
    counts = {v: sum(c == v for c in closest.values()) for v in set(closest.values())}
    winner = max(counts, key=counts.get)
    ps = list(means)
    worst = max(gap(means[p], winner) for p in ps)
    norm_ratio = [means[p]["masked"]["norm"] / means[p]["full_times_sqrt_p"]["norm"] for p in ps]
    orig = {k: float(np.mean([r["original"][k] for r in records])) for k in ("acc_test_forgotten", "acc_test_rest")}

    def moved(v):  # the largest change of either accuracy from the original model's, over p
        return max(abs(means[p][v][k] - orig[k]) for p in ps for k in orig)
    # the masked record's component along the full record, in units of the full record x p
    along = [means[p]["masked"]["norm"] * means[p]["cosine"] / means[p]["full_times_p"]["norm"] for p in ps]
    return (f"Below saturation (p = {min(ps):g} to {max(ps):g}, {len(records)} seed{'s' if len(records) > 1 else ''}), "
            f"the masked record behaves most like the {label[winner]} at {counts[winner]} of {len(ps)} values of p "
            f"(largest accuracy gap to it {worst:.3f}); its norm is {min(norm_ratio):.2f} to {max(norm_ratio):.2f} "
            "times that of the full record × √p, its cosine with the full record "
            f"{min(means[p]['cosine'] for p in ps):.2f} to {max(means[p]['cosine'] for p in ps):.2f}, so its "
            f"component along the full record is {min(along):.2f} to {max(along):.2f} times the full record × p "
            f"(by p: {', '.join(f'{a:.2f}' for a in along)}). A random direction of the same norm moves either "
            f"accuracy by at most {moved('random_direction'):.3f}, the masked record by up to {moved('masked'):.3f}"
            + ("; what a mask keeps of the record acts as the full record at step size p, plus a component that "
               "does no more than a random direction." if winner == "full_times_p"
               and moved("random_direction") < 0.25 * moved("masked") else "."))


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table (cells already formatted as strings)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pm(row: dict, metric: str, digits: int = 2) -> str:
    """``mean ± half-width of the 95% interval over seeds`` of a summarize() row (the mean alone for one seed),
    or a dash when the method was not evaluated at that stage."""
    mean, half = row.get(metric, float("nan")), row.get(metric + "_ci", float("nan"))
    if mean is None or np.isnan(mean):
        return "–"
    if half is None or np.isnan(half) or row.get("seeds", 1) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def provenance(result: Result) -> str:
    """A Markdown paragraph naming where the numbers come from."""
    if not result.seeds:
        return f"No results for `{result.experiment.name}` ({result.experiment.profile})."
    recs = list(result.seeds.values())
    prov = recs[0].get("provenance", {})
    wall = sum(r.get("wall_seconds", 0.0) for r in recs)
    resumed = sorted(k for k, r in result.seeds.items() if r.get("resumed"))
    note = (f" (seed(s) {resumed} resumed after an interruption: only their last run's time is counted)"
            if resumed else "")
    return (f"**Provenance.** Experiment `{result.experiment.name}`, profile `{result.experiment.profile}`, config "
            f"hash `{result.experiment.hash}`, seeds {sorted(result.seeds)}; computed with code revision "
            f"`{prov.get('git', '?')}` on {prov.get('device', '?')} ({prov.get('threads', '?')} threads), torch "
            f"{prov.get('torch', '?')}, on {prov.get('date', '?')[:10]}; {wall / 60:.1f} min of compute in all"
            f"{note}.")


def missing_seeds_note(result: Result, profile: str) -> str:
    """A sentence saying which of the profile's seeds are absent from the rendered results (empty if none)."""
    want = get_experiment(result.experiment.name, profile).seeds
    missing = [s for s in want if s not in result.seeds]
    if not missing:
        return ""
    return (f"Seeds {missing} of the `{profile}` profile have not been computed yet; the numbers below use seeds "
            f"{sorted(result.seeds)}. Run `python -m amnesiac_paper run {result.experiment.name} --profile {profile}` "
            "to add them.")


def results_table(result: Result, columns: Sequence[tuple[str, str, str]], *, digits: int = 2,
                  keep_empty: bool = False) -> str:
    """A Markdown table of ``mean ± std`` over seeds: one row per method, the original model first and the
    retrained reference last (rows of :func:`amnesiac_paper.experiments.summarize`), one column per
    ``(header, metric, stage)`` with ``stage`` ``"no_repair"`` or ``"after_repair"``.

    A method with a dash in every column (e.g. one never repaired, in an after-repair table) is left out
    unless ``keep_empty``. The original and retrained models have no stages: their columns repeat.

    Example:
        >>> # results_table(res, [("forget", "acc_forget", "no_repair"), ("test", "acc_test", "after_repair")])
    """
    stages = {stage for _, _, stage in columns}
    by_stage = {}
    for stage in stages:
        wanted = tuple(dict.fromkeys(m for _, m, s in columns if s == stage))
        by_stage[stage] = {r["method"]: r for r in summarize(result, wanted, stage)}
    order = list(next(iter(by_stage.values())))
    rows = []
    for label in order:
        cells = [pm(by_stage[stage][label], metric, digits) for _, metric, stage in columns]
        if keep_empty or any(c != "–" for c in cells):
            rows.append([label] + cells)
    return markdown_table(["method"] + [h for h, _, _ in columns], rows)


def best_row(rows: Sequence[dict], metric: str, *, family: LogSpec | None = None, lowest: bool = True) -> dict:
    """The :func:`amnesiac_paper.experiments.summarize` row with the lowest (or highest) mean ``metric`` among the
    methods reading the log ``family`` (every row when ``None``; NaN rows ignored).

    Example:
        >>> best_row([{"method": "a", "x": 0.3}, {"method": "b", "x": 0.1}], "x")["method"]
        'b'
    """
    pool = [r for r in rows if (family is None or (r.get("spec") is not None and r["spec"].log == family))
            and not np.isnan(r.get(metric, float("nan")))]
    if not pool:
        raise ValueError(f"no row of log {family} has a value for {metric!r}")
    values = [r[metric] for r in pool]
    return pool[int(np.argmin(values) if lowest else np.argmax(values))]


def seed_report_table(name: str) -> str:
    """The seed report's published table for an experiment (``SEED_REPORT[name]``) as Markdown: accuracy on
    the forgotten class / on the rest after training, right after unlearning and after 4 epochs of repair.

    Example:
        >>> seed_report_table("mnist-class3-simple").splitlines()[0]
        '| method (seed report) | after training | no retrain | after retrain |'
    """
    if name not in SEED_REPORT:
        raise ValueError(f"the seed report has no table for {name!r}; it has: {', '.join(SEED_REPORT)}")
    rows = [[label] + [f"{f:.2f} / {r:.2f}" for f, r in cells] for label, *cells in SEED_REPORT[name]]
    return markdown_table(["method (seed report)", "after training", "no retrain", "after retrain"], rows)


def seed_beside_ours(result: Result, metrics: tuple[str, str] = ("acc_test_forgotten", "acc_test_rest"), *,
                     every_method: bool = False) -> str:
    """The seed report's table for ``result``'s experiment beside ours, row by row: accuracy on the forgotten class
    / on the rest after training, right after unlearning (the seed's "no retrain") and after the repair (its "after
    retrain"), ours as mean ± 95% interval over seeds (our "after train" is the one trained model every row
    shares). With ``every_method``, our rows the seed did not report follow; the retrained model closes the table.

    Example:
        >>> # seed_beside_ours(experiments.load("mnist-class3-resnet18", "full"), every_method=True)
    """
    name = result.experiment.name
    if name not in SEED_REPORT:
        raise ValueError(f"the seed report has no table for {name!r}; it has: {', '.join(SEED_REPORT)}")
    if not result.seeds:
        raise ValueError(f"{name} has no computed seeds to set beside the seed report")
    ours = {stage: {r["method"]: r for r in summarize(result, metrics, stage)}
            for stage in ("no_repair", "after_repair")}

    def cell(row: dict | None) -> str:
        if row is None or all(np.isnan(row.get(m, float("nan"))) for m in metrics):
            return "–"
        return " / ".join(pm(row, m) for m in metrics)

    def quoted(pair) -> str:
        return f"{pair[0]:.2f} / {pair[1]:.2f}" if pair else "–"

    seed = {label: cells for label, *cells in SEED_REPORT[name]}
    trained, reference = "After training (original)", "Retrain from scratch (reference)"
    labels = list(seed) + ([k for k in ours["no_repair"] if k not in seed and k not in (trained, reference)]
                           if every_method else [])
    rows = []
    for label in labels:
        s = seed.get(label)
        rows.append([label, quoted(s and s[0]), cell(ours["no_repair"][trained]), quoted(s and s[1]),
                     cell(ours["no_repair"].get(label)), quoted(s and s[2]), cell(ours["after_repair"].get(label))])
    rows.append([reference, "–", "–", "–", cell(ours["no_repair"][reference]), "–", "–"])
    return markdown_table(["method", "seed: after train", "ours: after train", "seed: no retrain", "ours: no repair",
                           "seed: after retrain", "ours: after repair"], rows)


def seed_comparison_reading(result: Result, *, forget_tol: float = 0.05, rest_drop: float = 0.02) -> str:
    """How to read :func:`seed_beside_ours` for a class experiment, as a Markdown paragraph computed from
    ``result`` (means over its seeds, no repair, test-set accuracy on the forgotten class / on the rest): the
    original and retrained models, Graves's per-batch removal, the seed's masked records against the full record
    scaled by ``alpha = p``, which of our p = 0.1 records (correctly indexed or mis-indexed) lies nearer the seed's
    own p = 0.1 row, the update-attribution scales that forget like the retrained model while keeping the rest
    (the :func:`smallest_alpha_matching` rule with ``forget_tol`` and ``rest_drop``), and the repair-only control.

    Example:
        >>> # seed_comparison_reading(experiments.load("mnist-class3-resnet18", "full"))
    """
    name, exp = result.experiment.name, result.experiment
    if name not in SEED_REPORT:
        raise ValueError(f"the seed report has no table for {name!r}; it has: {', '.join(SEED_REPORT)}")
    if not result.seeds:
        raise ValueError(f"{name} has no computed seeds to read")
    F, R = metrics = ("acc_test_forgotten", "acc_test_rest")
    rows = {r["method"]: r for r in summarize(result, metrics + ("agreement_to_retrain",), "no_repair")}

    def fr(row: dict) -> str:
        return f"{row[F]:.2f} / {row[R]:.2f}"

    orig, ref = rows["After training (original)"], rows["Retrain from scratch (reference)"]
    batch, ft = rows[exp.per_batch().label], rows[exp.finetune().label]
    ps = sorted(exp.ps, reverse=True)
    masked = [rows[exp.seed_record(p).label] for p in ps]
    scaled = [rows[exp.gradient_record(p).label] for p in ps]
    gap = max(abs(a[m] - b[m]) for a, b in zip(masked, scaled) for m in metrics)
    seed = {label: cells for label, *cells in SEED_REPORT[name]}
    mine, mis = rows[exp.seed_record(0.1).label], rows[exp.misindexed().label]
    theirs = seed[exp.seed_record(0.1).label][1]

    def far(row: dict) -> float:
        return abs(row[F] - theirs[0]) + abs(row[R] - theirs[1])

    nearer, other = (("mis-indexed", "correctly indexed") if far(mis) < far(mine)
                     else ("correctly indexed", "mis-indexed"))
    n = len(result.seeds)
    step = (", so the mask acts as a step size" if gap <= forget_tol else
            f": more than {forget_tol:g} at some p, where the mask is not only a step size")
    text = (f"**Reading the table** (means over {n} seed{'s' if n > 1 else ''}, test accuracy on the forgotten class / "
            f"on the rest, no repair). The original model gives {fr(orig)}, the model retrained without the "
            f"forget set {fr(ref)}. Graves's per-batch removal gives {fr(batch)}. The seed's per-sample records at "
            f"p = {', '.join(f'{p:g}' for p in ps)} give {'; '.join(fr(r) for r in masked)}; the full gradient "
            f"record scaled by α = p gives {'; '.join(fr(r) for r in scaled)} (largest gap {gap:.2f})"
            f"{step}. The seed's own p = 0.1 row ({theirs[0]:.2f} / {theirs[1]:.2f} without "
            f"retraining) lies nearer our {nearer} record ({fr(mis if nearer == 'mis-indexed' else mine)}) than our "
            f"{other} one ({fr(mine if nearer == 'mis-indexed' else mis)}). ")
    update = [(spec.alpha, rows[spec.label]) for spec in exp.methods
              if spec.log == UPDATE_LOG and spec.alpha is not None and spec.label in rows]
    good = sorted(a for a, r in update if abs(r[F] - ref[F]) <= forget_tol and orig[R] - r[R] < rest_drop)
    if good:
        text += (f"Exact update attribution forgets like the retrained model (within {forget_tol:g} on the "
                 f"forgotten class) while costing the rest less than {rest_drop:g} at α = "
                 f"{', '.join(f'{a:g}' for a in good)}; these scales are read against the retrained model, so they "
                 f"show what the method can reach, not a rule for choosing α without it. ")
    else:
        text += (f"No scale of the exact update attribution forgets like the retrained model (within {forget_tol:g})"
                 f" while costing the rest less than {rest_drop:g}. ")
    full = next((r for a, r in update if a == 1), None)
    if full is not None:
        text += f"At α = 1 it gives {fr(full)}. "
    ft_forgets = abs(ft[F] - ref[F]) <= forget_tol and orig[R] - ft[R] < rest_drop
    text += (f"The repair-only control ({exp.finetune().label}: training on the retain set, no unlearning step) "
             f"gives {fr(ft)}: ")
    if ft_forgets:
        text += ("training on the rest alone removes the class, so on this forget set the accuracies cannot tell an "
                 "unlearning method from forgetting by neglect. ")
    else:
        text += "training on the rest alone does not forget like the retrained model. "
    best = min(good) if good else None
    agree = [("the original", orig), (exp.finetune().label, ft)]
    if best is not None:
        agree.insert(1, (f"update attribution at α = {best:g}", rows[exp.update(best).label]))
    text += ("Agreement with the retrained model's test predictions: "
             + "; ".join(f"{pm(r, 'agreement_to_retrain', 3)} for {lab}" for lab, r in agree) + ".")
    return text


def availability_note(result: Result, profile: str) -> str:
    """Why a result has no seeds, as a Markdown sentence (empty when it has some): the data set is missing
    where the book was built (``result.reason`` or a failed :func:`amnesiac_paper.datasets.dataset_available`), or the
    data is there but the experiment has not been run; either way it names the command that computes it."""
    if result.seeds:
        return ""
    exp = result.experiment
    command = f"`python -m amnesiac_paper run {exp.name} --profile {profile}`"
    if not result.available or not dataset_available(exp.dataset):
        why = result.reason or f"{exp.dataset} does not load from the data root {data_root()}"
        return (f"**Not computed: the `{exp.dataset}` data set is not available where this book was built** "
                f"({why}). No numbers are shown for `{exp.name}`. Where the data exists, point `$AMNESIAC_DATA` at "
                f"the folder that holds torchvision's files for it and run {command}.")
    return f"**Not computed yet.** The `{exp.dataset}` data is available; run {command} to compute `{exp.name}`."


# ------------------------------------------------------------------------------- live forgetting (interactive)


def validate_counts(**counts: int) -> None:
    """Check that every keyword is a positive integer (chapter parameters such as ``n_train=12000``).

    Example:
        >>> validate_counts(n_train=12000, epochs=1)
    """
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def per_class_accuracy(model: nn.Module, dataset: ArrayDataset, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of ``model`` on each class of ``dataset``, [num_classes] (NaN for an absent class).

    Example:
        >>> import torch
        >>> ds = ArrayDataset(torch.zeros(4, 3), torch.tensor([0, 0, 1, 1]), torch.arange(4))
        >>> per_class_accuracy(torch.nn.Linear(3, 2), ds, 3).shape
        (3,)
    """
    return class_accuracies(predict(model, dataset.x).argmax(1), dataset.y, num_classes)


def split_accuracy(per_class: np.ndarray, class_counts: np.ndarray, forget_class: int | None) -> tuple[float, float]:
    """(accuracy on the forgotten class, accuracy on all other test images) from per-class accuracies and the
    number of test images per class; with ``forget_class=None`` the first is NaN and the second covers all.

    Example:
        >>> split_accuracy(np.array([1.0, 0.5]), np.array([10, 30]), 0)
        (1.0, 0.5)
    """
    per_class, counts = np.asarray(per_class, dtype=float), np.asarray(class_counts, dtype=float)
    rest = np.ones(len(counts), dtype=bool)
    forgotten = float("nan")
    if forget_class is not None:
        rest[forget_class] = False
        forgotten = float(per_class[forget_class])
    ok = rest & (counts > 0)
    return forgotten, float(np.sum(per_class[ok] * counts[ok]) / np.sum(counts[ok]))


def forget_live(model: nn.Module, class_log: DeltaLog, sample_log: DeltaLog, sample_labels: dict[int, int], *,
                forget_class: int | None, sample_ids: Sequence[int], alpha: float) -> tuple[nn.Module, list[int]]:
    """Forget a class and/or single samples at once: subtract ``alpha`` times the class's delta (group
    ``"class<c>"`` of ``class_log``), then ``alpha`` times the deltas of the chosen samples (groups of
    ``sample_log``, keyed by sample id). A chosen sample of the forgotten class is skipped: its share is already
    inside the class delta. Returns the new model (the input is untouched) and the sample ids subtracted.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> cl, sl = DeltaLog(m, {"class0": [0], "class1": [1]}), DeltaLog(m, {0: [0], 1: [1]})
        >>> _, used = forget_live(m, cl, sl, {0: 0, 1: 1}, forget_class=0, sample_ids=[0, 1], alpha=0.1)
        >>> used
        [1]
    """
    out = model
    if forget_class is not None:
        out = unlearn("amnesiac", out, Request(forget_groups=(f"class{forget_class}",)), log=class_log, alpha=alpha)
    used = [int(i) for i in sample_ids if forget_class is None or sample_labels[int(i)] != forget_class]
    if used:
        out = unlearn("amnesiac", out, Request(forget_groups=tuple(used)), log=sample_log, alpha=alpha)
    if out is model:
        out = copy.deepcopy(model)
    return out, used


def forget_sweep(model: nn.Module, class_log: DeltaLog, test_set: ArrayDataset, classes: Sequence[int],
                 alphas: Sequence[float], num_classes: int) -> list[dict]:
    """Test accuracy on the forgotten class and on the rest after subtracting ``alpha`` times a class's delta,
    for every class in ``classes`` and every alpha; one dict per (class, alpha), plus ``alpha=0`` (the trained
    model itself) first for each class."""
    counts = torch.bincount(test_set.y, minlength=num_classes)[:num_classes].numpy()
    before = per_class_accuracy(model, test_set, num_classes)
    rows = []
    for c in classes:
        f, r = split_accuracy(before, counts, c)
        rows.append(dict(forget_class=int(c), alpha=0.0, acc_forgotten=f, acc_rest=r))
        for a in alphas:
            new, _ = forget_live(model, class_log, class_log, {}, forget_class=int(c), sample_ids=(), alpha=float(a))
            f, r = split_accuracy(per_class_accuracy(new, test_set, num_classes), counts, c)
            rows.append(dict(forget_class=int(c), alpha=float(a), acc_forgotten=f, acc_rest=r))
    return rows


def sweep_table(rows: Sequence[dict], digits: int = 2) -> str:
    """A Markdown table of :func:`forget_sweep` rows: one line per class, one column per alpha, cells
    ``forgotten / rest`` (alpha 0 is the trained model, labelled "trained")."""
    alphas = list(dict.fromkeys(r["alpha"] for r in rows))
    classes = list(dict.fromkeys(r["forget_class"] for r in rows))
    cell = {(r["forget_class"], r["alpha"]): f"{r['acc_forgotten']:.{digits}f} / {r['acc_rest']:.{digits}f}"
            for r in rows}
    header = ["class"] + ["trained" if a == 0 else f"α = {a:g}" for a in alphas]
    return markdown_table(header, [[str(c)] + [cell.get((c, a), "–") for a in alphas] for c in classes])


def selective_alphas(rows: Sequence[dict], *, forgotten_max: float = 0.05, rest_drop: float = 0.02) -> dict[int, str]:
    """Per class of :func:`forget_sweep` rows, the alphas that both forget and keep the rest, as text.

    An alpha qualifies when the forgotten class's test accuracy is at most ``forgotten_max`` (a model retrained
    without the class scores 0 on it) and the accuracy on the other classes is less than ``rest_drop`` below the
    trained model's (the ``alpha=0`` row). The text lists them (``"0.03, 0.01"``) or says ``"none of the grid"``.

    Example:
        >>> rows = [dict(forget_class=3, alpha=0.0, acc_forgotten=0.9, acc_rest=0.95),
        ...         dict(forget_class=3, alpha=1.0, acc_forgotten=0.0, acc_rest=0.1),
        ...         dict(forget_class=3, alpha=0.1, acc_forgotten=0.0, acc_rest=0.94)]
        >>> selective_alphas(rows)
        {3: '0.1'}
    """
    trained = {r["forget_class"]: r["acc_rest"] for r in rows if r["alpha"] == 0}
    out: dict[int, list[str]] = {c: [] for c in trained}
    for r in rows:
        c = r["forget_class"]
        if r["alpha"] > 0 and r["acc_forgotten"] <= forgotten_max and trained[c] - r["acc_rest"] < rest_drop:
            out[c].append(f"{r['alpha']:g}")
    return {c: ", ".join(v) if v else "none of the grid" for c, v in out.items()}


def sample_titles(samples: ArrayDataset) -> list[str]:
    """Short labels of tracked samples, ``"#k (label)"`` in display order (thumbnails and the sample selector)."""
    return [f"#{k} ({y})" for k, y in enumerate(samples.y.tolist())]


def sample_sweep(model: nn.Module, sample_log: DeltaLog, samples: ArrayDataset, test_set: ArrayDataset,
                 alphas: Sequence[float]) -> list[dict]:
    """Forget every sample of ``samples`` at once (their groups in ``sample_log``) for each alpha; one dict per
    alpha (``alpha=0`` is the trained model): test accuracy, how many of the samples are still predicted
    correctly, and their mean softmax probability of the true label."""
    rows = []
    for a in [0.0, *alphas]:
        new = model if a == 0 else unlearn("amnesiac", model, Request(forget_groups=tuple(int(i) for i in samples.ids)),
                                           log=sample_log, alpha=float(a))
        probs = torch.softmax(predict(new, samples.x), 1)  # [S, classes]
        pred = predict(new, test_set.x).argmax(1)
        rows.append(dict(alpha=float(a), acc_test=float((pred == test_set.y).double().mean()),
                         n_correct=int((probs.argmax(1) == samples.y).sum()), n_samples=len(samples),
                         p_label=float(probs[torch.arange(len(samples)), samples.y].mean())))
    return rows


def sample_sweep_table(rows: Sequence[dict], digits: int = 3) -> str:
    """A Markdown table of :func:`sample_sweep` rows (one line per alpha; alpha 0 is labelled "trained")."""
    return markdown_table(
        ["alpha", "test accuracy", "samples still predicted correctly", "mean p(label) on the samples"],
        [["trained" if r["alpha"] == 0 else f"{r['alpha']:g}", f"{r['acc_test']:.{digits}f}",
          f"{r['n_correct']} / {r['n_samples']}", f"{r['p_label']:.{digits}f}"] for r in rows])


class ForgetPanel:
    """ipywidgets that forget a class and/or samples of a trained model live, and show what changed.

    A Dropdown picks a class ("none" for no class), a SelectMultiple picks samples tracked by ``sample_log``,
    a FloatLogSlider sets alpha (1e-3 to 1). Every change runs :func:`forget_live` and replaces the contents
    of an Output widget: test accuracy on the forgotten class and on the rest (before and after), the chosen
    samples' predicted labels, and a :func:`amnesiac_paper.plotting.class_accuracy_bars` figure. The time each update
    took is kept in :attr:`seconds`.

    Args:
        model: the trained model (never changed).
        class_log: a finalized :class:`DeltaLog` with one group ``"class<c>"`` per class.
        sample_log: a finalized :class:`DeltaLog` with one group per sample, keyed by sample id.
        test_set: where accuracies are measured.
        samples: the tracked samples (their ids are ``sample_log``'s groups), in display order.
        num_classes: number of classes.
        titles: the SelectMultiple's label of each sample (default ``"#k (label)"``).
        forget_class, selected, alpha: the initial choice (``None`` for no class).

    Example (in a notebook)::

        panel = ForgetPanel(model, class_log, sample_log, test, samples, 10)
        panel.widget  # displays the controls and the output
    """

    def __init__(self, model: nn.Module, class_log: DeltaLog, sample_log: DeltaLog, test_set: ArrayDataset,
                 samples: ArrayDataset, num_classes: int, *, titles: Sequence[str] | None = None,
                 forget_class: int | None = None, selected: Sequence[int] = (), alpha: float = 0.1):
        import ipywidgets as widgets

        if titles is not None and len(titles) != len(samples):
            raise ValueError(f"got {len(titles)} titles for {len(samples)} samples")
        self.model, self.class_log, self.sample_log = model, class_log, sample_log
        self.test_set, self.samples, self.num_classes = test_set, samples, num_classes
        self.labels = {int(i): int(y) for i, y in zip(samples.ids, samples.y)}
        self.counts = torch.bincount(test_set.y, minlength=num_classes)[:num_classes].numpy()
        self.before = per_class_accuracy(model, test_set, num_classes)
        self.probs_before = torch.softmax(predict(model, samples.x), 1)  # [S, classes]
        self.seconds: list[float] = []
        self.last: dict = {}
        titles = list(titles) if titles is not None else sample_titles(samples)
        # Labels are HTML widgets rather than ``description``s: the static page's widget manager typesets
        # descriptions with MathJax 2's API, which fails on pages that load MathJax 3.
        self.class_box = widgets.Dropdown(options=[("none", -1)] + [(str(c), c) for c in range(num_classes)],
                                          value=-1 if forget_class is None else forget_class,
                                          layout=widgets.Layout(width="8em"))
        options = [(f"{t} id {int(i)}", int(i)) for t, i in zip(titles, samples.ids)]
        self.sample_box = widgets.SelectMultiple(options=options, value=tuple(int(i) for i in selected), rows=8,
                                                 layout=widgets.Layout(width="14em"))
        self.alpha_box = widgets.FloatLogSlider(value=alpha, base=10, min=-3, max=0, step=0.05,
                                                readout_format=".3f", continuous_update=False)
        self.output = widgets.Output()
        self._holding = False
        for box in (self.class_box, self.sample_box, self.alpha_box):
            box.observe(self._changed, names="value")
        label = widgets.Layout(width="7em")
        controls = widgets.VBox([widgets.HBox([widgets.HTML("forget class", layout=label), self.class_box]),
                                 widgets.HBox([widgets.HTML("alpha", layout=label), self.alpha_box])])
        picker = widgets.VBox([widgets.HTML("forget samples (ctrl- or shift-click for several)"), self.sample_box])
        self._widget = widgets.VBox([widgets.HBox([controls, picker], layout=widgets.Layout(grid_gap="2em")),
                                     self.output])
        self.update()

    @property
    def widget(self):
        """The panel: controls on top, the Output widget below."""
        return self._widget

    def set(self, *, forget_class: int | None = None, selected: Sequence[int] = (), alpha: float | None = None) -> dict:
        """Set every control at once (one update, not three) and return :meth:`update`'s summary."""
        self._holding = True
        try:
            self.class_box.value = -1 if forget_class is None else forget_class
            self.sample_box.value = tuple(int(i) for i in selected)
            if alpha is not None:
                self.alpha_box.value = alpha
        finally:
            self._holding = False
        return self.update()

    def _changed(self, _change) -> None:
        if not self._holding:
            self.update()

    def update(self) -> dict:
        """Unlearn with the current choice, refresh the Output widget, and return a summary dict."""
        import base64
        import html
        import io
        import re
        import time

        import matplotlib.pyplot as plt

        from .plotting import class_accuracy_bars

        start = time.perf_counter()
        fc = None if self.class_box.value == -1 else int(self.class_box.value)
        chosen, alpha = [int(i) for i in self.sample_box.value], float(self.alpha_box.value)
        new, used = forget_live(self.model, self.class_log, self.sample_log, self.labels, forget_class=fc,
                                sample_ids=chosen, alpha=alpha)
        after = per_class_accuracy(new, self.test_set, self.num_classes)
        f0, r0 = split_accuracy(self.before, self.counts, fc)
        f1, r1 = split_accuracy(after, self.counts, fc)
        pos = self.samples.positions(chosen) if chosen else torch.empty(0, dtype=torch.long)
        probs = torch.softmax(predict(new, self.samples.x[pos]), 1) if chosen else torch.empty(0, self.num_classes)
        rows = []
        for k, (i, p) in enumerate(zip(chosen, probs)):
            y, p0 = self.labels[i], self.probs_before[pos[k]]
            rows.append(dict(sample_id=i, label=y, pred_before=int(p0.argmax()), pred_after=int(p.argmax()),
                             p_label_before=float(p0[y]), p_label_after=float(p[y]), in_class_delta=i not in used))
        fig = class_accuracy_bars(self.before, after, highlight=fc, labels=("trained", "after forgetting"))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        seconds = time.perf_counter() - start
        self.seconds.append(seconds)
        self.last = dict(forget_class=fc, samples=chosen, alpha=alpha, acc_forgotten_before=f0,
                         acc_forgotten_after=f1, acc_rest_before=r0, acc_rest_after=r1, samples_table=rows,
                         seconds=seconds)

        what = [f"class {fc}"] if fc is not None else []
        what += [f"{len(chosen)} sample{'s' if len(chosen) != 1 else ''}"] if chosen else []
        lines = [f"<p><b>Forgetting {' and '.join(what) or 'nothing'}</b> with alpha = {alpha:.3f} "
                 f"(update took {seconds:.2f} s).<br>"]
        if fc is not None:
            lines.append(f"Test accuracy on class {fc}: {f0:.3f} &rarr; <b>{f1:.3f}</b>; ")
        rest_name = "other classes" if fc is not None else "test set"
        lines.append(f"on the {rest_name}: {r0:.3f} &rarr; <b>{r1:.3f}</b>.</p>")
        if rows:
            cells = "".join(
                f"<tr><td>{r['sample_id']}</td><td>{r['label']}</td>"
                f"<td>{r['pred_before']} &rarr; {r['pred_after']}</td>"
                f"<td>{r['p_label_before']:.3f} &rarr; {r['p_label_after']:.3f}</td>"
                f"<td>{'in the class delta' if r['in_class_delta'] else 'own delta'}</td></tr>" for r in rows)
            lines.append('<table style="margin-left: 0; border-collapse: separate; border-spacing: 14px 2px">'
                         "<tr><th>sample id</th><th>label</th><th>predicted</th>"
                         f"<th>p(label)</th><th>subtracted as</th></tr>{cells}</table>")
        text = "".join(lines)
        self.output.outputs = (
            dict(output_type="display_data", metadata={},
                 data={"text/html": text, "text/plain": html.unescape(re.sub(r"<[^>]+>", " ", text))}),
            dict(output_type="display_data", metadata={},
                 data={"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": "<per-class accuracy>"}),
        )
        return self.last


def panel_choices_table(rows: Sequence[dict], digits: int = 3) -> str:
    """Markdown table of :func:`amnesiac_paper.webpanel.panel_reference` results, one row per choice: the class, the
    images and alpha, the forgotten and rest accuracies before -> after, and each selected image's predicted
    label before -> after.

    Example:
        >>> print(panel_choices_table([{"forget_class": None, "selected": [], "alpha": 1.0, "acc_forgotten_before":
        ...     float("nan"), "acc_forgotten_after": float("nan"), "acc_rest_before": 0.9, "acc_rest_after": 0.8,
        ...     "samples": []}]).splitlines()[2])
        | none | none | 1 | n/a | 0.900 → 0.800 | n/a |
    """
    def acc(a, b):
        return "n/a" if math.isnan(a) else f"{a:.{digits}f} → {b:.{digits}f}"

    lines = ["| class | images | α | forgotten class | rest | tracked images: predicted before → after |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        imgs = ", ".join(str(i) for i in r["selected"]) or "none"
        preds = "; ".join(f"id {s['id']} ({s['label']}): {s['pred_before']} → {s['pred_after']}" for s in r["samples"])
        lines.append(f"| {'none' if r['forget_class'] is None else r['forget_class']} | {imgs} | {r['alpha']:g} | "
                     f"{acc(r['acc_forgotten_before'], r['acc_forgotten_after'])} | "
                     f"{acc(r['acc_rest_before'], r['acc_rest_after'])} | {preds or 'n/a'} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- method and discussion chapters

# The seed's two class-forgetting settings as the memory formulas need them: training-set
# size, forget-set size, epochs and batch size. MNIST uses Graves's split: its 60,000 training images minus all
# but the first 100 of the 6,131 threes; CIFAR-100 has 50,000 training images, 500 per class (Krizhevsky 2009).
MEMORY_SETTINGS = {
    "MNIST, forget class 3": dict(dataset="mnist", n_train=60_000 - 6_131 + 100, n_forget=100, epochs=4,
                                  batch_size=64),
    "CIFAR-100, forget class 81": dict(dataset="cifar100", n_train=50_000, n_forget=500, epochs=4, batch_size=64),
}


def format_bytes(n: float) -> str:
    """A byte count in decimal units (kB, MB, GB, TB are 10^3, 10^6, 10^9, 10^12 bytes), three significant digits.

    Example:
        >>> format_bytes(44_911_248), format_bytes(512), format_bytes(1.4e11)
        ('44.9 MB', '512 B', '140 GB')
    """
    if n < 1000:
        return f"{int(n)} B"
    for unit, size in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        text = f"{n / size:.3g}"
        if float(text) < 1000 or unit == "TB":
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def smallest_alpha_matching(result: Result, *, forget_tol: float = 0.05, rest_drop: float = 0.02,
                            family: LogSpec = UPDATE_LOG, stage: str = "no_repair") -> dict | None:
    """The smallest ``alpha`` of a family of methods that forgets like the retrained model and keeps the rest.

    The rule (means over the result's seeds, test-set accuracies): the method's accuracy on the forgotten class
    is within ``forget_tol`` of the retrained model's, and its accuracy on the other classes is less than
    ``rest_drop`` below the original model's. Returns the :func:`amnesiac_paper.experiments.summarize` row of that
    method with ``alpha`` and the two references (``retrain_forgotten``, ``original_rest``, ``retrain_rest``)
    added, or ``None`` when no alpha of the family meets the rule (or the result has no seeds).

    Example:
        >>> # smallest_alpha_matching(results("mnist-class3-simple"))["alpha"]
    """
    if not result.seeds:
        return None
    metrics = ("acc_test_forgotten", "acc_test_rest", "mia_loss", "dist_param")
    rows = {r["method"]: r for r in summarize(result, metrics, stage)}
    original, retrain = rows["After training (original)"], rows["Retrain from scratch (reference)"]
    candidates = []
    for spec in result.experiment.methods:
        alpha = spec.alpha
        row = rows.get(spec.label)
        if alpha is None or spec.log != family or row is None or np.isnan(row["acc_test_forgotten"]):
            continue
        forgets = abs(row["acc_test_forgotten"] - retrain["acc_test_forgotten"]) <= forget_tol
        keeps = original["acc_test_rest"] - row["acc_test_rest"] < rest_drop
        if forgets and keeps:
            candidates.append(dict(row, alpha=float(alpha)))
    if not candidates:
        return None
    best = min(candidates, key=lambda r: r["alpha"])
    return dict(best, retrain_forgotten=retrain["acc_test_forgotten"], original_rest=original["acc_test_rest"],
                retrain_rest=retrain["acc_test_rest"], original_forgotten=original["acc_test_forgotten"])


def toy_dataset(n_samples: int = 48, num_classes: int = 4, *, size: int = 8, noise: float = 1.0,
                seed: int = 0) -> ArrayDataset:
    """A tiny float64 image set for exactness checks: sample ``i`` has label ``i % num_classes`` and its image
    is its class's random prototype plus Gaussian noise of scale ``noise``, [N, 1, size, size]; ids 0..N-1.

    Example:
        >>> ds = toy_dataset(8, 2, seed=0)
        >>> ds.x.shape, ds.x.dtype, ds.y.tolist()
        (torch.Size([8, 1, 8, 8]), torch.float64, [0, 1, 0, 1, 0, 1, 0, 1])
    """
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n_samples) % num_classes  # [N]
    prototypes = torch.randn(num_classes, 1, size, size, generator=gen, dtype=torch.float64)
    x = prototypes[y] + noise * torch.randn(n_samples, 1, size, size, generator=gen, dtype=torch.float64)
    return ArrayDataset(x, y, torch.arange(n_samples), f"toy-seed{seed}")


def validate_tolerances(**values: float) -> None:
    """Check that every keyword is a number in [0, 1] (chapter parameters such as ``forget_tol=0.05``).

    Example:
        >>> validate_tolerances(forget_tol=0.05, rest_drop=0.02)
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name}={value!r} must be a number between 0 and 1")


def bench_results(profile: str = "full", *, recompute: bool = False, device: str = "auto") -> dict:
    """The benchmark output for a profile: ``results/bench/<profile>.json``, computed if missing or asked."""
    import json

    from .bench import bench_path, run_bench
    from .experiments import RESULTS_ROOT

    validate(profile=profile, recompute=recompute, device=device)
    path = bench_path(profile)
    if recompute:
        return run_bench(profile, device=device)
    if path.exists():
        return json.loads(path.read_text())
    # the full benchmark takes long on a CPU: without a committed one, run (and label) the small one
    smoke = RESULTS_ROOT / "bench" / "smoke.json"
    return json.loads(smoke.read_text()) if smoke.exists() else run_bench("smoke", device=device)


def bench_gpu_comparison(cpu: dict, profile: str = "full") -> str:
    """The CPU benchmark beside the committed CUDA one of the same profile (``results/bench/<profile>-cuda.json``),
    as a Markdown table, or a sentence saying that none is committed and how to make one."""
    import json

    from .bench import bench_path, side_by_side

    path = bench_path(profile, "cuda")
    if not path.exists():
        return (f"*No GPU benchmark is committed for the `{profile}` profile, so only the CPU's figures are shown. On "
                f"a machine with CUDA, `python -m amnesiac_paper bench --profile {profile} --device cuda` writes "
                f"`results/bench/{path.name}` (or `bash tools/device_check.sh bench`), and this chapter then shows it "
                "beside the CPU's.*")
    gpu = json.loads(path.read_text())
    header, rows = side_by_side(cpu, gpu)
    prov = gpu["provenance"]
    return (f"The same benchmark on a GPU ({prov.get('device_name')}, torch {prov['torch']}, revision {prov['git']}), "
            "beside the CPU's; ratios are within one run and device:\n\n" + markdown_table(header, rows))


# ------------------------------------------------------------------------------------ counterfactual fidelity


def fidelity_results(*, profile: str = "full", seeds: Sequence[int] | None = None,
                     optimizers: Sequence[str] | None = None, recompute: bool = False, device: str = "cpu",
                     progress: bool = True):
    """The fidelity study a chapter renders: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``; restricted to ``seeds`` and ``optimizers`` if given."""
    from . import fidelity as fi

    validate(profile=profile, seeds=seeds, recompute=recompute, device=device)
    study = fi.get_study(profile, seeds=seeds, optimizers=optimizers)  # validates the optimizers
    if recompute or profile == "smoke":
        res = fi.run_study(profile, seeds=seeds, optimizers=optimizers, device="cpu" if device == "auto" else device,
                           progress=progress)
    else:
        res = fi.load_study(profile)
    res.records = {k: v for k, v in res.records.items() if k[1] in study.optimizers and k[2] in study.seeds}
    res.study = study
    return res


def fidelity_provenance(result) -> str:
    """Where the study's numbers come from, and which (optimizer, seed) pieces are still missing."""
    recs = [p for pieces in result.records.values() for p in pieces.values()]
    if not recs:
        return (f"**Not computed yet.** No piece of the `{result.study.profile}` fidelity study is on disk; run "
                f"`python -m amnesiac_paper fidelity --profile {result.study.profile}`.")
    revs = sorted({r["provenance"]["git"] for r in recs})
    dates = sorted(r["provenance"]["date"][:10] for r in recs)
    minutes = sum(r.get("wall_seconds", 0.0) for r in recs) / 60
    prov = recs[0]["provenance"]
    text = (f"**Provenance.** Fidelity study `{result.study.name}`, profile `{result.study.profile}`, config hash "
            f"`{result.study.hash}`; {len(recs)} pieces computed with code revision(s) "
            f"{', '.join(f'`{r}`' for r in revs)} on {prov['device']} ({prov['threads']} threads), torch "
            f"{prov['torch']}, {dates[0]} to {dates[-1]}; {minutes:.0f} min of compute in all.")
    missing = []
    for setting, opt, seed in result.study.combos():
        if seed not in result.seeds_of(setting, opt):
            missing.append(f"{setting}/{opt}/seed {seed}")
    if missing:
        text += (f" **Not computed yet:** {', '.join(missing)} (the study resumes where it stopped: "
                 f"`python -m amnesiac_paper fidelity --profile {result.study.profile}`). Means and intervals "
                 "below use the seeds that are complete; with one seed no interval is shown.")
    return text


def _ci(stat) -> str:
    """``mean ± half-width`` (3 significant digits) of a :func:`amnesiac_paper.fidelity.mean_ci` triple."""
    mean, half, n = stat
    if n == 0 or np.isnan(mean):
        return "–"
    return f"{mean:.3g}" if n < 2 or np.isnan(half) else f"{mean:.3g} ± {half:.2g}"


def _tuned(row: dict, key: str = "chosen_kl") -> str:
    """A comparison summary cell: mean ± 95% interval over the seeds whose chosen trial did not diverge, with how
    many did ("diverged" where every seed's did: every trial's outputs were non-finite)."""
    n, bad = len(row["seeds"]), row.get("diverged", 0)
    if bad == n:
        return "diverged"
    return _ci(row[key]) + (f" ({bad} of {n} seeds diverged)" if bad else "")


def _finite_key(row: dict) -> float:
    """Sort key: the chosen trial's mean test KL, a diverged method last."""
    v = row["chosen_kl"][0]
    return v if np.isfinite(v) and row.get("diverged", 0) < len(row["seeds"]) else float("inf")


FIDELITY_COLUMNS = {
    "recovered": [("α = 1", "a1_recovered"), ("rule α", "rule_alpha"), ("at rule α", "rule_recovered"),
                  ("oracle α", "oracle_alpha"), ("at oracle α", "oracle_recovered"),
                  ("best control", "best_control_recovered"), ("fine-tune 1 epoch", "ft_recovered")],
    "distance": [("floor", "floor_dist"), ("original", "original_dist"), ("zero vs drop replay", "zero_to_drop_dist"),
                 ("α = 1", "a1_dist"), ("rule α", "rule_dist"), ("oracle α", "oracle_dist"),
                 ("fine-tune", "ft_dist")],
    "kl": [("floor", "floor_kl"), ("original", "original_kl"), ("α = 1", "a1_kl"), ("rule α", "rule_kl"),
           ("oracle α", "oracle_kl"), ("smallest on the grid", "best_kl"), ("at α", "best_kl_alpha"),
           ("fine-tune", "ft_kl")],
}


def _per_seed(values: Sequence[float]) -> str:
    """Per-seed values of a cell, in seed order: ``0.12 / 0.3 / -0.04``."""
    return " / ".join(f"{v:.3g}" for v in values)


def fidelity_table(result, optimizer: str, *, setting: str = "full", reference: str = "drop",
                   columns: str = "recovered", per_seed: bool = False) -> str:
    """A Markdown table, one row per forget set, of ``columns`` (a key of :data:`FIDELITY_COLUMNS`): mean ± 95%
    interval over the complete seeds (a single value with one seed), or each seed's value (``per_seed``)."""
    from .fidelity import summary_rows

    if columns not in FIDELITY_COLUMNS:
        raise ValueError(f"unknown columns {columns!r}; valid: {', '.join(FIDELITY_COLUMNS)}")
    rows = summary_rows(result, setting, optimizer, reference)
    if not rows:
        return f"*No complete seed for {setting}/{optimizer} yet.*"
    body = []
    for r in rows:
        cells = [r["set"], str(r["size"]), ", ".join(map(str, r["seeds"])) if per_seed else str(len(r["seeds"]))]
        for _, key in FIDELITY_COLUMNS[columns]:
            if key not in r:
                cells.append("–")
            else:
                cells.append(_per_seed([p[key] for p in r["per_seed"]]) if per_seed else _ci(r[key]))
        body.append(cells)
    return markdown_table(["forget set", "n", "seeds"] + [h for h, _ in FIDELITY_COLUMNS[columns]], body)


def fidelity_rule_table(result, *, setting: str = "full", reference: str = "drop") -> str:
    """Per optimizer and forget set, per seed: the rule's alpha (and whether parity was reached) beside the
    oracle's, and the test accuracy and distance / floor at each."""
    from .fidelity import summary_rows

    body = []
    for opt in result.study.optimizers:
        for r in summary_rows(result, setting, opt, reference):
            for s, p in zip(r["seeds"], r["per_seed"]):
                rule = f"{p['rule_alpha']:g}" + ("" if p["rule_reached"] else " (not reached)")
                body.append([opt, r["set"], str(s), rule, f"{p['oracle_alpha']:g}",
                             f"{p['rule_acc_test']:.3f} / {p['oracle_acc_test']:.3f}",
                             f"{p['rule_floor_ratio']:.2f} / {p['oracle_floor_ratio']:.2f}"])
    if not body:
        return "*No complete seed yet.*"
    return markdown_table(["optimizer", "forget set", "seed", "rule α", "oracle α", "test acc. (rule / oracle)",
                           "distance / floor (rule / oracle)"], body)


def _by_set(rows, key) -> str:
    return ", ".join(f"{r['set']} {_ci(r[key])}" for r in rows)


def fidelity_findings(result, *, setting: str = "full", reference: str = "drop") -> str:
    """The study's findings as Markdown bullets, one per optimizer with a complete seed, worded from the numbers
    (fractions of the way from the original to the ``reference`` replay; 1 = reached it, 0 = no closer than the
    original, negative = farther than the original)."""
    from .fidelity import summary_rows

    lines = []
    for opt in result.study.optimizers:
        rows = summary_rows(result, setting, opt, reference)
        if not rows:
            continue
        n = len(rows[0]["seeds"])
        worse = [r["set"] for r in rows if r["a1_recovered"][0] < -0.05]
        same = [r["set"] for r in rows if abs(r["a1_recovered"][0]) <= 0.05]
        beats = [r["set"] for r in rows if r["oracle_recovered"][0] > r["best_control_recovered"][0]]
        reached = sum(sum(r["rule_reached"]) for r in rows)
        cases = sum(len(r["rule_reached"]) for r in rows)
        ft_better = [r["set"] for r in rows if "ft_recovered" in r and r["ft_recovered"][0] > r["oracle_recovered"][0]]
        text = (f"* **{opt}** ({n} seed{'s' if n > 1 else ''}). Fraction of the way from the original model to the "
                f"{reference} replay covered by subtracting the exact delta at α = 1: "
                f"{_by_set(rows, 'a1_recovered')}. ")
        closer = [r["set"] for r in rows if r["a1_recovered"][0] > 0.05]
        groups = [("closer to the replay than the original model (more than 5% of the way)", closer),
                  ("within 5% of the original model's distance: no measurable progress", same),
                  ("*farther* from the replay than the original model", worse)]
        text += "At α = 1 the subtraction ends " + "; ".join(f"{what} for {', '.join(sets)}" for what, sets in groups
                                                             if sets) + ". "
        text += (f"With the best α of the grid (the oracle, which uses the answer): {_by_set(rows, 'oracle_recovered')}"
                 f" (oracle α: {_by_set(rows, 'oracle_alpha')}). Distance to the replay over the retrain floor at "
                 f"α = 1: {_by_set(rows, 'a1_floor_ratio')}. ")
        text += (f"The two replays themselves, which differ only in how a few batch means are normalised, end "
                 f"{_by_set(rows, 'zero_to_drop_dist')} apart, against {_by_set(rows, 'original_dist')} from the "
                 "original model to the dropped replay: where these are of the same size, parameter distance is "
                 "dominated by how training amplifies any small change, not by what the forget set taught. Mean KL "
                 f"of the test softmax from the replay's: original {_by_set(rows, 'original_kl')}; subtraction at "
                 f"α = 1 {_by_set(rows, 'a1_kl')}; retrain floor {_by_set(rows, 'floor_kl')}. ")
        kl_better = [r["set"] for r in rows if r["best_kl"][0] < 0.95 * r["original_kl"][0]]
        text += ("In output space, the α of the grid with the smallest KL brings the subtraction more than 5% closer "
                 f"to the replay than the original model for {', '.join(kl_better)} "
                 f"(smallest KL {_by_set([r for r in rows if r['set'] in kl_better], 'best_kl')}). "
                 if kl_better else "In output space no α of the grid brings the subtraction more than 5% closer to "
                 "the replay than the original model already is. ")
        kl_selective = [r["set"] for r in rows if r["set"] in kl_better and r["best_kl"][0] < r["best_control_kl"][0]]
        if kl_better:
            text += (f"There it also beats both controls at their own best α for "
                     f"{', '.join(kl_selective) if kl_selective else 'none of them'} (controls' smallest KL: "
                     f"{_by_set([r for r in rows if r['set'] in kl_better], 'best_control_kl')}). ")
        text += (f"In parameter space the oracle subtraction beats both controls (another group's delta, a random "
                 f"direction of the same norm, each at its best α) for {len(beats)} of {len(rows)} sets"
                 + (f" ({', '.join(beats)})" if beats and len(beats) < len(rows) else "") + ". ")
        text += (f"The loss-parity rule reached parity in {reached} of {cases} (set, seed) cases and chose "
                 f"{_by_set(rows, 'rule_alpha')}, recovering {_by_set(rows, 'rule_recovered')} of the parameter "
                 f"distance, with test-set KL {_by_set(rows, 'rule_kl')}. ")
        if any("ft_recovered" in r for r in rows):
            text += (f"One epoch of fine-tuning on the retain set (the repair-only control) recovers "
                     f"{_by_set(rows, 'ft_recovered')}"
                     + (f"; it beats the oracle subtraction for {', '.join(ft_better)}." if ft_better else
                        "; the oracle subtraction beats it for every set."))
        lines.append(text)
    return "\n".join(lines) if lines else "*No complete seed of the fidelity study yet.*"


def _rows_by_optimizer(fid, setting: str, reference: str) -> dict[str, dict[str, dict]]:
    """The fidelity study's summary rows, {optimizer: {set name: row}}, for every optimizer with a computed set."""
    from .fidelity import summary_rows

    out = {opt: {r["set"]: r for r in summary_rows(fid, setting, opt, reference)} for opt in fid.study.optimizers}
    return {opt: rows for opt, rows in out.items() if rows}


def _headline_rows(rows: dict[str, dict]) -> tuple[dict, dict] | None:
    """(100 random samples, whole class) rows of one optimizer, or None unless both are computed."""
    cls = next((r for r in rows.values() if r["kind"] == "class"), None)
    return (rows["random-100"], cls) if "random-100" in rows and cls is not None else None


def fidelity_brief(result, *, setting: str = "full", reference: str = "drop") -> str:
    """One Markdown bullet for the introduction: per optimizer, the fraction of the way to the dropped replay
    recovered at alpha = 1 for the smallest and largest random set and the whole class, beside the repair-only
    control and the distance over the retrain floor."""
    parts = []
    for opt, rows in _rows_by_optimizer(result, setting, reference).items():
        random = sorted((r for r in rows.values() if r["kind"] == "random"), key=lambda r: r["size"])
        pick = [random[0], random[-1]] + [r for r in rows.values() if r["kind"] == "class"]
        parts.append(f"{opt} ({len(pick[0]['seeds'])} seed{'s' if len(pick[0]['seeds']) > 1 else ''}): "
                     + "; ".join(f"{r['set']}: {_ci(r['a1_recovered'])} (oracle α {_ci(r['oracle_recovered'])}, "
                                 f"fine-tune {_ci(r['ft_recovered'])}); test-set KL to the replay "
                                 f"{_ci(r['a1_kl'])} after subtracting, {_ci(r['original_kl'])} before, "
                                 f"{_ci(r['ft_kl'])} after fine-tuning, {_ci(r['floor_kl'])} between retrains"
                                 for r in pick))
    if not parts:
        return "* *The fidelity study has no complete seed yet.*"
    return ("* **Against the model that never saw the data** (the dropped replay: same initialisation and batch "
            "order, forget set removed), the fraction of the way from the original model to it that subtracting "
            "the exact delta covers at α = 1 (1 = reached it, 0 = no closer than the original, negative = farther), "
            "beside the best α of the grid (which uses the answer) and one epoch of fine-tuning on the retain set "
            "(the repair-only control): " + " — ".join(parts) + ".")


def fidelity_references(fid, optimizer: str, setting: str = "full") -> dict:
    """The fidelity study's references for one optimizer, per forget set: ``floor_kl`` (set -> mean and 95% interval
    of the test KL from a retraining with another seed and order to the dropped replay: the retrain floor) and
    ``repair_only`` (set -> (seconds, test KL) means of one untuned epoch of fine-tuning, the repair-only control).
    Both are empty where the study has no seed of that optimizer and setting."""
    from .fidelity import summary_rows as fidelity_rows

    rows = fidelity_rows(fid, setting, optimizer) if fid.seeds_of(setting, optimizer) else []
    return {"floor_kl": {r["set"]: r["floor_kl"] for r in rows},
            "repair_only": {r["set"]: (r["ft_seconds"][0], r["ft_kl"][0]) for r in rows if "ft_seconds" in r}}


def comparison_brief(comp, fid, *, setting: str = "full") -> str:
    """One Markdown bullet for the introduction: per optimizer and forget set of the fair comparison, the method
    whose trial chosen on validation comes closest to the dropped replay on the test set (mean KL of the softmax),
    beside the ledger subtraction, the original model and the retrain floor."""
    from .comparison import LABELS, complete_seeds, summary_rows

    parts = []
    for opt in comp.study.optimizers:
        seeds = complete_seeds(comp, opt)
        if not seeds:
            continue
        floors = fidelity_references(fid, opt, setting)["floor_kl"]
        for name in comp.study.sets:
            rows = {r["method"]: r for r in summary_rows(comp, opt, name)}
            best = min(rows.values(), key=_finite_key)
            original = best["original_kl"]
            text = f"{opt}, {name} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}): closest {best['label']} " \
                   f"{_tuned(best)}"
            if best["method"] != "amnesiac" and "amnesiac" in rows:
                text += f", {LABELS['amnesiac']} {_tuned(rows['amnesiac'])}"
            text += f"; the original model {_ci(original)}"
            if name in floors:
                text += f", another retraining {_ci(floors[name])}"
            parts.append(text)
    if not parts:
        return "* *The fair comparison has no complete seed yet.*"
    return (f"* **Every method with the same tuning budget** ({comp.study.budget} trials each, the one chosen on the "
            "validation split by closeness to the dropped replay), measured by the test-set KL to the replay: "
            + " — ".join(parts) + ".")


# rows of the consolidated table: label, the fidelity study's column prefix (None: not in that study), the
# membership study's SET_METHODS name (None: not measured there)
CONSOLIDATED_ROWS = (
    ("ledger subtraction, α = 1", "a1", "amnesiac α=1"),
    ("ledger subtraction, the rule's α", "rule", None),
    ("ledger subtraction, oracle α (uses the answer)", "oracle", None),
    ("fine-tune on the retain set, 1 epoch (repair-only control)", "ft", "fine-tune (1 epoch)"),
    ("NegGrad+ (defaults)", None, "NegGrad+"),
    ("SSD (defaults)", None, "SSD"),
    ("SCRUB (defaults)", None, "SCRUB"),
)


def fidelity_conclusion(fid, *, setting: str = "full", reference: str = "drop") -> str:
    """The Discussion's conclusion on fidelity: how much of the way to the replay the exact delta covers at
    alpha = 1 and at the best grid alpha, for random sets, per optimizer (says so when nothing is computed)."""
    parts, best = [], []
    for opt, by_set in _rows_by_optimizer(fid, setting, reference).items():
        rows = [r for r in by_set.values() if r["kind"] == "random"]
        if not rows:
            continue
        a1 = [r["a1_recovered"][0] for r in rows]
        best += [r["oracle_recovered"][0] for r in rows]
        parts.append(f"{opt} {min(a1):+.3f} to {max(a1):+.3f}")
    if not parts:
        return "The fidelity study has no complete seed at this profile."
    return ("Measured against a replay of the same training without the forget set, subtracting the exact delta of "
            "1 to 1,000 random samples at α = 1 covers between " + "; ".join(parts) + " of the way from the "
            f"original model (1 = all of it), and no α of the grid covers more than {max(best):+.4f}: the ledger is "
            "an exact record of what the data did, not a route to the model that never saw it.")


def attacks_conclusion(mem) -> str:
    """The Discussion's sentence on what U-LiRA says about subtraction at alpha = 1 (from the committed study)."""
    lira = mem.pieces.get("lira") if mem is not None else None
    if not lira:
        return "U-LiRA is not computed at this profile."
    a1, plain = lira["alpha=1"]["auc"], lira["original"]["auc"]
    verb = "better" if a1 > plain else "less well"
    return (f"On small overfit shadow models, U-LiRA tells \"trained, then subtracted at α = 1\" from \"never saw it\" "
            f"{verb} (AUC {a1:.3f}) than it tells members from non-members in models that forgot nothing "
            f"({plain:.3f}).")


def consolidated_table(fid, mem, comp=None, *, setting: str = "full", reference: str = "drop") -> str:
    """Every method at a glance: the fraction of the way to the dropped replay it covers for 100 random samples
    and for a whole class (per optimizer, mean ± 95% interval over seeds; 1 = reached, 0 = no closer than the
    original), U-LiRA's AUC when ~100 samples are forgotten at once (0.5 = chance) and the median seconds per
    request there. With the fair comparison (``comp``), every method also appears tuned: its trial chosen on
    validation, with the seconds of that trial for 100 random samples. "not measured" where a study did not run
    a method."""
    by_opt = {opt: pair for opt, rows in _rows_by_optimizer(fid, setting, reference).items()
              if (pair := _headline_rows(rows)) is not None}
    tuned = _tuned_rows(comp)
    opts = list(dict.fromkeys([*by_opt, *(o for rows in tuned.values() for o in rows)]))
    lira = (mem.pieces.get("lira-methods") or {}).get("methods", {}) if mem is not None else {}
    header = ["method"] + [f"{o}: 100 random" for o in opts] + [f"{o}: class" for o in opts] + [
        "U-LiRA AUC (~100 at once)", "s per request"]
    body = []
    for label, prefix, set_name in CONSOLIDATED_ROWS:
        cells = [label]
        for which in (0, 1):
            for o in opts:
                cells.append(_ci(by_opt[o][which][f"{prefix}_recovered"]) if prefix and o in by_opt
                             else "not measured")
        rec = lira.get(set_name) if set_name else None
        cells += [f"{rec['auc']:.3f}", f"{rec['seconds']:.2f}"] if rec else ["not measured", "–"]
        body.append(cells)
    for label, per_opt in tuned.items():
        cells = [label] + [_tuned(per_opt[o][which], "chosen_recovered") if o in per_opt else "not measured"
                           for which in (0, 1) for o in opts]
        first = next(iter(per_opt.values()))[0]
        body.append(cells + ["not measured", _ci(first["chosen_seconds"])])
    if not opts and not lira:
        return "*Neither the fidelity study nor U-LiRA for every method has results yet.*"
    return markdown_table(header, body)


def _tuned_rows(comp) -> dict[str, dict[str, tuple[dict, dict]]]:
    """{row label: {optimizer: (100 random samples row, whole-class row)}} of the fair comparison's summary, for
    the optimizers with complete seeds of both sets (empty without a comparison)."""
    if comp is None:
        return {}
    from .comparison import summary_rows

    random_set = "random-100" if "random-100" in comp.study.sets else None  # the table's column
    class_set = next((s for s in comp.study.sets if s.startswith("class-")), None)
    out: dict[str, dict] = {}
    for opt in comp.study.optimizers:
        if random_set is None or class_set is None:
            break
        rnd, cls = summary_rows(comp, opt, random_set), summary_rows(comp, opt, class_set)
        for a, b in zip(rnd, cls):
            label = f"{a['label']}, tuned ({comp.study.budget} trials, chosen on validation)"
            out.setdefault(label, {})[opt] = (a, b)
    return out


def _seed_span(seeds: list[int]) -> str:
    lo, hi = min(seeds), max(seeds)
    return f"{lo} seed{'s' if lo > 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"


def abstract(fid, mem, speedup: float | None = None, *, setting: str = "full", reference: str = "drop") -> str:
    """The book's abstract, with every number computed from the fidelity study (``fid``), the membership study
    (``mem``) and, if given, the speed-up of forgetting from the ledger over retraining."""
    def m(t):
        return t[0] if isinstance(t, (tuple, list)) else float(t)

    per_opt, oracle_best, seeds = [], [], []
    for opt, rows in _rows_by_optimizer(fid, setting, reference).items():
        if (pair := _headline_rows(rows)) is None:
            continue
        mid, cls = pair
        seeds.append(len(mid["seeds"]))
        oracle_best += [m(r["oracle_recovered"]) for r in rows.values() if r["kind"] == "random"]
        name = {"adam": "Adam", "sgd": "SGD with momentum", "adamw": "AdamW"}.get(opt, opt)
        per_opt.append(f"{name} {m(mid['a1_recovered']):+.3f} for 100 random samples and {m(cls['a1_recovered']):+.2f} "
                       f"for a whole class (fine-tuning: {m(mid['ft_recovered']):+.3f} and "
                       f"{m(cls['ft_recovered']):+.2f})")
    if not per_opt:
        return "*The fidelity study has no complete seed yet: the abstract waits for it.*"
    text = [
        "**Abstract.** Amnesiac unlearning forgets training data by subtracting what the data contributed to the "
        "parameters. We make that contribution exact: a delta log attributes every optimizer step (SGD with "
        "momentum, Nesterov and weight decay, Adam, AdamW, RMSprop, Adagrad) to groups of samples, consistently "
        "with the optimizer's state, so that the groups' deltas and a remainder add up to the parameter change to "
        "floating-point precision. With the bookkeeping exact, what is left is the counterfactual question: is "
        "the trained model minus a group's delta the model that never saw the group? Against a replay of the same "
        f"training without the forget set (MNIST, {_seed_span(seeds)} per optimizer), subtracting the "
        "exact delta covers a fraction of the way from the original model to the replay of "
        + "; ".join(per_opt)
        + f" (1 = reached, 0 = no closer, negative = farther). The best scale of a grid, chosen with the answer, "
        f"covers at most {max(oracle_best):+.4f} for random samples: no scale of the delta closes the gap."]
    lira = mem.pieces.get("lira") if mem is not None else None
    if lira:
        text.append(f" Membership attacks agree: U-LiRA separates models that trained on a sample and then "
                    f"subtracted it from models that never saw it with AUC {lira['alpha=1']['auc']:.2f} (0.5 = "
                    f"chance), more than it separates members from non-members in the unmodified models "
                    f"({lira['original']['auc']:.2f}).")
    text.append(" The ledger is exact, cheap to read"
                + (f" (forgetting a class from it is {speedup:.0f} times faster than retraining)" if speedup else "")
                + " and sharded across processes under DistributedDataParallel; in these measurements, subtracting "
                "it does not bring the model closer to one that never saw the data. Every number in this book is "
                "computed by the package from committed results.")
    return "".join(text)


# ------------------------------------------------------------------------------------ propagated attribution


def propagation_results(*, profile: str = "full", recompute: bool = False, device: str = "cpu",
                        progress: bool = True):
    """The propagation study a chapter renders: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``."""
    from . import propagation

    return _study_results(propagation, profile=profile, recompute=recompute, device=device, progress=progress)


def _study_results(study, *, profile: str, recompute: bool, device: str, progress: bool):
    """A study module's results as a chapter renders them: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``; runs are on the CPU unless ``device`` says cuda."""
    validate(profile=profile, recompute=recompute, device=device)
    if recompute or profile == "smoke":
        return study.run_study(profile, device="cpu" if device == "auto" else device, progress=progress)
    return study.load_study(profile)


def propagation_table(result, optimizer: str, reference: str = "zero") -> str:
    """Per forget set: recovered fraction toward the ``reference`` replay of the exact delta (alpha = 1 and its
    best grid alpha), the propagated delta (alpha = 1 and best), fine-tuning, and the training overhead."""
    from .propagation import summary_rows

    rows = summary_rows(result, optimizer, reference)
    if not rows:
        return (f"*No complete seed for {optimizer} yet: run `python -m amnesiac_paper propagation --profile "
                f"{result.study.profile}`.*")
    body = []
    for r in rows:
        body.append([r["set"], str(r["size"]), str(len(r["seeds"])), _ci(r["exact_recovered"]),
                     _ci(r["exact_best_recovered"]), _ci(r["propagated_recovered"]),
                     _ci(r["propagated_best_recovered"]),
                     _ci(r["finetune_recovered"]), _ci(r["overhead"])])
    return markdown_table(["forget set", "n", "seeds", "exact, α = 1", "exact, best α", "propagated, α = 1",
                           "propagated, best α", "fine-tune (1 epoch)", "training × plain"], body)


def propagation_memory_sentence(optimizers: Sequence[str]) -> str:
    """What the exact and the propagated logs hold per group, measured
    (:func:`amnesiac_paper.propagation.log_memory`)."""
    from .propagation import log_memory

    parts = []
    for opt in optimizers:
        m = log_memory(opt)
        parts.append(f"{opt}: {m['update']:.2f} (exact) and {m['propagated']:.2f} (propagated)")
    return ("Memory held per tracked group after training, in vectors of the model's size (float32, measured on the "
            "SimpleModel): " + "; ".join(parts) + ". Both keep each group's delta and its optimizer buffer "
            "(momentum or first moment). Where the exact log's moments are lazy (a first moment and no weight "
            "decay: Adam here), it also buffers the shares of the current segment of steps until it settles them "
            "(at most `segment_bytes`, 128 MiB by default), which the measurement catches mid-segment. The "
            "Hessian-vector products cost time, not memory.")


def _study_provenance(result, *, what: str, command: str, minutes: str, needs: str = "", detail: str = "") -> str:
    """Where a study's pieces (``result.records``: (optimizer, seed) -> pieces) come from (``detail`` leads the
    sentence), or how to compute them (``needs``: what must be on disk first)."""
    recs = [p for pieces in result.records.values() for p in pieces.values()]
    profile = result.study.profile
    if not recs:
        return (f"**Not computed yet.** The `{profile}` {what} has no piece on disk; run `python -m amnesiac_paper "
                f"{command} --profile {profile}` (about {minutes} minutes per optimizer and seed on two CPU cores"
                f"{needs}).")
    revs = sorted({r["provenance"]["git"] for r in recs})
    return (f"{what[0].upper()}{what[1:]} `{profile}`: {detail}{len(result.records)} (optimizer, seed) "
            f"combination(s) on disk, computed at revision(s) {', '.join(revs)}.")


def propagation_provenance(result) -> str:
    """Where the propagation numbers come from, or that they are not computed yet."""
    return _study_provenance(result, what="propagation study", command="propagation", minutes="20")


# ------------------------------------------------------------------------------------------- fair comparison


def comparison_results(*, profile: str = "full", recompute: bool = False, device: str = "cpu",
                       progress: bool = True):
    """The fair-comparison study a chapter renders: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``."""
    from . import comparison

    return _study_results(comparison, profile=profile, recompute=recompute, device=device, progress=progress)


def comparison_provenance(result) -> str:
    """Where the comparison's numbers come from, or that they are not computed yet; pieces on disk that were
    computed under an earlier search space or code of their method are counted and not shown."""
    text = _study_provenance(result, what="comparison", command="comparison", minutes="25",
                             needs=", once the fidelity study's weights of that seed are on disk",
                             detail=f"{result.study.budget} trials per method, ")
    stale = result.stale
    if stale:
        methods = sorted({s.rsplit("/", 1)[1] for s in stale})
        text += (f" {len(stale)} piece(s) on disk ({', '.join(methods)}) were computed under an earlier search space "
                 f"or code of their method and are not shown; `python -m amnesiac_paper comparison --profile "
                 f"{result.study.profile}` recomputes them, and only them.")
    return text


def _compact(params: Sequence[dict]) -> str:
    """The configurations chosen over the seeds, each once with its count: ``alpha=0.3 (x2); alpha=1 (x1)``."""
    seen: dict[str, int] = {}
    for p in params:
        key = ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}" for k, v in p.items())
        seen[key] = seen.get(key, 0) + 1
    return "; ".join(f"{k} (×{n})" if len(params) > 1 else k for k, n in seen.items())


def comparison_spaces(budget: int) -> str:
    """Each method's search space (values per hyper-parameter), its defaults (always its first trial) and how many
    configurations the space holds, of which ``budget`` are tried."""
    from .comparison import LABELS, SPACES, _configurations, defaults

    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)

    body = [[LABELS[m], "; ".join(f"{k} ∈ {{{', '.join(fmt(v) for v in vals)}}}" for k, vals in space.items()),
             ", ".join(f"{k}={fmt(v)}" for k, v in defaults(m).items()), str(len(_configurations(m))), str(budget)]
            for m, space in SPACES.items()]
    return markdown_table(["method", "search space", "defaults (trial 1)", "configurations", "trials"], body)


def comparison_seed_table(result, optimizer: str, set_name: str) -> str:
    """Per method and seed: the configuration chosen on validation and its test KL to the dropped replay."""
    from .comparison import LABELS, chosen_index, complete_seeds

    seeds = complete_seeds(result, optimizer)
    if not seeds:
        return f"*No complete seed for {optimizer} yet.*"
    body = []
    for method in result.study.methods:
        cells = [LABELS[method]]
        for s in seeds:
            rec = result.records[(optimizer, s)][f"{set_name}/{method}"]
            trial = rec["trials"][chosen_index(rec)]
            cells.append(f"{trial['test']['drop']['kl']:.3g} ({_compact([trial['params']])})")
        body.append(cells)
    return markdown_table(["method"] + [f"seed {s}: test KL (chosen)" for s in seeds], body)


def comparison_table(result, optimizer: str, set_name: str) -> str:
    """Per method, the trial chosen on validation and measured on test: its settings, the fraction of the way to
    the dropped replay it covers, the test-set KL to the replay (and the KL of the trial the test set itself would
    have chosen), forget and test accuracy, seconds for the chosen trial and for all trials; the dropped replay
    (retraining with the same seed and order) as the last row."""
    from .comparison import summary_rows

    rows = summary_rows(result, optimizer, set_name)
    if not rows:
        return (f"*No complete seed for {optimizer} yet: run `python -m amnesiac_paper comparison --profile "
                f"{result.study.profile}`.*")
    is_class = "chosen_acc_test_class" in rows[0]
    acc = ("acc. test class", "acc. test rest") if is_class else ("acc. forget", "acc. test")
    body = []
    for r in rows:
        a, b = ((r["chosen_acc_test_class"], r["chosen_acc_test_rest"]) if is_class
                else (r["chosen_acc_forget"], r["chosen_acc_test"]))
        body.append([r["label"], _compact(r["chosen_params"]), _tuned(r, "chosen_recovered"), _tuned(r),
                     _ci(r["oracle_kl"]), _ci(a), _ci(b), _ci(r["chosen_seconds"]), _ci(r["chosen_tuning_seconds"])])
    body.append(["retrain (the dropped replay)", "–", "1", "0", "–", "–", "–", _ci(rows[0]["replay_seconds"]), "–"])
    return markdown_table(["method", "chosen on validation", "recovered", "test KL to replay", "KL, test-chosen trial",
                           *acc, "s (chosen)", f"s ({result.study.budget} trials)"], body)


def _lr_range(methods: Sequence[str]) -> str:
    """The span of ``lr_scale`` over the search spaces of ``methods``: ``0.3-3``."""
    from .comparison import SPACES

    scales = [v for m in methods for v in SPACES[m].get("lr_scale", ())]
    return f"{min(scales):g}-{max(scales):g}" if scales else "no learning-rate"


def comparison_findings(comp) -> str:
    """Markdown bullets read off the comparison, per optimizer and forget set with complete seeds: the original
    model's own test KL to the replay (doing nothing), which methods' chosen trials come closer than it and which
    is closest, and the methods none of whose trials, in any seed, came closer than the original."""
    from .comparison import complete_seeds, summary_rows

    out = []
    for opt in comp.study.optimizers:
        seeds = complete_seeds(comp, opt)
        for name in comp.study.sets if seeds else ():
            rows = summary_rows(comp, opt, name)
            recs = {r["method"]: [comp.records[(opt, s)][f"{name}/{r['method']}"] for s in seeds] for r in rows}
            original = rows[0]["original_kl"]
            closer = [r for r in rows if _finite_key(r) < original[0]]
            best = min(rows, key=_finite_key)
            never = [r["label"] for r in rows
                     if not any(t["test"]["drop"]["kl"] < rec["original"]["drop"]["kl"]  # NaN: not closer
                                for rec in recs[r["method"]] for t in rec["trials"])]
            blown = [r for r in rows if r["diverged"] == len(seeds)]
            text = (f"* **{opt}, {name}** ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}): doing nothing (the "
                    f"original model) is at test KL {_ci(original)} from the replay; ")
            if closer:
                text += (f"{len(closer)} of {len(rows)} methods {'comes' if len(closer) == 1 else 'come'} closer on "
                         "average ("
                         + ", ".join(f"{r['label']} {_tuned(r)}" for r in closer) + ")")
            else:
                text += f"none of the {len(rows)} methods comes closer on average (the closest: {best['label']}, " \
                        f"{_tuned(best)})"
            if never:
                text += f"; no trial of {', '.join(never)}, in any seed, came closer than the original"
            if blown:
                text += (f" ({', '.join(r['label'] for r in blown)}: every trial diverged, non-finite outputs; the "
                         f"learning rates of the search space, {_lr_range([r['method'] for r in blown])} × the "
                         "recipe's, hold no stable setting here)")
            out.append(text + ".")
    return "\n".join(out) if out else "*No complete seed of the comparison yet.*"


LIRA_OF = {"amnesiac": "amnesiac α=1", "finetune": "fine-tune (1 epoch)", "neggrad_plus": "NegGrad+", "ssd": "SSD",
           "scrub": "SCRUB"}  # comparison method -> its U-LiRA row (membership.SET_METHODS, at the defaults)


def comparison_overview(comp, fid, mem=None, *, setting: str = "full") -> str:
    """The tuned methods against both references, one row per method: per (optimizer, forget set) with complete
    seeds, the chosen trial's test KL to the dropped replay (the gap to the replay; mean ± 95% interval) and that
    KL over the retrain floor's (the gap on the scale of retraining noise, in parentheses); U-LiRA's AUC at the
    method's defaults (~100 samples forgotten at once); seconds per request of the chosen trial for the first
    random set. The original model, retraining with another seed (the floor) and the replay itself close the
    table."""
    from .comparison import complete_seeds, summary_rows

    cols = [(o, n) for o in comp.study.optimizers if complete_seeds(comp, o) for n in comp.study.sets]
    if not cols:
        return "*No complete seed of the comparison yet.*"
    floors = {(o, n): kl for o in {o for o, _ in cols}
              for n, kl in fidelity_references(fid, o, setting)["floor_kl"].items()}
    lira = (mem.pieces.get("lira-methods") or {}).get("methods", {}) if mem is not None else {}
    rows = {col: summary_rows(comp, *col) for col in cols}

    def cell(stats, col, row=None):
        floor = floors.get(col)
        text = _tuned(row) if row is not None else _ci(stats)
        if text == "diverged" or not (floor and floor[0] > 0):
            return text
        return text + f" ({stats[0] / floor[0]:.2g}×)"

    body = []
    for i, r0 in enumerate(rows[cols[0]]):
        auc = lira.get(LIRA_OF.get(r0["method"], ""))
        body.append([f"{r0['label']}, tuned"] + [cell(rows[col][i]["chosen_kl"], col, rows[col][i]) for col in cols]
                    + [f"{auc['auc']:.3f}" if auc else "not measured", _ci(r0["chosen_seconds"])])
    body.append(["original model (no unlearning)"] + [cell(rows[col][0]["original_kl"], col) for col in cols]
                + ["–", "0"])
    retrain = ["0.5 (by construction)", _ci(rows[cols[0]][0]["replay_seconds"])]
    body.append(["retrain, another seed and order (the floor)"]
                + [cell(floors[col], col) if col in floors else "–" for col in cols] + retrain)
    body.append(["retrain, same seed and order (the replay)"] + ["0" for _ in cols] + retrain)
    header = ["method"] + [f"{o}, {n}: test KL to replay (× floor)" for o, n in cols] + [
        "U-LiRA AUC (defaults)", f"s per request ({cols[0][0]}, {cols[0][1]})"]
    return markdown_table(header, body)


# ------------------------------------------------------------------------------------------ membership study


def membership_results(*, profile: str = "full", seeds: Sequence[int] | None = None, recompute: bool = False,
                       device: str = "cpu", progress: bool = True):
    """The membership study a chapter renders: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``; class and canary pieces restricted to ``seeds``."""
    from . import membership as mb

    validate(profile=profile, seeds=seeds, recompute=recompute, device=device)
    if recompute or profile == "smoke":
        res = mb.run_study(profile, seeds=seeds, device="cpu" if device == "auto" else device, progress=progress)
    else:
        res = mb.load_study(profile)
    if seeds is not None:
        keep = {f"{kind}-seed{s}" for kind in ("class", "canary") for s in seeds}
        res.pieces = {k: v for k, v in res.pieces.items() if not k.startswith(("class-", "canary-")) or k in keep}
    return res


def membership_provenance(result) -> str:
    """Where the membership numbers come from, or that they are not computed yet."""
    if not result.pieces:
        return (f"**Not computed yet.** The `{result.study.profile}` membership study has no piece on disk; run "
                f"`python -m amnesiac_paper membership --profile {result.study.profile}`.")
    revs = sorted({p["provenance"]["git"] for p in result.pieces.values() if "provenance" in p})
    seeds = sorted({int(k.split("seed")[1]) for k in result.pieces if k.startswith(("class-", "canary-"))})
    shadows = sum(k.startswith("shadow") for k in result.pieces)
    return (f"Membership study `{result.study.profile}`: seeds {seeds} (class and canary settings), {shadows} shadow "
            f"models (U-LiRA), computed at revision(s) {', '.join(revs)}.")


def _pieces(result, kind: str) -> list[dict]:
    return [v for k, v in sorted(result.pieces.items()) if k.startswith(f"{kind}-seed")]


def _attack_cells(attacks: Sequence[dict], fprs=("0.01", "0.001")) -> list[str]:
    cells = [_ci(mean_ci([a["auc"] for a in attacks]))]
    cells += [_ci(mean_ci([a["tpr"][f] for a in attacks])) for f in fprs]
    cells.append(_ci(mean_ci([a["heldout_accuracy"] for a in attacks])))
    return cells


ATTACK_HEADER = ["AUC", "TPR at 1% FPR", "TPR at 0.1% FPR", "held-out accuracy"]


def class_attack_table(result) -> str:
    """The class-conditional loss attack on every model of the class setting: mean ± 95% interval over seeds."""
    recs = _pieces(result, "class")
    if not recs:
        return "*The class setting has no seed yet.*"
    rows = [["original model"] + _attack_cells([r["original"] for r in recs]),
            ["retrained (dropped replay)"] + _attack_cells([r["retrain"] for r in recs]),
            ["zero-weighted replay"] + _attack_cells([r["zero_replay"] for r in recs])]
    for i, a in enumerate(recs[0]["alphas"]):
        rule = [r["rule"]["alpha"] for r in recs].count(a)
        mark = f" (the rule's choice in {rule} of {len(recs)} seeds)" if rule else ""
        rows.append([f"subtract, α = {a:g}{mark}"] + _attack_cells([r["amnesiac"][i]["attack"] for r in recs]))
    rows.append(["fine-tune, 1 epoch (repair only)"] + _attack_cells([r["finetune"] for r in recs]))
    return markdown_table(["model"] + ATTACK_HEADER, rows)


def canary_table(result) -> str:
    """Planted- and true-label rates of the canaries under every model, mean ± 95% interval over seeds."""

    recs = _pieces(result, "canary")
    if not recs:
        return "*The canary setting has no seed yet.*"

    def cells(rates):
        return [_ci(mean_ci([r["planted"] for r in rates])), _ci(mean_ci([r["true"] for r in rates]))]

    rows = [["original model"] + cells([r["original"] for r in recs]),
            ["retrained (dropped replay)"] + cells([r["retrain"] for r in recs])]
    for i, a in enumerate(recs[0]["alphas"]):
        rule = [r["rule"]["alpha"] for r in recs].count(a)
        mark = f" (the rule's choice in {rule} of {len(recs)} seeds)" if rule else ""
        rows.append([f"subtract, α = {a:g}{mark}"] + cells([r["amnesiac"][i]["rates"] for r in recs]))
    rows.append(["fine-tune, 1 epoch (repair only)"] + cells([r["finetune"] for r in recs]))
    return markdown_table(["model", "predicts the planted label", "predicts the true label"], rows)


def difference_table(result) -> str:
    """The difference attack on the canary request, per variant, mean ± 95% interval over seeds."""
    recs = _pieces(result, "canary")
    if not recs:
        return "*The canary setting has no seed yet.*"
    names = {"alpha=1": "subtract, α = 1", "rule": "subtract, the rule's α",
             "rule + repair": "the rule's α, then 1 epoch of repair",
             "batched (alpha=1)": f"α = 1, request batched with {recs[0]['batched_size'] - recs[0]['n_canaries']} "
                                  "other samples"}
    rows = [[label] + _attack_cells([r["difference"][k] for r in recs]) for k, label in names.items()]
    return markdown_table(["what the attacker sees change"] + ATTACK_HEADER, rows)


def lira_table(result) -> str:
    """U-LiRA (leave one shadow out) per alpha, and plain LiRA on the unmodified models."""
    lira = result.pieces.get("lira")
    if lira is None:
        return "*The shadow models are not computed yet.*"
    rows = [["no unlearning (plain LiRA: kept vs never seen)"] + _attack_cells([lira["original"]])]
    for key in sorted((k for k in lira if k.startswith("alpha=")), key=lambda k: -float(k.split("=")[1])):
        rows.append([f"subtract, α = {key.split('=')[1]} (forgot vs never seen)"] + _attack_cells([lira[key]]))
    return markdown_table(["target models"] + ATTACK_HEADER, rows)


def lira_methods_table(result) -> str:
    """U-LiRA of every method when each shadow forgets all the candidates it holds at once, with each method's
    median time per request."""
    got = result.pieces.get("lira-methods")
    if got is None:
        return ("*U-LiRA for the other methods is not computed yet: run `python -m amnesiac_paper membership --parts "
                "methods`.*")
    rows = [[name] + _attack_cells([rec]) + [f"{rec['seconds']:.2f}"] for name, rec in got["methods"].items()]
    return markdown_table(["method (forgot vs never seen)"] + ATTACK_HEADER + ["seconds per request"], rows)


def ulira_methods_sentence(result) -> str:
    """The Discussion's sentence on U-LiRA for every method (says so when it is not computed)."""
    got = result.pieces.get("lira-methods") if result is not None else None
    lira = result.pieces.get("lira") if result is not None else None
    if not got or not lira:
        return "U-LiRA for the methods other than the ledger is not computed at this profile."
    m = got["methods"]
    best = min(m, key=lambda k: abs(m[k]["auc"] - 0.5))
    near = abs(m[best]["auc"] - 0.5) < 0.05
    return (f"When each shadow forgets about {got['forget_set_size']:.0f} samples at once, "
            f"{'the closest method comes near chance' if near else 'no method comes near chance'}: "
            f"{best} leaves U-LiRA an AUC of {m[best]['auc']:.3f}, against "
            f"{lira['original']['auc']:.3f} for telling members from non-members in models that forgot nothing, "
            f"and subtracting the whole summed delta is the most visible of all (AUC "
            f"{m['amnesiac α=1']['auc']:.3f}); every method ran at its defaults, untuned.")


def membership_findings(result) -> str:
    """The chapter's summary, computed: one bullet per attack, with the original model, the retrained reference,
    alpha = 1 and the rule's alpha (means over the seeds on disk); says plainly what is not computed yet."""

    def m(values):
        return _ci(mean_ci(list(values)))

    def at(recs, alpha, get):
        """One measure of the subtraction at ``alpha`` (a number, or "rule": each seed's own rule alpha)."""
        return [get(r["amnesiac"][r["alphas"].index(r["rule"]["alpha"] if alpha == "rule" else alpha)]) for r in recs]

    out = []
    cls = _pieces(result, "class")
    if cls:
        one = at(cls, 1.0, lambda x: x["attack"]["auc"])
        rule = at(cls, "rule", lambda x: x["attack"]["auc"])
        out.append(
            f"- **Class-conditional loss attack** ({len(cls)} seed(s), AUC; 0.5 = cannot tell training from test "
            f"images of the class): original {m(r['original']['auc'] for r in cls)}, retrained "
            f"{m(r['retrain']['auc'] for r in cls)}, subtraction at α = 1 "
            f"{m(one)}, at the rule's α {m(rule)}, fine-tuning "
            f"{m(r['finetune']['auc'] for r in cls)}.")
    can = _pieces(result, "canary")
    if can:
        one = at(can, 1.0, lambda x: x["rates"]["planted"])
        rule = at(can, "rule", lambda x: x["rates"]["planted"])
        out.append(
            f"- **Canaries** ({len(can)} seed(s), fraction predicted as the planted label): original "
            f"{m(r['original']['planted'] for r in can)}, retrained {m(r['retrain']['planted'] for r in can)}, "
            f"subtraction at α = 1 {m(one)}, at the rule's α "
            f"{m(rule)}, fine-tuning {m(r['finetune']['planted'] for r in can)}.")
        out.append(
            f"- **Difference attack** (AUC of telling the forgotten canaries from retained samples by the direction "
            f"of the change): α = 1 {m(r['difference']['alpha=1']['auc'] for r in can)}, after a repair "
            f"{m(r['difference']['rule + repair']['auc'] for r in can)}, batched with other samples "
            f"{m(r['difference']['batched (alpha=1)']['auc'] for r in can)}.")
    lira = result.pieces.get("lira")
    if lira:
        alphas = sorted((k for k in lira if k.startswith("alpha=")), key=lambda k: abs(lira[k]["auc"] - 0.5))
        best = alphas[0]
        out.append(
            f"- **U-LiRA** ({result.study.shadows} shadows; shadow training accuracy {lira['train_accuracy']:.3f}, "
            f"test {lira['test_accuracy']:.3f}): plain LiRA on the unmodified models AUC {lira['original']['auc']:.3f}"
            f" (TPR {lira['original']['tpr']['0.01']:.3f} at 1% FPR), the signal there is to remove; after "
            f"subtraction at α = 1 AUC {lira['alpha=1']['auc']:.3f} (TPR {lira['alpha=1']['tpr']['0.01']:.3f}); "
            f"closest to chance at α = {best.split('=')[1]}: AUC {lira[best]['auc']:.3f}.")
    methods = result.pieces.get("lira-methods")
    if methods:
        ranked = sorted(methods["methods"].items(), key=lambda kv: abs(kv[1]["auc"] - 0.5))
        out.append(
            f"- **U-LiRA, every method** (each shadow forgets its ~{methods['forget_set_size']:.0f} candidates at "
            f"once, each method at its defaults): AUC " + ", ".join(f"{k} {v['auc']:.3f}" for k, v in ranked)
            + " (closest to chance first).")
    if not out:
        return "*No membership result is on disk yet.*"
    return "\n".join(out)
