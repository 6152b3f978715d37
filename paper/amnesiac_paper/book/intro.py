"""The introduction (``book/intro.md``): the book's abstract and its hero figure, computed from the
studies. Its other bullets come from :mod:`amnesiac_paper.book.fidelity`, :mod:`~amnesiac_paper.book.comparison`
and :mod:`~amnesiac_paper.book.attacks`.
"""

from __future__ import annotations


def _regime_facts(reg) -> dict | None:
    """The linear-regime study in three numbers: the worst cosine of the finite differences with the propagated
    derivative, the largest eps* of random sets in the default (ReLU) network, and of a class anywhere."""
    from . import regime as rb

    names = rb.regimes_done(reg) if reg is not None else []
    if "default" not in names:
        return None
    sets = rb.set_names(reg)
    rows = [rb.cell_row(reg, n, s) for n in names for s in sets]
    random_sets = [s for s in sets if s.startswith("random-")]
    class_eps = [e for n in names for s in sets if s.startswith("class-") for e in rb.cell_row(reg, n, s)["eps_star"]
                 if e is not None]
    return {"cos": min(r["fd_best_cos"] for r in rows), "eps_random": rb._eps_range(reg, "default", random_sets)[1],
            "eps_class": max(class_eps) if class_eps else None}


def abstract(fid, mem, reg=None, front=None, comp=None, *, setting: str = "full", reference: str = "drop") -> str:
    """The book's abstract, every number computed: the frontier study (``front``: KLOM, U-LiRA and amortised
    costs of exact and approximate methods), the fidelity study (``fid``: the geometry c, r of the exact delta
    against the replay), the linear-regime study (``reg``: the derivative check and the radius eps*), the
    comparison's same-seed floors (``comp``) and the membership study (``mem``)."""
    from . import frontier as fb

    text = ["**Abstract.** Amnesiac unlearning forgets training data by subtracting what the data contributed to "
            "the parameters. We make that contribution exact, a ledger that attributes every optimizer step to "
            "groups of samples so that the groups' deltas and a remainder add up to the parameter change to "
            "floating-point precision, and find that **exact bookkeeping is not counterfactual removal**."]
    rows = {}
    if front is not None:
        for s in front.study.sets:
            rows[s] = {r["method"]: r for r in fb.frontier_rows(front, s)}
    rs, cs = (front.study.sets if front is not None else (None, None))
    if rows.get(rs) and rows.get(cs) and all(m in rows[rs] for m in ("original", "rewind", "ledger-exact")):
        fr_, fc = front.pieces[f"oracles-{rs}"]["klom"]["forget"], front.pieces[f"oracles-{cs}"]["klom"]["forget"]
        r, c = rows[rs], rows[cs]
        d = fb.paired(front, rs, "ledger-exact", "original")
        text.append(
            f" Judged as the field judges unlearning, by KLOM (the per-example KL divergence between the margins of "
            f"{front.study.n_models} unlearned models and {front.study.n_oracles // 2} oracles retrained without the "
            f"forget set, 95th percentile over the forget set; two sets of oracles reach {fr_:.2f}), subtracting the "
            f"exact delta of {front.study.random_size} random MNIST images at its best scale gives "
            f"{r['ledger-exact']['klom']['forget']:.2f} against {r['original']['klom']['forget']:.2f} for doing "
            f"nothing (paired difference {fb.verdict(d)}); for a whole class "
            f"{c['ledger-exact']['klom']['forget']:.2f} against {c['original']['klom']['forget']:.2f} (floor "
            f"{fc:.2f}), while rewinding to the last checkpoint before the data and replaying without it, which "
            f"is exact, reaches {r['rewind']['klom']['forget']:.2f} and {c['rewind']['klom']['forget']:.2f}.")
    per = []
    for opt in fid.study.optimizers:
        if fid.seeds_of(setting, opt):
            per += fidelity_study_rows(fid, setting, opt, reference)
    if per:
        cmax = max(r["c"][0] for r in per)
        best = max(r["oracle_recovered"][0] for r in per if r["kind"] == "random")
        rcls = [r["r"][0] for r in per if r["kind"] == "class"]
        text.append(
            f" The reason is geometric (MNIST, three optimizers, against a replay of the same training without the "
            f"forget set): the exact delta is nearly orthogonal to the direction from the trained model to that "
            f"replay (mean cosine at most {cmax:.2f} over optimizers and sets), so no scale of it recovers more than "
            f"{best:.3f} of the distance for random sets"
            + (f", and for a whole class it is {min(rcls):.0f}–{max(rcls):.0f} times longer than that distance"
               if rcls else "") + ".")
    facts = _regime_facts(reg)
    if facts:
        text.append(
            f" It is not a bug: the propagated delta equals the finite-difference derivative of training in the "
            f"forget set's weight (cosine within {1 - facts['cos']:.0e} of 1), but removal, a weight change of 1, "
            f"lies outside the regime in which any first-order estimate holds (in a ReLU network the trained "
            f"parameters are linear in a random set's weight only up to ε* = {facts['eps_random']:g}"
            + (f"; for a class up to {facts['eps_class']:g}" if facts["eps_class"] is not None else "") + ").")
    if rows.get(rs) and "ledger-derivative" in rows[rs]:
        dv, orig = rows[rs]["ledger-derivative"], rows[rs]["original"]
        d0 = fb.paired(front, rs, "ledger-derivative", "original")
        dn = fb.paired(front, rs, "original", "floor")
        text.append(
            f" For {front.study.random_size} random images the differences are small at this number of models: on "
            f"KLOM, doing nothing is {fb.verdict(dn, lower='below', higher='above')} against the floor, while U-LiRA "
            f"tells it from the oracles (AUC {orig['ulira']['auc']:.2f} [{orig['ulira']['low']:.2f}, "
            f"{orig['ulira']['high']:.2f}]); the propagated delta at a tuned scale gives KLOM "
            f"{dv['klom']['forget']:.2f} (against doing nothing: {fb.verdict(d0)}) and U-LiRA AUC "
            f"{dv['ulira']['auc']:.2f} [{dv['ulira']['low']:.2f}, {dv['ulira']['high']:.2f}] at test accuracy "
            f"{dv['acc_test']['mean']:.3f}.")
    lira = mem.pieces.get("lira") if mem is not None else None
    if lira:
        text.append(f" Membership attacks agree: U-LiRA tells models that trained on a sample and then subtracted it "
                    f"from models that never saw it with AUC {lira['alpha=1']['auc']:.2f} (0.5 = chance), more than "
                    f"it tells members from non-members in the unmodified models ({lira['original']['auc']:.2f}).")
    floors = _same_seed_facts(comp)
    if floors:
        text.append(
            " Retraining has a noise scale of its own, the one to judge closeness by: on all of MNIST, two "
            "retrainings with the same seed and order, one without one more random image, differ in their test "
            "outputs by a KL of "
            + "; ".join(f"{f['kl']:.2g} ({f['opt']}, {f['set']}), where doing nothing is at {f['original']:.2g}"
                        for f in floors) + f" (geometric means over {min(f['n'] for f in floors)} or more seeds).")
    if rows.get(rs) and all(m in rows[rs] for m in ("ledger-exact", "ledger-derivative", "rewind")):
        t = front.pieces["timing"]["median"]
        r = rows[rs]
        late = [p["sets"][rs]["fraction"] for k, p in front.pieces.items() if k.startswith("late-seed")]
        text.append(
            f" Costs, per request on one CPU core, amortised over {front.study.requests} requests and including "
            f"what training pays for the record: subtracting the exact delta {r['ledger-exact']['per_request']:.2g} s "
            f"(its log makes training {t['exact-log'] / t['plain']:.1f}x slower here), the propagated delta "
            f"{r['ledger-derivative']['per_request']:.2g} s ({t['derivative-log'] / t['plain']:.0f}x), exact "
            f"rewinding {r['rewind']['per_request']:.2g} s against "
            f"{front.pieces[f'oracles-{rs}']['retrain_seconds']['median']:.2g} s for a retrain: in random order a "
            "forget sample is used in the first batches, so an exact rewind costs a retrain"
            + (f", while data that arrived in the last epoch costs {max(late):.2f} of one" if late else "") + ".")
    text.append(" Every number in this book is computed by the package from committed results.")
    return "".join(text)


