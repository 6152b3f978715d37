"""Chapter *Exact unlearning beside approximate* (``book/frontier.md``): the frontier study's tables, figure and
findings (:mod:`amnesiac_paper.frontier`). Every number is read from the committed pieces; every "lower than"
is a paired bootstrap interval (models and examples resampled jointly, the same draws for both sides) that
excludes zero.
"""

from __future__ import annotations

from collections.abc import Sequence

from .. import frontier as fr
from ..judging import paired_difference
from .common import cpu_study_results, format_bytes, markdown_table, pieces_provenance

KIND_NAMES = {"exact": "exact", "approximate": "approximate", "control": "control"}
TABLE_SPLITS = ("forget", "retain", "val", "test")
SPLIT_NAMES = {"forget": "forget", "retain": "retain", "val": "validation", "test": "test"}


def frontier_results(*, profile: str = "full", recompute: bool = False, progress: bool = True) -> fr.FrontierResult:
    """The study a chapter renders (:func:`~amnesiac_paper.book.common.cpu_study_results`)."""
    return cpu_study_results(fr, profile=profile, recompute=recompute, progress=progress)


def method_pieces(result: fr.FrontierResult, set_name: str) -> dict[str, dict]:
    """The (set, method) pieces on disk, in :data:`~amnesiac_paper.frontier.METHODS` order."""
    return {m: result.pieces[f"{set_name}/{m}"] for m in fr.METHODS if f"{set_name}/{m}" in result.pieces}


def missing(result: fr.FrontierResult) -> list[str]:
    """Pieces the profile calls for that are not on disk."""
    keys = [f"oracles-{s}" for s in result.study.sets] + ["timing"]
    keys += [f"late-seed{k}" for k in result.study.late_seeds]
    keys += [f"{s}/{m}" for s in result.study.sets for m in fr.METHODS if fr.applies(m, s)]
    return [k for k in keys if k not in result.pieces]


def frontier_provenance(result: fr.FrontierResult) -> str:
    return pieces_provenance(result.study, list(result.pieces.values()), what=f"{len(result.pieces)} pieces",
                             command="frontier", minutes="25 minutes on one CPU core for the full profile",
                             how="float32 on one CPU thread", missing=missing(result))


def frontier_setup(result: fr.FrontierResult) -> str:
    """The setting, read from the study's config."""
    s, r = result.study, result.study.recipe
    return (f"**Setting.** {s.n_train:,} {s.dataset.upper()} training images (drawn once), {s.n_val} validation and "
            f"{s.n_test} test images from the test split; a ReLU network 784-{s.width}-10; {r.optimizer.upper()} "
            f"at learning rate {r.lr:g}, momentum {r.momentum:g}, batch {r.batch_size}, {r.epochs} epochs, float32 "
            f"on one CPU thread. Forget sets: `{s.sets[0]}` ({s.random_size} random training images of classes "
            f"other than {s.forget_class}) and `{s.sets[1]}` (every training image of class {s.forget_class}). "
            f"{s.n_models} evaluated originals per method and set (seeds {s.eval_seeds().start}–"
            f"{s.eval_seeds().stop - 1}) and {s.n_tune} tuning originals of their own; {s.n_oracles} oracles per "
            f"set (retrained without it from independent seeds): the first {s.n_oracles // 2} are every method's "
            f"reference, the other {s.n_oracles - s.n_oracles // 2} the floor (oracle against oracle, the same "
            f"sample sizes) and the tuning target. KLOM: {s.bins}-bin histograms of each example's margin; U-LiRA "
            f"interval: {s.bootstrap} bootstrap resamples of the forget examples. SISA: "
            f"{', '.join(map(str, fr.SISA_SHARDS))} shards of {s.sisa_slices} slices; rewind: a checkpoint every "
            f"{s.rewind_every} batches. Training-time costs are spread over {s.requests} requests.")


def _config(config: dict | None) -> str:
    if config is None:
        return "no change"
    if not config:
        return "–"
    return ", ".join(f"{k} {v:g}" if isinstance(v, float) else f"{k} {v}" for k, v in config.items())


