"""The fair comparison, the last part of chapter *How close to never having seen the data?*
(``book/fidelity.md``): every method with the same tuning budget, its tables, findings and provenance; also the
comparison's bullet in the introduction (:func:`comparison_brief`) and its overview in the *Discussion*
(:func:`comparison_overview`, :func:`tuned_cell`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import comparison as comparison_study
from ..comparison import (
    LABELS,
    SPACES,
    _configurations,
    chosen_index,
    complete_seeds,
    defaults,
    same_seed_floor,
    summary_rows,
)
from .common import format_ci, format_gci, markdown_table, study_provenance, study_results
from .fidelity import fidelity_references


def comparison_results(*, profile: str = "full", recompute: bool = False, device: str = "cpu",
                       progress: bool = True):
    """The fair-comparison study a chapter renders: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``."""
    return study_results(comparison_study, profile=profile, recompute=recompute, device=device, progress=progress)


def comparison_provenance(result) -> str:
    """Where the comparison's numbers come from, or that they are not computed yet; pieces on disk that were
    computed under an earlier search space or code of their method are counted and not shown."""
    text = study_provenance(result, what="comparison", command="comparison", minutes="25",
                            needs=", once the fidelity study's weights of that seed are on disk",
                            detail=f"{result.study.budget} trials per method, ")
    stale = result.stale
    if stale:
        methods = sorted({s.rsplit("/", 1)[1] for s in stale})
        text += (f" {len(stale)} piece(s) on disk ({', '.join(methods)}) were computed under an earlier search space "
                 f"or code of their method and are not shown; `python -m amnesiac_paper comparison --profile "
                 f"{result.study.profile}` recomputes them, and only them.")
    return text


def tuned_cell(row: dict, key: str = "chosen_kl") -> str:
    """A comparison summary cell over the seeds whose chosen trial did not diverge, with how many did ("diverged"
    where every seed's did: every trial's outputs were non-finite): a KL (``key`` with per-seed ``<key>_values``)
    as its geometric mean with a 95% interval on the log scale, never below zero; anything else as mean ± 95%
    interval."""
    n, bad = len(row["seeds"]), row.get("diverged", 0)
    if bad == n:
        return "diverged"
    text = format_gci(row[f"{key}_values"]) if f"{key}_values" in row else format_ci(row[key])
    return text + (f" ({bad} of {n} seeds diverged)" if bad else "")


def _gmean(values) -> float:
    """The geometric mean of the finite, positive values (NaN for none): the centre a log-scale KL cell shows."""
    from ..metrics import geometric_ci

    return geometric_ci(values)[0]


def _finite_key(row: dict) -> float:
    """Sort key: the chosen trial's test KL, geometric mean over seeds (the centre of its log-scale cell); a
    method that diverged in any seed last."""
    values = row["chosen_kl_values"]
    ok = all(np.isfinite(v) and v > 0 for v in values) and row.get("diverged", 0) == 0
    return _gmean(values) if ok else float("inf")


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
    def fmt(v):
        return f"{v:g}" if isinstance(v, float) else str(v)

    body = [[LABELS[m], "; ".join(f"{k} ∈ {{{', '.join(fmt(v) for v in vals)}}}" for k, vals in space.items()),
             ", ".join(f"{k}={fmt(v)}" for k, v in defaults(m).items()), str(len(_configurations(m))), str(budget)]
            for m, space in SPACES.items()]
    return markdown_table(["method", "search space", "defaults (trial 1)", "configurations", "trials"], body)


def comparison_seed_table(result, optimizer: str, set_name: str) -> str:
    """Per method and seed: the configuration chosen on validation and its test KL to the dropped replay."""
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
        body.append([r["label"], _compact(r["chosen_params"]), tuned_cell(r, "chosen_recovered"), tuned_cell(r),
                     format_gci(r["oracle_kl_values"]), format_ci(a), format_ci(b), format_ci(r["chosen_seconds"]),
                     format_ci(r["chosen_tuning_seconds"])])
    body.append(["retrain (the dropped replay)", "–", "1", "0", "–", "–", "–", format_ci(rows[0]["replay_seconds"]),
                 "–"])
    return markdown_table(["method", "chosen on validation", "recovered", "test KL to replay", "KL, test-chosen trial",
                           *acc, "s (chosen)", f"s ({result.study.budget} trials)"], body)


def _lr_range(methods: Sequence[str]) -> str:
    """The span of ``lr_scale`` over the search spaces of ``methods``: ``0.3-3``."""
    scales = [v for m in methods for v in SPACES[m].get("lr_scale", ())]
    return f"{min(scales):g}-{max(scales):g}" if scales else "no learning-rate"


def _paired_kl_sign(recs: Sequence[dict]) -> int:
    """The sign a method's chosen trials support against doing nothing, over seeds: per seed the log ratio of the
    chosen trial's test KL to the replay over the original's; -1 (closer) or +1 (farther) only where the 95%
    t-interval of the log ratios excludes zero, else 0 (a diverged, non-finite trial counts as farther)."""
    import math

    from ..metrics import mean_ci

    logs = []
    for rec in recs:
        kl, ref = rec["trials"][chosen_index(rec)]["test"]["drop"]["kl"], rec["original"]["drop"]["kl"]
        if not (kl is not None and math.isfinite(kl) and kl > 0 and ref > 0):
            return 1
        logs.append(math.log(kl / ref))
    mean, half, n = mean_ci(logs)
    if n < 2 or not math.isfinite(half) or abs(mean) <= half:
        return 0
    return -1 if mean < 0 else 1


def comparison_findings(comp) -> str:
    """Markdown bullets read off the comparison, per optimizer and forget set with complete seeds: the original
    model's own test KL to the replay (doing nothing), which methods' chosen trials come closer than it and which
    is closest, and the methods none of whose trials, in any seed, came closer than the original."""
    out = []
    for opt in comp.study.optimizers:
        seeds = complete_seeds(comp, opt)
        for name in comp.study.sets if seeds else ():
            rows = summary_rows(comp, opt, name)
            recs = {r["method"]: [comp.records[(opt, s)][f"{name}/{r['method']}"] for s in seeds] for r in rows}
            original = rows[0]["original_kl_values"]
            signs = {r["method"]: _paired_kl_sign(recs[r["method"]]) for r in rows}
            closer = [r for r in rows if signs[r["method"]] == -1]
            unclear = [r for r in rows if signs[r["method"]] == 0]
            best = min(rows, key=_finite_key)
            never = [r["label"] for r in rows
                     if not any(t["test"]["drop"]["kl"] < rec["original"]["drop"]["kl"]  # NaN: not closer
                                for rec in recs[r["method"]] for t in rec["trials"])]
            blown = [r for r in rows if r["diverged"] == len(seeds)]
            text = (f"* **{opt}, {name}** ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}): doing nothing (the "
                    f"original model) is at test KL {format_gci(original)} from the replay; ")
            if closer:
                text += (f"{len(closer)} of {len(rows)} methods {'comes' if len(closer) == 1 else 'come'} closer "
                         "(paired over seeds, the interval of the log KL ratio below zero: "
                         + ", ".join(f"{r['label']} {tuned_cell(r)}" for r in closer) + ")")
            else:
                text += (f"none of the {len(rows)} methods comes closer by a paired interval that excludes zero (the "
                         f"closest on average: {best['label']}, {tuned_cell(best)})")
            if unclear:
                text += (f"; inconclusive with {len(seeds)} seed{'s' if len(seeds) > 1 else ''} for "
                         + ", ".join(r["label"] for r in unclear))
            if never:
                text += f"; no trial of {', '.join(never)}, in any seed, came closer than the original"
            if blown:
                text += (f" ({', '.join(r['label'] for r in blown)}: every trial diverged, non-finite outputs; the "
                         f"learning rates of the search space, {_lr_range([r['method'] for r in blown])} × the "
                         "recipe's, hold no stable setting here)")
            out.append(text + ".")
    return "\n".join(out) if out else "*No complete seed of the comparison yet.*"


def comparison_brief(comp, fid, *, setting: str = "full") -> str:
    """One Markdown bullet for the introduction: per optimizer and forget set of the fair comparison, the method
    whose trial chosen on validation comes closest to the dropped replay on the test set (mean KL of the softmax),
    beside the ledger subtraction, the original model, the same-seed floor and a retraining with another seed."""
    parts = []
    for opt in comp.study.optimizers:
        seeds = complete_seeds(comp, opt)
        if not seeds:
            continue
        floors = fidelity_references(fid, opt, setting)["floor_kl_values"]
        for name in comp.study.sets:
            rows = {r["method"]: r for r in summary_rows(comp, opt, name)}
            best = min(rows.values(), key=_finite_key)
            text = f"{opt}, {name} ({len(seeds)} seed{'s' if len(seeds) > 1 else ''}): closest {best['label']} " \
                   f"{tuned_cell(best)}"
            if best["method"] != "amnesiac" and "amnesiac" in rows:
                text += f", {LABELS['amnesiac']} {tuned_cell(rows['amnesiac'])}"
            text += f"; the original model {format_gci(best['original_kl_values'])}"
            same = same_seed_floor(comp, opt, name)
            if same is not None:
                text += f", the same-seed floor {format_gci(same['kl_values'])}"
            if name in floors:
                text += f", another retraining {format_gci(floors[name])}"
            parts.append(text)
    if not parts:
        return "* *The fair comparison has no complete seed yet.*"
    return (f"* **Every method with the same tuning budget** ({comp.study.budget} trials each, the one chosen on the "
            "validation split by closeness to the dropped replay), measured by the test-set KL to the replay: "
            + " — ".join(parts) + ".")


LIRA_OF = {"amnesiac": "amnesiac α=1", "finetune": "fine-tune (1 epoch)", "neggrad_plus": "NegGrad+", "ssd": "SSD",
           "scrub": "SCRUB"}  # comparison method -> its U-LiRA row (membership.SET_METHODS, at the defaults)


def comparison_overview(comp, fid, mem=None, *, setting: str = "full") -> str:
    """The tuned methods against both references, one row per method: per (optimizer, forget set) with complete
    seeds, the chosen trial's test KL to the dropped replay (the gap to the replay; mean ± 95% interval) and that
    KL over the same-seed floor's (:func:`amnesiac_paper.comparison.same_seed_floor`: the dropped replay trained
    again with one more random sample removed; the gap on the scale of a change nobody would call a deletion, in
    parentheses); U-LiRA's AUC at the method's defaults (~100 samples forgotten at once); seconds per request of
    the chosen trial for the first random set. The original model, the same-seed floor, retraining with another
    seed and order (the fidelity study's floor) and the replay itself close the table. A column without a
    same-seed floor shows no ratio."""
    cols = [(o, n) for o in comp.study.optimizers if complete_seeds(comp, o) for n in comp.study.sets]
    if not cols:
        return "*No complete seed of the comparison yet.*"
    other_seed = {(o, n): kl for o in {o for o, _ in cols}
                  for n, kl in fidelity_references(fid, o, setting)["floor_kl_values"].items()}
    same_seed = {col: same_seed_floor(comp, *col) for col in cols}
    lira = (mem.pieces.get("lira-methods") or {}).get("methods", {}) if mem is not None else {}
    rows = {col: summary_rows(comp, *col) for col in cols}

    def cell(values, col, row=None):
        """KL values per seed as a log-scale cell, and their geometric mean over the same-seed floor's."""
        floor = same_seed.get(col)
        text = tuned_cell(row) if row is not None else format_gci(values)
        if text == "diverged" or floor is None or not _gmean(floor["kl_values"]) > 0:
            return text
        return text + f" ({_gmean(values) / _gmean(floor['kl_values']):.3g}×)"

    body = []
    for i, r0 in enumerate(rows[cols[0]]):
        auc = lira.get(LIRA_OF.get(r0["method"], ""))
        body.append([f"{r0['label']}, tuned"]
                    + [cell(rows[col][i]["chosen_kl_values"], col, rows[col][i]) for col in cols]
                    + [f"{auc['auc']:.3f}" if auc else "not measured", format_ci(r0["chosen_seconds"])])
    body.append(["original model (no unlearning)"] + [cell(rows[col][0]["original_kl_values"], col) for col in cols]
                + ["–", "0"])
    retrain = ["0.5 (by construction)", format_ci(rows[cols[0]][0]["replay_seconds"])]
    body.append(["retrain, same seed and order, one more sample dropped (the same-seed floor)"]
                + [cell(same_seed[col]["kl_values"], col) if same_seed[col] else "not computed" for col in cols]
                + retrain)
    body.append(["retrain, another seed and order"]
                + [cell(other_seed[col], col) if col in other_seed else "–" for col in cols] + retrain)
    body.append(["retrain, same seed and order (the replay)"] + ["0" for _ in cols] + retrain)
    header = ["method"] + [f"{o}, {n}: test KL to replay (× same-seed floor)" for o, n in cols] + [
        "U-LiRA AUC (defaults)", f"s per request ({cols[0][0]}, {cols[0][1]})"]
    return markdown_table(header, body)


def same_seed_sentence(comp) -> str:
    """What the same-seed floor is, in numbers, per (optimizer, forget set): its test KL to the replay beside the
    original model's of the same runs (doing nothing, on the same machine), over how many seeds, and on which CPU it
    was trained when that is not the CPU of the models it is compared with (another CPU's rounding gives another
    original: the floor is then a scale measured in the same setting, not around the same models)."""
    parts, other_cpu = [], set()
    for opt in comp.study.optimizers:
        for name in comp.study.sets:
            floor = same_seed_floor(comp, opt, name)
            if floor is None:
                continue
            original = floor["original_kl_values"]
            parts.append(f"{opt}, {name}: {format_gci(floor['kl_values'])} against {format_gci(original)} for the "
                         f"original model of the same runs ({_gmean(original) / _gmean(floor['kl_values']):.3g}× the "
                         f"floor; {len(floor['seeds'])} seeds)")
            if not floor["same_original"]:
                other_cpu.update(floor["cpu"])
    if not parts:
        return ("*No same-seed floor is computed yet: run `python -m amnesiac_paper comparison --profile full "
                "--floors-only`.*")
    text = ("Two retrainings with the same seed and order, one of them without one more random sample, differ in "
            "their test outputs by a KL of " + "; ".join(parts) + ".")
    if other_cpu:
        text += (f" The floors were trained on another kind of CPU ({', '.join(sorted(other_cpu))}) than the "
                 "methods' models, whose last bits, amplified by training, give another original model: they are "
                 "the scale of a negligible change in the same setting, not measured around the same models.")
    return text

