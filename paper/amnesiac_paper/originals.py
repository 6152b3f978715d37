"""Which trained original model each committed piece of the MNIST studies measured, and whether the fidelity,
propagation and comparison studies start from the same one for an (optimizer, seed).

Every piece written since fingerprints were added carries ``original_fingerprint`` (:func:`setting.fingerprint`
of the original's parameters). The fidelity study's oldest pieces do not. For those the fingerprint is
*attested*, never typed in: all pieces written by one run of a combo share one provenance stamp (revision and
start time, :class:`store.PieceCache`) and one original model in memory, and a set piece of that run whose
original measures (its loss on the forget set, its class-matched validation loss and its distance to the dropped
replay, all float64) equal, bit for bit, those of a fingerprinted comparison piece of the same optimizer, seed
and forget set was measured on that piece's original and that piece's replay. A run none of whose pieces is
fingerprinted or attested is *unverified*; the committed-results test refuses it. Only the pieces that measure a
model are covered (:func:`measures_a_model`): a combo's ``original`` piece records the run's sizes, its training
seconds and its log's bytes, which no parameter value enters.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

# the original model's measures that identify it (with the dropped replay) bit for bit: float64 functions of
# every parameter, stored with full precision in every set piece of the fidelity and comparison studies
IDENTIFYING = (("loss_forget",), ("loss_val_matched",), ("drop", "dist"))


def measures_a_model(piece: str) -> bool:
    """Whether a fidelity piece (by name) measures the original model or a model trained beside it: a forget set's
    grid (``set-*``), a retrain floor (``floor-*``) and the determinism check do; ``original`` does not."""
    return piece.startswith(("set-", "floor-")) or piece == "determinism"


def _stamp(record: dict) -> tuple:
    p = record.get("provenance", {})
    return p.get("git"), p.get("date")


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
    """(optimizer, seed, set name) -> (fingerprint, identifying measures) from the comparison study's method
    pieces (``ComparisonResult.records``: (optimizer, seed) -> {"<set>/<method>": record})."""
    out = {}
    for (opt, seed), pieces in records.items():
        for key, rec in pieces.items():
            set_name, _, method = key.partition("/")
            measures = identifying_measures(rec)
            if method != "neighbour" and "original_fingerprint" in rec and measures is not None:
                out[(opt, seed, set_name)] = (rec["original_fingerprint"], measures)
    return out


def fidelity_originals(records: Mapping, witnesses: Mapping) -> dict:
    """Per fidelity combo ((setting, optimizer, seed) -> {piece: record}, as ``FidelityResult.records``), the
    fingerprint of every piece's original and how it is known.

    Returns:
        combo -> ``{"fingerprints": {piece: fingerprint or None}, "how": {piece: "recorded" | "attested" |
        "unverified"}, "witness": {piece: "<set> (comparison)"}}`` for attested pieces.

    Raises:
        ValueError: one run of a combo holds two different originals (recorded or attested), which no correct
            run can produce.

    Example:
        >>> o = {"loss_forget": 0.5, "loss_val_matched": 0.25, "drop": {"dist": 2.0}}
        >>> stamp = {"provenance": {"git": "abc1234", "date": "2026-12-01T08:59:24Z"}}
        >>> fid = {("full", "sgd", 1): {"set-random-100": dict(set="random-100", original=o, **stamp),
        ...                             "floor-class": dict(stamp), "original": {}}}
        >>> res = fidelity_originals(fid, {("sgd", 1, "random-100"): ("7012f4c29d3ec527", (0.5, 0.25, 2.0))})
        >>> res[("full", "sgd", 1)]["how"]
        {'set-random-100': 'attested', 'floor-class': 'attested'}
    """
    out = {}
    for (setting, opt, seed), pieces in records.items():
        runs = defaultdict(list)
        for name, rec in pieces.items():
            if measures_a_model(name):
                runs[_stamp(rec)].append(name)
        fps, how, witness = {}, {}, {}
        for names in runs.values():
            known = {pieces[n]["original_fingerprint"]: None for n in names if "original_fingerprint" in pieces[n]}
            for n in names:
                rec = pieces[n]
                w = witnesses.get((opt, seed, rec.get("set")))
                if "original_fingerprint" not in rec and w is not None and identifying_measures(rec) == w[1]:
                    known.setdefault(w[0], f"{rec['set']} (comparison)")
            if len(known) > 1:
                raise ValueError(f"fidelity {setting}/{opt}/seed{seed}: one run holds pieces of {len(known)} "
                                 f"different original models ({', '.join(known)}); recompute the combo")
            fp, via = next(iter(known.items())) if known else (None, None)
            for n in names:
                fps[n] = pieces[n].get("original_fingerprint", fp)
                how[n] = ("recorded" if "original_fingerprint" in pieces[n] else "attested" if fp else "unverified")
                if how[n] == "attested":
                    witness[n] = via or "a fingerprinted piece of the same run"
        out[(setting, opt, seed)] = {"fingerprints": fps, "how": how, "witness": witness}
    return out


def cpu_kind(record: dict) -> str:
    """The kind of CPU a piece was computed on, as its provenance names it (model and the vector instructions torch
    used: rounding differs between them), or "not recorded"."""
    p = record.get("provenance", {})
    if "cpu" not in p:
        return "not recorded"
    return f"{p['cpu']} ({p.get('cpu_capability', '?')})"


def shared_originals(fidelity_records: Mapping, propagation_records: Mapping, comparison_records: Mapping,
                     optimizers, seeds) -> list[dict]:
    """One row per (optimizer, seed): each study's original fingerprint (the fidelity study's recorded or attested,
    None where unverified or missing), the CPU kinds it was computed on, and ``shared``: whether the three studies
    measured one original model bit for bit."""
    fid = fidelity_originals({k: v for k, v in fidelity_records.items() if k[0] == "full"},
                             comparison_witnesses(comparison_records))
    rows = []
    for opt in optimizers:
        for seed in seeds:
            row = {"optimizer": opt, "seed": seed}
            f = fid.get(("full", opt, seed))
            prints = {p for p in (f or {}).get("fingerprints", {}).values() if p}
            row["fidelity"] = prints.pop() if len(prints) == 1 and "unverified" not in f["how"].values() else None
            row["fidelity_how"] = (None if f is None else "unverified" if "unverified" in f["how"].values()
                                   else "attested" if "attested" in f["how"].values() else "recorded")
            recs = [r for n, r in fidelity_records.get(("full", opt, seed), {}).items() if measures_a_model(n)]
            row["fidelity_cpu"] = sorted({cpu_kind(r) for r in recs})
            prop = propagation_records.get((opt, seed), {})
            row["propagation"] = prop.get("original", {}).get("original_fingerprint")
            row["propagation_cpu"] = sorted({cpu_kind(r) for r in prop.values()})
            comp = [r for k, r in comparison_records.get((opt, seed), {}).items() if not k.endswith("/neighbour")]
            comp_prints = {r.get("original_fingerprint") for r in comp}
            row["comparison"] = comp_prints.pop() if len(comp_prints) == 1 else None
            row["comparison_cpu"] = sorted({cpu_kind(r) for r in comp})
            present = [row[s] for s in ("fidelity", "propagation", "comparison")]
            row["shared"] = all(present) and len(set(present)) == 1
            rows.append(row)
    return rows
