"""Chapter *Forget on the fly* (``book/interactive.md``): forgetting a class and/or samples live, the widget panel
(:class:`ForgetPanel`) and the sweeps over alpha. The in-browser panel (:mod:`amnesiac_paper.webpanel`) takes
:func:`forget_live` and :func:`split_accuracy` as its reference.

ipywidgets and matplotlib are imported inside :class:`ForgetPanel` only: the widget alone needs them, and the
sweeps, tables and :mod:`amnesiac_paper.webpanel` import without them.
"""

from __future__ import annotations

import base64
import copy
import html
import io
import math
import re
import time
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from amnesiac.data import ArrayDataset, class_group
from amnesiac.deltalog import DeltaLog
from amnesiac.training import predict
from amnesiac.unlearning import Request, unlearn

from ..metrics import class_accuracies
from .common import markdown_table


def per_class_accuracy(model: nn.Module, dataset: ArrayDataset, num_classes: int) -> np.ndarray:
    """Top-1 accuracy of ``model`` on each class of ``dataset``, [num_classes] (NaN for an absent class).

    Example:
        >>> import torch
        >>> ds = ArrayDataset(torch.zeros(4, 3), torch.tensor([0, 0, 1, 1]), torch.arange(4))
        >>> per_class_accuracy(torch.nn.Linear(3, 2), ds, 3).shape
        (3,)
    """
    return class_accuracies(predict(model, dataset.x).argmax(1), dataset.y, num_classes)


def split_accuracy(per_class: np.ndarray, class_counts: np.ndarray, forget_class: int | None) -> tuple[float, float]:
    """(accuracy on the forgotten class, accuracy on all other test images) from per-class accuracies and the
    number of test images per class; with ``forget_class=None`` the first is NaN and the second covers all.

    Example:
        >>> split_accuracy(np.array([1.0, 0.5]), np.array([10, 30]), 0)
        (1.0, 0.5)
    """
    per_class, counts = np.asarray(per_class, dtype=float), np.asarray(class_counts, dtype=float)
    rest = np.ones(len(counts), dtype=bool)
    forgotten = float("nan")
    if forget_class is not None:
        rest[forget_class] = False
        forgotten = float(per_class[forget_class])
    ok = rest & (counts > 0)
    return forgotten, float(np.sum(per_class[ok] * counts[ok]) / np.sum(counts[ok]))


def forget_live(model: nn.Module, class_log: DeltaLog, sample_log: DeltaLog, sample_labels: dict[int, int], *,
                forget_class: int | None, sample_ids: Sequence[int], alpha: float) -> tuple[nn.Module, list[int]]:
    """Forget a class and/or single samples at once: subtract ``alpha`` times the class's delta (group
    ``"class<c>"`` of ``class_log``), then ``alpha`` times the deltas of the chosen samples (groups of
    ``sample_log``, keyed by sample id). A chosen sample of the forgotten class is skipped: its share is already
    inside the class delta. Returns the new model (the input is untouched) and the sample ids subtracted.

    Example:
        >>> import torch
        >>> m = torch.nn.Linear(2, 2)
        >>> cl, sl = DeltaLog(m, {"class0": [0], "class1": [1]}), DeltaLog(m, {0: [0], 1: [1]})
        >>> _, used = forget_live(m, cl, sl, {0: 0, 1: 1}, forget_class=0, sample_ids=[0, 1], alpha=0.1)
        >>> used
        [1]
    """
    out = model
    if forget_class is not None:
        out = unlearn("amnesiac", out, Request(forget_groups=(class_group(forget_class),)), log=class_log, alpha=alpha)
    used = [int(i) for i in sample_ids if forget_class is None or sample_labels[int(i)] != forget_class]
    if used:
        out = unlearn("amnesiac", out, Request(forget_groups=tuple(used)), log=sample_log, alpha=alpha)
    if out is model:
        out = copy.deepcopy(model)
    return out, used


def forget_sweep(model: nn.Module, class_log: DeltaLog, test_set: ArrayDataset, classes: Sequence[int],
                 alphas: Sequence[float], num_classes: int) -> list[dict]:
    """Test accuracy on the forgotten class and on the rest after subtracting ``alpha`` times a class's delta,
    for every class in ``classes`` and every alpha; one dict per (class, alpha), plus ``alpha=0`` (the trained
    model itself) first for each class."""
    counts = torch.bincount(test_set.y, minlength=num_classes)[:num_classes].numpy()
    before = per_class_accuracy(model, test_set, num_classes)
    rows = []
    for c in classes:
        f, r = split_accuracy(before, counts, c)
        rows.append(dict(forget_class=int(c), alpha=0.0, acc_forgotten=f, acc_rest=r))
        for a in alphas:
            new, _ = forget_live(model, class_log, class_log, {}, forget_class=int(c), sample_ids=(), alpha=float(a))
            f, r = split_accuracy(per_class_accuracy(new, test_set, num_classes), counts, c)
            rows.append(dict(forget_class=int(c), alpha=float(a), acc_forgotten=f, acc_rest=r))
    return rows


