"""Chapter *How close to never having seen the data?* (``book/fidelity.md``): the fidelity study's tables,
findings and provenance, and the propagated attribution measured beside it. The fair comparison, the chapter's
last part, is :mod:`amnesiac_paper.book.comparison`. The introduction (:func:`fidelity_brief`) and the
*Discussion* (:func:`fidelity_conclusion`) quote the study through this module too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from .. import fidelity as fidelity_study
from .. import originals
from .. import propagation as propagation_study
from .common import format_ci, format_gci, markdown_table, pieces_provenance, study_provenance, study_results, validate


def fidelity_results(*, profile: str = "full", seeds: Sequence[int] | None = None,
                     optimizers: Sequence[str] | None = None, recompute: bool = False, device: str = "cpu",
                     progress: bool = True):
    """The fidelity study a chapter renders: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``; restricted to ``seeds`` and ``optimizers`` if given."""
    validate(profile=profile, seeds=seeds, recompute=recompute, device=device)
    study = fidelity_study.get_study(profile, seeds=seeds, optimizers=optimizers)  # validates the optimizers
    if recompute or profile == "smoke":
        res = fidelity_study.run_study(profile, seeds=seeds, optimizers=optimizers,
                                       device="cpu" if device == "auto" else device, progress=progress)
    else:
        res = fidelity_study.load_study(profile)
    res.records = {k: v for k, v in res.records.items() if k[1] in study.optimizers and k[2] in study.seeds}
    res.study = study
    return res


def fidelity_provenance(result) -> str:
    """Where the study's numbers come from (revisions, dates, compute, threads and every kind of CPU), and which
    (setting, optimizer, seed) pieces are still missing."""
    recs = [p for pieces in result.records.values() for p in pieces.values()]
    missing = [f"{setting}/{opt}/seed {seed}" for setting, opt, seed in result.study.combos()
               if seed not in result.seeds_of(setting, opt)]
    how = ""
    if recs:
        devices = sorted({str(r["provenance"].get("device", "?")) for r in recs})
        threads = sorted({str(r["provenance"]["threads"]) for r in recs if "threads" in r["provenance"]})
        kinds = ", ".join(f"{n} pieces {k}" for k, n in Counter(short_cpu(originals.cpu_kind(r)) for r in recs)
                          .most_common())
        how = (f"on {', '.join(devices)} with {', '.join(threads) or '?'} thread(s), torch "
               f"{recs[0]['provenance']['torch']} (CPU: {kinds})")
    text = pieces_provenance(result.study, recs, what=f"{len(recs)} pieces", command="fidelity",
                             minutes="an hour per optimizer and seed", how=how, missing=missing)
    if missing and recs:
        text += (f" The study resumes where it stopped: `python -m amnesiac_paper fidelity --profile "
                 f"{result.study.profile}`. Means and intervals below use the seeds that are complete; with one seed "
                 "no interval is shown.")
    return text


def short_cpu(kind: str) -> str:
    """A CPU kind (:func:`amnesiac_paper.originals.cpu_kind`) without trademark signs and "Processor".

    Example:
        >>> short_cpu("Intel(R) Xeon(R) Processor (AVX512)")
        'Intel Xeon (AVX512)'
    """
    return " ".join(kind.replace("(R)", "").replace("Processor", "").split())


def originals_rows(res, prop, comp) -> list[dict]:
    """Per (optimizer, seed) of the comparison, which original model each of the three MNIST studies measured:
    :func:`amnesiac_paper.originals.shared_originals` of the fidelity (``res``), propagation (``prop``) and
    comparison (``comp``) results."""
    return originals.shared_originals(res.records, prop.records, comp.records, comp.study.optimizers,
                                      comp.study.seeds)


def originals_table(rows: list[dict]) -> str:
    """:func:`originals_rows` as a table: each study's fingerprint of the original (recorded in its pieces, or
    attested through a piece of the same run whose measures equal a fingerprinted comparison piece's bit for bit,
    :mod:`amnesiac_paper.originals`) and the CPU it was computed on."""
    if not rows:
        return "*No comparison seed yet.*"
    words = {"none": "no piece yet", "unverified": "unverified (no fingerprint)", "several": "several originals"}

    def cell(study):
        if study["fingerprint"] is None:
            return words[study["status"]]
        note = " (attested)" if study["status"] == "attested" else ""
        return f"`{study['fingerprint']}`{note}, " + " / ".join(short_cpu(c) for c in study["cpu"])

    body = [[r["optimizer"], str(r["seed"])] + [cell(r[s]) for s in originals.STUDIES]
            + ["yes" if r["shared"] else "**no**"] for r in rows]
    return markdown_table(["optimizer", "seed", "fidelity study", "propagation", "comparison", "one original"], body)


def originals_sentence(rows: list[dict]) -> str:
    """Which (optimizer, seed) the fidelity, propagation and comparison studies measured on one original model bit
    for bit, why not the others (:func:`amnesiac_paper.originals.why_not_shared`), and what that means for the
    numbers the book sets side by side."""
    if not rows:
        return ""
    shared = [r for r in rows if r["shared"]]
    apart = [r for r in rows if not r["shared"]]
    text = (f"**One original per (optimizer, seed)?** For {len(shared)} of {len(rows)} (optimizer, seed) the three "
            "studies measured one original model, bit for bit")
    if not apart:
        return text + "."
    by_reason: dict[str, list[str]] = {}  # (optimizer, seed) with the same reason are named together
    for r in apart:
        by_reason.setdefault(short_cpu(originals.why_not_shared(r)), []).append(f"{r['optimizer']} seed {r['seed']}")
    reasons = [f"{' and '.join(combos)}: {why}" for why, combos in by_reason.items()]
    text += f"; not for {'; '.join(reasons)}."
    if any("was trained on" in why for why in by_reason):
        text += (" The same code, recipe, seed and data order give another original on another kind of CPU (float "
                 "rounding differs with the vector instructions and with the code path of MKL, torch's matrix "
                 "library, which it picks by the CPU's vendor too; training amplifies the difference).")
    return text + (" Where the originals differ, the fidelity study's numbers beside the other two (its retrain "
                   "floor beside the comparison's methods, its grid beside the propagated delta) are the same "
                   "measurement in the same setting, not a measurement around the same models.")


FIDELITY_COLUMNS = {
    "recovered": [("α = 1", "a1_recovered"), ("rule α", "rule_alpha"), ("at rule α", "rule_recovered"),
                  ("oracle α", "oracle_alpha"), ("at oracle α", "oracle_recovered"),
                  ("best control", "best_control_recovered"), ("fine-tune 1 epoch", "ft_recovered"),
                  ("c", "c"), ("r", "r"), ("control c", "control_c")],
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
    interval over the complete seeds (KL: geometric mean and log-scale interval, never below zero; a single value
    with one seed), or each seed's value (``per_seed``)."""
    if columns not in FIDELITY_COLUMNS:
        raise ValueError(f"unknown columns {columns!r}; valid: {', '.join(FIDELITY_COLUMNS)}")
    rows = fidelity_study.summary_rows(result, setting, optimizer, reference)
    if not rows:
        return f"*No complete seed for {setting}/{optimizer} yet.*"
    body = []
    for r in rows:
        cells = [r["set"], str(r["size"]), ", ".join(map(str, r["seeds"])) if per_seed else str(len(r["seeds"]))]
        for _, key in FIDELITY_COLUMNS[columns]:
            if key not in r:
                cells.append("–")
            else:
                cells.append(_per_seed([p[key] for p in r["per_seed"]]) if per_seed else _cell(r, key))
        body.append(cells)
    return markdown_table(["forget set", "n", "seeds"] + [h for h, _ in FIDELITY_COLUMNS[columns]], body)


