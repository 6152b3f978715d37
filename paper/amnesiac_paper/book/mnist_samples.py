"""Chapter *Forgetting samples on MNIST* (``book/mnist_samples.md``): every number its prose quotes."""

from __future__ import annotations

import numpy as np

from ..catalogue import UPDATE_LOG
from ..experiments import ORIGINAL_KEY, RETRAIN_KEY, Result, summarize
from .common import best_row
from .published import STARTING_KIT


def closer_than_original(res: Result, spec, metric: str = "js_to_retrain") -> str:
    """Whether the method ``spec`` ends closer to the retrained model than the original model does, by ``metric``
    (a divergence to the retrained model's test predictions), judged by the paired per-seed difference
    (method minus original, the same seed's models): "closer" or "farther" only where its 95% t-interval excludes
    zero, else inconclusive with n; one seed gives no interval and says so."""
    from ..experiments import metric_value
    from ..metrics import mean_ci

    diffs = [metric_value(r["methods"][spec.stored_name]["no_repair"], metric) - metric_value(r["original"], metric)
             for r in res.seeds.values() if spec.stored_name in r["methods"]]
    diffs = [d for d in diffs if np.isfinite(d)]
    n = len(diffs)
    if n < 2:
        return (f"{'closer to' if diffs and diffs[0] < 0 else 'no closer to'} the retrained model than the original "
                f"model itself is ({n} seed: no interval to judge the difference by)")
    mean, half, _ = mean_ci(diffs)
    stats = f"paired per-seed difference {mean:+.2g} ± {half:.2g}, {n} seeds"
    if mean + half < 0:
        return f"closer to the retrained model than the original model itself is ({stats})"
    if mean - half > 0:
        return f"*farther* from the retrained model than the original model itself is ({stats})"
    return (f"not measurably closer to the retrained model than the original model itself is ({stats}: the interval "
            "spans zero, inconclusive)")


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
        nr = {r["key"]: r for r in summarize(res, metrics, "no_repair")}
        ar = {r["key"]: r for r in summarize(res, metrics, "after_repair")}
        orig, ref = nr[ORIGINAL_KEY], nr[RETRAIN_KEY]
        ex = res.experiment
        batch, a1, a01 = nr[ex.per_batch().key], nr[ex.update(1).key], nr[ex.update(0.1).key]
        ft = nr[ex.finetune().key]
        seed_row, relabel = nr[ex.seed_record(0.1).key], nr[ex.relabel().key]
        best = best_row(list(nr.values()), "js_to_retrain", family=UPDATE_LOG)
        fraction = res.experiment.forget_fraction
        hit = 1 - (1 - fraction) ** res.experiment.recipe.batch_size
        fold_std = float(np.mean([r["original"]["mia_loss"]["std"] for r in res.seeds.values()]))
        # Methods that push the forget set's accuracy clearly below the retrained model's (by more than 0.01).
        under = [r["label"] for key, r in nr.items() if r["acc_forget"] < ref["acc_forget"] - 0.01
                 and key != RETRAIN_KEY]
        # Update-attribution scales whose test accuracy stays within 0.005 of the original model's.
        harmless = [f"{r['alpha']:g}" for r in nr.values() if r["spec"] is not None and r["spec"].log == UPDATE_LOG
                    and r["acc_test"] >= orig["acc_test"] - 0.005]
        repaired_test = [r["acc_test"] for key, r in ar.items() if not np.isnan(r["acc_test"])
                         and key not in (ORIGINAL_KEY, RETRAIN_KEY)]
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
            f"batch_test_rep_{tag}": ar[ex.per_batch().key]["acc_test"],
            f"a1_forget_{tag}": a1["acc_forget"], f"a1_test_{tag}": a1["acc_test"],
            f"a1_test_rep_{tag}": ar[ex.update(1).key]["acc_test"],
            f"a01_forget_{tag}": a01["acc_forget"], f"a01_test_{tag}": a01["acc_test"],
            f"seed_forget_{tag}": seed_row["acc_forget"], f"seed_test_{tag}": seed_row["acc_test"],
            f"relabel_forget_{tag}": relabel["acc_forget"], f"relabel_test_{tag}": relabel["acc_test"],
            f"ft_forget_{tag}": ft["acc_forget"], f"ft_test_{tag}": ft["acc_test"], f"ft_mia_{tag}": ft["mia_loss"],
            f"best_label_{tag}": best["label"], f"best_js_{tag}": best["js_to_retrain"],
            f"best_forget_{tag}": best["acc_forget"],
            f"best_vs_orig_{tag}": closer_than_original(res, best["spec"]),
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

