"""Plotting: functions that take results and return matplotlib figures (the book calls only these)."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np

from .catalogue import GRADIENT_LOG, UPDATE_LOG, LogSpec
from .experiments import Result, metric_value
from .metrics import geometric_ci, mean_ci

FAMILY_NAMES = {UPDATE_LOG: "Update attribution", GRADIENT_LOG: "Full gradient record"}


def _series(result: Result, family: LogSpec, metric: str, stage: str):
    """(alphas, means, half-widths of the 95% interval over seeds) of the subtraction rows reading the log
    ``family`` at each of their alphas (half-width 0 for a single seed)."""
    points = []
    for spec in result.experiment.methods:
        if spec.log != family or spec.alpha is None:
            continue
        vals = [metric_value(getattr(rec, stage), metric) for rec in result.method_records(spec)
                if getattr(rec, stage)]
        if vals:
            mean, half, _ = mean_ci(vals)
            points.append((float(spec.alpha), mean, 0.0 if np.isnan(half) else half))
    points.sort()
    return tuple(np.array(v) for v in zip(*points)) if points else (np.array([]),) * 3


def _reference(result: Result, which: str, metric: str) -> float:
    return float(np.mean([metric_value(r[which], metric) for r in result.seeds.values()]))


def alpha_sweep(result: Result, metrics: tuple[str, ...], *, stage: str = "no_repair",
                families: tuple[LogSpec, ...] = (UPDATE_LOG, GRADIENT_LOG),
                labels: dict[str, str] | None = None):
    """One panel per metric: the metric against alpha (log scale) for each family of methods, with the
    original model and the retrained reference as horizontal lines; error bars are 95% intervals over seeds."""
    labels = labels or {}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.2 * len(metrics), 3.3), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for fam, marker in zip(families, "os^v"):
            a, mean, std = _series(result, fam, metric, stage)
            if len(a):
                ax.errorbar(a, mean, yerr=std, marker=marker, capsize=3, label=FAMILY_NAMES.get(fam, fam.key))
        ax.axhline(_reference(result, "original", metric), color="0.4", ls=":", label="original model")
        ax.axhline(_reference(result, "retrain", metric), color="k", ls="--", label="retrained from scratch")
        ax.set_xscale("log")
        ax.set_xlabel(r"scale $\alpha$")
        ax.set_title(labels.get(metric, metric))
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def method_bars(rows: list[dict], metrics: tuple[str, ...], labels: dict[str, str] | None = None):
    """Horizontal bars of each metric per method (rows from :func:`amnesiac_paper.experiments.summarize`)."""
    labels = labels or {}
    rows = [r for r in rows if not all(np.isnan(r[m]) for m in metrics)]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.0 * len(metrics), 0.32 * len(rows) + 1.2), sharey=True,
                             squeeze=False)
    y = np.arange(len(rows))
    for ax, metric in zip(axes[0], metrics):
        means = np.array([r[metric] for r in rows])
        stds = np.nan_to_num(np.array([r[metric + "_ci"] for r in rows]))  # 95% interval over seeds
        colors = ["0.3" if r["spec"] is None else "C0" for r in rows]  # the original and retrained models
        ax.barh(y, np.nan_to_num(means), xerr=stds, color=colors, capsize=2)
        ax.set_title(labels.get(metric, metric))
        ax.set_xlim(0, 1.05)
        ax.grid(axis="x", alpha=0.3)
    axes[0][0].set_yticks(y, [r["label"] for r in rows], fontsize=8)
    axes[0][0].invert_yaxis()
    fig.tight_layout()
    return fig


def loss_histograms(panels: dict[str, dict], *, bins: int = 40):
    """Per-sample loss histograms, forget set vs test set, one panel per model (``{"title": losses}``)."""
    fig, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.0), sharey=True, squeeze=False)
    for ax, (title, losses) in zip(axes[0], panels.items()):
        f, t = np.log10(np.array(losses["forget"]) + 1e-6), np.log10(np.array(losses["test"]) + 1e-6)
        edges = np.linspace(min(f.min(), t.min()), max(f.max(), t.max()), bins)
        ax.hist(t, bins=edges, density=True, alpha=0.5, label="test (non-members)")
        ax.hist(f, bins=edges, density=True, alpha=0.5, label="forget set")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel(r"$\log_{10}$ loss")
    axes[0][0].legend(fontsize=8)
    fig.tight_layout()
    return fig


def image_grid(images: dict[str, np.ndarray], *, cmap: str = "gray"):
    """A row of images (``{"title": [C, H, W] array in [-1, 1]}``)."""
    fig, axes = plt.subplots(1, len(images), figsize=(2.2 * len(images), 2.5), squeeze=False)
    for ax, (title, img) in zip(axes[0], images.items()):
        img = np.asarray(img)
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)) * 0.5 + 0.5
        ax.imshow(img, cmap=cmap if img.ndim == 2 else None, vmin=-1 if img.ndim == 2 else None,
                  vmax=1 if img.ndim == 2 else None)
        ax.set_title(title, fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    return fig


def scaling_plot(points: list[dict], x: str, ys: tuple[str, ...], *, xlabel: str, ylabel: str, logy: bool = True,
                 labels: dict[str, str] | None = None):
    """Lines of ``ys`` against ``x`` from a list of measurement dicts."""
    labels = labels or {}
    fig, ax = plt.subplots(figsize=(4.8, 3.3))
    pts = sorted(points, key=lambda p: p[x])
    for y, marker in zip(ys, "os^vD"):
        ax.plot([p[x] for p in pts], [p[y] for p in pts], marker=marker, label=labels.get(y, y))
    ax.set_xscale("log")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig


def thumbnails(images, titles, *, columns: int = 12, cmap: str = "gray"):
    """A grid of small images with a title each (``images`` [N, C, H, W] in [-1, 1], ``titles`` N strings).

    Example:
        >>> fig = thumbnails(np.zeros((3, 1, 28, 28)), ["a", "b", "c"])
        >>> len(fig.axes)
        3
    """
    images = np.asarray(images)
    if len(images) != len(titles):
        raise ValueError(f"got {len(images)} images but {len(titles)} titles")
    cols = max(1, min(columns, len(images)))
    rows = -(-len(images) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(0.9 * cols, 1.05 * rows), squeeze=False)
    for ax in axes.flat[len(images):]:
        ax.remove()
    for ax, img, title in zip(axes.flat, images, titles):
        img = img[0] if img.shape[0] == 1 else np.transpose(img, (1, 2, 0)) * 0.5 + 0.5
        gray = img.ndim == 2
        ax.imshow(img, cmap=cmap if gray else None, vmin=-1 if gray else None, vmax=1 if gray else None)
        ax.set_title(title, fontsize=7)
        ax.axis("off")
    fig.tight_layout(pad=0.2)
    return fig


def class_accuracy_bars(per_class_before, per_class_after, *, highlight: int | None = None,
                        labels: tuple[str, str] = ("before", "after")):
    """Side-by-side bars of per-class test accuracy before and after unlearning; ``highlight`` marks a class.

    Example:
        >>> fig = class_accuracy_bars([0.9, 0.8], [0.1, 0.8], highlight=0)
        >>> len(fig.axes[0].containers)  # one bar container per series
        2
    """
    before, after = np.asarray(per_class_before, dtype=float), np.asarray(per_class_after, dtype=float)
    if before.shape != after.shape:
        raise ValueError(f"per-class accuracies differ in length: {before.shape} vs {after.shape}")
    x = np.arange(len(before))
    fig, ax = plt.subplots(figsize=(max(4.0, 0.42 * len(before) + 1.2), 2.8))
    ax.bar(x - 0.2, before, width=0.4, color="0.65", label=labels[0])
    ax.bar(x + 0.2, after, width=0.4, color="C0", label=labels[1])
    if highlight is not None:
        ax.axvspan(highlight - 0.5, highlight + 0.5, color="C3", alpha=0.12, lw=0)
    ax.set_xticks(x, [str(c) for c in x])
    ax.set_xlabel("class")
    ax.set_ylabel("test accuracy")
    ax.set_ylim(0, 1.08)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, ncol=2, loc="lower center", bbox_to_anchor=(0.5, 1.0), frameon=False)
    fig.tight_layout()
    return fig


# ------------------------------------------------------------------------------------ counterfactual fidelity

_FID_METHODS = {"amnesiac": ("ledger subtraction", "C0", "o"), "control_group": ("control: another group's delta",
                                                                                   "C1", "s"),
                "random_direction": ("control: random direction, same norm", "C2", "^")}


def _errorbar(ax, x, stats, **kw):
    """Plot (mean, half-width, n) triples; no bar where the half-width is undefined (one seed)."""
    mean = np.array([s[0] for s in stats], dtype=float)
    half = np.array([s[1] for s in stats], dtype=float)
    ax.errorbar(x, mean, yerr=np.where(np.isnan(half), 0.0, half), capsize=3, **kw)


def fidelity_vs_size(result, *, setting: str = "full", reference: str = "drop"):
    """Distance to the ``reference`` replay against forget-set size, one panel per optimizer: the original
    model, the ledger subtraction at alpha = 1, at the rule's alpha and at the oracle alpha, with the retrain
    floor (two retrains with different seeds and orders) dashed. Sets of the random family and the class."""
    from .fidelity import summary_rows

    opts = [o for o in result.study.optimizers if result.seeds_of(setting, o)]
    fig, axes = plt.subplots(1, max(1, len(opts)), figsize=(4.3 * max(1, len(opts)), 3.4), squeeze=False,
                             sharey=True)
    for ax, opt in zip(axes[0], opts):
        rows = [r for r in summary_rows(result, setting, opt, reference) if r["kind"] in ("random", "class")]
        rows.sort(key=lambda r: r["size"])
        x = [r["size"] for r in rows]
        for key, label, style in (("original_dist", "original model", dict(color="0.4", marker="D", ls=":")),
                                  ("a1_dist", r"subtract, $\alpha=1$", dict(color="C0", marker="o")),
                                  ("rule_dist", r"subtract, rule $\alpha$", dict(color="C4", marker="v")),
                                  ("oracle_dist", r"subtract, oracle $\alpha$", dict(color="C3", marker="s"))):
            _errorbar(ax, x, [r[key] for r in rows], label=label, **style)
        _errorbar(ax, x, [r["zero_to_drop_dist"] for r in rows], label="zero-weighted vs dropped replay",
                  color="C2", marker="x", ls="-.")
        _errorbar(ax, x, [r["floor_dist"] for r in rows], label="retrain floor", color="k", ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("forget-set size (the largest: a whole class)")
        ax.set_title(opt)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel(f"parameter distance to the {reference} replay")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def fidelity_vs_alpha(result, optimizer: str, *, setting: str = "full", reference: str = "drop",
                      sets: tuple[str, ...] | None = None):
    """Against alpha, one column per forget set: parameter distance (top) and mean KL of the test softmax
    (bottom) to the ``reference`` replay, for the ledger subtraction and both controls; the original model
    (dotted), the retrain floor (dashed) and the rule's alpha (vertical line, first seed's; none where the rule
    kept the original model, alpha = 0, which a log axis cannot show) drawn in."""
    from .fidelity import alpha_curve, mean_ci, record_rule, summary_rows

    seeds = result.seeds_of(setting, optimizer)
    if not seeds:
        raise ValueError(f"no complete seed for {setting}/{optimizer} in these results")
    first = result.records[(setting, optimizer, seeds[0])]
    names = sets or tuple(r["set"] for r in summary_rows(result, setting, optimizer, reference))
    fig, axes = plt.subplots(2, len(names), figsize=(3.1 * len(names), 5.4), squeeze=False)
    for j, name in enumerate(names):
        recs = [result.records[(setting, optimizer, s)] for s in seeds]
        fam = first[f"set-{name}"]["family"]
        for i, metric in enumerate(("dist", "kl")):
            ax = axes[i][j]
            for method, (label, color, marker) in _FID_METHODS.items():
                alphas, stats = alpha_curve(result, setting, optimizer, name, method, reference, metric)
                _errorbar(ax, alphas, stats, label=label, color=color, marker=marker, ms=4)
            ax.axhline(mean_ci([r[f"set-{name}"]["original"][reference][metric] for r in recs])[0], color="0.4",
                       ls=":", label="original model")
            ax.axhline(mean_ci([r[f"floor-{fam}"]["floor"][reference][metric] for r in recs])[0], color="k",
                       ls="--", label="retrain floor")
            rule = record_rule(first[f"set-{name}"])["alpha"]
            if rule > 0:
                ax.axvline(rule, color="C4", alpha=0.5, lw=3, label=r"rule $\alpha$")
            elif i == 0:
                ax.text(0.03, 0.03, r"rule: $\alpha = 0$ (parity not reached)", transform=ax.transAxes, fontsize=6,
                        color="C4")
            ax.set_xscale("log")
            ax.set_yscale("log")
            ax.grid(alpha=0.3, which="both")
            if i == 0:
                ax.set_title(f"{name} (n={first[f'set-{name}']['size']})", fontsize=9)
            else:
                ax.set_xlabel(r"scale $\alpha$")
        axes[0][j].tick_params(labelbottom=False)
    axes[0][0].set_ylabel(f"parameter distance to {reference} replay")
    axes[1][0].set_ylabel("mean KL on test data")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if r"rule $\alpha$" not in labels:  # the first set's rule kept the original: no line to take the label from
        handles.append(plt.Line2D([], [], color="C4", alpha=0.5, lw=3))
        labels.append(r"rule $\alpha$")
    axes[0][0].legend(handles, labels, fontsize=6)
    fig.suptitle(f"{optimizer}: distance to the {reference} replay against alpha", fontsize=10)
    fig.tight_layout()
    return fig


def fidelity_sequential(result, *, setting: str = "full", reference: str = "drop"):
    """Sequential requests (A, then B, then C; each request forgets the union so far, from one ledger):
    distance to the replay without the union after each request, per optimizer, with the floor."""
    from .fidelity import summary_rows

    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    for k, opt in enumerate(o for o in result.study.optimizers if result.seeds_of(setting, o)):
        rows = {r["set"]: r for r in summary_rows(result, setting, opt, reference)}
        size = result.study.request_size
        seq = [rows[f"random-{size}"]] + [rows[n] for n in sorted(rows) if n.startswith("requests-")]
        x = np.arange(1, len(seq) + 1) + 0.04 * k
        _errorbar(ax, x, [r["a1_dist"] for r in seq], color=f"C{k}", marker="o", label=rf"{opt}: $\alpha=1$")
        _errorbar(ax, x, [r["rule_dist"] for r in seq], color=f"C{k}", marker="v", ls="-.",
                  label=rf"{opt}: rule $\alpha$")
        _errorbar(ax, x, [r["original_dist"] for r in seq], color=f"C{k}", marker="D", ls=":",
                  label=f"{opt}: original model")
        _errorbar(ax, x, [r["floor_dist"] for r in seq], color=f"C{k}", ls="--", alpha=0.6,
                  label=f"{opt}: retrain floor")
    ax.set_yscale("log")
    ax.set_xticks(np.arange(1, result.study.n_requests + 1))
    ax.set_xlabel("number of requests served from one ledger")
    ax.set_ylabel(f"distance to the {reference} replay")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6, ncol=2)
    fig.tight_layout()
    return fig


CLASS_SETS = (("full", "class-3"), ("graves", "graves-class-3"))


def fidelity_class_accuracy(result, optimizer: str, *, sets: tuple[tuple[str, str], ...] = CLASS_SETS):
    """The fragile-class confound: accuracy on the forgotten class's test images and on the rest against alpha,
    for the ledger subtraction and both controls, beside the dropped replay (dashed) and the original (dotted)."""
    from .fidelity import alpha_curve, mean_ci

    present = [(st, n) for st, n in sets if result.seeds_of(st, optimizer)]
    fig, axes = plt.subplots(1, 2 * max(1, len(present)), figsize=(3.2 * 2 * max(1, len(present)), 3.2),
                             squeeze=False)
    for j, (setting, name) in enumerate(present):
        recs = [result.records[(setting, optimizer, s)][f"set-{name}"] for s in result.seeds_of(setting, optimizer)]
        for i, (metric, title) in enumerate((("acc_test_class", "test images of the class"),
                                             ("acc_test_rest", "rest of the test set"))):
            ax = axes[0][2 * j + i]
            for method, (label, color, marker) in _FID_METHODS.items():
                alphas, stats = alpha_curve(result, setting, optimizer, name, method, None, metric)
                _errorbar(ax, alphas, stats, label=label, color=color, marker=marker, ms=4)
            ax.axhline(mean_ci([r["references"]["drop"][metric] for r in recs])[0], color="k", ls="--",
                       label="dropped replay (retrained)")
            ax.axhline(mean_ci([r["original"][metric] for r in recs])[0], color="0.4", ls=":", label="original")
            ax.set_xscale("log")
            ax.set_ylim(-0.03, 1.03)
            ax.set_xlabel(r"scale $\alpha$")
            ax.set_title(f"{name}: {title}", fontsize=8)
            ax.grid(alpha=0.3)
    axes[0][0].set_ylabel("accuracy")
    axes[0][0].legend(fontsize=6)
    fig.tight_layout()
    return fig


def propagation_vs_size(result, *, reference: str = "zero"):
    """Recovered fraction toward the ``reference`` replay against forget-set size, one panel per optimizer: the
    exact delta at alpha = 1 and at its best grid alpha, the propagated delta at alpha = 1, and fine-tuning."""
    from .propagation import summary_rows

    opts = [o for o in result.study.optimizers if summary_rows(result, o, reference)]
    fig, axes = plt.subplots(1, max(1, len(opts)), figsize=(4.3 * max(1, len(opts)), 3.4), squeeze=False,
                             sharey=True)
    for ax, opt in zip(axes[0], opts):
        rows = sorted(summary_rows(result, opt, reference), key=lambda r: r["size"])
        x = [r["size"] for r in rows]
        floor = -2.0  # a diverged linearisation (far below) is drawn at the bottom edge and labelled
        for key, label, style in (("exact_recovered", r"exact delta, $\alpha=1$", dict(color="C0", marker="o")),
                                  ("exact_best_recovered", r"exact delta, best $\alpha$",
                                   dict(color="C0", marker="s", ls="--")),
                                  ("propagated_recovered", r"propagated, $\alpha=1$", dict(color="C3", marker="^")),
                                  ("finetune_recovered", "fine-tune, 1 epoch", dict(color="C2", marker="x", ls=":"))):
            stats = [r[key] for r in rows]
            clipped = [(max(m, floor), h if m >= floor else float("nan"), n) for m, h, n in stats]
            _errorbar(ax, x, clipped, label=label, **style)
            for xi, (m, _, _) in zip(x, stats):
                if m < floor:
                    ax.annotate(f"{m:.1e}", (xi, floor), textcoords="offset points", xytext=(0, 6), fontsize=6,
                                color=style["color"], ha="center")
        ax.set_ylim(floor - 0.1, 1.1)
        ax.axhline(1.0, color="k", lw=0.8)
        ax.axhline(0.0, color="0.5", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_xlabel("forget-set size (the largest: a whole class)")
        ax.set_title(opt)
        ax.grid(alpha=0.3)
    axes[0][0].set_ylabel(f"recovered fraction toward the {reference} replay")
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def roc_curves(curves: dict, *, title: str = ""):
    """ROC curves on log-log axes (the low-FPR region is what matters for membership), chance dashed.

    ``curves`` maps a label to an attack result dict with ``curve`` (``AttackResult.to_dict(with_curve=True)``)."""
    fig, ax = plt.subplots(figsize=(4.4, 4.0))
    grid = np.logspace(-4, 0, 50)
    ax.plot(grid, grid, color="k", ls="--", lw=0.8, label="chance")
    for (label, result), color in zip(curves.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3):
        fpr, tpr = np.array(result["curve"]["fpr"]), np.array(result["curve"]["tpr"])
        ok = fpr > 0
        ax.step(fpr[ok], np.maximum(tpr[ok], 1e-4), where="post", color=color,
                label=f"{label} (AUC {result['auc']:.2f})")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-3, 1)
    ax.set_ylim(1e-3, 1.05)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    return fig


def quality_vs_compute(methods: dict, *, plain_auc: float, retrain_seconds: float):
    """U-LiRA AUC against seconds per request for every method (log time axis), with chance (0.5, what
    retraining gives by construction) and the unmodified models' membership AUC as lines, and retraining as a
    point at its training time.

    ``methods`` maps a label to a dict with ``auc`` and ``seconds``.

    Example:
        >>> fig = quality_vs_compute({"a": {"auc": 0.9, "seconds": 0.01}}, plain_auc=0.7, retrain_seconds=8.0)
        >>> len(fig.axes[0].collections)  # one point per method, and retraining
        2
    """
    fig, ax = plt.subplots(figsize=(5.2, 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3
    for (label, rec), color in zip(methods.items(), colors):
        ax.scatter([max(rec["seconds"], 1e-3)], [rec["auc"]], color=color, s=28, label=label, zorder=3)
    ax.scatter([retrain_seconds], [0.5], color="k", marker="*", s=80, label="retrain (0.5 by construction)",
               zorder=3)
    ax.axhline(0.5, color="k", ls="--", lw=0.8)
    ax.axhline(plain_auc, color="0.4", ls=":", lw=1.0, label="members vs non-members, no unlearning")
    ax.set_xscale("log")
    ax.set_xlabel("seconds per request (CPU)")
    ax.set_ylabel("U-LiRA AUC (0.5 = indistinguishable)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=6.5, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig


def comparison_vs_compute(result, optimizer: str, *, floor_kl: dict | None = None,
                          repair_only: dict | None = None, same_seed: bool = True):
    """Quality against compute for the equal-budget comparison, one panel per forget set: each method's chosen
    trial (on validation) at its seconds per request (x, log) and its test-set KL to the dropped replay (y, log;
    geometric mean and 95% interval on the log scale over the complete seeds), labelled with its passes over the
    retain set; the original model (no unlearning) dotted; where ``floor_kl`` (set -> KL of a retraining with
    another seed and order to the replay, the fidelity study's floor) is given, retraining as a star at the
    replay's training time and that KL;
    where ``repair_only`` (set -> (seconds, KL): one untuned epoch of fine-tuning, the fidelity study's control)
    is given, that control as a grey square; with ``same_seed``, the same-seed floor
    (:func:`amnesiac_paper.comparison.same_seed_floor`, where computed) as a dashed line.
    """
    from .comparison import same_seed_floor, summary_rows

    sets = list(result.study.sets)
    fig, axes = plt.subplots(1, len(sets), figsize=(4.6 * len(sets), 3.6), squeeze=False)
    for ax, name in zip(axes[0], sets):
        rows = summary_rows(result, optimizer, name)
        blown = []
        for i, r in enumerate(rows):
            x, xh = r["chosen_seconds"][:2]
            y, y_lo, y_hi, _ = geometric_ci(r["chosen_kl_values"])  # KL: geometric mean, log-scale interval
            if r["diverged"] == len(r["seeds"]) or not np.isfinite(y):  # no point to draw: outputs non-finite
                blown.append(r["label"])
                continue
            ax.errorbar([max(x, 1e-4)], [y], xerr=[[0.0], [0.0 if np.isnan(xh) else xh]],
                        yerr=[[y - y_lo], [y_hi - y]],
                        color=f"C{i}", marker="o", ms=5, capsize=2, ls="none", label=r["label"], zorder=3)
            ax.annotate(f"{r['chosen_retain_passes'][0]:g} p", (max(x, 1e-4), y), textcoords="offset points",
                        xytext=(4, 3), fontsize=6, color=f"C{i}")
        if rows:
            ax.axhline(geometric_ci(rows[0]["original_kl_values"])[0], color="0.4", ls=":", lw=1.0,
                       label="original model (no unlearning)")
            if floor_kl is not None and name in floor_kl:
                ax.scatter([rows[0]["replay_seconds"][0]], [floor_kl[name]], color="k", marker="*", s=90, zorder=4,
                           label="retrain, another seed and order")
            floor = same_seed_floor(result, optimizer, name) if same_seed else None
            if floor is not None:
                ax.axhline(geometric_ci(floor["kl_values"])[0], color="k", ls="--", lw=1.0,
                           label="same-seed floor (one more sample dropped)")
            if repair_only is not None and name in repair_only:
                ax.scatter([repair_only[name][0]], [repair_only[name][1]], color="0.5", marker="s", s=30, zorder=4,
                           label="repair-only control (1 epoch, untuned)")
        if blown:
            ax.text(0.02, 0.02, "diverged (every trial): " + ", ".join(blown), transform=ax.transAxes, fontsize=6.5)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("s per request (CPU); p: retain-set passes")
        ax.set_title(f"{optimizer}, {name}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("test KL to the dropped replay")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        axes[0][-1].legend(handles, labels, fontsize=6.5, loc="center left", bbox_to_anchor=(1.0, 0.5),
                           frameon=False)
    fig.tight_layout()
    return fig


def lira_examples(result, *, alpha: float = 1.0, n: int = 6):
    """Per-example distributions behind U-LiRA: for ``n`` candidates (those with the most shadows on each side),
    the logit-scaled confidence under the shadows that saw and kept the example, that saw and forgot it (at
    ``alpha``), and that never saw it. An ideal unlearner puts "forgot" on top of "never saw"."""
    shadows = [v for k, v in sorted(result.pieces.items(), key=lambda kv: kv[0]) if k.startswith("shadow")]
    if not shadows:
        raise ValueError("no shadow model in these results")
    n_cand = len(shadows[0]["confidence"])
    kept = [[] for _ in range(n_cand)]
    forgot = [[] for _ in range(n_cand)]
    never = [[] for _ in range(n_cand)]
    from .membership import _lira_pool

    _, _, candidates = _lira_pool(result.study)
    col = {int(c): k for k, c in enumerate(candidates.tolist())}
    for s in shadows:
        inside = {col[i]: j for j, i in enumerate(s["inside"])}
        for k in range(n_cand):
            if k in inside:
                kept[k].append(s["confidence"][k])
                forgot[k].append(s["forgot"][str(alpha)][inside[k]])
            else:
                never[k].append(s["confidence"][k])
    order = sorted(range(n_cand), key=lambda k: -min(len(kept[k]), len(never[k])))[:n]
    fig, axes = plt.subplots(1, len(order), figsize=(2.2 * len(order), 2.8), sharey=True, squeeze=False)
    for ax, k in zip(axes[0], order):
        for j, (vals, label, color) in enumerate(((kept[k], "saw, kept", "0.5"),
                                                  (forgot[k], f"saw, forgot (α = {alpha:g})", "C3"),
                                                  (never[k], "never saw", "C0"))):
            ax.scatter(np.full(len(vals), j) + np.linspace(-0.15, 0.15, len(vals)), vals, s=12, color=color,
                       label=label)
        ax.set_xticks([0, 1, 2], ["kept", "forgot", "never"], fontsize=7)
        ax.set_title(f"candidate {int(candidates[k])}", fontsize=8)
        ax.grid(alpha=0.3, axis="y")
    axes[0][0].set_ylabel("logit-scaled confidence")
    axes[0][0].legend(fontsize=6, loc="lower left")
    fig.tight_layout()
    return fig


def regime_fd_curves(curves: dict, *, title: str = ""):
    """The finite difference g(eps) of replays against the propagated derivative D, per regime (one colour; one
    line per seed): cos(g, D) and |g| / |D| against eps (log scale). ``curves``: {regime: [[(eps, cos, ratio)]]},
    as :func:`amnesiac_paper.book.regime.fd_curves` gives it."""
    fig, (ax_cos, ax_ratio) = plt.subplots(1, 2, figsize=(9.0, 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"] * 3
    for (name, seeds), color in zip(curves.items(), colors):
        for k, rows in enumerate(seeds):
            rows = sorted(rows)
            eps = [r[0] for r in rows]
            ax_cos.plot(eps, [r[1] for r in rows], color=color, marker=".", lw=1, label=name if k == 0 else None)
            ax_ratio.plot(eps, [r[2] for r in rows], color=color, marker=".", lw=1)
    from .regime import AGREE_COS, AGREE_RATIO

    ax_cos.axhline(AGREE_COS, color="k", ls="--", lw=0.8)
    ax_ratio.axhspan(*AGREE_RATIO, color="0.85", zorder=0)
    for ax in (ax_cos, ax_ratio):
        ax.set_xscale("log")
        ax.set_xlabel(r"$\varepsilon$ (loss weight of the forget set $1-\varepsilon$)")
        ax.grid(alpha=0.3)
    ax_ratio.set_yscale("log")
    ax_cos.set_ylabel(r"$\cos(g(\varepsilon), D)$")
    ax_ratio.set_ylabel(r"$\|g(\varepsilon)\| / \|D\|$")
    ax_cos.legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig


def regime_phase_diagram(rows: dict, *, floor: float = -1.0):
    """The phase diagram: per forget set (a panel) and regime (a row), the recovered fraction toward the
    zero-weighted replay at alpha = 1 of the exact, propagated and derivative deltas (mean and 95% interval over
    seeds; values below ``floor`` drawn at the edge and labelled). ``rows``: {set: [cell_row, ...]} as
    :func:`amnesiac_paper.book.regime.cell_row` gives them, in the order to draw."""
    fig, axes = plt.subplots(1, len(rows), figsize=(3.6 * len(rows), 0.32 * max(len(r) for r in rows.values()) + 1.6),
                             squeeze=False, sharey=True)
    styles = (("exact", "exact", dict(color="C0", marker="o")),
              ("propagated", "propagated", dict(color="C3", marker="^")),
              ("derivative", "derivative", dict(color="C2", marker="s")))
    for ax, (set_name, cells) in zip(axes[0], rows.items()):
        y = np.arange(len(cells))[::-1]
        for j, (kind, label, style) in enumerate(styles):
            stats = [c[f"{kind}_recovered"] for c in cells]
            mean = np.array([s[0] for s in stats])
            half = np.array([0.0 if not np.isfinite(s[1]) else s[1] for s in stats])
            shown = np.where(mean < floor, floor, mean)
            wide = half > 1.0  # an interval wider than the panel is written, not drawn
            ax.errorbar(shown, y + (j - 1) * 0.2, xerr=np.where((mean < floor) | wide, 0.0, half), ls="none",
                        capsize=2, label=label, **style)
            for yi, m, h, w in zip(y, mean, half, wide):
                note = (f"{m:.2g}" if m < floor else "") + (f" ±{h:.2g}" if w else "")
                if note:
                    ax.annotate(note.strip(), (max(m, floor), yi + (j - 1) * 0.2), textcoords="offset points",
                                xytext=(4, -3), fontsize=6, color=style["color"])
        ax.axvline(1.0, color="k", lw=0.8)
        ax.axvline(0.0, color="0.5", lw=0.8, ls=":")
        ax.set_xlim(floor - 0.1, 1.1)
        ax.set_yticks(y, [c["regime"] for c in cells])
        ax.set_title(set_name, fontsize=9)
        ax.set_xlabel(r"recovered fraction at $\alpha = 1$")
        ax.grid(alpha=0.3, axis="x")
    handles, labels = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=3, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0, 1, 0.93))
    return fig


FRONTIER_MARKERS = {"exact": "s", "approximate": "o", "control": "^"}


def frontier_figure(points: dict):
    """The cost-exactness frontier, one column per forget set: KLOM P95 on the forget set (top, log scale) and
    U-LiRA AUC with its bootstrap interval (bottom) against the amortised seconds per request (log scale); squares
    exact, circles approximate, triangles controls; the oracle floor (dashed) and chance (0.5) drawn in, and
    retraining from scratch as a star at its cost.

    ``points`` maps a set name to ``{"floor", "retrain_seconds", "points": [{label, kind, seconds, klom, auc, low,
    high}]}`` (:func:`amnesiac_paper.book.frontier.frontier_points`).

    Example:
        >>> fig = frontier_figure({"s": {"floor": 0.5, "retrain_seconds": 0.1, "points": [
        ...     {"label": "a", "kind": "exact", "seconds": 0.1, "klom": 0.6, "auc": 0.5, "low": 0.4, "high": 0.6}]}})
        >>> len(fig.axes)
        2
    """
    sets = list(points)
    fig, axes = plt.subplots(2, max(len(sets), 1), figsize=(4.2 * max(len(sets), 1) + 1.8, 5.6), squeeze=False,
                             sharex="col")
    labels = list(dict.fromkeys(p["label"] for s in sets for p in points[s]["points"]))
    palette = plt.get_cmap("tab20").colors  # 20 distinct colours: one per method
    color = {label: palette[i % len(palette)] for i, label in enumerate(labels)}
    for j, s in enumerate(sets):
        top, bottom = axes[0][j], axes[1][j]
        for p in points[s]["points"]:
            kw = {"color": color[p["label"]], "marker": FRONTIER_MARKERS.get(p["kind"], "o"), "s": 30, "zorder": 3}
            x = max(p["seconds"], 1e-5)
            top.scatter([x], [max(p["klom"], 1e-3)], label=p["label"], **kw)
            bottom.errorbar([x], [p["auc"]], yerr=[[p["auc"] - p["low"]], [p["high"] - p["auc"]]],
                            color=color[p["label"]], lw=0.8, capsize=2, zorder=2)
            bottom.scatter([x], [p["auc"]], **kw)
        top.axhline(points[s]["floor"], color="k", ls="--", lw=0.8, label="oracle against oracle (floor)")
        top.axvline(points[s]["retrain_seconds"], color="0.5", ls=":", lw=0.8, label="one retrain")
        bottom.axhline(0.5, color="k", ls="--", lw=0.8)
        bottom.axvline(points[s]["retrain_seconds"], color="0.5", ls=":", lw=0.8)
        top.set_yscale("log")
        top.set_xscale("log")
        top.set_title(s, fontsize=9)
        bottom.set_xlabel("CPU s per request, amortised (logging included)")
        for ax in (top, bottom):
            ax.grid(alpha=0.3, which="both")
    axes[0][0].set_ylabel("KLOM P95, forget set")
    axes[1][0].set_ylabel("U-LiRA AUC (0.5: like the oracles)")
    handles, names = axes[0][-1].get_legend_handles_labels()
    fig.legend(handles, names, fontsize=6.5, loc="center left", bbox_to_anchor=(0.79, 0.5), frameon=False)
    fig.tight_layout(rect=(0, 0, 0.79, 1))
    return fig


def hero_figure(series: dict):
    """The mechanism on one page, one colour per optimizer, against the forget set's size (log scale): (a) the
    exact delta's alignment c with the direction to the replay, (b) its size r on that distance's scale (log),
    (c) the test-set KL from the replay of the original model, the subtraction at alpha = 1 and at the best alpha
    of the grid (which uses the answer), with the retrain floor (another seed and order) as a band and, where a row
    has one, the same-seed floor (the replay trained again with one more sample dropped) as a cross. Points:
    geometric means over seeds (c: means), bars: 95% intervals (on the log scale for r and KL).

    ``series`` maps an optimizer to rows sorted by size, each ``{"size", "c": (mean, half, n), "r", "original_kl",
    "a1_kl", "oracle_kl", "floor_kl": (gmean, low, high, n)}`` and optionally ``"same_seed_kl"`` in that form
    (:func:`amnesiac_paper.book.intro.hero_series`).

    Example:
        >>> g = (1.0, 0.5, 2.0, 3)
        >>> fig = hero_figure({"sgd": [{"size": 1, "c": (0.1, 0.05, 3), "r": g, "original_kl": g, "a1_kl": g,
        ...                             "oracle_kl": g, "floor_kl": g}]})
        >>> len(fig.axes)
        3
    """
    fig, axes = plt.subplots(1, 3, figsize=(11.5, 3.4))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]

    def bars(ax, x, stats, **kw):
        y = np.array([s[0] for s in stats])
        lo, hi = np.array([s[1] for s in stats]), np.array([s[2] for s in stats])
        ax.errorbar(x, y, yerr=[y - lo, hi - y], capsize=2, lw=1, ms=4, **kw)

    for (opt, rows), color in zip(series.items(), colors):
        x = np.array([r["size"] for r in rows], dtype=float)
        c = [r["c"] for r in rows]
        axes[0].errorbar(x, [m for m, _, _ in c], yerr=[0 if np.isnan(h) else h for _, h, _ in c], color=color,
                         marker="o", capsize=2, lw=1, ms=4, label=opt)
        bars(axes[1], x, [r["r"] for r in rows], color=color, marker="o", label=opt)
        bars(axes[2], x, [r["a1_kl"] for r in rows], color=color, marker="o", ls="-", label=f"{opt}: α = 1")
        bars(axes[2], x, [r["oracle_kl"] for r in rows], color=color, marker="s", ls="--",
             label=f"{opt}: best α (uses the answer)")
        bars(axes[2], x, [r["original_kl"] for r in rows], color=color, marker="^", ls=":",
             label=f"{opt}: original model")
        axes[2].fill_between(x, [r["floor_kl"][1] for r in rows], [r["floor_kl"][2] for r in rows], color=color,
                             alpha=0.12, lw=0)
        same = [r for r in rows if r.get("same_seed_kl")]
        if same:
            bars(axes[2], np.array([r["size"] for r in same], dtype=float), [r["same_seed_kl"] for r in same],
                 color=color, marker="x", ls="none", label=f"{opt}: same-seed floor (one more sample dropped)")
    axes[0].axhline(0, color="k", lw=0.6)
    axes[0].axhline(1, color="k", lw=0.6, ls="--")
    axes[0].set_ylabel("c = cos(δ, θ_T − θ_replay)")
    axes[0].set_title("(a) alignment with the counterfactual", fontsize=9)
    axes[1].axhline(1, color="k", lw=0.6, ls="--")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("r = ‖δ‖ / ‖θ_T − θ_replay‖")
    axes[1].set_title("(b) size on the distance's scale", fontsize=9)
    axes[2].set_yscale("log")
    axes[2].set_ylabel("test KL from the replay")
    axes[2].set_title("(c) outputs (band: retrain floor, another seed)", fontsize=9)
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("forget-set size (samples)")
        ax.grid(alpha=0.3, which="both")
    axes[0].legend(fontsize=7)
    axes[2].legend(fontsize=5.5, ncol=1, loc="center left", bbox_to_anchor=(1.0, 0.5), frameon=False)
    fig.tight_layout()
    return fig