def sweep_table(rows: Sequence[dict], digits: int = 2) -> str:
    """A Markdown table of :func:`forget_sweep` rows: one line per class, one column per alpha, cells
    ``forgotten / rest`` (alpha 0 is the trained model, labelled "trained")."""
    alphas = list(dict.fromkeys(r["alpha"] for r in rows))
    classes = list(dict.fromkeys(r["forget_class"] for r in rows))
    cell = {(r["forget_class"], r["alpha"]): f"{r['acc_forgotten']:.{digits}f} / {r['acc_rest']:.{digits}f}"
            for r in rows}
    header = ["class"] + ["trained" if a == 0 else f"α = {a:g}" for a in alphas]
    return markdown_table(header, [[str(c)] + [cell.get((c, a), "–") for a in alphas] for c in classes])


def selective_alphas(rows: Sequence[dict], *, forgotten_max: float = 0.05, rest_drop: float = 0.02) -> dict[int, str]:
    """Per class of :func:`forget_sweep` rows, the alphas that both forget and keep the rest, as text.

    An alpha qualifies when the forgotten class's test accuracy is at most ``forgotten_max`` (a model retrained
    without the class scores 0 on it) and the accuracy on the other classes is less than ``rest_drop`` below the
    trained model's (the ``alpha=0`` row). The text lists them (``"0.03, 0.01"``) or says ``"none of the grid"``.

    Example:
        >>> rows = [dict(forget_class=3, alpha=0.0, acc_forgotten=0.9, acc_rest=0.95),
        ...         dict(forget_class=3, alpha=1.0, acc_forgotten=0.0, acc_rest=0.1),
        ...         dict(forget_class=3, alpha=0.1, acc_forgotten=0.0, acc_rest=0.94)]
        >>> selective_alphas(rows)
        {3: '0.1'}
    """
    trained = {r["forget_class"]: r["acc_rest"] for r in rows if r["alpha"] == 0}
    out: dict[int, list[str]] = {c: [] for c in trained}
    for r in rows:
        c = r["forget_class"]
        if r["alpha"] > 0 and r["acc_forgotten"] <= forgotten_max and trained[c] - r["acc_rest"] < rest_drop:
            out[c].append(f"{r['alpha']:g}")
    return {c: ", ".join(v) if v else "none of the grid" for c, v in out.items()}


def sample_titles(samples: ArrayDataset) -> list[str]:
    """Short labels of tracked samples, ``"#k (label)"`` in display order (thumbnails and the sample selector)."""
    return [f"#{k} ({y})" for k, y in enumerate(samples.y.tolist())]


def sample_sweep(model: nn.Module, sample_log: DeltaLog, samples: ArrayDataset, test_set: ArrayDataset,
                 alphas: Sequence[float]) -> list[dict]:
    """Forget every sample of ``samples`` at once (their groups in ``sample_log``) for each alpha; one dict per
    alpha (``alpha=0`` is the trained model): test accuracy, how many of the samples are still predicted
    correctly, and their mean softmax probability of the true label."""
    rows = []
    for a in [0.0, *alphas]:
        new = model if a == 0 else unlearn("amnesiac", model, Request(forget_groups=tuple(int(i) for i in samples.ids)),
                                           log=sample_log, alpha=float(a))
        probs = torch.softmax(predict(new, samples.x), 1)  # [S, classes]
        pred = predict(new, test_set.x).argmax(1)
        rows.append(dict(alpha=float(a), acc_test=float((pred == test_set.y).double().mean()),
                         n_correct=int((probs.argmax(1) == samples.y).sum()), n_samples=len(samples),
                         p_label=float(probs[torch.arange(len(samples)), samples.y].mean())))
    return rows


def sample_sweep_table(rows: Sequence[dict], digits: int = 3) -> str:
    """A Markdown table of :func:`sample_sweep` rows (one line per alpha; alpha 0 is labelled "trained")."""
    return markdown_table(
        ["alpha", "test accuracy", "samples still predicted correctly", "mean p(label) on the samples"],
        [["trained" if r["alpha"] == 0 else f"{r['alpha']:g}", f"{r['acc_test']:.{digits}f}",
          f"{r['n_correct']} / {r['n_samples']}", f"{r['p_label']:.{digits}f}"] for r in rows])


