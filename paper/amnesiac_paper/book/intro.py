"""The introduction, *Per-sample amnesiac unlearning* (``book/intro.md``): the book's abstract, computed from the
studies. Its other bullets come from :mod:`amnesiac_paper.book.fidelity`, :mod:`~amnesiac_paper.book.comparison`
and :mod:`~amnesiac_paper.book.attacks`.
"""

from __future__ import annotations

from .fidelity import headline_rows, rows_by_optimizer


def _seed_span(seeds: list[int]) -> str:
    lo, hi = min(seeds), max(seeds)
    return f"{lo} seed{'s' if lo > 1 else ''}" if lo == hi else f"{lo}-{hi} seeds"


def abstract(fid, mem, speedup: float | None = None, *, setting: str = "full", reference: str = "drop") -> str:
    """The book's abstract, with every number computed from the fidelity study (``fid``), the membership study
    (``mem``) and, if given, the speed-up of forgetting from the ledger over retraining."""
    def m(t):
        return t[0] if isinstance(t, (tuple, list)) else float(t)

    per_opt, oracle_best, seeds = [], [], []
    for opt, rows in rows_by_optimizer(fid, setting, reference).items():
        if (pair := headline_rows(rows)) is None:
            continue
        mid, cls = pair
        seeds.append(len(mid["seeds"]))
        oracle_best += [m(r["oracle_recovered"]) for r in rows.values() if r["kind"] == "random"]
        name = {"adam": "Adam", "sgd": "SGD with momentum", "adamw": "AdamW"}.get(opt, opt)
        per_opt.append(f"{name} {m(mid['a1_recovered']):+.3f} for 100 random samples and {m(cls['a1_recovered']):+.2f} "
                       f"for a whole class (fine-tuning: {m(mid['ft_recovered']):+.3f} and "
                       f"{m(cls['ft_recovered']):+.2f})")
    if not per_opt:
        return "*The fidelity study has no complete seed yet: the abstract waits for it.*"
    text = [
        "**Abstract.** Amnesiac unlearning forgets training data by subtracting what the data contributed to the "
        "parameters. We make that contribution exact: a delta log attributes every optimizer step (SGD with "
        "momentum, Nesterov and weight decay, Adam, AdamW, RMSprop, Adagrad) to groups of samples, consistently "
        "with the optimizer's state, so that the groups' deltas and a remainder add up to the parameter change to "
        "floating-point precision. With the bookkeeping exact, what is left is the counterfactual question: is "
        "the trained model minus a group's delta the model that never saw the group? Against a replay of the same "
        f"training without the forget set (MNIST, {_seed_span(seeds)} per optimizer), subtracting the "
        "exact delta covers a fraction of the way from the original model to the replay of "
        + "; ".join(per_opt)
        + f" (1 = reached, 0 = no closer, negative = farther). The best scale of a grid, chosen with the answer, "
        f"covers at most {max(oracle_best):+.4f} for random samples: no scale of the delta closes the gap."]
    lira = mem.pieces.get("lira") if mem is not None else None
    if lira:
        text.append(f" Membership attacks agree: U-LiRA separates models that trained on a sample and then "
                    f"subtracted it from models that never saw it with AUC {lira['alpha=1']['auc']:.2f} (0.5 = "
                    f"chance), more than it separates members from non-members in the unmodified models "
                    f"({lira['original']['auc']:.2f}).")
    text.append(" The ledger is exact, cheap to read"
                + (f" (forgetting a class from it is {speedup:.0f} times faster than retraining)" if speedup else "")
                + " and sharded across processes under DistributedDataParallel; in these measurements, subtracting "
                "it does not bring the model closer to one that never saw the data. Every number in this book is "
                "computed by the package from committed results.")
    return "".join(text)



def hero_series(fid, *, setting: str = "full", reference: str = "drop") -> dict:
    """What :func:`~amnesiac_paper.plotting.hero_figure` draws: per optimizer, per forget set (sorted by size),
    c (mean and t-interval over seeds), and r and the test KLs from the replay (geometric means with log-scale
    intervals), from the fidelity study's per-seed summaries."""
    from .. import fidelity as fidelity_study
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
        out[opt] = rows
    return out
