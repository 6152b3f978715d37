"""What every chapter uses: parameter validation, loading results, provenance, notes and Markdown tables.

Chapters stay thin: a ``parameters`` cell, then calls into this module, the module of their own chapter in
:mod:`amnesiac_paper.book`, :mod:`amnesiac_paper.experiments` and :mod:`amnesiac_paper.plotting`. papermill only
warns about unknown parameters, so :func:`validate` checks values. This module imports no chapter module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from ..catalogue import LogSpec, get_experiment
from ..datasets import data_root, dataset_available
from ..experiments import Result, load, run, summarize
from ..store import PROFILES

DEVICES = ("auto", "cpu", "cuda")


def validate(*, profile: str = "full", seeds: Sequence[int] | None = None, recompute: bool = False,
             device: str = "auto", forget_class: int | None = None, num_classes: int = 10,
             alpha: float | None = None, p: float | None = None, fraction: float | None = None) -> dict:
    """Check a chapter's parameters; raise ValueError naming the bad value and the valid ones."""
    if profile not in PROFILES:
        raise ValueError(f"profile={profile!r} is not a profile; valid profiles: {', '.join(PROFILES)}")
    if seeds is not None:
        if isinstance(seeds, (str, bytes)) or not isinstance(seeds, Sequence) or not seeds:
            raise ValueError(f"seeds={seeds!r} must be a non-empty list of integers, e.g. [0, 1, 2]")
        if any(not isinstance(s, int) or isinstance(s, bool) or s < 0 for s in seeds):
            raise ValueError(f"seeds={seeds!r} must hold non-negative integers")
    if not isinstance(recompute, bool):
        raise ValueError(f"recompute={recompute!r} must be True or False")
    if device not in DEVICES:
        raise ValueError(f"device={device!r} is not valid; use one of {', '.join(DEVICES)}")
    if forget_class is not None and not (isinstance(forget_class, int) and 0 <= forget_class < num_classes):
        raise ValueError(f"forget_class={forget_class!r} is out of range: valid classes are 0..{num_classes - 1}")
    if alpha is not None and not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha > 0):
        raise ValueError(f"alpha={alpha!r} must be a positive number")
    if p is not None and not (isinstance(p, (int, float)) and 0 < p <= 1):
        raise ValueError(f"p={p!r} must be in (0, 1]")
    if fraction is not None and not (isinstance(fraction, (int, float)) and 0 < fraction <= 1):
        raise ValueError(f"fraction={fraction!r} must be in (0, 1]")
    return dict(profile=profile, seeds=None if seeds is None else tuple(seeds), recompute=recompute, device=device)


def validate_counts(**counts: int) -> None:
    """Check that every keyword is a positive integer (chapter parameters such as ``n_train=12000``).

    Example:
        >>> validate_counts(n_train=12000, epochs=1)
    """
    for name, value in counts.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name}={value!r} must be a positive integer")


def validate_tolerances(**values: float) -> None:
    """Check that every keyword is a number in [0, 1] (chapter parameters such as ``forget_tol=0.05``).

    Example:
        >>> validate_tolerances(forget_tol=0.05, rest_drop=0.02)
    """
    for name, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 <= value <= 1:
            raise ValueError(f"{name}={value!r} must be a number between 0 and 1")


def results(name: str, *, profile: str = "full", seeds: Sequence[int] | None = None, recompute: bool = False,
            device: str = "auto", progress: bool = True, overrides: Mapping[str, object] | None = None) -> Result:
    """The results a chapter renders: committed ones by default, computed when asked or when missing.

    With ``recompute=False`` committed results are loaded (restricted to ``seeds``, if given); seeds that are
    missing are computed only for the smoke profile (full runs are long: ask for them with recompute=True).
    ``overrides`` are the experiment settings a chapter's parameters map onto (e.g. ``forget_class``; see
    :data:`amnesiac_paper.experiments.OVERRIDES`); a changed setting is a different config, cached apart.
    """
    validate(profile=profile, seeds=seeds, recompute=recompute, device=device)
    seeds = tuple(seeds) if seeds is not None else None
    if recompute:
        return run(name, profile, seeds=seeds, device=device, progress=progress, recompute=True, overrides=overrides)
    res = load(name, profile, overrides=overrides)
    wanted = seeds if seeds is not None else res.experiment.seeds
    if not res.available or all(s in res.seeds for s in wanted):
        res.seeds = {s: res.seeds[s] for s in wanted if s in res.seeds}
        return res
    if profile == "smoke":
        return run(name, profile, seeds=seeds, device=device, progress=progress, overrides=overrides)
    res.seeds = {s: res.seeds[s] for s in wanted if s in res.seeds}
    return res


