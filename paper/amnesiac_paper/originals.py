"""Which trained original model each committed piece of the MNIST studies measured, and whether the fidelity,
propagation and comparison studies start from the same one for an (optimizer, seed).

Pieces written since fingerprints were added carry ``original_fingerprint`` (:func:`setting.fingerprint` of the
original's parameters): every comparison piece, every fidelity piece and the propagation study's ``original``
piece. For the others the fingerprint is *attested*, never typed in. One call of a study's ``run_combo`` stamps
every piece it writes with one provenance (revision, start time to the second, CPU, threads) and measures all of
them on one original, the run's cached weights; a piece written by an earlier call keeps its own stamp. So all
the pieces of one stamp share one original, and a set piece of that stamp whose original's measures (its loss
on the forget set, its class-matched validation loss and its distance to the dropped replay, all float64) equal,
bit for bit, those of a fingerprinted comparison piece of the same optimizer, seed and forget set was measured on
that piece's original and replay. A run none of whose pieces is fingerprinted or attested is *unverified*; a
piece with no stamp is a run of its own. Only the pieces that measure a model are covered
(:func:`measures_a_model`): a fidelity combo's ``original`` piece records the run's sizes, its training seconds
and its log's bytes, which no parameter value enters.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Mapping

from amnesiac_paper.store import short_mkl_path

# the original model's measures that identify it (with the dropped replay) bit for bit: float64 functions of
# every parameter, stored with full precision in every set piece of the three studies
IDENTIFYING = (("loss_forget",), ("loss_val_matched",), ("drop", "dist"))
STUDIES = ("fidelity", "propagation", "comparison")
NOT_RECORDED = "not recorded"


def measures_a_model(piece: str) -> bool:
    """Whether a fidelity piece (by name) measures the original model or a model trained beside it: a forget set's
    grid (``set-*``), a retrain floor (``floor-*``) and the determinism check do; ``original`` does not."""
    return piece.startswith(("set-", "floor-")) or piece == "determinism"


def _stamp(name: str, record: dict) -> tuple:
    """The run that wrote a piece: its provenance's revision, start time and machine; a piece without both a
    revision and a start time is a run of its own."""
    p = record.get("provenance", {})
    if not (p.get("git") and p.get("date")):
        return ("unstamped", name)
    return tuple(p.get(k) for k in ("git", "date", "cpu", "cpu_capability", "threads", "device"))


def identifying_measures(record: dict) -> tuple | None:
    """The :data:`IDENTIFYING` measures of a set piece's original model, or None where it holds none."""
    out = []
    for path in IDENTIFYING:
        v = record.get("original")
        for k in path:
            if not isinstance(v, dict) or k not in v:
                return None
            v = v[k]
        out.append(float(v))
    return tuple(out)


def comparison_witnesses(records: Mapping) -> dict:
    """(optimizer, seed, set name) -> {(fingerprint, identifying measures)} of the comparison study's method pieces
    (``ComparisonResult.records``: (optimizer, seed) -> {"<set>/<method>": record})."""
    out = defaultdict(set)
    for (opt, seed), pieces in records.items():
        for key, rec in pieces.items():
            set_name, _, method = key.partition("/")
            measures = identifying_measures(rec)
            if method != "neighbour" and "original_fingerprint" in rec and measures is not None:
                out[(opt, seed, set_name)].add((rec["original_fingerprint"], measures))
    return dict(out)


