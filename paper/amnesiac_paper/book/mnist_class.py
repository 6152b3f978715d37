"""Chapter *Reproducing the seed on MNIST: forgetting class 3* (``book/mnist_class.md``): our results beside the
seed report's and how to read them, the mis-indexing account and the mask control. :func:`smallest_alpha_matching`
is the rule the *Discussion* applies too.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from ..catalogue import UPDATE_LOG, LogSpec
from ..experiments import ORIGINAL_KEY, RETRAIN_KEY, Result, summarize
from .common import markdown_table, pm
from .published import SEED_REPORT


def other_class_note(chosen: int, written_for: int) -> str:
    """The note a chapter shows when executed for another class than its prose was written for."""
    return (f"**This execution forgets class {chosen}** (the chapter parameter `forget_class`). The prose was written "
            f"for class {written_for}: where it names {written_for}, read {chosen}; every number, table and figure "
            f"below is computed for class {chosen}. The seed's published table exists for class {written_for} only "
            "and is left out.")


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
    ours = {stage: {r["key"]: r for r in summarize(result, metrics, stage)}
            for stage in ("no_repair", "after_repair")}

    def cell(row: dict | None) -> str:
        if row is None or all(np.isnan(row.get(m, float("nan"))) for m in metrics):
            return "–"
        return " / ".join(pm(row, m) for m in metrics)

    def quoted(pair) -> str:
        return f"{pair[0]:.2f} / {pair[1]:.2f}" if pair else "–"

    seed = {row.ours(result.experiment).key: row for row in SEED_REPORT[name]}
    keys = list(seed) + ([k for k in ours["no_repair"] if k not in seed and k not in (ORIGINAL_KEY, RETRAIN_KEY)]
                         if every_method else [])
    rows = []
    for key in keys:
        s = seed.get(key)
        rows.append([s.name if s else ours["no_repair"][key]["label"], quoted(s and s.after_training),
                     cell(ours["no_repair"][ORIGINAL_KEY]), quoted(s and s.no_retrain),
                     cell(ours["no_repair"].get(key)), quoted(s and s.after_retrain),
                     cell(ours["after_repair"].get(key))])
    reference = ours["no_repair"][RETRAIN_KEY]
    rows.append([reference["label"], "–", "–", "–", cell(reference), "–", "–"])
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
    rows = {r["key"]: r for r in summarize(result, metrics + ("agreement_to_retrain",), "no_repair")}

    def fr(row: dict) -> str:
        return f"{row[F]:.2f} / {row[R]:.2f}"

    orig, ref = rows[ORIGINAL_KEY], rows[RETRAIN_KEY]
    batch, ft = rows[exp.per_batch().key], rows[exp.finetune().key]
    ps = sorted(exp.ps, reverse=True)
    masked = [rows[exp.seed_record(p).key] for p in ps]
    scaled = [rows[exp.gradient_record(p).key] for p in ps]
    gap = max(abs(a[m] - b[m]) for a, b in zip(masked, scaled) for m in metrics)
    seed = {row.ours(exp).key: row for row in SEED_REPORT[name]}
    mine, mis = rows[exp.seed_record(0.1).key], rows[exp.misindexed().key]
    theirs = seed[exp.seed_record(0.1).key].no_retrain

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
    update = [(spec.alpha, rows[spec.key]) for spec in exp.methods
              if spec.log == UPDATE_LOG and spec.alpha is not None and spec.key in rows]
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
        agree.insert(1, (f"update attribution at α = {best:g}", rows[exp.update(best).key]))
    text += ("Agreement with the retrained model's test predictions: "
             + "; ".join(f"{pm(r, 'agreement_to_retrain', 3)} for {lab}" for lab, r in agree) + ".")
    return text


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
    rows = {r["key"]: r for r in summarize(result, metrics, stage)}
    original, retrain = rows[ORIGINAL_KEY], rows[RETRAIN_KEY]
    candidates = []
    for spec in result.experiment.methods:
        alpha = spec.alpha
        row = rows.get(spec.key)
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


def misindexing_sentence(res: Result, norms: dict | None) -> str:
    """The class chapter's account of the seed's indexing bug: which record (correctly indexed or mis-indexed,
    p = 0.1) costs the rest more when added back, and whether the records' norms explain it (``norms``: a
    :func:`amnesiac_paper.experiments.log_norms` record, or ``None`` when it was not computed)."""
    if not res.seeds:
        return "*No seed of this experiment is on disk.*"
    exp = res.experiment
    rows = {r["key"]: r for r in summarize(res, ("acc_test_rest",), "no_repair")}
    seed_rest = rows[exp.seed_record(0.1).key]["acc_test_rest"]
    mis_rest = rows[exp.misindexed().key]["acc_test_rest"]
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