def _auc(u: dict) -> str:
    return f"{u['auc']:.3f} [{u['low']:.3f}, {u['high']:.3f}]"


def _acc(a: dict) -> str:
    return f"{a['mean']:.3f} ± {a['half']:.3f}" if a.get("n", 0) > 1 else f"{a['mean']:.3f}"


def _seconds(x: float) -> str:
    return f"{x:.2g}" if x < 10 else f"{x:.0f}"


def evaluation(rec: dict, choice: str) -> dict:
    """A piece's evaluated configuration: ``answer`` (tuned against the oracles) or ``rule`` (without them; the
    answer's evaluation where the rule chose the same)."""
    ev = rec[choice]
    return rec["answer"] if ev.get("same_as_answer") else ev


def frontier_rows(result: fr.FrontierResult, set_name: str, choice: str = "answer") -> list[dict]:
    """One row per method: its measures at ``choice``, its amortised cost and its storage."""
    rows = []
    for name, rec in method_pieces(result, set_name).items():
        ev = evaluation(rec, choice)
        cost = fr.amortised(result, set_name, name, choice)
        rows.append({"method": name, "label": rec["label"], "kind": rec["kind"], "config": ev["config"],
                     "klom": ev["klom"], "ulira": ev["ulira"], "acc_test": ev["acc_test"],
                     "acc_forget": ev["acc_forget"], "gap": ev["gap_test"]["ratio"], **cost})
    return rows


def frontier_table(result: fr.FrontierResult, set_name: str, choice: str = "answer") -> str:
    """Method x (KLOM P95 forget / retain / validation / test, U-LiRA AUC [95% bootstrap interval], test
    accuracy, gap to the own dropped replay / same-seed floor, seconds per request alone and amortised with the
    training overhead, storage), the oracle floor first."""
    if f"oracles-{set_name}" not in result.pieces or not method_pieces(result, set_name):
        return f"*The set `{set_name}` has no results yet.*"
    o = result.pieces[f"oracles-{set_name}"]
    body = [["oracle against oracle (the floor)", "–", "–", *[f"{o['klom'][s]:.2f}" for s in TABLE_SPLITS],
             _auc(o["ulira"]), _acc(o["acc_test"]), "–", _seconds(o["retrain_seconds"]["median"]) + " (retrain)",
             "–", "–"]]
    for r in frontier_rows(result, set_name, choice):
        body.append([r["label"], KIND_NAMES[r["kind"]], _config(r["config"]),
                     *[f"{r['klom'][s]:.2f}" for s in TABLE_SPLITS], _auc(r["ulira"]), _acc(r["acc_test"]),
                     f"{r['gap']['mean']:.2f}", _seconds(r["request"]), _seconds(r["per_request"]),
                     format_bytes(r["storage_bytes"]) if r["storage_bytes"] else "–"])
    header = ["method", "kind", "configuration", *[f"KLOM P95 {SPLIT_NAMES[s]}" for s in TABLE_SPLITS],
              "U-LiRA AUC [95% CI]", "test accuracy", "gap / same-seed floor", "s per request",
              f"s per request, amortised over {result.study.requests}", "storage"]
    return markdown_table(header, body)


def rule_table(result: fr.FrontierResult, set_name: str) -> str:
    """Per method with knobs: the configuration tuned against the answer beside the one the rule chose without
    it, and what each gives (KLOM P95 on the forget set, test accuracy)."""
    body = []
    for rec in method_pieces(result, set_name).values():
        if len(rec["grid"]) < 2:
            continue
        a, r = rec["answer"], evaluation(rec, "rule")
        body.append([rec["label"], _config(a["config"]), _config(rec["rule"]["config"]),
                     f"{a['klom']['forget']:.2f} / {r['klom']['forget']:.2f}",
                     f"{a['acc_test']['mean']:.3f} / {r['acc_test']['mean']:.3f}"])
    if not body:
        return f"*The set `{set_name}` has no tuned method yet.*"
    return markdown_table(["method", "tuned against the answer", "the rule (no answer)",
                           "KLOM P95 forget (answer / rule)", "test accuracy (answer / rule)"], body)