def attest(pieces: Mapping[str, dict], witnesses: Callable[[dict], set], *, where: str) -> dict:
    """The original of every piece of one combo ({name: record}): recorded, attested through its run (see the
    module's docstring; ``witnesses(record)``: the fingerprinted (fingerprint, measures) a set piece may match) or
    unverified.

    Returns:
        ``{"fingerprints": {piece: fingerprint or None}, "how": {piece: "recorded" | "attested" | "unverified"},
        "witness": {piece: how its run is known}}``.

    Raises:
        ValueError: one run holds two different originals (recorded or attested), which no correct run produces.
    """
    runs = defaultdict(list)
    for name, rec in pieces.items():
        runs[_stamp(name, rec)].append(name)
    fps, how, witness = {}, {}, {}
    for names in runs.values():
        known = {}
        for n in names:
            rec = pieces[n]
            if "original_fingerprint" in rec:
                known.setdefault(rec["original_fingerprint"], f"{n} records it")
            measures = identifying_measures(rec)
            for fp, theirs in witnesses(rec):
                if measures is not None and measures == theirs:
                    known.setdefault(fp, f"{n} equals the comparison's {rec.get('set')} bit for bit")
        if len(known) > 1:
            raise ValueError(f"{where}: one run holds pieces of {len(known)} different original models "
                             f"({', '.join(known)}); recompute the combo")
        fp, via = next(iter(known.items())) if known else (None, None)
        for n in names:
            fps[n] = pieces[n].get("original_fingerprint", fp)
            how[n] = "recorded" if "original_fingerprint" in pieces[n] else "attested" if fp else "unverified"
            if how[n] == "attested":
                witness[n] = via
    return {"fingerprints": fps, "how": how, "witness": witness}


def fidelity_originals(records: Mapping, witnesses: Mapping) -> dict:
    """:func:`attest` for every fidelity combo ((setting, optimizer, seed) -> {piece: record}, as
    ``FidelityResult.records``), over its pieces that measure a model, with the comparison's ``witnesses``
    (:func:`comparison_witnesses`).

    Example:
        >>> o = {"loss_forget": 0.5, "loss_val_matched": 0.25, "drop": {"dist": 2.0}}
        >>> stamp = {"provenance": {"git": "abc1234", "date": "2026-12-01T08:59:24Z"}}
        >>> fid = {("full", "sgd", 1): {"set-random-100": dict(set="random-100", original=o, **stamp),
        ...                             "floor-class": dict(stamp), "original": {}}}
        >>> res = fidelity_originals(fid, {("sgd", 1, "random-100"): {("7012f4c29d3ec527", (0.5, 0.25, 2.0))}})
        >>> res[("full", "sgd", 1)]["how"]
        {'set-random-100': 'attested', 'floor-class': 'attested'}
    """
    return {(setting, opt, seed): attest({n: r for n, r in pieces.items() if measures_a_model(n)},
                                         lambda r, o=opt, s=seed: witnesses.get((o, s, r.get("set")), set()),
                                         where=f"fidelity {setting}/{opt}/seed{seed}")
            for (setting, opt, seed), pieces in records.items()}


def propagation_originals(records: Mapping, witnesses: Mapping) -> dict:
    """:func:`attest` for every propagation combo ((optimizer, seed) -> {piece: record}): its ``original`` piece
    records the fingerprint of the run that trained it; its set pieces, written by the same run or another, are
    attested through their run."""
    return {(opt, seed): attest(pieces, lambda r, o=opt, s=seed: witnesses.get((o, s, r.get("set")), set()),
                                where=f"propagation {opt}/seed{seed}")
            for (opt, seed), pieces in records.items()}


def cpu_kind(record: dict) -> str:
    """The kind of CPU a piece was computed on, as its provenance names it (model, the vector instructions torch
    used and, where recorded, MKL's code path: rounding differs between them), or :data:`NOT_RECORDED`."""
    p = record.get("provenance", {})
    if "cpu" not in p:
        return NOT_RECORDED
    mkl = f", MKL {short_mkl_path(p['mkl_path'])}" if p.get("mkl_path") else ""
    return f"{p['cpu']} ({p.get('cpu_capability', '?')}{mkl})"


def cpus_differ(a: list[str], b: list[str]) -> bool:
    """Whether two sets of CPU kinds are known to differ: both recorded, and no kind in common."""
    a, b = set(a) - {NOT_RECORDED}, set(b) - {NOT_RECORDED}
    return bool(a) and bool(b) and not (a & b)


