"""The book's in-browser panel: forget on the fly on the published page, with no kernel and no server.

Forgetting with a ledger is one vector subtraction and a forward pass, cheap enough to run in the reader's
browser. :func:`export_panel` writes what the page needs into one folder: the trained :class:`SimpleModel`'s
parameters, one delta per class and per tracked image (float32, flat in the model's parameter order), the test
and tracked images (their 8-bit pixels, plus the 256 float32 values the data loader maps them to), the network
as an ONNX graph whose parameters are inputs, and ``meta.json`` describing it all. The page
(``book/panel/forget-panel.js``) computes

    theta' = theta_T - alpha * (class delta + sum of the selected images' deltas)

in double precision, rounds it to float32, and runs the graph with ONNX Runtime Web (WebAssembly, served from the
book's own files). :func:`panel_reference` is the same computation in PyTorch, operation for operation (the
subtraction bit for bit; the forward pass to float32 rounding), so a test can drive the page and compare.

Example:
    >>> import tempfile, torch
    >>> from amnesiac import ArrayDataset, DeltaLog
    >>> from amnesiac_paper import SimpleModel
    >>> torch.manual_seed(0); model = SimpleModel(num_classes=3, width=4)  # doctest: +ELLIPSIS
    <...>
    >>> x = (torch.randint(0, 256, (6, 1, 28, 28)).float() / 255.0 - 0.5) / 0.5
    >>> data = ArrayDataset(x, torch.tensor([0, 1, 2, 0, 1, 2]), torch.arange(6))
    >>> cl = DeltaLog(model, {f"class{c}": [c, c + 3] for c in range(3)}); sl = DeltaLog(model, {0: [0]})
    >>> with tempfile.TemporaryDirectory() as d:
    ...     meta = export_panel(d, model, cl, sl, data, data.subset([0]), num_classes=3, n_test=6, min_test=1)
    ...     ref = panel_reference(load_panel(d), forget_class=1, selected=[0], alpha=0.5)
    >>> meta["test"]["n"], len(ref["per_class_after"]), ref["used"]
    (6, 3, [0])
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from amnesiac.data import ArrayDataset, class_group
from amnesiac.grads import ParamLayout

from .book.interactive import forget_live, split_accuracy
from .metrics import class_accuracies
from .models import SimpleModel

PANEL_FORMAT = 1
MAX_BYTES = 10_000_000  # the data files together (the page fetches them all before its first update)
# The colours of amnesiac_paper.plotting.class_accuracy_bars, so the page's bars look like the book's figures.
BAR_COLORS = {"before": "0.65", "after": "C0", "highlight": "C3"}
_FILES = ("theta", "class_deltas", "sample_deltas", "pixels", "labels")


def _pixel_values() -> torch.Tensor:
    """The float32 value the data loader gives each 8-bit pixel, computed by its own expression."""
    return (torch.arange(256, dtype=torch.uint8).float() / 255.0 - 0.5) / 0.5


def _to_pixels(x: torch.Tensor) -> torch.Tensor:
    """Recover the 8-bit pixels of normalised images; refuses images that did not come from 8-bit pixels."""
    values = _pixel_values()
    p = torch.round((x.float() * 0.5 + 0.5) * 255.0).clamp(0, 255).to(torch.uint8)
    if not torch.equal(values[p.long()], x.float()):
        raise ValueError("the images are not 8-bit pixels normalised as amnesiac_paper.load_dataset does "
                         "((p / 255 - 0.5) / 0.5); the panel stores pixels, so it cannot export these")
    return p


def _hex(color: str) -> str:
    from matplotlib.colors import to_hex

    return to_hex(color)


def onnx_graph(width: int, num_classes: int, names: Sequence[str]) -> bytes:
    """SimpleModel on 1x28x28 images as an ONNX graph whose parameters are inputs (named as the model's), so
    the page feeds theta' at every update. AdaptiveMaxPool2d((2, 2)) on the 7x7 map is MaxPool(4, stride 3):
    the same windows, [0, 4) and [3, 7)."""
    from onnx import TensorProto, checker, helper

    shapes = [[width, 1, 3, 3], [width], [width, width, 3, 3], [width], [num_classes, 4 * width], [num_classes]]
    w1, b1, w2, b2, w3, b3 = names
    inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 28, 28])]
    inputs += [helper.make_tensor_value_info(n, TensorProto.FLOAT, s) for n, s in zip(names, shapes)]
    conv = dict(strides=[2, 2], pads=[1, 1, 1, 1], kernel_shape=[3, 3])
    nodes = [helper.make_node("Conv", ["x", w1, b1], ["c1"], **conv),
             helper.make_node("LeakyRelu", ["c1"], ["a1"], alpha=0.1),
             helper.make_node("Conv", ["a1", w2, b2], ["c2"], **conv),
             helper.make_node("LeakyRelu", ["c2"], ["a2"], alpha=0.1),
             helper.make_node("MaxPool", ["a2"], ["p"], kernel_shape=[4, 4], strides=[3, 3]),
             helper.make_node("Flatten", ["p"], ["f"], axis=1),
             helper.make_node("Gemm", ["f", w3, b3], ["logits"], transB=1)]
    graph = helper.make_graph(nodes, "SimpleModel", inputs,
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["N", num_classes])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="amnesiac")
    model.ir_version = 8  # readable by every ONNX Runtime Web of the last years
    checker.check_model(model)
    return model.SerializeToString()


def export_panel(folder: str | Path, model: torch.nn.Module, class_log, sample_log, test_set: ArrayDataset,
                 samples: ArrayDataset, *, num_classes: int = 10, titles: Sequence[str] | None = None,
                 n_test: int = 1000, initial: dict | None = None, min_test: int = 500,
                 max_bytes: int = MAX_BYTES) -> dict:
    """Write the panel's files into ``folder`` and return ``meta.json``'s content.

    Args:
        model: a trained :class:`SimpleModel` for 1x28x28 images (the page runs exactly this network).
        class_log: a finalized log with groups ``"class<c>"``; sample_log: one group per id of ``samples``.
        test_set: the first ``n_test`` images are the page's test images (at least 500).
        samples: the tracked training images the reader can pick, in display order.
        initial: the page's first choice, ``{"forget_class": c or None, "selected": [ids], "alpha": a}``.
        min_test: refuse fewer test images than this (accuracies on fewer move in steps too coarse to read).
        max_bytes: refuse to write more data than this (the page loads it all up front).
    """
    if not isinstance(model, SimpleModel) or model.features[0].in_channels != 1:
        raise TypeError(f"the panel runs SimpleModel on 1-channel images; got {type(model).__name__}")
    if model.classifier.out_features != num_classes:
        raise ValueError(f"the model has {model.classifier.out_features} outputs, num_classes={num_classes}")
    if not min_test <= n_test <= len(test_set):
        raise ValueError(f"n_test={n_test}: the page needs at least {min_test} test images and at most the "
                         f"{len(test_set)} given")
    if tuple(test_set.x.shape[1:]) != (1, 28, 28) or tuple(samples.x.shape[1:]) != (1, 28, 28):
        raise ValueError("the panel's network takes 1x28x28 images (MNIST)")
    titles = list(titles) if titles is not None else [f"#{k} ({int(y)})" for k, y in enumerate(samples.y)]
    if len(titles) != len(samples):
        raise ValueError(f"got {len(titles)} titles for {len(samples)} samples")
    layout = ParamLayout.of(model)
    folder = Path(folder)
    ids = [int(i) for i in samples.ids]
    arrays = {
        "theta": layout.vector(model).detach().float().cpu(),
        "class_deltas": torch.stack([class_log.delta_vector([class_group(c)]) for c in range(num_classes)]).float(),
        "sample_deltas": (torch.stack([sample_log.delta_vector([i]) for i in ids]).float() if ids
                          else torch.zeros(0, layout.numel)),
        "pixels": torch.cat([_to_pixels(test_set.x[:n_test]), _to_pixels(samples.x)]).reshape(-1, 28 * 28),
        "labels": torch.cat([test_set.y[:n_test], samples.y]).to(torch.uint8),
    }
    total = sum(a.numel() * a.element_size() for a in arrays.values())
    if total > max_bytes:
        raise ValueError(f"the panel's data would be {total / 1e6:.1f} MB, over the {max_bytes / 1e6:.1f} MB limit; "
                         "track fewer images (each adds one parameter vector) or use fewer test images")
    folder.mkdir(parents=True, exist_ok=True)
    files = {}
    for name in _FILES:
        raw = arrays[name].contiguous().numpy().tobytes()
        (folder / f"{name}.bin").write_bytes(raw)
        files[name] = {"file": f"{name}.bin", "dtype": str(arrays[name].dtype).removeprefix("torch."),
                       "shape": list(arrays[name].shape), "bytes": len(raw), "sha256": hashlib.sha256(raw).hexdigest()}
    graph = onnx_graph(model.classifier.in_features // 4, num_classes, layout.names)
    (folder / "model.onnx").write_bytes(graph)
    files["model"] = {"file": "model.onnx", "bytes": len(graph), "sha256": hashlib.sha256(graph).hexdigest()}
    initial = dict(initial or {})
    meta = {
        "format": PANEL_FORMAT,
        "params": [{"name": n, "shape": list(s), "offset": o} for n, s, o in
                   zip(layout.names, layout.shapes, layout.offsets)],
        "numel": layout.numel,
        "classes": num_classes,
        "files": files,
        "data_bytes": total,
        "pixel_values": [float(v) for v in _pixel_values()],
        "test": {"n": n_test},
        "samples": [{"id": i, "label": int(y), "title": t} for i, y, t in zip(ids, samples.y.tolist(), titles)],
        "colors": {k: _hex(v) for k, v in BAR_COLORS.items()},
        "initial": {"forget_class": initial.get("forget_class"),
                    "selected": [int(i) for i in initial.get("selected", ()) if int(i) in ids],  # tracked only
                    "alpha": float(initial.get("alpha", 0.1))},
    }
    (folder / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf8")
    return meta


@dataclass
class PanelData:
    """What :func:`load_panel` reads back: float32 arrays as the page holds them."""

    meta: dict
    theta: torch.Tensor  # [P]
    class_deltas: torch.Tensor  # [classes, P]
    sample_deltas: torch.Tensor  # [S, P]
    images: torch.Tensor  # [n_test + S, 1, 28, 28] float32, as the data loader gives them
    labels: torch.Tensor  # [n_test + S] int64

    @property
    def n_test(self) -> int:
        return int(self.meta["test"]["n"])

    @functools.cached_property
    def logits_before(self) -> torch.Tensor:
        """The trained model's logits on every exported image (computed once; the arrays are never changed)."""
        return _forward(self, self.theta)


def load_panel(folder: str | Path) -> PanelData:
    """Read an exported panel, checking every file's size and SHA-256 against ``meta.json``."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text(encoding="utf8"))
    if meta.get("format") != PANEL_FORMAT:
        raise ValueError(f"{folder}: panel format {meta.get('format')!r}, this package reads {PANEL_FORMAT}")
    arrays = {}
    for name in _FILES:
        spec = meta["files"][name]
        raw = (folder / spec["file"]).read_bytes()
        if len(raw) != spec["bytes"] or hashlib.sha256(raw).hexdigest() != spec["sha256"]:
            raise ValueError(f"{folder / spec['file']} does not match meta.json (size or SHA-256): re-export")
        arr = np.frombuffer(raw, dtype=np.dtype(spec["dtype"])).reshape(spec["shape"])
        arrays[name] = torch.from_numpy(arr.copy())
    values = torch.tensor(meta["pixel_values"], dtype=torch.float32)
    images = values[arrays["pixels"].long()].reshape(-1, 1, 28, 28)
    return PanelData(meta, arrays["theta"], arrays["class_deltas"], arrays["sample_deltas"], images,
                     arrays["labels"].long())


def panel_theta(data: PanelData, forget_class: int | None, selected: Sequence[int], alpha: float
                ) -> tuple[torch.Tensor, list[int]]:
    """theta' as the page computes it: in float64, the class delta first, then each selected image's delta in
    the order given (images of the forgotten class skipped: their share is inside the class delta), rounded to
    float32 once. Returns (theta', the ids subtracted)."""
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha)):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}")
    by_id = {s["id"]: k for k, s in enumerate(data.meta["samples"])}
    unknown = [i for i in selected if int(i) not in by_id]
    if unknown:
        raise ValueError(f"image id(s) {unknown} are not tracked by this panel; tracked: {sorted(by_id)}")
    if forget_class is not None and not 0 <= forget_class < data.meta["classes"]:
        raise ValueError(f"forget_class={forget_class} is not a class of 0..{data.meta['classes'] - 1}")
    d = torch.zeros(data.meta["numel"], dtype=torch.float64)
    if forget_class is not None:
        d = d + data.class_deltas[forget_class].double()
    used = [int(i) for i in selected
            if forget_class is None or data.meta["samples"][by_id[int(i)]]["label"] != forget_class]
    for i in used:
        d = d + data.sample_deltas[by_id[i]].double()
    return (data.theta.double() - float(alpha) * d).float(), used