def fidelity_rule_table(result, *, setting: str = "full", reference: str = "drop") -> str:
    """Per optimizer and forget set, per seed: the rule's alpha (and whether parity was reached; where not, the
    rule keeps the original model, alpha = 0) beside the oracle's, and the test accuracy and distance / floor at
    each."""
    body = []
    for opt in result.study.optimizers:
        for r in fidelity_study.summary_rows(result, setting, opt, reference):
            for s, p in zip(r["seeds"], r["per_seed"]):
                rule = f"{p['rule_alpha']:g}" + ("" if p["rule_reached"] else " (not reached: no change)")
                body.append([opt, r["set"], str(s), rule, f"{p['oracle_alpha']:g}",
                             f"{p['rule_acc_test']:.3f} / {p['oracle_acc_test']:.3f}",
                             f"{p['rule_floor_ratio']:.2f} / {p['oracle_floor_ratio']:.2f}"])
    if not body:
        return "*No complete seed yet.*"
    return markdown_table(["optimizer", "forget set", "seed", "rule α", "oracle α", "test acc. (rule / oracle)",
                           "distance / floor (rule / oracle)"], body)


def rule_fallback_sentence(result, *, settings: Sequence[str] = ("full", "graves"), reference: str = "drop") -> str:
    """How often the loss-parity rule reached parity over the complete (setting, optimizer, forget set, seed)
    cases of the study, and where it did not (it then keeps the original model, alpha = 0), counted from the
    summaries (the rule recomputed from each piece's losses)."""
    cases, fell = 0, {}
    for setting in settings:
        for opt in result.study.optimizers:
            for r in fidelity_study.summary_rows(result, setting, opt, reference):
                cases += len(r["rule_reached"])
                n = len(r["rule_reached"]) - sum(r["rule_reached"])
                if n:
                    fell[r["set"]] = fell.get(r["set"], 0) + n
    if not cases:
        return "The rule has no complete seed to report yet."
    total = sum(fell.values())
    text = f"Here parity was reached in {cases - total} of {cases} (setting, optimizer, forget set, seed) cases"
    if not total:
        return text + ", so the fallback was never used."
    return (text + f"; in the other {total} the rule kept the original model (α = 0): "
            + ", ".join(f"{name} {n}×" for name, n in fell.items()) + ".")