def paired(result: fr.FrontierResult, set_name: str, a: str, b: str, split: str = "forget",
           choice: str = "answer") -> dict | None:
    """P95 KLOM of method ``a`` minus method ``b`` (or ``"floor"``) on ``split``, with the paired bootstrap
    interval over joint resamples of the models and the examples; None when either is missing."""
    pieces = method_pieces(result, set_name)

    def measured(m):
        if m == "floor":
            rec = result.pieces.get(f"oracles-{set_name}")
        else:
            rec = None if m not in pieces else evaluation(pieces[m], choice)
        return None if rec is None else (rec["klom"][split], rec["klom_boot"][split])

    ma, mb = measured(a), measured(b)
    if ma is None or mb is None:
        return None
    return {**paired_difference(ma[0], mb[0], ma[1], mb[1]), "models": result.study.n_models}


def verdict(d: dict, *, lower: str = "lower", higher: str = "higher") -> str:
    """The word a paired difference supports: ``lower``/``higher`` only where its interval excludes zero, with the
    difference, its interval and the sample size (models a side, where known, and the resamples).

    Example:
        >>> verdict({"diff": -1.0, "low": -1.5, "high": -0.5, "excludes_zero": True, "n": 200, "models": 100})
        'lower (−1 [−1.5, −0.5]; 100 models a side, 200 resamples)'
        >>> verdict({"diff": -0.1, "low": -0.3, "high": 0.2, "excludes_zero": False, "n": 200})
        'inconclusive (−0.1 [−0.3, 0.2]; 200 resamples)'
    """
    word = (lower if d["diff"] < 0 else higher) if d["excludes_zero"] else "inconclusive"
    num = f"{d['diff']:.2g} [{d['low']:.2g}, {d['high']:.2g}]".replace("-", "−")
    size = (f"{d['models']} models a side, " if "models" in d else "") + f"{d['n']} resamples"
    return f"{word} ({num}; {size})"


def paired_table(result: fr.FrontierResult, set_name: str, split: str = "forget") -> str:
    """Every method's P95 KLOM on ``split`` against doing nothing, the exact rewind and the floor: the paired
    difference and its interval."""
    body = []
    for name, rec in method_pieces(result, set_name).items():
        cells = []
        for other in ("original", "rewind", "floor"):
            d = None if other == name else paired(result, set_name, name, other, split)
            cells.append("–" if d is None else verdict(d))
        body.append([rec["label"], *cells])
    if not body:
        return f"*The set `{set_name}` has no results yet.*"
    return markdown_table([f"method (KLOM P95 {SPLIT_NAMES[split]})", "against doing nothing",
                           "against rewind (exact)", "against the oracle floor"], body)


def late_table(result: fr.FrontierResult) -> str:
    """The rewind's cost for data that arrived in the last epoch, beside the same seed in random order."""
    body = []
    for k in result.study.late_seeds:
        rec = result.pieces.get(f"late-seed{k}")
        if rec is None:
            continue
        for name, r in rec["sets"].items():
            ro = r["random_order"]
            body.append([name, str(k), f"{ro['fraction']:.2f}", f"{r['fraction']:.2f}", _seconds(ro["seconds"]),
                         _seconds(r["seconds"]), _seconds(r["train_seconds"]),
                         "yes" if r["identical"] and ro["identical"] else "**no**"])
    if not body:
        return "*No late-data piece yet.*"
    return markdown_table(["forget set", "seed", "replayed fraction, random order", "replayed fraction, late data",
                           "rewind s, random order", "rewind s, late data", "training s",
                           "equals the retrain bit for bit"], body)


