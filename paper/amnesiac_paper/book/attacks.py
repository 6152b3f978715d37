"""Chapter *Attacks: can anyone tell that the data was forgotten?* (``book/attacks.md``): the membership study's
tables, findings and provenance; the introduction quotes :func:`membership_findings`, the *Discussion*
:func:`ulira_methods_sentence` and :func:`attacks_conclusion`.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import membership as membership_study
from ..metrics import mean_ci
from .common import format_ci, markdown_table, validate


def membership_results(*, profile: str = "full", seeds: Sequence[int] | None = None, recompute: bool = False,
                       device: str = "cpu", progress: bool = True):
    """The membership study a chapter renders: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``; class and canary pieces restricted to ``seeds``."""
    validate(profile=profile, seeds=seeds, recompute=recompute, device=device)
    if recompute or profile == "smoke":
        res = membership_study.run_study(profile, seeds=seeds, device="cpu" if device == "auto" else device,
                                         progress=progress)
    else:
        res = membership_study.load_study(profile)
    if seeds is not None:
        per_seed = {membership_study.piece_name(kind, s): s for kind in ("class", "canary") for s in res.study.seeds}
        res.pieces = {k: v for k, v in res.pieces.items() if k not in per_seed or per_seed[k] in seeds}
    return res


def membership_provenance(result) -> str:
    """Where the membership numbers come from, or that they are not computed yet."""
    if not result.pieces:
        return (f"**Not computed yet.** The `{result.study.profile}` membership study has no piece on disk; run "
                f"`python -m amnesiac_paper membership --profile {result.study.profile}`.")
    revs = sorted({p["provenance"]["git"] for p in result.pieces.values() if "provenance" in p})
    seeds = [s for s in result.study.seeds
             if any(membership_study.piece_name(kind, s) in result.pieces for kind in ("class", "canary"))]
    shadows = sum(k.startswith("shadow") for k in result.pieces)
    return (f"Membership study `{result.study.profile}`: seeds {seeds} (class and canary settings), {shadows} shadow "
            f"models (U-LiRA), computed at revision(s) {', '.join(revs)}.")


def _pieces(result, kind: str) -> list[dict]:
    return [v for k, v in sorted(result.pieces.items()) if k.startswith(f"{kind}-seed")]


def _attack_cells(attacks: Sequence[dict], fprs=("0.01", "0.001")) -> list[str]:
    cells = [format_ci(mean_ci([a["auc"] for a in attacks]))]
    cells += [format_ci(mean_ci([a["tpr"][f] for a in attacks])) for f in fprs]
    cells.append(format_ci(mean_ci([a["heldout_accuracy"] for a in attacks])))
    return cells


ATTACK_HEADER = ["AUC", "TPR at 1% FPR", "TPR at 0.1% FPR", "held-out accuracy"]


def _rule_mark(recs: Sequence[dict], alpha: float) -> str:
    """The label suffix " (the rule's choice in k of n seeds)" of the row of ``alpha`` (0: the original model's
    row, where the rule fell back), empty where no seed's rule (recomputed from the piece's losses,
    :func:`~amnesiac_paper.membership.piece_rule`) chose it."""
    k = [membership_study.piece_rule(r)["alpha"] for r in recs].count(alpha)
    if not k:
        return ""
    why = ": parity never reached, no change" if alpha == 0 else ""
    return f" (the rule's choice in {k} of {len(recs)} seeds{why})"


def rule_fallback_sentence(result, kind: str) -> str:
    """How often the loss-parity rule reached parity in the ``kind`` ("class" or "canary") pieces, and that it
    kept the original model (alpha = 0) in the others (recomputed from the pieces' losses)."""
    recs = _pieces(result, kind)
    if not recs:
        return ""
    rules = [membership_study.piece_rule(r) for r in recs]
    reached = [r["alpha"] for r in rules if r["reached"]]
    text = f"The rule reached parity in {len(reached)} of {len(recs)} seeds"
    if reached:
        text += f" (at α = {', '.join(f'{a:g}' for a in reached)})"
    fell = len(recs) - len(reached)
    if fell:
        text += (f"; in the other {fell} it never did on the grid and kept the original model (α = 0, no change), "
                 "so the original model's row stands for the rule there")
    return text + "."


def class_attack_table(result) -> str:
    """The class-conditional loss attack on every model of the class setting: mean ± 95% interval over seeds."""
    recs = _pieces(result, "class")
    if not recs:
        return "*The class setting has no seed yet.*"
    rows = [["original model" + _rule_mark(recs, 0.0)] + _attack_cells([r["original"] for r in recs]),
            ["retrained (dropped replay)"] + _attack_cells([r["retrain"] for r in recs]),
            ["zero-weighted replay"] + _attack_cells([r["zero_replay"] for r in recs])]
    for i, a in enumerate(recs[0]["alphas"]):
        rows.append([f"subtract, α = {a:g}{_rule_mark(recs, a)}"]
                    + _attack_cells([r["amnesiac"][i]["attack"] for r in recs]))
    rows.append(["fine-tune, 1 epoch (repair only)"] + _attack_cells([r["finetune"] for r in recs]))
    return markdown_table(["model"] + ATTACK_HEADER, rows)


def canary_table(result) -> str:
    """Planted- and true-label rates of the canaries under every model, mean ± 95% interval over seeds."""

    recs = _pieces(result, "canary")
    if not recs:
        return "*The canary setting has no seed yet.*"

    def cells(rates):
        return [format_ci(mean_ci([r["planted"] for r in rates])), format_ci(mean_ci([r["true"] for r in rates]))]

    rows = [["original model" + _rule_mark(recs, 0.0)] + cells([r["original"] for r in recs]),
            ["retrained (dropped replay)"] + cells([r["retrain"] for r in recs])]
    for i, a in enumerate(recs[0]["alphas"]):
        rows.append([f"subtract, α = {a:g}{_rule_mark(recs, a)}"] + cells([r["amnesiac"][i]["rates"] for r in recs]))
    rows.append(["fine-tune, 1 epoch (repair only)"] + cells([r["finetune"] for r in recs]))
    return markdown_table(["model", "predicts the planted label", "predicts the true label"], rows)


def difference_table(result) -> str:
    """The difference attack on the canary request, per variant, mean ± 95% interval over seeds. Its rule rows
    were computed from weights at run time: a piece whose stored rule the current one contradicts is refused
    (:func:`~amnesiac_paper.membership.difference_rule_alpha`)."""
    recs = _pieces(result, "canary")
    if not recs:
        return "*The canary setting has no seed yet.*"
    for r in recs:
        membership_study.difference_rule_alpha(r)
    names = {"alpha=1": "subtract, α = 1", "rule": "subtract, the rule's α",
             "rule + repair": "the rule's α, then 1 epoch of repair",
             "batched (alpha=1)": f"α = 1, request batched with {recs[0]['batched_size'] - recs[0]['n_canaries']} "
                                  "other samples"}
    rows = [[label] + _attack_cells([r["difference"][k] for r in recs]) for k, label in names.items()]
    return markdown_table(["what the attacker sees change"] + ATTACK_HEADER, rows)


def _interval(value: float, ci: Sequence[float] | None) -> str:
    return f"{value:.3f} [{ci[0]:.3f}, {ci[1]:.3f}]" if ci else f"{value:.3f}"


def _lira_cells(rec: dict, ci: dict | None) -> list[str]:
    """AUC and TPR at 1% and 0.1% FPR, each with its bootstrap interval where given, and the held-out accuracy."""
    ci = ci or {}
    return ([_interval(rec["auc"], ci.get("auc"))]
            + [_interval(rec["tpr"][f], (ci.get("tpr") or {}).get(f)) for f in ("0.01", "0.001")]
            + [f"{rec['heldout_accuracy']:.3f}"])


def lira_intervals(result) -> dict:
    """:func:`amnesiac_paper.membership.lira_intervals` of the pieces on disk (empty where a shadow is missing):
    compute it once per chapter and pass it to the tables and the findings."""
    return membership_study.lira_intervals(result) if result is not None else {}


def lira_table(result, intervals: dict | None = None) -> str:
    """U-LiRA (leave one shadow out) per alpha, and plain LiRA on the unmodified models; AUC and TPR with 95%
    bootstrap intervals (``intervals``: :func:`lira_intervals`, computed here when not given)."""
    lira = result.pieces.get("lira")
    if lira is None:
        return "*The shadow models are not computed yet.*"
    ci = lira_intervals(result) if intervals is None else intervals
    rows = [["no unlearning (plain LiRA: kept vs never seen)"] + _lira_cells(lira["original"], ci.get("original"))]
    for alpha in sorted(result.study.alphas, reverse=True):
        if membership_study.lira_key(alpha) in lira:
            key = membership_study.lira_key(alpha)
            rows.append([f"subtract, α = {alpha:g} (forgot vs never seen)"] + _lira_cells(lira[key], ci.get(key)))
    return markdown_table(["target models"] + ATTACK_HEADER, rows)


def lira_methods_table(result, intervals: dict | None = None) -> str:
    """U-LiRA of every method when each shadow forgets all the candidates it holds at once, with each method's
    median time per request; AUC and TPR with 95% bootstrap intervals (``intervals``: :func:`lira_intervals`)."""
    got = result.pieces.get("lira-methods")
    if got is None:
        return ("*U-LiRA for the other methods is not computed yet: run `python -m amnesiac_paper membership --parts "
                "methods`.*")
    ci = lira_intervals(result) if intervals is None else intervals
    rows = [[name] + _lira_cells(rec, ci.get(name)) + [f"{rec['seconds']:.2f}"] for name, rec in got["methods"].items()]
    return markdown_table(["method (forgot vs never seen)"] + ATTACK_HEADER + ["seconds per request"], rows)


def _chance_sentence(named: dict, ci: dict) -> str:
    """Which of ``named`` (label -> U-LiRA record) are indistinguishable from chance (their AUC interval holds 0.5)
    and how the rest rank; every ranking qualified by whether the intervals of neighbours overlap."""
    if not all(k in ci for k in named):
        ranked = sorted(named.items(), key=lambda kv: abs(kv[1]["auc"] - 0.5))
        return "AUC " + ", ".join(f"{k} {v['auc']:.3f}" for k, v in ranked) + " (closest to chance first)"
    ranked = sorted(named, key=lambda k: abs(named[k]["auc"] - 0.5))
    cells = ", ".join(f"{k} {_interval(named[k]['auc'], ci[k]['auc'])}" for k in ranked)
    at_chance = [k for k in ranked if ci[k]["auc"][0] <= 0.5 <= ci[k]["auc"][1]]
    first, second = ranked[0], ranked[1] if len(ranked) > 1 else None
    text = f"AUC with 95% intervals, closest to chance first: {cells}. "
    text += (f"At chance (interval holds 0.5): {', '.join(at_chance)}" if at_chance
             else "No interval holds 0.5: every one of them is told from the models that never saw the data")
    if second is not None:
        lo1, hi1 = ci[first]["auc"]
        lo2, hi2 = ci[second]["auc"]
        text += (f"; the intervals of the first two ({first}, {second}) overlap, so which is closer is not "
                 "established" if lo1 <= hi2 and lo2 <= hi1 else f"; {first} is closest, its interval apart from "
                 f"{second}'s")
    return text


def membership_findings(result, intervals: dict | None = None) -> str:
    """The chapter's summary, computed: one bullet per attack, with the original model, the retrained reference,
    alpha = 1 and the rule's alpha (means over the seeds on disk), U-LiRA with its bootstrap intervals
    (``intervals``: :func:`lira_intervals`, computed here when not given); says plainly what is not computed yet."""

    def m(values):
        return format_ci(mean_ci(list(values)))

    def at(recs, alpha, get):
        """One measure of the subtraction at ``alpha`` (a number, or "rule": each seed's own rule alpha, recomputed;
        the original model's measure where the rule kept it, alpha = 0)."""
        return [get(membership_study.subtraction_at(r, membership_study.piece_rule(r)["alpha"] if alpha == "rule"
                                                    else alpha)) for r in recs]

    def fallback(recs):
        n = sum(not membership_study.piece_rule(r)["reached"] for r in recs)
        return f" (parity never reached in {n} of {len(recs)} seeds: the original model there)" if n else ""

    out = []
    # (piece kind, the bullet's title and what it measures, the record's key, the measure of a subtraction row)
    attacks = (("class", "Class-conditional loss attack",
                "AUC; 0.5 = cannot tell training from test images of the class", "auc", lambda x: x["attack"]["auc"]),
               ("canary", "Canaries", "fraction predicted as the planted label", "planted",
                lambda x: x["rates"]["planted"]))
    for kind, title, what, key, get in attacks:
        recs = _pieces(result, kind)
        if not recs:
            continue
        out.append(
            f"- **{title}** ({len(recs)} seed(s), {what}): original {m(r['original'][key] for r in recs)}, retrained "
            f"{m(r['retrain'][key] for r in recs)}, subtraction at α = 1 {m(at(recs, 1.0, get))}, at the rule's α "
            f"{m(at(recs, 'rule', get))}{fallback(recs)}, fine-tuning {m(r['finetune'][key] for r in recs)}.")
    can = _pieces(result, "canary")
    if can:
        for r in can:
            membership_study.difference_rule_alpha(r)  # "rule + repair" was computed at the stored rule's alpha
        out.append(
            f"- **Difference attack** (AUC of telling the forgotten canaries from retained samples by the direction "
            f"of the change): α = 1 {m(r['difference']['alpha=1']['auc'] for r in can)}, after a repair "
            f"{m(r['difference']['rule + repair']['auc'] for r in can)}, batched with other samples "
            f"{m(r['difference']['batched (alpha=1)']['auc'] for r in can)}.")
    lira = result.pieces.get("lira")
    ci = (lira_intervals(result) if intervals is None else intervals) if lira else {}
    if lira:
        def auc(key):
            return _interval(lira[key]["auc"], (ci.get(key) or {}).get("auc"))

        def tpr(key):
            return _interval(lira[key]["tpr"]["0.01"], ((ci.get(key) or {}).get("tpr") or {}).get("0.01"))

        alphas = {f"α = {k.split('=')[1]}": lira[k] for k in map(membership_study.lira_key, result.study.alphas)
                  if k in lira}
        alpha_ci = {f"α = {k.split('=')[1]}": ci[k] for k in map(membership_study.lira_key, result.study.alphas)
                    if k in ci}
        out.append(
            f"- **U-LiRA** ({result.study.shadows} shadows; shadow training accuracy {lira['train_accuracy']:.3f}, "
            f"test {lira['test_accuracy']:.3f}; intervals: 95%, target shadows and candidates resampled): plain "
            f"LiRA on the unmodified models AUC {auc('original')} (TPR {tpr('original')} at 1% FPR), the signal "
            f"there is to remove; after subtraction at α = 1 AUC {auc('alpha=1')} (TPR {tpr('alpha=1')}). Over the "
            f"scales: {_chance_sentence(alphas, alpha_ci)}.")
    methods = result.pieces.get("lira-methods")
    if methods:
        out.append(
            f"- **U-LiRA, every method** (each shadow forgets its ~{methods['forget_set_size']:.0f} candidates at "
            f"once, each method at its defaults): {_chance_sentence(methods['methods'], ci)}.")
    if not out:
        return "*No membership result is on disk yet.*"
    return "\n".join(out)


def ulira_methods_sentence(result, intervals: dict | None = None) -> str:
    """The Discussion's sentence on U-LiRA for every method (says so when it is not computed): the method closest
    to chance, whether its 95% interval (``intervals``: :func:`lira_intervals`, computed when not given) holds
    0.5, and whether its lead over the next is established."""
    got = result.pieces.get("lira-methods") if result is not None else None
    lira = result.pieces.get("lira") if result is not None else None
    if not got or not lira:
        return "U-LiRA for the methods other than the ledger is not computed at this profile."
    ci = lira_intervals(result) if intervals is None else intervals
    m = got["methods"]
    ranked = sorted(m, key=lambda k: abs(m[k]["auc"] - 0.5))
    best, second = ranked[0], ranked[1]

    def cell(k):
        return _interval(m[k]["auc"], (ci.get(k) or {}).get("auc"))

    near = best in ci and ci[best]["auc"][0] <= 0.5 <= ci[best]["auc"][1]
    overlap = best in ci and second in ci and ci[best]["auc"][0] <= ci[second]["auc"][1] \
        and ci[second]["auc"][0] <= ci[best]["auc"][1]
    return (f"When each shadow forgets about {got['forget_set_size']:.0f} samples at once, "
            f"{'the method closest to chance is indistinguishable from it' if near else 'no method reaches chance'}"
            f": {best} leaves U-LiRA an AUC of {cell(best)} (95% bootstrap interval)"
            + (f", not established as closer than {second}'s {cell(second)}" if overlap else "")
            + f", against {_interval(lira['original']['auc'], (ci.get('original') or {}).get('auc'))} for telling "
            f"members from non-members in models that forgot nothing, and subtracting the whole summed delta is the "
            f"most visible of all (AUC {cell('amnesiac α=1')}); every method ran at its defaults, untuned.")


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


def inversion_closer(corr_original: Sequence[float], corr_retrain: Sequence[float]) -> str:
    """Which model's inversion the unlearned model's resembles more, by the paired per-seed difference of pixel
    correlations (with the retrained model's minus with the original's): named only where its 95% t-interval
    excludes zero, else inconclusive with n."""
    diffs = [r - o for o, r in zip(corr_original, corr_retrain)]
    mean, half, n = mean_ci(diffs)
    if n < 2:
        return f"neither by an interval ({n} seed)"
    stats = f"paired per-seed difference {mean:+.2f} ± {half:.2f}, {n} seeds"
    if mean - half > 0:
        return f"the retrained model's ({stats})"
    if mean + half < 0:
        return f"the original model's ({stats})"
    return f"neither, by an interval that excludes zero ({stats}: the interval spans zero, inconclusive)"