class ForgetPanel:
    """ipywidgets that forget a class and/or samples of a trained model live, and show what changed.

    A Dropdown picks a class ("none" for no class), a SelectMultiple picks samples tracked by ``sample_log``,
    a FloatLogSlider sets alpha (1e-3 to 1). Every change runs :func:`forget_live` and replaces the contents
    of an Output widget: test accuracy on the forgotten class and on the rest (before and after), the chosen
    samples' predicted labels, and a :func:`amnesiac_paper.plotting.class_accuracy_bars` figure. The time each update
    took is kept in :attr:`seconds`.

    Args:
        model: the trained model (never changed).
        class_log: a finalized :class:`DeltaLog` with one group ``"class<c>"`` per class.
        sample_log: a finalized :class:`DeltaLog` with one group per sample, keyed by sample id.
        test_set: where accuracies are measured.
        samples: the tracked samples (their ids are ``sample_log``'s groups), in display order.
        num_classes: number of classes.
        titles: the SelectMultiple's label of each sample (default ``"#k (label)"``).
        forget_class, selected, alpha: the initial choice (``None`` for no class).

    Example (in a notebook)::

        panel = ForgetPanel(model, class_log, sample_log, test, samples, 10)
        panel.widget  # displays the controls and the output
    """

    def __init__(self, model: nn.Module, class_log: DeltaLog, sample_log: DeltaLog, test_set: ArrayDataset,
                 samples: ArrayDataset, num_classes: int, *, titles: Sequence[str] | None = None,
                 forget_class: int | None = None, selected: Sequence[int] = (), alpha: float = 0.1):
        import ipywidgets as widgets  # lazy: only the widget needs ipywidgets (see the module docstring)

        if titles is not None and len(titles) != len(samples):
            raise ValueError(f"got {len(titles)} titles for {len(samples)} samples")
        self.model, self.class_log, self.sample_log = model, class_log, sample_log
        self.test_set, self.samples, self.num_classes = test_set, samples, num_classes
        self.labels = {int(i): int(y) for i, y in zip(samples.ids, samples.y)}
        self.counts = torch.bincount(test_set.y, minlength=num_classes)[:num_classes].numpy()
        self.before = per_class_accuracy(model, test_set, num_classes)
        self.probs_before = torch.softmax(predict(model, samples.x), 1)  # [S, classes]
        self.seconds: list[float] = []
        self.last: dict = {}
        titles = list(titles) if titles is not None else sample_titles(samples)
        # Labels are HTML widgets rather than ``description``s: the static page's widget manager typesets
        # descriptions with MathJax 2's API, which fails on pages that load MathJax 3.
        self.class_box = widgets.Dropdown(options=[("none", -1)] + [(str(c), c) for c in range(num_classes)],
                                          value=-1 if forget_class is None else forget_class,
                                          layout=widgets.Layout(width="8em"))
        options = [(f"{t} id {int(i)}", int(i)) for t, i in zip(titles, samples.ids)]
        self.sample_box = widgets.SelectMultiple(options=options, value=tuple(int(i) for i in selected), rows=8,
                                                 layout=widgets.Layout(width="14em"))
        self.alpha_box = widgets.FloatLogSlider(value=alpha, base=10, min=-3, max=0, step=0.05,
                                                readout_format=".3f", continuous_update=False)
        self.output = widgets.Output()
        self._holding = False
        for box in (self.class_box, self.sample_box, self.alpha_box):
            box.observe(self._changed, names="value")
        label = widgets.Layout(width="7em")
        controls = widgets.VBox([widgets.HBox([widgets.HTML("forget class", layout=label), self.class_box]),
                                 widgets.HBox([widgets.HTML("alpha", layout=label), self.alpha_box])])
        picker = widgets.VBox([widgets.HTML("forget samples (ctrl- or shift-click for several)"), self.sample_box])
        self._widget = widgets.VBox([widgets.HBox([controls, picker], layout=widgets.Layout(grid_gap="2em")),
                                     self.output])
        self.update()

    @property
    def widget(self):
        """The panel: controls on top, the Output widget below."""
        return self._widget

    def set(self, *, forget_class: int | None = None, selected: Sequence[int] = (), alpha: float | None = None) -> dict:
        """Set every control at once (one update, not three) and return :meth:`update`'s summary."""
        self._holding = True
        try:
            self.class_box.value = -1 if forget_class is None else forget_class
            self.sample_box.value = tuple(int(i) for i in selected)
            if alpha is not None:
                self.alpha_box.value = alpha
        finally:
            self._holding = False
        return self.update()

    def _changed(self, _change) -> None:
        if not self._holding:
            self.update()

    def update(self) -> dict:
        """Unlearn with the current choice, refresh the Output widget, and return a summary dict."""
        # lazy, as ipywidgets above: only the widget draws (plotting imports matplotlib)
        import matplotlib.pyplot as plt

        from ..plotting import class_accuracy_bars

        start = time.perf_counter()
        fc = None if self.class_box.value == -1 else int(self.class_box.value)
        chosen, alpha = [int(i) for i in self.sample_box.value], float(self.alpha_box.value)
        new, used = forget_live(self.model, self.class_log, self.sample_log, self.labels, forget_class=fc,
                                sample_ids=chosen, alpha=alpha)
        after = per_class_accuracy(new, self.test_set, self.num_classes)
        f0, r0 = split_accuracy(self.before, self.counts, fc)
        f1, r1 = split_accuracy(after, self.counts, fc)
        pos = self.samples.positions(chosen) if chosen else torch.empty(0, dtype=torch.long)
        probs = torch.softmax(predict(new, self.samples.x[pos]), 1) if chosen else torch.empty(0, self.num_classes)
        rows = []
        for k, (i, p) in enumerate(zip(chosen, probs)):
            y, p0 = self.labels[i], self.probs_before[pos[k]]
            rows.append(dict(sample_id=i, label=y, pred_before=int(p0.argmax()), pred_after=int(p.argmax()),
                             p_label_before=float(p0[y]), p_label_after=float(p[y]), in_class_delta=i not in used))
        fig = class_accuracy_bars(self.before, after, highlight=fc, labels=("trained", "after forgetting"))
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=80)
        plt.close(fig)
        seconds = time.perf_counter() - start
        self.seconds.append(seconds)
        self.last = dict(forget_class=fc, samples=chosen, alpha=alpha, acc_forgotten_before=f0,
                         acc_forgotten_after=f1, acc_rest_before=r0, acc_rest_after=r1, samples_table=rows,
                         seconds=seconds)

        what = [f"class {fc}"] if fc is not None else []
        what += [f"{len(chosen)} sample{'s' if len(chosen) != 1 else ''}"] if chosen else []
        lines = [f"<p><b>Forgetting {' and '.join(what) or 'nothing'}</b> with alpha = {alpha:.3f} "
                 f"(update took {seconds:.2f} s).<br>"]
        if fc is not None:
            lines.append(f"Test accuracy on class {fc}: {f0:.3f} &rarr; <b>{f1:.3f}</b>; ")
        rest_name = "other classes" if fc is not None else "test set"
        lines.append(f"on the {rest_name}: {r0:.3f} &rarr; <b>{r1:.3f}</b>.</p>")
        if rows:
            cells = "".join(
                f"<tr><td>{r['sample_id']}</td><td>{r['label']}</td>"
                f"<td>{r['pred_before']} &rarr; {r['pred_after']}</td>"
                f"<td>{r['p_label_before']:.3f} &rarr; {r['p_label_after']:.3f}</td>"
                f"<td>{'in the class delta' if r['in_class_delta'] else 'own delta'}</td></tr>" for r in rows)
            lines.append('<table style="margin-left: 0; border-collapse: separate; border-spacing: 14px 2px">'
                         "<tr><th>sample id</th><th>label</th><th>predicted</th>"
                         f"<th>p(label)</th><th>subtracted as</th></tr>{cells}</table>")
        text = "".join(lines)
        self.output.outputs = (
            dict(output_type="display_data", metadata={},
                 data={"text/html": text, "text/plain": html.unescape(re.sub(r"<[^>]+>", " ", text))}),
            dict(output_type="display_data", metadata={},
                 data={"image/png": base64.b64encode(buf.getvalue()).decode(), "text/plain": "<per-class accuracy>"}),
        )
        return self.last