def _is_kl(key: str) -> bool:
    return key.endswith("_kl")


def _cell(row: dict, key: str) -> str:
    """A summary row's value: a KL (positive, heavy-tailed) as the geometric mean with its log-scale interval over
    the seeds, anything else as mean ± 95% t-interval."""
    if _is_kl(key):
        return format_gci([p[key] for p in row["per_seed"] if key in p])
    return format_ci(row[key])


def _by_set(rows, key) -> str:
    return ", ".join(f"{r['set']} {_cell(r, key)}" for r in rows)


def paired_seeds(row: dict, a: str, b: str | None = None, *, log: bool = False) -> dict:
    """The per-seed paired difference ``a - b`` of one summary row (``b`` None: ``a`` against 0; ``log``: the log
    ratio ``log(a / b)``, for positive heavy-tailed values such as KL), its mean, 95% t-interval and ``n`` seeds,
    and the sign it supports: ``+1`` or ``-1`` only where the interval excludes zero, else 0 (with one seed: 0).

    Example:
        >>> row = {"per_seed": [{"x": 0.3, "y": 0.1}, {"x": 0.25, "y": 0.05}, {"x": 0.35, "y": 0.12}]}
        >>> paired_seeds(row, "x", "y")["sign"], paired_seeds(row, "y")["sign"]
        (1, 1)
        >>> paired_seeds({"per_seed": [{"x": 0.3}, {"x": -0.2}, {"x": 0.1}]}, "x")["sign"]  # spans zero
        0
    """
    import math

    from ..metrics import mean_ci

    diffs = []
    for p in row["per_seed"]:
        va, vb = p.get(a), (0.0 if b is None else p.get(b))
        if va is None or vb is None:
            continue
        if log:
            diffs.append(math.log(va / vb) if va > 0 and vb > 0 else float("nan"))
        else:
            diffs.append(va - vb)
    mean, half, n = mean_ci(diffs)
    sign = 0 if n < 2 or not math.isfinite(half) or abs(mean) <= half else (1 if mean > 0 else -1)
    return {"mean": mean, "half": half, "n": n, "sign": sign}


def _signed(rows: Sequence[dict], a: str, b: str | None = None, *, log: bool = False) -> dict[int, list[str]]:
    """The sets of ``rows`` by the sign their paired per-seed difference supports (+1, 0 inconclusive, -1)."""
    out: dict[int, list[str]] = {1: [], 0: [], -1: []}
    for r in rows:
        out[paired_seeds(r, a, b, log=log)["sign"]].append(r["set"])
    return out