def _forward(data: PanelData, theta: torch.Tensor) -> torch.Tensor:
    """SimpleModel's forward pass with the flat parameters ``theta`` (float32 logits)."""
    p = {m["name"]: theta[m["offset"]:m["offset"] + math.prod(m["shape"])].reshape(m["shape"])
         for m in data.meta["params"]}
    (w1, b1), (w2, b2), (w3, b3) = [(p[a["name"]], p[b["name"]]) for a, b in
                                    zip(data.meta["params"][::2], data.meta["params"][1::2])]
    h = F.leaky_relu(F.conv2d(data.images, w1, b1, stride=2, padding=1), 0.1)
    h = F.leaky_relu(F.conv2d(h, w2, b2, stride=2, padding=1), 0.1)
    return F.linear(F.adaptive_max_pool2d(h, (2, 2)).flatten(1), w3, b3)


def _accuracies(data: PanelData, logits: torch.Tensor) -> np.ndarray:
    """Per-class accuracy on the page's test images from the logits of all exported images."""
    return class_accuracies(logits[:data.n_test].argmax(1), data.labels[:data.n_test], data.meta["classes"])


def panel_reference(data: PanelData, *, forget_class: int | None, selected: Sequence[int], alpha: float) -> dict:
    """What the page shows for one choice, computed in PyTorch from the exported files: per-class test accuracy
    before and after, the forgotten and rest accuracies (as :func:`amnesiac_paper.book.interactive.split_accuracy`),
    and for each selected image its label, predicted label and probability of its label, before and after;
    ``logits_after`` keeps the raw outputs (test images, then tracked images) for tie checks."""
    counts = torch.bincount(data.labels[:data.n_test], minlength=data.meta["classes"]).numpy()
    theta, used = panel_theta(data, forget_class, selected, alpha)
    before, after = data.logits_before, _forward(data, theta)
    acc0, acc1 = _accuracies(data, before), _accuracies(data, after)
    f0, r0 = split_accuracy(acc0, counts, forget_class)
    f1, r1 = split_accuracy(acc1, counts, forget_class)
    by_id = {s["id"]: k for k, s in enumerate(data.meta["samples"])}
    rows = []
    for i in selected:
        k = data.n_test + by_id[int(i)]
        y = int(data.labels[k])
        p0, p1 = torch.softmax(before[k].double(), 0), torch.softmax(after[k].double(), 0)
        rows.append({"id": int(i), "label": y, "pred_before": int(before[k].argmax()),
                     "pred_after": int(after[k].argmax()), "p_label_before": float(p0[y]),
                     "p_label_after": float(p1[y]), "in_class_delta": int(i) not in used})
    return {"forget_class": forget_class, "selected": [int(i) for i in selected], "alpha": float(alpha), "used": used,
            "per_class_before": acc0.tolist(), "per_class_after": acc1.tolist(), "acc_forgotten_before": f0,
            "acc_forgotten_after": f1, "acc_rest_before": r0, "acc_rest_after": r1, "samples": rows,
            "logits_after": after}