def fidelity_study_rows(fid, setting: str, optimizer: str, reference: str) -> list[dict]:
    from .. import fidelity as fidelity_study

    return fidelity_study.summary_rows(fid, setting, optimizer, reference)


def _same_seed_facts(comp) -> list[dict]:
    """Per (optimizer, forget set) of the comparison with a same-seed floor: the floor's and the original model's
    test KL to the replay, both from the floor's own runs (geometric means over the seeds that hold a floor), and
    their number."""
    if comp is None:
        return []
    from ..comparison import same_seed_floor
    from ..metrics import geometric_ci

    out = []
    for opt in comp.study.optimizers:
        for name in comp.study.sets:
            floor = same_seed_floor(comp, opt, name)
            if floor is None:
                continue
            out.append({"opt": opt, "set": name, "kl": geometric_ci(floor["kl_values"])[0],
                        "original": geometric_ci(floor["original_kl_values"])[0], "n": len(floor["seeds"])})
    return out


def hero_series(fid, comp=None, *, setting: str = "full", reference: str = "drop") -> dict:
    """What :func:`~amnesiac_paper.plotting.hero_figure` draws: per optimizer, per forget set (sorted by size),
    c (mean and t-interval over seeds), and r and the test KLs from the replay (geometric means with log-scale
    intervals), from the fidelity study's per-seed summaries; with the comparison ``comp``, the same-seed floor
    (:func:`amnesiac_paper.comparison.same_seed_floor`) of the sets it holds, as ``same_seed_kl``."""
    from .. import fidelity as fidelity_study
    from ..comparison import same_seed_floor
    from ..metrics import geometric_ci, mean_ci

    out = {}
    for opt in fid.study.optimizers:
        if not fid.seeds_of(setting, opt):
            continue
        rows = []
        for r in sorted(fidelity_study.summary_rows(fid, setting, opt, reference), key=lambda r: r["size"]):
            per = r["per_seed"]
            rows.append({"set": r["set"], "size": r["size"], "c": mean_ci([p["c"] for p in per]),
                         **{k: geometric_ci([p[k] for p in per])
                            for k in ("r", "original_kl", "a1_kl", "oracle_kl", "floor_kl")}})
            floor = (same_seed_floor(comp, opt, r["set"]) if comp is not None and opt in comp.study.optimizers
                     and r["set"] in comp.study.sets else None)
            if floor is not None:
                rows[-1]["same_seed_kl"] = geometric_ci(floor["kl_values"])
        out[opt] = rows
    return out