def fidelity_findings(result, *, setting: str = "full", reference: str = "drop") -> str:
    """The study's findings as Markdown bullets, one per optimizer with a complete seed, worded from the numbers
    (fractions of the way from the original to the ``reference`` replay; 1 = reached it, 0 = no closer than the
    original, negative = farther than the original). Every comparison is a paired per-seed difference: "closer",
    "beats" and the like only where its 95% interval excludes zero, the rest named as inconclusive with n."""
    lines = []
    for opt in result.study.optimizers:
        rows = fidelity_study.summary_rows(result, setting, opt, reference)
        if not rows:
            continue
        n = len(rows[0]["seeds"])
        at_one = _signed(rows, "a1_recovered")
        beats = _signed(rows, "oracle_recovered", "best_control_recovered")
        reached = sum(sum(r["rule_reached"]) for r in rows)
        cases = sum(len(r["rule_reached"]) for r in rows)
        text = (f"* **{opt}** ({n} seed{'s' if n > 1 else ''}; every comparison below is paired over seeds, and "
                f"called only where its 95% interval excludes zero). Fraction of the way from the original model to "
                f"the {reference} replay covered by subtracting the exact delta at α = 1: "
                f"{_by_set(rows, 'a1_recovered')}. ")
        groups = [("closer to the replay than the original model", at_one[1]),
                  (f"no closer and no farther than the original model that {n} seeds can tell (inconclusive)",
                   at_one[0]),
                  ("*farther* from the replay than the original model", at_one[-1])]
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
        kl = _signed(rows, "best_kl", "original_kl", log=True)
        if kl[-1]:
            text += ("In output space (per-seed log ratio of the KLs), the α of the grid with the smallest KL brings "
                     f"the subtraction closer to the replay than the original model for {', '.join(kl[-1])} "
                     f"(smallest KL {_by_set([r for r in rows if r['set'] in kl[-1]], 'best_kl')})")
            text += (f"; inconclusive for {', '.join(kl[0])}" if kl[0] else "")
            text += (f"; even the best α leaves it farther than the original for {', '.join(kl[1])}. " if kl[1]
                     else ". ")
            sel = _signed([r for r in rows if r["set"] in kl[-1]], "best_kl", "best_control_kl", log=True)
            text += (f"There it also beats both controls at their own best α for "
                     f"{', '.join(sel[-1]) if sel[-1] else 'none of them'}"
                     + (f" (inconclusive for {', '.join(sel[0])})" if sel[0] else "")
                     + f" (controls' smallest KL: {_by_set([r for r in rows if r['set'] in kl[-1]], 'best_control_kl')}"
                     "). ")
        else:
            text += ("In output space no α of the grid brings the subtraction measurably closer to the replay than "
                     "the original model already is"
                     + (f" (inconclusive for {', '.join(kl[0])})" if kl[0] else "")
                     + (f" (farther for {', '.join(kl[1])})" if kl[1] else "") + ". ")
        text += (f"In parameter space the oracle subtraction beats both controls (another group's delta, a random "
                 f"direction of the same norm, each at its best α) for {len(beats[1])} of {len(rows)} sets"
                 + (f" ({', '.join(beats[1])})" if beats[1] and len(beats[1]) < len(rows) else "")
                 + (f"; inconclusive for {', '.join(beats[0])}" if beats[0] else "")
                 + (f"; the controls beat it for {', '.join(beats[-1])}" if beats[-1] else "") + ". ")
        text += (f"The loss-parity rule reached parity in {reached} of {cases} (set, seed) cases"
                 + (f" (in the other {cases - reached} it kept the original model, α = 0)" if reached < cases
                    else "") + " and chose "
                 f"{_by_set(rows, 'rule_alpha')}, recovering {_by_set(rows, 'rule_recovered')} of the parameter "
                 f"distance, with test-set KL {_by_set(rows, 'rule_kl')}. ")
        if any("ft_recovered" in r for r in rows):
            ft = _signed([r for r in rows if "ft_recovered" in r], "ft_recovered", "oracle_recovered")
            text += (f"One epoch of fine-tuning on the retain set (the repair-only control) recovers "
                     f"{_by_set(rows, 'ft_recovered')}"
                     + (f"; it beats the oracle subtraction for {', '.join(ft[1])}" if ft[1] else "")
                     + (f"; the oracle subtraction beats it for {', '.join(ft[-1])}" if ft[-1] else "")
                     + (f"; inconclusive for {', '.join(ft[0])}" if ft[0] else "") + ".")
        lines.append(text)
    return "\n".join(lines) if lines else "*No complete seed of the fidelity study yet.*"


def rows_by_optimizer(fid, setting: str, reference: str) -> dict[str, dict[str, dict]]:
    """The fidelity study's summary rows, {optimizer: {set name: row}}, for every optimizer with a computed set."""
    out = {opt: {r["set"]: r for r in fidelity_study.summary_rows(fid, setting, opt, reference)}
           for opt in fid.study.optimizers}
    return {opt: rows for opt, rows in out.items() if rows}


def headline_rows(rows: dict[str, dict]) -> tuple[dict, dict] | None:
    """(100 random samples, whole class) rows of one optimizer, or None unless both are computed."""
    cls = next((r for r in rows.values() if r["kind"] == "class"), None)
    return (rows["random-100"], cls) if "random-100" in rows and cls is not None else None