def pieces_provenance(study, recs: Sequence[dict], *, what: str, command: str, minutes: str, how: str,
                      missing: Sequence[str] = ()) -> str:
    """The provenance paragraph of a study's committed pieces (``recs``, each with ``provenance`` and
    ``wall_seconds``): its name, profile and config hash, ``what`` was computed, at which revisions and dates, the
    compute in all and ``how``; or, with no piece, the ``command`` to run (about ``minutes``). ``missing`` names
    the pieces not computed yet."""
    if not recs:
        return (f"**Not computed yet.** Run `python -m amnesiac_paper {command} --profile {study.profile}` "
                f"(about {minutes}).")
    revs = sorted({r["provenance"]["git"] for r in recs})
    dates = sorted(r["provenance"]["date"][:10] for r in recs)
    total = sum(r.get("wall_seconds", 0.0) for r in recs) / 60
    text = (f"**Provenance.** Study `{study.name}`, profile `{study.profile}`, config hash `{study.hash}`: {what}, "
            f"computed at revision(s) {', '.join(f'`{r}`' for r in revs)}, {dates[0]} to {dates[-1]}, "
            f"{total:.0f} min of compute in all, {how}.")
    if missing:
        text += f" **Not computed yet:** {', '.join(missing)}."
    return text


def cpu_study_results(study, *, profile: str, recompute: bool, progress: bool):
    """A one-thread CPU study's results as a chapter renders them (``study``: a module with ``run_study(profile,
    progress=)`` and ``load_study(profile)``, such as :mod:`~amnesiac_paper.regime` and
    :mod:`~amnesiac_paper.frontier`): committed pieces for ``full`` (computing nothing unless ``recompute``),
    computed when missing for ``smoke``."""
    validate(profile=profile, recompute=recompute, device="cpu")
    if recompute or profile == "smoke":
        return study.run_study(profile, progress=progress)
    return study.load_study(profile)


def study_results(study, *, profile: str, recompute: bool, device: str, progress: bool):
    """A study module's results as a chapter renders them: committed pieces for ``full`` (computing nothing unless
    ``recompute``), computed when missing for ``smoke``; runs are on the CPU unless ``device`` says cuda."""
    validate(profile=profile, recompute=recompute, device=device)
    if recompute or profile == "smoke":
        return study.run_study(profile, device="cpu" if device == "auto" else device, progress=progress)
    return study.load_study(profile)


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table (cells already formatted as strings)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def format_bytes(n: float) -> str:
    """A byte count in decimal units (kB, MB, GB, TB are 10^3, 10^6, 10^9, 10^12 bytes), three significant digits.

    Example:
        >>> format_bytes(44_911_248), format_bytes(512), format_bytes(1.4e11)
        ('44.9 MB', '512 B', '140 GB')
    """
    if n < 1000:
        return f"{int(n)} B"
    for unit, size in (("kB", 1e3), ("MB", 1e6), ("GB", 1e9), ("TB", 1e12)):
        text = f"{n / size:.3g}"
        if float(text) < 1000 or unit == "TB":
            return f"{text} {unit}"
    raise AssertionError("unreachable")


def format_ci(stat) -> str:
    """``mean ± half-width`` (3 significant digits) of a :func:`amnesiac_paper.metrics.mean_ci` triple, the mean
    alone with one value, a dash with none.

    Example:
        >>> format_ci((0.1234, 0.0567, 3)), format_ci((0.5, float("nan"), 1)), format_ci((float("nan"), 0.0, 0))
        ('0.123 ± 0.057', '0.5', '–')
    """
    mean, half, n = stat
    if n == 0 or np.isnan(mean):
        return "–"
    return f"{mean:.3g}" if n < 2 or np.isnan(half) else f"{mean:.3g} ± {half:.2g}"


def format_gci(values: Sequence[float]) -> str:
    """Geometric mean and 95% interval on the log scale of positive, heavy-tailed per-seed values (a KL
    divergence): ``gmean [low, high]``, never below zero; the value alone for one seed, a dash for none.

    Example:
        >>> format_gci([0.01, 0.02, 0.04]), format_gci([0.5]), format_gci([])
        ('0.02 [0.0036, 0.11]', '0.5', '–')
    """
    from ..metrics import geometric_ci

    g, lo, hi, n = geometric_ci(values)
    if n == 0:
        return "–"
    return f"{g:.3g}" if n == 1 else f"{g:.3g} [{lo:.2g}, {hi:.2g}]"


def pm(row: dict, metric: str, digits: int = 2) -> str:
    """``mean ± half-width of the 95% interval over seeds`` of a summarize() row (the mean alone for one seed),
    or a dash when the method was not evaluated at that stage."""
    mean, half = row.get(metric, float("nan")), row.get(metric + "_ci", float("nan"))
    if mean is None or np.isnan(mean):
        return "–"
    if half is None or np.isnan(half) or row.get("seeds", 1) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {half:.{digits}f}"


def provenance(result: Result) -> str:
    """A Markdown paragraph naming where the numbers come from."""
    if not result.seeds:
        return f"No results for `{result.experiment.name}` ({result.experiment.profile})."
    recs = list(result.seeds.values())
    prov = recs[0].get("provenance", {})
    wall = sum(r.get("wall_seconds", 0.0) for r in recs)
    resumed = sorted(k for k, r in result.seeds.items() if r.get("resumed"))
    note = (f" (seed(s) {resumed} resumed after an interruption: only their last run's time is counted)"
            if resumed else "")
    return (f"**Provenance.** Experiment `{result.experiment.name}`, profile `{result.experiment.profile}`, config "
            f"hash `{result.experiment.hash}`, seeds {sorted(result.seeds)}; computed with code revision "
            f"`{prov.get('git', '?')}` on {prov.get('device', '?')} ({prov.get('threads', '?')} threads), torch "
            f"{prov.get('torch', '?')}, on {prov.get('date', '?')[:10]}; {wall / 60:.1f} min of compute in all"
            f"{note}.")