def timing_table(result: fr.FrontierResult) -> str:
    """Training seconds plain and with what each method needs, the overhead as a ratio, and the storage."""
    t = result.pieces.get("timing")
    if t is None:
        return "*The timing piece is not computed yet.*"
    names = {"plain": "plain training", "exact-log": "with the exact delta log (both sets)",
             "derivative-log": "with the propagated (derivative) log (both sets)",
             "rewind": f"with the rewind record (every {result.study.rewind_every} batches)",
             **{f"sisa-{s}": f"SISA ensemble, {s} shards x {result.study.sisa_slices} slices" for s in fr.SISA_SHARDS}}
    plain = t["median"]["plain"]
    body = [[names[k], _seconds(t["median"][k]), f"{t['median'][k] / plain:.2f}x",
             format_bytes(t["storage_bytes"][k]) if k in t["storage_bytes"] else "–"] for k in names
            if k in t["median"]]
    return markdown_table(["training", f"CPU s (median of {len(t['seconds']['plain'])})", "against plain",
                           "storage held"], body)


def frontier_points(result: fr.FrontierResult, choice: str = "answer") -> dict:
    """What :func:`~amnesiac_paper.plotting.frontier_figure` draws, per set."""
    out = {}
    for s in result.study.sets:
        o = result.pieces.get(f"oracles-{s}")
        rows = frontier_rows(result, s, choice)
        if o is None or not rows:
            continue
        out[s] = {"floor": o["klom"]["forget"], "retrain_seconds": o["retrain_seconds"]["median"],
                  "points": [{"label": r["label"], "kind": r["kind"], "seconds": r["per_request"],
                              "klom": r["klom"]["forget"], "auc": r["ulira"]["auc"], "low": r["ulira"]["low"],
                              "high": r["ulira"]["high"]} for r in rows]}
    return out


def _best(rows: Sequence[dict], kinds: Sequence[str]) -> dict | None:
    pool = [r for r in rows if r["kind"] in kinds]
    return min(pool, key=lambda r: r["klom"]["forget"]) if pool else None


def frontier_findings(result: fr.FrontierResult) -> str:
    """The chapter's findings, one bullet per forget set, computed from the pieces."""
    out = []
    for s in result.study.sets:
        rows = {r["method"]: r for r in frontier_rows(result, s)}
        o = result.pieces.get(f"oracles-{s}")
        if o is None or "original" not in rows or "rewind" not in rows:
            continue
        orig, rew = rows["original"], rows["rewind"]
        text = (f"- **{s}**: the oracle floor is KLOM P95 {o['klom']['forget']:.2f} on the forget set; doing "
                f"nothing {orig['klom']['forget']:.2f}; rewind-and-replay {rew['klom']['forget']:.2f} "
                f"(against the floor: {verdict(paired(result, s, 'rewind', 'floor'), lower='below', higher='above')})"
                f" at {_seconds(rew['per_request'])} s per request against {_seconds(o['retrain_seconds']['median'])}"
                " s for a retrain.")
        best = _best([r for m, r in rows.items() if m not in ("original",)], ("approximate",))
        if best is not None:
            d = paired(result, s, best["method"], "original")
            dr = paired(result, s, best["method"], "rewind")
            text += (f" The best approximate method on the forget set is {best['label']} ({_config(best['config'])}, "
                     f"tuned against the answer): KLOM P95 {best['klom']['forget']:.2f}, against doing nothing "
                     f"{verdict(d)}, against rewind {verdict(dr)}, retain {best['klom']['retain']:.2f} (doing "
                     f"nothing {orig['klom']['retain']:.2f}), test accuracy {best['acc_test']['mean']:.3f}, at "
                     f"{_seconds(best['per_request'])} s per request amortised.")
        sisa = [r for m, r in rows.items() if m.startswith("sisa-")]
        if sisa:
            text += (" SISA is exact for its own ensemble but its shards see a fraction of the data each: test "
                     "accuracy " + ", ".join(f"{r['acc_test']['mean']:.3f} ({r['label']})" for r in sisa)
                     + f" against {orig['acc_test']['mean']:.3f} for one model, so its outputs sit far from the "
                     "monolithic oracles' (KLOM P95 " + ", ".join(f"{r['klom']['forget']:.1f}" for r in sisa) + ").")
        out.append(text)
    return "\n".join(out) if out else "*No complete forget set yet.*"


