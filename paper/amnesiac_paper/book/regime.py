"""Chapter *When does the ledger become the counterfactual?* (``book/regime.md``): the linear-regime study's
derivative check, linear-regime radius, phase diagram, LDS and findings (:mod:`amnesiac_paper.regime`). Every
number is read from the committed pieces; every comparison is paired over seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .. import regime as rg
from ..metrics import mean_ci
from .common import cpu_study_results, format_ci, markdown_table, pieces_provenance

TAIL = 1e-6  # the derivative check looks at g for eps at most this

KIND_NAMES = {"exact": "exact", "propagated": "propagated (replay's Hessian)",
              "derivative": "derivative (trained Hessian)"}


def regime_results(*, profile: str = "full", recompute: bool = False, progress: bool = True) -> rg.RegimeResult:
    """The study a chapter renders (:func:`~amnesiac_paper.book.common.cpu_study_results`)."""
    return cpu_study_results(rg, profile=profile, recompute=recompute, progress=progress)


def regime_provenance(result: rg.RegimeResult) -> str:
    missing = [f"{reg.name}/seed {s}" for reg in result.study.regimes for s in result.study.seeds
               if (reg.name, s) not in result.cells]
    pieces = [*result.cells.values(), *result.lds.values(), *result.stable.values(), *result.remedy.values(),
              *result.singles.values()]
    return pieces_provenance(result.study, pieces,
                             what=f"{len(result.cells)} (regime, seed) cells, {len(result.lds)} LDS pieces, "
                                  f"{len(result.stable) + len(result.remedy)} stabilisation pieces and "
                                  f"{len(result.singles)} pieces of single samples",
                             command="regime", minutes="25 minutes on two CPU cores for the full profile",
                             how="float64 on the CPU", missing=missing)


def seeds_of(result: rg.RegimeResult, regime: str) -> list[int]:
    return sorted(s for (name, s) in result.cells if name == regime)


def regimes_done(result: rg.RegimeResult) -> list[str]:
    return [r.name for r in result.study.regimes if seeds_of(result, r.name)]


def set_names(result: rg.RegimeResult) -> list[str]:
    first = next(iter(result.cells.values()), None)
    return list(first["sets"]) if first else []


def _value(x) -> float:
    return float("nan") if x is None else float(x)


def cell_row(result: rg.RegimeResult, regime: str, set_name: str) -> dict:
    """Per seed and as mean ± 95% interval: eps*, and per delta kind the recovered fraction, KL, c and r at
    alpha = 1 (a diverged or non-finite delta counts as NaN and is named in ``diverged``), the control's
    recovered fraction and c, the KL of the original, and the finite-difference check at the smallest eps."""
    seeds = seeds_of(result, regime)
    recs = [result.cells[(regime, s)]["sets"][set_name] for s in seeds]
    row = {"regime": regime, "set": set_name, "seeds": seeds, "size": recs[0]["size"],
           "eps_star": [r["eps_star"] for r in recs], "kl_original": mean_ci([r["kl_original"] for r in recs]),
           "diverged": {}}
    for kind in rg.DELTAS:
        for key in ("recovered", "kl", "c", "r"):
            vals = [_value(r["deltas"][kind]["set"][key]) for r in recs]
            row[f"{kind}_{key}"] = mean_ci(vals)
            row[f"{kind}_{key}_seeds"] = vals
        row[f"{kind}_control_recovered"] = mean_ci([_value(r["deltas"][kind]["control"]["recovered"]) for r in recs])
        row[f"{kind}_control_c"] = mean_ci([_value(r["deltas"][kind]["control"]["c"]) for r in recs])
        steps = [r["deltas"][kind].get("diverged_at") for r in recs]
        if any(s is not None for s in steps):
            row["diverged"][kind] = steps
    # the derivative check: g's best agreement with D in the small-eps tail (eps <= 1e-6), per seed
    best = [max((f for f in r["fd"] if f["eps"] <= TAIL), key=lambda f: f["cos"]) for r in recs]
    row["fd_best_cos"] = min(f["cos"] for f in best)
    row["fd_best_ratio_err"] = max(abs(f["ratio"] - 1) for f in best)
    row["fd_best_eps"] = [f["eps"] for f in best]
    return row


def paired(result: rg.RegimeResult, regime: str, set_name: str, a: str, b: str, key: str = "recovered"):
    """Mean ± 95% interval over seeds of ``a``'s minus ``b``'s value (the paired difference)."""
    row = cell_row(result, regime, set_name)
    return mean_ci([x - y for x, y in zip(row[f"{a}_{key}_seeds"], row[f"{b}_{key}_seeds"])])


def _eps(values: Sequence) -> str:
    return " / ".join("< grid" if v is None else f"{v:g}" for v in values)


def derivative_table(result: rg.RegimeResult) -> str:
    """Per regime and forget set: the finite differences' best agreement with the propagated derivative in the
    small-eps tail (eps <= 1e-6; the worst seed's cosine and norm-ratio error), and eps* per seed."""
    body = []
    for name in regimes_done(result):
        for s in set_names(result):
            row = cell_row(result, name, s)
            body.append([name, s, str(len(row["seeds"])), f"{1 - row['fd_best_cos']:.1e}",
                         f"{row['fd_best_ratio_err']:.1e}", _eps(row["fd_best_eps"]), _eps(row["eps_star"])])
    return markdown_table(["regime", "forget set", "seeds", "1 − cos(g(ε), D), ε ≤ 1e-6: best, worst seed",
                           "norm-ratio error there", "at ε, per seed", "ε* per seed"], body)


def phase_table(result: rg.RegimeResult, set_name: str) -> str:
    """The phase diagram for one forget set: eps* per seed, and at alpha = 1 the recovered fraction of the
    exact, propagated and derivative deltas and the derivative's control, the KL to the replay (original and
    each delta), and c and r of the exact delta and the derivative."""
    body = []
    for name in regimes_done(result):
        row = cell_row(result, name, set_name)

        def cell(kind, key, row=row):
            text = format_ci(row[f"{kind}_{key}"])
            if kind in row["diverged"] and key == "recovered":
                steps = [s for s in row["diverged"][kind] if s is not None]
                text += f" (diverged in {len(steps)} seed(s), step {min(steps)})"
            return text

        body.append([name, str(len(row["seeds"])), _eps(row["eps_star"]),
                     cell("exact", "recovered"), cell("propagated", "recovered"), cell("derivative", "recovered"),
                     format_ci(row["derivative_control_recovered"]),
                     format_ci(row["kl_original"]), cell("exact", "kl"), cell("propagated", "kl"),
                     cell("derivative", "kl"),
                     f"{format_ci(row['exact_c'])} / {format_ci(row['exact_r'])}",
                     f"{format_ci(row['derivative_c'])} / {format_ci(row['derivative_r'])}"])
    return markdown_table(["regime", "seeds", "ε* per seed", "recovered: exact", "propagated", "derivative",
                           "control (derivative)", "KL: original", "exact", "propagated", "derivative",
                           "exact: c / r", "derivative: c / r"], body)


def lds_table(result: rg.RegimeResult) -> str:
    """Per regime with an LDS: the mean over seeds of each delta's LDS (Spearman per held-out image, averaged)."""
    body = []
    for name in result.study.lds_regimes:
        recs = [result.lds[(name, s)] for s in result.study.seeds if (name, s) in result.lds]
        if not recs:
            continue
        body.append([name, str(len(recs)), str(recs[0]["subsets"]), str(recs[0]["subset_size"]),
                     format_ci(mean_ci([r["exact"]["lds"] for r in recs])),
                     format_ci(mean_ci([r["derivative"]["lds"] for r in recs])),
                     format_ci(mean_ci([r["derivative"]["lds"] - r["exact"]["lds"] for r in recs]))])
    if not body:
        return "*No LDS piece computed yet.*"
    return markdown_table(["regime", "seeds", "subsets", "images per subset", "LDS: exact delta",
                           "LDS: derivative", "derivative − exact (paired)"], body)


def _excludes_zero(stat) -> bool:
    m, h, n = stat
    return n >= 2 and math.isfinite(h) and abs(m) > h


def regime_findings(result: rg.RegimeResult) -> str:
    """The findings as Markdown bullets, worded from the numbers."""
    names = regimes_done(result)
    if not names:
        return "*The linear-regime study has no computed cell yet.*"
    sets = set_names(result)
    rows = {(n, s): cell_row(result, n, s) for n in names for s in sets}
    lines = []
    cos = min(r["fd_best_cos"] for r in rows.values())
    err = max(r["fd_best_ratio_err"] for r in rows.values())
    verdict = ("the propagated delta with the trained run's Hessian (and Adam's second moment) is the derivative it "
               "claims to be" if cos >= 0.99 and err <= 0.01 else
               "in at least one cell the propagated delta is *not* what the finite differences converge to")
    lines.append(f"* **{'Not a bug' if cos >= 0.99 and err <= 0.01 else 'A discrepancy'}.** In every regime, forget "
                 f"set and seed, the finite differences of replays for ε ≤ 10⁻⁶ agree with the propagated "
                 f"derivative to a cosine within {1 - cos:.1e} of 1 and a norm ratio within {err:.1e} of 1: "
                 f"{verdict}.")
    random_sets = [s for s in sets if s.startswith("random-")]
    inside = [n for n in names if all(all(e == 1.0 for e in rows[(n, s)]["eps_star"]) for s in random_sets)]
    tiny = [n for n in names if all(all(e is None or e <= 1e-3 for e in rows[(n, s)]["eps_star"])
                                    for s in random_sets)]
    lines.append(f"* **Where removal is inside the linear regime** (ε* = 1 for every random set and seed): "
                 f"{', '.join(inside) if inside else 'no regime'}. Where the finite differences stop agreeing "
                 f"already at ε ≤ 10⁻³ for every random set and seed: {', '.join(tiny) if tiny else 'no regime'}.")
    for s in sets:
        good = [n for n in names if rows[(n, s)]["derivative_recovered"][0] >= 0.8]
        parts = [f"{n} {format_ci(rows[(n, s)]['derivative_recovered'])}" for n in names]
        better = [n for n in names if _excludes_zero(paired(result, n, s, "derivative", "exact"))
                  and paired(result, n, s, "derivative", "exact")[0] > 0]
        lines.append(f"* **{s}**: the derivative at α = 1 recovers {'; '.join(parts)} of the distance to the "
                     f"zero-weighted replay; at least 0.8 in {', '.join(good) if good else 'no regime'}. It recovers "
                     f"more than the exact delta, with a paired 95% interval over seeds that excludes zero, in "
                     f"{', '.join(better) if better else 'no regime'}.")
    lds = {n: [result.lds[(n, s)] for s in result.study.seeds if (n, s) in result.lds]
           for n in result.study.lds_regimes}
    lds = {n: v for n, v in lds.items() if v}
    if lds:
        lines.append("* **Output space (LDS)**, over random subsets of "
                     f"{result.study.lds_subset_atoms * result.study.lds_atom_size} images: " + "; ".join(
                         f"{n}: derivative {format_ci(mean_ci([r['derivative']['lds'] for r in v]))}, exact "
                         f"{format_ci(mean_ci([r['exact']['lds'] for r in v]))} (paired difference "
                         f"{format_ci(mean_ci([r['derivative']['lds'] - r['exact']['lds'] for r in v]))})"
                         for n, v in lds.items()) + ". A high LDS where the parameter-space recovery is low says "
                     "that the derivative ranks the held-out margins' changes well even where it misses most of "
                     "the parameter distance.")
    stable = [n for n in result.study.stabilise_regimes if any(k[0] == n for k in result.stable)]
    if stable:
        parts = []
        for n in stable:
            seeds = sorted(s for (m, s) in result.stable if m == n and (m, s) in result.cells)
            for s in random_sets:
                pieces = [{**result.stable[(n, q)]["sets"][s],
                           **(result.remedy[(n, q)]["sets"][s] if (n, q) in result.remedy else {})} for q in seeds]
                variants = {v: mean_ci([_value(p[v]["recovered"]) for p in pieces if v in p]) for v in pieces[0]}
                best = max(variants, key=lambda v: variants[v][0] if math.isfinite(variants[v][0]) else -math.inf)
                full = mean_ci([_value(result.cells[(n, q)]["sets"][s]["deltas"]["derivative"]["set"]["recovered"])
                                for q in seeds])
                label = f"last {best} epoch(s)" if best.isdigit() else best
                parts.append(f"{n}/{s}: best {label} {format_ci(variants[best])} against the full derivative "
                             f"{format_ci(full)}")
        lines.append("* **Stabilising** (truncation, Gauss–Newton, damping; recovered fraction at α = 1, the best "
                     "variant of each cell, chosen on these same numbers, so an upper bound): " + "; ".join(parts)
                     + ".")
    return "\n".join(lines)


def fd_curves(result: rg.RegimeResult, set_name: str, regimes: Sequence[str] | None = None) -> dict:
    """{regime: [(eps, cos, ratio) per seed]} for the figure of g(eps) against the derivative."""
    out = {}
    for name in regimes or regimes_done(result):
        out[name] = [[(f["eps"], f["cos"], f["ratio"]) for f in result.cells[(name, s)]["sets"][set_name]["fd"]]
                     for s in seeds_of(result, name)]
    return out


def geometry_check(result: rg.RegimeResult) -> float:
    """The largest gap, over every cell and delta, between the measured recovered fraction and the law of cosines
    from the measured c and r (a check that the mechanism's formula is the measurement's)."""
    gap = 0.0
    for rec in result.cells.values():
        for s in rec["sets"].values():
            for kind in rg.DELTAS:
                d = s["deltas"][kind]["set"]
                if d["recovered"] is None or not np.isfinite(d["c"]):
                    continue
                gap = max(gap, abs(d["recovered"] - rg.recovered_from_geometry(d["r"], d["c"])))
    return gap


def lds_design(result: rg.RegimeResult) -> str:
    """The LDS's design in one sentence, from the study's config."""
    st = result.study
    return (f"For {st.lds_subsets} random forget subsets of {st.lds_subset_atoms} atoms of {st.lds_atom_size} images "
            f"({st.lds_subset_atoms * st.lds_atom_size} images each, out of an atomised pool of "
            f"{st.lds_atoms * st.lds_atom_size}), the margin change of each of the {st.n_test} held-out images (the "
            "correct class's logit minus the log-sum-exp of the others) is predicted from the subset's delta "
            "through a Jacobian-vector product at θ_T and compared with the change the zero-weighted replay shows; "
            "the LDS is the Spearman correlation over subsets, averaged over images. Regimes measured: "
            f"{', '.join(st.lds_regimes)}.")


def _eps_range(result: rg.RegimeResult, regime: str, sets: Sequence[str]) -> tuple[float | None, float | None]:
    vals = [e for s in sets for e in cell_row(result, regime, s)["eps_star"]]
    finite = [e for e in vals if e is not None]
    lo = None if any(e is None for e in vals) else min(finite)
    return lo, max(finite) if finite else None


def _fmt_eps(e) -> str:
    return "below the grid" if e is None else f"{e:g}"


def _eps_span(lo, hi) -> str:
    """``ε* between lo and hi``, or ``ε* = v in every case`` when they are one value.

    Example:
        >>> _eps_span(1.0, 1.0), _eps_span(1e-05, 0.0001), _eps_span(None, 1e-05)
        ('ε* = 1 in every case', 'ε* between 1e-05 and 0.0001', 'ε* between below the grid and 1e-05')
    """
    if lo is not None and lo == hi:
        return f"ε* = {lo:g} in every case"
    return f"ε* between {_fmt_eps(lo)} and {_fmt_eps(hi)}"


def regime_conclusion(result: rg.RegimeResult) -> str:
    """The chapter's closing paragraph, worded from the numbers: the derivative check, eps* of the random sets in
    the default (ReLU) regime against the tanh control that differs only in the activation, the convex control,
    and the whole class."""
    names = regimes_done(result)
    if not names:
        return "*No cell computed yet.*"
    sets = set_names(result)
    random_sets = [s for s in sets if s.startswith("random-")]
    class_sets = [s for s in sets if s.startswith("class-")]
    rows = {(n, s): cell_row(result, n, s) for n in names for s in sets}
    cos = min(r["fd_best_cos"] for r in rows.values())
    if cos >= 0.99:
        text = (f"The derivative check answers the question this chapter began with: in every regime measured the "
                f"propagated delta is the derivative of training in the forget set's weight (cosine within "
                f"{1 - cos:.1e} of 1 with the finite differences for ε ≤ 10⁻⁶). What fails is the premise that "
                "removal is a small perturbation. ")
    else:
        text = (f"The derivative check does not settle the question everywhere: in at least one cell the finite "
                f"differences for ε ≤ 10⁻⁶ reach a cosine of only {cos:.6f} with the propagated delta. ")
    if "default" in names and "tanh" in names:
        lo, hi = _eps_range(result, "default", random_sets)
        tlo, thi = _eps_range(result, "tanh", random_sets)
        text += (f"In the default ReLU network the trained parameters are linear in the weight of a random forget "
                 f"set only up to {_eps_span(lo, hi)} (over sets and seeds); in the same network with tanh, the "
                 f"control that differs only in the activation, {_eps_span(tlo, thi)}. ")
        if tlo is not None and (hi is None or tlo > hi):
            text += ("The smooth activation moves the linear regime out by orders of magnitude, consistent with a "
                     "ReLU network's training map being only piecewise smooth: an activation that crosses zero at "
                     "some step changes that step's gradient by a finite amount, which no derivative sees. ")
    if "convex" in names:
        clo, chi = _eps_range(result, "convex", random_sets)
        text += f"In the convex control, for random sets, {_eps_span(clo, chi)}. "
    if class_sets:
        best = max((e for n in names for s in class_sets for e in rows[(n, s)]["eps_star"] if e is not None),
                   default=None)
        text += (f"Removing a whole class is not small in any regime: its largest ε* over every regime and seed is "
                 f"{_fmt_eps(best)}. ")
    text += (f"These are small networks on {result.study.n_train:,} images, chosen so that hundreds of float64 "
             "replays fit on two CPU cores; the paper's SimpleModel (LeakyReLU, 95k parameters, float32) is a "
             "piecewise-linear network like the default regime's.")
    return text


def fidelity_geometry(profile: str = "full") -> str:
    """The fidelity study's exact-delta geometry in one sentence: the range of c and r over optimizers, sets and
    seeds (full setting, dropped replay), beside the control group's c. Reads committed pieces only."""
    from .. import fidelity as fi

    res = fi.load_study(profile)
    cs, ctrl, rs = [], [], []
    for (setting, _opt, _seed), pieces in res.records.items():
        if setting != "full":
            continue
        for name, rec in pieces.items():
            if name.startswith("set-") and f"floor-{rec['family']}" in pieces:
                s = fi.set_summary(rec, pieces[f"floor-{rec['family']}"], "drop")
                cs.append(s["c"])
                rs.append(s["r"])
                ctrl.append(s["control_c"])
    if not cs:
        return f"*The fidelity study has no `{profile}` piece on disk, so its geometry is not shown.*"
    return (f"In the fidelity study (SimpleModel, full MNIST), c of the exact delta ranges from {min(cs):.3f} to "
            f"{max(cs):.3f} over optimizers, forget sets and seeds ({len(cs)} cases), against {min(ctrl):.3f} to "
            f"{max(ctrl):.3f} for a random group's delta that is not forgotten, with r from {min(rs):.3g} to "
            f"{max(rs):.3g}: by the relation above, no scale of the exact delta recovers more than "
            f"{1 - math.sqrt(1 - max(c * c for c in cs)):.4f} of the distance there.")


def stable_table(result: rg.RegimeResult) -> str:
    """Stabilisation measured: per regime and forget set, the recovered fraction at alpha = 1 (mean ± 95% interval
    over seeds) of the exact delta (no propagation), the derivative propagated over the last k epochs for each k,
    with Gauss–Newton products, damped for each lambda, and over all of training (the cell's derivative); a
    diverged run is named with its step."""
    names = [n for n in result.study.stabilise_regimes if any(k[0] == n for k in result.stable)]
    if not names:
        return "*No stabilised propagation computed yet.*"
    truncs = [str(k) for k in result.study.truncations]
    cures = list(rg.remedies(result.study))
    body = []
    for name in names:
        seeds = sorted(s for (n, s) in result.stable if n == name and (n, s) in result.cells)
        for set_name in set_names(result):
            cells = [result.cells[(name, s)]["sets"][set_name]["deltas"] for s in seeds]
            pieces = [{**result.stable[(name, s)]["sets"][set_name],
                       **(result.remedy[(name, s)]["sets"][set_name] if (name, s) in result.remedy else {})}
                      for s in seeds]

            def show(values, steps):
                text = format_ci(mean_ci([_value(v) for v in values]))
                hit = [t for t in steps if t is not None]
                return text + (f" (diverged in {len(hit)} seed(s), step {min(hit)})" if hit else "")

            row = [name, set_name, str(len(seeds)), show([c["exact"]["set"]["recovered"] for c in cells], [])]
            for v in truncs + cures:
                row.append(show([p[v]["recovered"] for p in pieces if v in p],
                                [p[v]["diverged_at"] for p in pieces if v in p]))
            row.append(show([c["derivative"]["set"]["recovered"] for c in cells],
                            [c["derivative"].get("diverged_at") for c in cells]))
            body.append(row)
    heads = [f"last {k} epoch{'s' if int(k) > 1 else ''}" for k in truncs]
    heads += ["Gauss–Newton" if v == "gauss-newton" else v.replace("damping-", "damping λ = ") for v in cures]
    return markdown_table(["regime", "forget set", "seeds", "exact (no propagation)", *heads,
                           "all epochs (derivative)"], body)


_OPTIMIZER_NAMES = {"momentum": "SGD with momentum 0.9", "sgd": "plain SGD", "adam": "Adam"}


def regime_setup(result: rg.RegimeResult) -> str:
    """The chapter's description of the regimes and forget sets, from the study's config."""
    st = result.study
    base = rg.DEFAULT
    default = (f"a one-hidden-layer {base.activation if base.activation != 'relu' else 'ReLU'} network of width "
               f"{base.width} on {st.n_train:,} MNIST images, {_OPTIMIZER_NAMES[base.optimizer]}, learning rate "
               f"{base.lr:g}, batch {base.batch_size}, {base.epochs} epochs")
    cells = []
    for reg in st.regimes:
        if reg == base:
            continue
        if reg.model == "logistic":
            cells.append("the **convex control**, multinomial logistic regression on the pixels, where a first-order "
                         "estimate should be close to exact")
        elif reg.optimizer != base.optimizer:
            cells.append(f"{_OPTIMIZER_NAMES[reg.optimizer]} (learning rate {reg.lr:g})")
        elif reg.lr != base.lr:
            cells.append(f"learning rate ×{reg.lr / base.lr:g}")
        elif reg.batch_size != base.batch_size:
            cells.append(f"batch {reg.batch_size}")
        elif reg.late_epochs:
            cells.append(f"the forget sets seen only in the last {reg.late_epochs} epoch(s) (data that arrived in a "
                         "late fine-tuning stage)")
        elif reg.activation != base.activation:
            cells.append(f"{reg.activation} instead of ReLU")
    return (f"**The regimes.** One factor at a time from a default ({default}), each cell small enough for two CPU "
            f"cores: {'; '.join(cells)}. Plain SGD gets the step that momentum 0.9 takes in effect "
            "(learning rate / (1 − momentum)). Forget sets: "
            f"{' and '.join(str(n) for n in st.set_sizes)} random images (drawn from the classes other than "
            f"{st.forget_class}, so that every group is disjoint and one log holds them all) and every pool image "
            f"of class {st.forget_class}; each with a random group of the same size that is not forgotten.")


def singles_table(result: rg.RegimeResult, regime: str = "default") -> str:
    """One sample at a time (:func:`amnesiac_paper.regime.singles_summary`), against each replay: per delta the
    recovered fraction at alpha = 1 (mean ± 95% interval over the singles), median c and r, the mean log ratio of
    its held-out KL to the original model's (below zero: closer to the replay than doing nothing) and how many
    singles it brought closer."""
    body = []
    for reference, label in (("zero", "zero-weighted"), ("drop", "dropped")):
        summ = rg.singles_summary(result, regime, reference)
        if summ is None:
            return (f"*One sample at a time is not computed yet: run `python -m amnesiac_paper regime --profile "
                    f"{result.study.profile}`.*")
        for kind in rg.SINGLE_DELTAS:
            k = summ[kind]
            body.append([f"{label} replay", KIND_NAMES[kind], format_ci(k["recovered"]), f"{k['c']:.3f}",
                         f"{k['r']:.3g}", format_ci(k["log_kl_ratio"]), f"{k['closer']} of {k['finite']}"])
    return markdown_table(["reference", "delta (α = 1)", "recovered", "median c", "median r",
                           "log(KL / KL of the original)", "singles brought closer"], body)


def singles_findings(result: rg.RegimeResult, regime: str = "default", reference: str = "drop") -> str:
    """The singles in words, every comparison with doing nothing judged by the interval of the mean log KL ratio
    over the singles (pooled over seeds): "closer" or "farther" only where it excludes zero."""
    summ = rg.singles_summary(result, regime, reference)
    if summ is None:
        return "*One sample at a time is not computed yet.*"
    parts = []
    for kind in rg.SINGLE_DELTAS:
        k = summ[kind]
        m, h, n = k["log_kl_ratio"]
        verdict = ("closer to the replay than doing nothing" if _excludes_zero(k["log_kl_ratio"]) and m < 0 else
                   "*farther* from the replay than doing nothing" if _excludes_zero(k["log_kl_ratio"]) else
                   "no closer and no farther than doing nothing that the interval can tell (inconclusive)")
        parts.append(f"the {KIND_NAMES[kind]} delta at α = 1 recovers {format_ci(k['recovered'])} of the way "
                     f"(median c = {k['c']:.2f}, r = {k['r']:.2g}) and ends {verdict} in output space (mean log KL "
                     f"ratio {m:+.2f} ± {h:.2f}; {k['closer']} of {k['finite']} singles closer)")
    seeds, which = summ["seeds"], "dropped" if reference == "drop" else "zero-weighted"
    return (f"One sample at a time, {summ['n']} single samples ({len(seeds)} seed{'s' if len(seeds) != 1 else ''} "
            f"of the {regime} regime, each against its own {which} replay): " + "; ".join(parts) + ".")