def study_provenance(result, *, what: str, command: str, minutes: str, needs: str = "", detail: str = "") -> str:
    """Where a study's pieces (``result.records``: (optimizer, seed) -> pieces) come from (``detail`` leads the
    sentence), or how to compute them (``needs``: what must be on disk first)."""
    recs = [p for pieces in result.records.values() for p in pieces.values()]
    profile = result.study.profile
    if not recs:
        return (f"**Not computed yet.** The `{profile}` {what} has no piece on disk; run `python -m amnesiac_paper "
                f"{command} --profile {profile}` (about {minutes} minutes per optimizer and seed on two CPU cores"
                f"{needs}).")
    revs = sorted({r["provenance"]["git"] for r in recs})
    return (f"{what[0].upper()}{what[1:]} `{profile}`: {detail}{len(result.records)} (optimizer, seed) "
            f"combination(s) on disk, computed at revision(s) {', '.join(revs)}.")


def missing_seeds_note(result: Result, profile: str) -> str:
    """A sentence saying which of the profile's seeds are absent from the rendered results (empty if none)."""
    want = get_experiment(result.experiment.name, profile).seeds
    missing = [s for s in want if s not in result.seeds]
    if not missing:
        return ""
    return (f"Seeds {missing} of the `{profile}` profile have not been computed yet; the numbers below use seeds "
            f"{sorted(result.seeds)}. Run `python -m amnesiac_paper run {result.experiment.name} --profile {profile}` "
            "to add them.")


def availability_note(result: Result, profile: str) -> str:
    """Why a result has no seeds, as a Markdown sentence (empty when it has some): the data set is missing
    where the book was built (``result.reason`` or a failed :func:`amnesiac_paper.datasets.dataset_available`), or the
    data is there but the experiment has not been run; either way it names the command that computes it."""
    if result.seeds:
        return ""
    exp = result.experiment
    command = f"`python -m amnesiac_paper run {exp.name} --profile {profile}`"
    if not result.available or not dataset_available(exp.dataset):
        why = result.reason or f"{exp.dataset} does not load from the data root {data_root()}"
        return (f"**Not computed: the `{exp.dataset}` data set is not available where this book was built** "
                f"({why}). No numbers are shown for `{exp.name}`. Where the data exists, point `$AMNESIAC_DATA` at "
                f"the folder that holds torchvision's files for it and run {command}.")
    return f"**Not computed yet.** The `{exp.dataset}` data is available; run {command} to compute `{exp.name}`."


def results_table(result: Result, columns: Sequence[tuple[str, str, str]], *, digits: int = 2,
                  keep_empty: bool = False) -> str:
    """A Markdown table of ``mean ± std`` over seeds: one row per method, the original model first and the
    retrained reference last (rows of :func:`amnesiac_paper.experiments.summarize`), one column per
    ``(header, metric, stage)`` with ``stage`` ``"no_repair"`` or ``"after_repair"``.

    A method with a dash in every column (e.g. one never repaired, in an after-repair table) is left out
    unless ``keep_empty``. The original and retrained models have no stages: their columns repeat.

    Example:
        >>> # results_table(res, [("forget", "acc_forget", "no_repair"), ("test", "acc_test", "after_repair")])
    """
    stages = {stage for _, _, stage in columns}
    by_stage = {}
    for stage in stages:
        wanted = tuple(dict.fromkeys(m for _, m, s in columns if s == stage))
        by_stage[stage] = {r["key"]: r for r in summarize(result, wanted, stage)}
    first = next(iter(by_stage.values()))
    rows = []
    for key, row in first.items():
        cells = [pm(by_stage[stage][key], metric, digits) for _, metric, stage in columns]
        if keep_empty or any(c != "–" for c in cells):
            rows.append([row["label"]] + cells)
    return markdown_table(["method"] + [h for h, _, _ in columns], rows)


def best_row(rows: Sequence[dict], metric: str, *, family: LogSpec | None = None, lowest: bool = True) -> dict:
    """The :func:`amnesiac_paper.experiments.summarize` row with the lowest (or highest) mean ``metric`` among the
    methods reading the log ``family`` (every row when ``None``; NaN rows ignored).

    Example:
        >>> best_row([{"key": "a", "x": 0.3}, {"key": "b", "x": 0.1}], "x")["key"]
        'b'
    """
    pool = [r for r in rows if (family is None or (r.get("spec") is not None and r["spec"].log == family))
            and not np.isnan(r.get(metric, float("nan")))]
    if not pool:
        raise ValueError(f"no row of log {family} has a value for {metric!r}")
    values = [r[metric] for r in pool]
    return pool[int(np.argmin(values) if lowest else np.argmax(values))]