GLANCE_METHODS = ("original", "rewind", "sisa-5", "ledger-exact", "ledger-derivative", "oracle-matching",
                  "certified", "finetune", "scrub")


def glance_table(result: fr.FrontierResult) -> str:
    """Results at a glance, for the first page: per method (tuned against the answer), KLOM P95 on the forget set
    and U-LiRA AUC for both forget sets, test accuracy and the amortised seconds per request (random set)."""
    sets = result.study.sets
    if any(f"oracles-{s}" not in result.pieces for s in sets):
        return "*The frontier study is not computed yet.*"
    rows = {s: {r["method"]: r for r in frontier_rows(result, s)} for s in sets}
    floor = [result.pieces[f"oracles-{s}"] for s in sets]
    body = [["two sets of oracles (the floor)", *[f"{o['klom']['forget']:.2f}" for o in floor],
             *[f"{o['ulira']['auc']:.2f}" for o in floor], f"{floor[0]['acc_test']['mean']:.3f}",
             f"{floor[0]['retrain_seconds']['median']:.2g} (one retrain)"]]
    for m in GLANCE_METHODS:
        if not all(m in rows[s] for s in sets):
            continue
        r = [rows[s][m] for s in sets]
        body.append([r[0]["label"], *[f"{x['klom']['forget']:.2f}" for x in r],
                     *[f"{x['ulira']['auc']:.2f}" for x in r], f"{r[0]['acc_test']['mean']:.3f}",
                     f"{r[0]['per_request']:.2g}"])
    return markdown_table(["method", *[f"KLOM P95, {s}" for s in sets], *[f"U-LiRA AUC, {s}" for s in sets],
                           f"test accuracy ({sets[0]})", "CPU s per request, amortised"], body)


def at_floor_sentence(result: fr.FrontierResult) -> str:
    """Which methods cannot be told from the oracle floor on the forget set (paired interval including zero or
    below it), per forget set: the one claim the glance table needs a test for."""
    parts = []
    for s in result.study.sets:
        if f"oracles-{s}" not in result.pieces:
            continue
        near = []
        for m, rec in method_pieces(result, s).items():
            d = paired(result, s, m, "floor")
            if d is not None and not (d["excludes_zero"] and d["diff"] > 0):
                near.append(rec["label"])
        parts.append(f"on `{s}`, " + (", ".join(near) if near else "no method"))
    if not parts:
        return ""
    return ("KLOM on the forget set not above the floor (paired interval over models and examples): "
            + "; ".join(parts) + ".")


def frontier_conclusion(result: fr.FrontierResult) -> str:
    """The Discussion's sentence on exact against approximate unlearning, from the committed pieces."""
    sets = result.study.sets
    rows = {s: {r["method"]: r for r in frontier_rows(result, s)} for s in sets
            if f"oracles-{s}" in result.pieces}
    if len(rows) < len(sets) or any("rewind" not in r or "original" not in r for r in rows.values()):
        return "The frontier study is not computed yet."
    rs, cs = sets
    approx = {s: _best([r for r in rows[s].values()], ("approximate",)) for s in sets}
    text = (f"Judged by KLOM on the frontier, exact rewinding reaches {rows[rs]['rewind']['klom']['forget']:.2f} and "
            f"{rows[cs]['rewind']['klom']['forget']:.2f} on the forget sets `{rs}` and `{cs}` (two sets of oracles: "
            f"{result.pieces[f'oracles-{rs}']['klom']['forget']:.2f} and "
            f"{result.pieces[f'oracles-{cs}']['klom']['forget']:.2f}; doing nothing: "
            f"{rows[rs]['original']['klom']['forget']:.2f} and {rows[cs]['original']['klom']['forget']:.2f}), at the "
            f"cost of a retrain when the data was used from the start.")
    for s in sets:
        b = approx[s]
        if b is not None:
            text += (f" The closest approximate method on `{s}` is {b['label']} at "
                     f"{b['klom']['forget']:.2f} (against the floor: "
                     f"{verdict(paired(result, s, b['method'], 'floor'), lower='below', higher='above')}).")
    return text