def fidelity_brief(result, *, setting: str = "full", reference: str = "drop") -> str:
    """One Markdown bullet for the introduction: per optimizer, the fraction of the way to the dropped replay
    recovered at alpha = 1 for the smallest and largest random set and the whole class, beside the repair-only
    control and the distance over the retrain floor."""
    parts = []
    for opt, rows in rows_by_optimizer(result, setting, reference).items():
        random = sorted((r for r in rows.values() if r["kind"] == "random"), key=lambda r: r["size"])
        pick = [random[0], random[-1]] + [r for r in rows.values() if r["kind"] == "class"]
        parts.append(f"{opt} ({len(pick[0]['seeds'])} seed{'s' if len(pick[0]['seeds']) > 1 else ''}): "
                     + "; ".join(f"{r['set']}: {format_ci(r['a1_recovered'])} "
                                 f"(oracle α {format_ci(r['oracle_recovered'])}, "
                                 f"fine-tune {format_ci(r['ft_recovered'])}); test-set KL to the replay "
                                 f"{_cell(r, 'a1_kl')} after subtracting, {_cell(r, 'original_kl')} before, "
                                 f"{_cell(r, 'ft_kl')} after fine-tuning, {_cell(r, 'floor_kl')} "
                                 "between retrains"
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
    of the test KL from a retraining with another seed and order to the dropped replay: the retrain floor),
    ``floor_kl_values`` (set -> that KL per seed) and
    ``repair_only`` (set -> (seconds, test KL) means of one untuned epoch of fine-tuning, the repair-only control).
    Both are empty where the study has no seed of that optimizer and setting."""
    rows = fidelity_study.summary_rows(fid, setting, optimizer) if fid.seeds_of(setting, optimizer) else []
    return {"floor_kl": {r["set"]: r["floor_kl"] for r in rows},
            "floor_kl_values": {r["set"]: [p["floor_kl"] for p in r["per_seed"]] for r in rows},
            "repair_only": {r["set"]: (r["ft_seconds"][0], r["ft_kl"][0]) for r in rows if "ft_seconds" in r}}


def fidelity_conclusion(fid, *, setting: str = "full", reference: str = "drop") -> str:
    """The Discussion's conclusion on fidelity: how much of the way to the replay the exact delta covers at
    alpha = 1 and at the best grid alpha, for random sets, per optimizer (says so when nothing is computed)."""
    parts, best = [], []
    for opt, by_set in rows_by_optimizer(fid, setting, reference).items():
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


# ------------------------------------------------------------------------------------ propagated attribution


def propagation_results(*, profile: str = "full", recompute: bool = False, device: str = "cpu",
                        progress: bool = True):
    """The propagation study a chapter renders: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``."""
    return study_results(propagation_study, profile=profile, recompute=recompute, device=device, progress=progress)


def propagation_table(result, optimizer: str, reference: str = "zero") -> str:
    """Per forget set: recovered fraction toward the ``reference`` replay of the exact delta (alpha = 1 and its
    best grid alpha), the propagated delta (alpha = 1 and best), fine-tuning, and the training overhead."""
    rows = propagation_study.summary_rows(result, optimizer, reference)
    if not rows:
        return (f"*No complete seed for {optimizer} yet: run `python -m amnesiac_paper propagation --profile "
                f"{result.study.profile}`.*")
    body = []
    for r in rows:
        body.append([r["set"], str(r["size"]), str(len(r["seeds"])), format_ci(r["exact_recovered"]),
                     format_ci(r["exact_best_recovered"]), format_ci(r["propagated_recovered"]),
                     format_ci(r["propagated_best_recovered"]),
                     format_ci(r["finetune_recovered"]), format_ci(r["overhead"])])
    return markdown_table(["forget set", "n", "seeds", "exact, α = 1", "exact, best α", "propagated, α = 1",
                           "propagated, best α", "fine-tune (1 epoch)", "training × plain"], body)


def propagation_memory_sentence(optimizers: Sequence[str]) -> str:
    """What the exact and the propagated logs hold per group, measured
    (:func:`amnesiac_paper.propagation.log_memory`)."""
    parts = []
    for opt in optimizers:
        m = propagation_study.log_memory(opt)
        parts.append(f"{opt}: {m['update']:.2f} (exact) and {m['propagated']:.2f} (propagated)")
    return ("Memory held per tracked group after training, in vectors of the model's size (float32, measured on the "
            "SimpleModel): " + "; ".join(parts) + ". Both keep each group's delta and its optimizer buffer "
            "(momentum or first moment). Where the exact log's moments are lazy (a first moment and no weight "
            "decay: Adam here), it also buffers the shares of the current segment of steps until it settles them "
            "(at most `segment_bytes`, 128 MiB by default), which the measurement catches mid-segment. The "
            "Hessian-vector products cost time, not memory.")


def propagation_provenance(result) -> str:
    """Where the propagation numbers come from, or that they are not computed yet."""
    return study_provenance(result, what="propagation study", command="propagation", minutes="20")