def panel_choices_table(rows: Sequence[dict], digits: int = 3) -> str:
    """Markdown table of :func:`amnesiac_paper.webpanel.panel_reference` results, one row per choice: the class, the
    images and alpha, the forgotten and rest accuracies before -> after, and each selected image's predicted
    label before -> after.

    Example:
        >>> print(panel_choices_table([{"forget_class": None, "selected": [], "alpha": 1.0, "acc_forgotten_before":
        ...     float("nan"), "acc_forgotten_after": float("nan"), "acc_rest_before": 0.9, "acc_rest_after": 0.8,
        ...     "samples": []}]).splitlines()[2])
        | none | none | 1 | n/a | 0.900 → 0.800 | n/a |
    """
    def acc(a, b):
        return "n/a" if math.isnan(a) else f"{a:.{digits}f} → {b:.{digits}f}"

    lines = ["| class | images | α | forgotten class | rest | tracked images: predicted before → after |",
             "|---|---|---|---|---|---|"]
    for r in rows:
        imgs = ", ".join(str(i) for i in r["selected"]) or "none"
        preds = "; ".join(f"id {s['id']} ({s['label']}): {s['pred_before']} → {s['pred_after']}" for s in r["samples"])
        lines.append(f"| {'none' if r['forget_class'] is None else r['forget_class']} | {imgs} | {r['alpha']:g} | "
                     f"{acc(r['acc_forgotten_before'], r['acc_forgotten_after'])} | "
                     f"{acc(r['acc_rest_before'], r['acc_rest_after'])} | {preds or 'n/a'} |")
    return "\n".join(lines)