def _study_original(runs: dict | None, recs: list[dict]) -> dict:
    """One study's original for an (optimizer, seed) from its attested runs: ``fingerprint`` (None unless every
    covered piece has one and they agree), ``status`` ("none": no piece; "unverified"; "several": more than one
    original; "recorded"; "attested"), ``cpu`` (the kinds of CPU of its pieces)."""
    cpu = sorted({cpu_kind(r) for r in recs})
    if not runs or not runs["how"]:
        return {"fingerprint": None, "status": "none", "cpu": cpu}
    if "unverified" in runs["how"].values():
        return {"fingerprint": None, "status": "unverified", "cpu": cpu}
    prints = set(runs["fingerprints"].values())
    if len(prints) > 1:
        return {"fingerprint": None, "status": "several", "cpu": cpu}
    # "attested": some run is known only through the comparison's measures; a piece that shares a run with a
    # fingerprinted one is as good as recorded
    through_comparison = any("comparison" in w for w in runs.get("witness", {}).values())
    return {"fingerprint": prints.pop(), "cpu": cpu, "status": "attested" if through_comparison else "recorded"}


def shared_originals(fidelity_records: Mapping, propagation_records: Mapping, comparison_records: Mapping,
                     optimizers, seeds) -> list[dict]:
    """One row per (optimizer, seed): for each of :data:`STUDIES`, its original (:func:`_study_original`:
    fingerprint, status, CPU kinds), and ``shared``: whether the three measured one original model bit for bit."""
    witnesses = comparison_witnesses(comparison_records)
    fid = fidelity_originals({k: v for k, v in fidelity_records.items() if k[0] == "full"}, witnesses)
    prop = propagation_originals(propagation_records, witnesses)
    rows = []
    for opt in optimizers:
        for seed in seeds:
            fid_recs = [r for n, r in fidelity_records.get(("full", opt, seed), {}).items() if measures_a_model(n)]
            comp = {k: r for k, r in comparison_records.get((opt, seed), {}).items() if not k.endswith("/neighbour")}
            comp_runs = {"how": {k: "recorded" if "original_fingerprint" in r else "unverified"
                                 for k, r in comp.items()},
                         "fingerprints": {k: r.get("original_fingerprint") for k, r in comp.items()}}
            row = {"optimizer": opt, "seed": seed,
                   "fidelity": _study_original(fid.get(("full", opt, seed)), fid_recs),
                   "propagation": _study_original(prop.get((opt, seed)),
                                                  list(propagation_records.get((opt, seed), {}).values())),
                   "comparison": _study_original(comp_runs, list(comp.values()))}
            prints = [row[s]["fingerprint"] for s in STUDIES]
            row["shared"] = all(prints) and len(set(prints)) == 1
            rows.append(row)
    return rows


def why_not_shared(row: dict) -> str:
    """Why the studies of a :func:`shared_originals` row did not measure one original, in a clause."""
    names = {"fidelity": "the fidelity study", "propagation": "the propagation study",
             "comparison": "the comparison"}
    for s in STUDIES:
        st = row[s]["status"]
        if st == "none":
            return f"{names[s]} has no piece yet"
        if st == "unverified":
            return f"{names[s]}'s pieces carry no fingerprint and match no fingerprinted piece"
        if st == "several":
            return f"{names[s]}'s pieces measured more than one original"
    groups = defaultdict(list)  # fingerprint -> the studies that measured it
    for s in STUDIES:
        groups[row[s]["fingerprint"]].append(s)
    parts = list(groups.values())
    cpus = [sorted({c for s in part for c in row[s]["cpu"]}) for part in parts]
    label = [" and ".join(f"{names[s]}'s" for s in part) for part in parts]
    if all(cpus_differ(cpus[i], cpus[j]) for i in range(len(parts)) for j in range(i)):
        where = [", ".join(c for c in kinds if c != NOT_RECORDED) for kinds in cpus]
        return ", ".join([f"{label[0]} original was trained on {where[0]}"]
                         + [f"{label[i]} on {where[i]}" for i in range(1, len(parts))])
    return (f"{' and '.join(names[s] for part in parts for s in part)} trained different originals on kinds of CPU "
            "not known to differ")