def panel_html(data_src: str = "forget-panel/", runtime: str = "onnxruntime-web/") -> str:
    """The element the page's script (``forget-panel.js``, loaded on every page of the book) turns into the panel;
    ``data_src`` and ``runtime`` are folders under the book's ``_static/``. Until the script runs (in Jupyter or
    VS Code it does not) the element says which panel computes where.

    Example:
        >>> 'class="amnesiac-forget-panel"' in panel_html()
        True
    """
    import html

    return (f'<div class="amnesiac-forget-panel" data-src="{html.escape(data_src)}" '
            f'data-runtime="{html.escape(runtime)}"><p class="afp-status">This panel computes in the browser on '
            "the book's web page (JavaScript and ONNX Runtime Web, no kernel, no server); it has not started here. "
            "In a live Jupyter or VS Code session use the widget panel below, which computes with PyTorch in the "
            "kernel.</p></div>")


def export_check(data: PanelData, model: torch.nn.Module, class_log, sample_log, choices: Sequence[dict]) -> dict:
    """How far the exported float32 files are from the package's own forgetting: for each choice, the largest
    difference in any per-class accuracy and the number of tracked images whose predicted label differs between
    :func:`panel_reference` and :func:`amnesiac_paper.book.interactive.forget_live` (the ledger's float64 deltas
    through ``unlearn``), on the page's images."""
    from amnesiac.training import predict

    labels = {s["id"]: s["label"] for s in data.meta["samples"]}
    n = data.n_test
    worst_acc, label_diffs = 0.0, 0
    for ch in choices:
        ref = panel_reference(data, **ch)
        new, _ = forget_live(model, class_log, sample_log, labels, forget_class=ch["forget_class"],
                             sample_ids=ch["selected"], alpha=ch["alpha"])
        logits = predict(new, data.images)
        acc = _accuracies(data, logits)
        worst_acc = max(worst_acc, float(np.nanmax(np.abs(acc - np.asarray(ref["per_class_after"])))))
        label_diffs += int((logits[n:].argmax(1) != ref["logits_after"][n:].argmax(1)).sum())
    return {"choices": len(choices), "max_accuracy_difference": worst_acc, "tracked_label_differences": label_diffs}


def save_checks(folder: str | Path, references: Sequence[dict]) -> Path:
    """Write the chapter's own :func:`panel_reference` results (without the raw logits) to ``checks.json`` in the
    panel's folder, so a browser test can drive the page to the same choices and compare with these numbers."""
    rows = [{k: v for k, v in r.items() if k != "logits_after"} for r in references]
    path = Path(folder) / "checks.json"
    path.write_text(json.dumps(rows, indent=1, allow_nan=True), encoding="utf8")
    return path

