"""Support for the book's chapters: parameter validation, results loading, tables and provenance.

Chapters stay thin: a ``parameters`` cell, then calls into this module, :mod:`amnesiac.experiments` and
:mod:`amnesiac.plotting`. papermill only warns about unknown parameters, so :func:`validate` checks values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from .experiments import PROFILES, Result, get_experiment, load, run

DEVICES = ("auto", "cpu", "cuda")

# The seed report's published MNIST tables (Marincione 2024, section 2 of REFERENCE.md): accuracy on the
# forgotten class / on the rest after training, right after unlearning ("no retrain") and after 4 epochs of
# training on the remaining data ("after retrain"). Quoted for comparison; every other number is computed.
SEED_REPORT = {
    "mnist-class3-simple": [
        ("Original (per-batch)", (.67, .98), (.00, .83), (.00, .98)),
        ("Layer p=0.1", (.56, .98), (.07, .98), (.02, .98)),
        ("Per-sample p=0.1 (seed)", (.60, .98), (.00, .83), (.04, .98)),
        ("Per-sample p=0.075 (seed)", (.63, .98), (.03, .96), (.03, .98)),
        ("Per-sample p=0.05 (seed)", (.60, .98), (.06, .96), (.04, .98)),
        ("Per-sample p=0.01 (seed)", (.57, .98), (.52, .98), (.04, .98)),
    ],
    "mnist-class3-resnet18": [
        ("Original (per-batch)", (.78, .99), (.00, .97), (.00, .99)),
        ("Layer p=0.1", (.83, .99), (.69, .99), (.00, .99)),
        ("Per-sample p=0.2 (seed)", (.81, .99), (.24, .97), (.00, .99)),
        ("Per-sample p=0.1 (seed)", (.85, .98), (.73, .97), (.00, .99)),
        ("Per-sample p=0.075 (seed)", (.83, .98), (.77, .98), (.02, .99)),
    ],
}


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


def results(name: str, *, profile: str = "full", seeds: Sequence[int] | None = None, recompute: bool = False,
            device: str = "auto", progress: bool = True) -> Result:
    """The results a chapter renders: committed ones by default, computed when asked or when missing.

    With ``recompute=False`` committed results are loaded (restricted to ``seeds``, if given); seeds that are
    missing are computed only for the smoke profile (full runs are long: ask for them with recompute=True).
    """
    validate(profile=profile, seeds=seeds, recompute=recompute, device=device)
    seeds = tuple(seeds) if seeds is not None else None
    if recompute:
        return run(name, profile, seeds=seeds, device=device, progress=progress, recompute=True)
    res = load(name, profile)
    wanted = seeds if seeds is not None else res.experiment.seeds
    if not res.available or all(s in res.seeds for s in wanted):
        res.seeds = {s: res.seeds[s] for s in wanted if s in res.seeds}
        return res
    if profile == "smoke":
        return run(name, profile, seeds=seeds, device=device, progress=progress)
    res.seeds = {s: res.seeds[s] for s in wanted if s in res.seeds}
    return res


def markdown_table(header: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A Markdown table (cells already formatted as strings)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def pm(row: dict, metric: str, digits: int = 2) -> str:
    """``mean ± std`` of a summarize() row, or a dash when the method was not evaluated at that stage."""
    mean, std = row.get(metric, float("nan")), row.get(metric + "_std", float("nan"))
    if mean is None or np.isnan(mean):
        return "–"
    if std is None or np.isnan(std) or row.get("seeds", 1) < 2:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def provenance(result: Result) -> str:
    """A Markdown paragraph naming where the numbers come from."""
    if not result.seeds:
        return f"No results for `{result.experiment.name}` ({result.experiment.profile})."
    recs = list(result.seeds.values())
    prov = recs[0].get("provenance", {})
    wall = sum(r.get("wall_seconds", 0.0) for r in recs)
    return (f"**Provenance.** Experiment `{result.experiment.name}`, profile `{result.experiment.profile}`, config "
            f"hash `{result.experiment.hash}`, seeds {sorted(result.seeds)}; computed with code revision "
            f"`{prov.get('git', '?')}` on {prov.get('device', '?')} ({prov.get('threads', '?')} threads), torch "
            f"{prov.get('torch', '?')}, on {prov.get('date', '?')[:10]}; {wall / 60:.1f} min of compute in all.")


def missing_seeds_note(result: Result, profile: str) -> str:
    """A sentence saying which of the profile's seeds are absent from the rendered results (empty if none)."""
    want = get_experiment(result.experiment.name, profile).seeds
    missing = [s for s in want if s not in result.seeds]
    if not missing:
        return ""
    return (f"Seeds {missing} of the `{profile}` profile have not been computed yet; the numbers below use seeds "
            f"{sorted(result.seeds)}. Run `python -m amnesiac run {result.experiment.name} --profile {profile}` "
            "to add them.")
