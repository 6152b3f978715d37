"""Chapter *Discussion and limitations* (``book/discussion.md``): its sentences on the MNIST class experiment and
the table of every method at a glance. Its other numbers come from the chapters' own modules
(:mod:`amnesiac_paper.book.fidelity`, :mod:`~amnesiac_paper.book.attacks`, :mod:`~amnesiac_paper.book.comparison`).
"""

from __future__ import annotations

from ..comparison import summary_rows
from ..experiments import ORIGINAL_KEY, RETRAIN_KEY, Result, summarize
from ..setting import class_set
from .common import format_bytes, format_ci, markdown_table
from .comparison import tuned_cell
from .fidelity import headline_rows, rows_by_optimizer
from .mnist_class import smallest_alpha_matching


def class_discussion(res: Result, *, forget_tol: float, rest_drop: float) -> dict[str, str]:
    """The Discussion chapter's sentences about the MNIST class experiment, each computed from ``res``:
    ``overshoot``, ``best_sentence``, ``conclusion``, ``repair_sentence``, ``mia_sentence``, ``memory_sentence``
    (each says plainly that no number is quoted when ``res`` has no seeds)."""
    metrics = ("acc_test_forgotten", "acc_test_rest", "mia_loss")
    rows = {r["key"]: r for r in summarize(res, metrics, "no_repair")} if res.seeds else {}
    repaired = {r["key"]: r for r in summarize(res, metrics, "after_repair")} if res.seeds else {}
    best = smallest_alpha_matching(res, forget_tol=forget_tol, rest_drop=rest_drop)
    unavailable = "The MNIST class-3 results are not available in this build, so no number is quoted here."
    if rows:
        original, retrain = rows[ORIGINAL_KEY], rows[RETRAIN_KEY]
        full_delta = rows[res.experiment.update(1).key]
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
            reference_row, reference_label = rows[res.experiment.update(0.1).key], "α = 0.1"
        elif best is None:
            conclusion = ("In the MNIST class-3 experiment no α of the sweep meets the rule stated above, so "
                          "subtraction alone did not both forget like retraining and keep the other classes there.")
            best_sentence = (f"No α of the sweep meets the rule: every α either leaves the forgotten class's test "
                             f"accuracy more than {forget_tol:g} away from the retrained model's "
                             f"({retrain['acc_test_forgotten']:.3f}) or "
                             f"costs the other classes {rest_drop:g} or more of accuracy.")
            reference_row, reference_label = rows[res.experiment.update(0.1).key], "α = 0.1"
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
        finetune = rows[res.experiment.finetune().key]
        after = [r["acc_test_forgotten"] for label, r in repaired.items()  # methods evaluated after repair (NaN: not)
                 if r["spec"] is not None and r["acc_test_forgotten"] >= 0]
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


# rows of the consolidated table: label, the fidelity study's column prefix (None: not in that study), the
# membership study's SET_METHODS name (None: not measured there)
CONSOLIDATED_ROWS = (
    ("ledger subtraction, α = 1", "a1", "amnesiac α=1"),
    ("ledger subtraction, the rule's α (0, no change, where parity is not reached)", "rule", None),
    ("ledger subtraction, oracle α (uses the answer)", "oracle", None),
    ("fine-tune on the retain set, 1 epoch (repair-only control)", "ft", "fine-tune (1 epoch)"),
    ("NegGrad+ (defaults)", None, "NegGrad+"),
    ("SSD (defaults)", None, "SSD"),
    ("SCRUB (defaults)", None, "SCRUB"),
)


def consolidated_table(fid, mem, comp=None, *, setting: str = "full", reference: str = "drop") -> str:
    """Every method at a glance: the fraction of the way to the dropped replay it covers for 100 random samples
    and for a whole class (per optimizer, mean ± 95% interval over seeds; 1 = reached, 0 = no closer than the
    original), U-LiRA's AUC when ~100 samples are forgotten at once (0.5 = chance) and the median seconds per
    request there. With the fair comparison (``comp``), every method also appears tuned: its trial chosen on
    validation, with the seconds of that trial for 100 random samples. "not measured" where a study did not run
    a method."""
    by_opt = {opt: pair for opt, rows in rows_by_optimizer(fid, setting, reference).items()
              if (pair := headline_rows(rows)) is not None}
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
                cells.append(format_ci(by_opt[o][which][f"{prefix}_recovered"]) if prefix and o in by_opt
                             else "not measured")
        rec = lira.get(set_name) if set_name else None
        cells += [f"{rec['auc']:.3f}", f"{rec['seconds']:.2f}"] if rec else ["not measured", "–"]
        body.append(cells)
    for label, per_opt in tuned.items():
        cells = [label] + [tuned_cell(per_opt[o][which], "chosen_recovered") if o in per_opt else "not measured"
                           for which in (0, 1) for o in opts]
        first = next(iter(per_opt.values()))[0]
        body.append(cells + ["not measured", format_ci(first["chosen_seconds"])])
    if not opts and not lira:
        return "*Neither the fidelity study nor U-LiRA for every method has results yet.*"
    return markdown_table(header, body)


def _tuned_rows(comp) -> dict[str, dict[str, tuple[dict, dict]]]:
    """{row label: {optimizer: (100 random samples row, whole-class row)}} of the fair comparison's summary, for
    the optimizers with complete seeds of both sets (empty without a comparison)."""
    if comp is None:
        return {}
    random_set = "random-100" if "random-100" in comp.study.sets else None  # the table's column
    whole_class = class_set(comp.study.base.forget_class)
    whole_class = whole_class if whole_class in comp.study.sets else None
    out: dict[str, dict] = {}
    for opt in comp.study.optimizers:
        if random_set is None or whole_class is None:
            break
        rnd, cls = summary_rows(comp, opt, random_set), summary_rows(comp, opt, whole_class)
        for a, b in zip(rnd, cls):
            label = f"{a['label']}, tuned ({comp.study.budget} trials, chosen on validation)"
            out.setdefault(label, {})[opt] = (a, b)
    return out

