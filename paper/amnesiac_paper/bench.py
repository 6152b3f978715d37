"""Benchmarks: training overhead of the logs, unlearning latency, memory, and how they scale.

Every figure is a ratio or a size measured within one run (so machine noise mostly cancels), with the
median over ``repeats``; each logged configuration is timed alternately with plain epochs after a warm-up, and
divided by those. ``python -m amnesiac_paper bench --profile full`` prints a table and writes
``results/bench/<profile>.json``, which the book's "Memory and time" chapter reads.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from amnesiac import buffers, layers, segments
from amnesiac.batchlog import BatchLog
from amnesiac.data import ArrayDataset, class_group, groups_by_class, groups_per_sample, random_ids
from amnesiac.deltalog import DeltaLog
from amnesiac.grads import ParamLayout
from amnesiac.training import pick_device, train
from amnesiac.unlearning import Request, unlearn

from . import cli
from .metrics import per_batch_formula_bytes
from .models import build_model
from .store import atomic_write_json, provenance, results_root


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one benchmark run (see :data:`BENCH_PROFILES`)."""

    n_simple: int  # MNIST-shaped samples for SimpleModel
    n_resnet: int  # 32x32x3 samples for ResNet-18-GN
    repeats: int
    group_counts: tuple[int, ...]
    batch_sizes: tuple[int, ...]
    widths: tuple[int, ...]
    epochs_for_memory: tuple[int, ...]
    flush_width: int = 2**22  # parameters of the flush profile's layer (:func:`flush_profile`)


BENCH_SEMANTICS = 1  # the benchmark's own version, stamped in its provenance (bump when what a row measures changes)

BENCH_PROFILES = {
    "smoke": BenchConfig(n_simple=128, n_resnet=16, repeats=1, group_counts=(1, 8), batch_sizes=(32, 64),
                         widths=(25, 50), epochs_for_memory=(1, 2), flush_width=2**16),
    "full": BenchConfig(n_simple=1920, n_resnet=320, repeats=5, group_counts=(1, 10, 100, 1000),
                        batch_sizes=(32, 64, 128), widths=(25, 50, 100, 200), epochs_for_memory=(1, 2, 4, 8)),
}

# the seed's scale, for the retraining time the unlearning latency is compared with
SEED_EPOCHS, SEED_BATCH = 4, 64
SEED_TRAIN_SIZE = {"simple": 60_000, "resnet18": 50_000}  # MNIST, CIFAR

TARGETS = {  # issues 5 and 12, revised by issue 32 (CPU, one thread): name -> (figure, comparison, bound)
    "class-group log, SimpleModel (x plain)": ("overhead_class_simple", "<=", 1.3),
    "1% samples tracked, SimpleModel (x plain)": ("overhead_1pct_simple", "<=", 1.1),
    "class-group log, ResNet-18-GN (x plain)": ("overhead_class_resnet", "<=", 3.0),
    "class-group log, ResNet-18-GN (x its traffic floor)": ("floor_class_resnet", "<=", 1.5),
    "1% samples tracked, ResNet-18-GN (x plain)": ("overhead_1pct_resnet", "<=", 1.5),
    "unlearn one class of ResNet-18 (ms, in place)": ("resnet_class_ms", "<=", 50.0),
    "faster than retraining, ResNet-18 (x)": ("resnet_speedup", ">=", 10_000.0),
    "class request memory below per-batch store (x)": ("memory_ratio", ">=", 100.0),
}
GPU_TARGETS = {  # issues 12 and 32, on a CUDA device (batch 64)
    **TARGETS,
    "class-group log, SimpleModel (x plain)": ("overhead_class_simple", "<=", 1.5),
    "1% samples tracked, SimpleModel (x plain)": ("overhead_1pct_simple", "<=", 1.2),
    "class-group log, ResNet-18-GN (x plain)": ("overhead_class_resnet", "<=", 1.5),
}


def _data(n: int, shape: tuple[int, ...], classes: int, seed: int = 0) -> ArrayDataset:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(n, *shape, generator=gen)
    return ArrayDataset(x, torch.randint(0, classes, (n,), generator=gen), torch.arange(n), f"synthetic{shape}")


def adam(params) -> torch.optim.Optimizer:
    """The benchmark's optimizer: Adam at lr 1e-3 (a first moment, no weight decay: the lazy-moment form)."""
    return torch.optim.Adam(params, lr=1e-3)


def sgd_weight_decay(params) -> torch.optim.Optimizer:
    """SGD with momentum and weight decay, the MNIST studies' SGD recipe: every step decays every group's delta."""
    return torch.optim.SGD(params, lr=0.01, momentum=0.9, weight_decay=5e-4)


def _timed_train(model_fn: Callable, data: ArrayDataset, batch: int, make_logs: Callable | None, device,
                 repeats: int, optimizer: Callable = adam, **how) -> tuple[float, list, dict]:
    """Median seconds of one epoch (from the same seed each time), the logs of the last repeat, and the median
    seconds of the logging work's two phases (``share``: the groups' shares before the optimizer's step;
    ``update``: folding the step into the logs after it). ``how``: ``group_grads`` / ``weight_grads`` of train."""
    times, shares, updates, logs = [], [], [], []
    for _ in range(repeats):
        torch.manual_seed(0)
        model = model_fn().to(device)
        logs = make_logs(model) if make_logs else []
        opt = optimizer(model.parameters())
        h = train(model, data.loader(batch, seed=0), opt, epochs=1, delta_log=logs or None, device=device,
                  progress=False, **how)
        times.append(h.wall_seconds)
        shares.append(h.share_seconds)
        updates.append(h.update_seconds)
    phases = {"share": statistics.median(shares), "update": statistics.median(updates)}
    return statistics.median(times), logs, phases


def _paired(model_fn: Callable, data: ArrayDataset, batch: int, make_logs: Callable, device, repeats: int,
            optimizer: Callable = adam, **how) -> tuple[float, float, list, dict]:
    """(logged seconds, plain seconds, logs of the last repeat, the logging phases' seconds): one untimed plain
    epoch to warm up, then plain and logged epochs alternately, ``repeats`` of each, medians. Timing each
    configuration against plain epochs run beside it keeps slow drifts of the machine (warm-up, frequency,
    allocator) out of the ratio: measured once at the start, plain training came out slower than logged training
    (ratios of 0.8-0.97 for the cheapest logs)."""
    _timed_train(model_fn, data, batch, None, device, 1, optimizer)
    plain, logged, shares, updates, logs = [], [], [], [], []
    for _ in range(repeats):
        plain.append(_timed_train(model_fn, data, batch, None, device, 1, optimizer)[0])
        secs, logs, phases = _timed_train(model_fn, data, batch, make_logs, device, 1, optimizer, **how)
        logged.append(secs)
        shares.append(phases["share"])
        updates.append(phases["update"])
    phases = {"share": statistics.median(shares), "update": statistics.median(updates)}
    return statistics.median(logged), statistics.median(plain), logs, phases


def _median_seconds(fn: Callable, repeats: int) -> float:
    out = []
    for _ in range(max(repeats, 3)):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return statistics.median(out)


CONV_KERNEL_NAMES = {"loop": "one call per group", "grouped": "in one grouped call"}
NEW_MEMORY_ROW = "class groups, new memory every step (before)"
PARTITIONED_ROWS = ("class groups, weight gradients once (partitioned)",
                    "1% samples, weight gradients once (partitioned)")
DECAY_ROWS = ("1% samples, SGD with weight decay, every group every step (default)",
              "1% samples, SGD with weight decay, lazy decay")


def stream_bandwidth(device, nbytes: int = 2**28, repeats: int = 5) -> float:
    """The memory bandwidth simple streaming kernels reach on ``device`` over vectors of ``nbytes``: bytes read plus
    bytes written per second, the fastest (by median of ``repeats``) of a copy, an in-place scaled add, an
    in-place scale and a sum. The rate the traffic floor of a log (:func:`log_traffic`) is priced at: the fastest
    of several kernels, because a floor priced at a slow one would not bound the log from below."""
    dev = torch.device(device)
    a = torch.ones(nbytes // 4, device=dev)
    b, c = torch.ones_like(a), torch.empty_like(a)
    kernels = {  # name -> (kernel, passes over the vector: reads plus writes)
        "copy": (lambda: c.copy_(a), 2), "add": (lambda: a.add_(b, alpha=0.5), 3), "scale": (lambda: a.mul_(1.0), 2),
        "sum": (lambda: a.sum(), 1)}
    best = 0.0
    for run, passes in kernels.values():
        def timed(run=run):
            run()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)

        timed()  # the pages are touched once before timing
        best = max(best, passes * a.numel() * 4 / _median_seconds(timed, repeats))
    return best


# The fewest passes over one present group's K coordinates a step of the log needs (each pass reads or writes K
# numbers once): its share written where it is formed and read once by the update, and the group's delta read and
# written; a rule with a first moment (Adam, momentum) reads and writes the group's moment too.
PASSES_STATELESS, PASSES_WITH_MOMENT = 4, 6


def log_traffic(logs: list, batches: list[torch.Tensor]) -> float:
    """The bytes per step that ``logs`` must move at least over these batches' sample ids, on average: for a
    :class:`DeltaLog`, each step's present groups × its width × the bytes of a number × the passes a group needs
    (:data:`PASSES_WITH_MOMENT` once the log keeps moments, else :data:`PASSES_STATELESS`); for a per-batch store,
    what it writes (once). Call before ``finalize`` (it reads the log's training-time state).

    Example:
        >>> from amnesiac.data import groups_per_sample
        >>> log = DeltaLog(torch.nn.Linear(3, 2), groups_per_sample([0, 1]))  # 8 parameters, no moments yet
        >>> log_traffic([log], [torch.tensor([0, 1, 5]), torch.tensor([1, 6, 7])])  # (2 + 1) groups x 8 x 4 B x 4 / 2
        192.0
    """
    total = 0.0
    for log in logs:
        if isinstance(log, DeltaLog):
            passes = PASSES_WITH_MOMENT if log.moments is not None else PASSES_STATELESS
            item = torch.empty((), dtype=log.compute_dtype).element_size()
            present = sum(log.assignment_for(ids)[1] for ids in batches)
            total += present * log.width * item * passes
        else:
            total += log.nbytes
    return total / len(batches)


@contextlib.contextmanager
def flush_tile(tile: int):
    """Within the block, lazy segments are settled over tiles of ``tile`` coordinates
    (:data:`amnesiac.segments.FLUSH_TILE`; the result is the same bit for bit, only the time differs)."""
    saved, segments.FLUSH_TILE = segments.FLUSH_TILE, tile
    try:
        yield
    finally:
        segments.FLUSH_TILE = saved


WHOLE_ROWS = 2**62  # a tile wider than any log: each row's segment settled in one piece, as before tiling


def flush_profile(device, bandwidth: float, *, width: int = 2**22, groups: int = 10, steps: int = 4,
                  repeats: int = 3) -> dict:
    """The log's update after each step, on its own and beside its traffic floor.

    A bias-free square linear layer of about ``width`` parameters is trained with Adam for ``steps`` steps of 64
    rows by a class-group log whose ``groups`` classes are all in every batch, so that each step settles a segment
    of one step for every group, the case of ResNet-18's class groups (its shares outgrow a segment every step),
    with almost no network arithmetic around it. Median seconds per step of the log's update (``update_seconds``
    of :func:`amnesiac.train`) over ``repeats``, with the flush tiled over :data:`amnesiac.segments.FLUSH_TILE`
    coordinates and over whole rows, alternately, beside the floor: the step's least traffic (:func:`log_traffic`)
    at ``bandwidth``.

    Example:
        >>> out = flush_profile("cpu", 1e10, width=4096, groups=2, steps=2, repeats=1)
        >>> out["width"], out["groups"], out["traffic_bytes_per_step"]  # 2 groups x 4096 x 4 B x 6 passes
        (4096, 2, 196608.0)
    """
    dev = torch.device(device)
    side = math.isqrt(width)
    n = steps * 64
    gen = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(n, side, generator=gen), torch.arange(n) % groups, torch.arange(n), "flush")
    batches = [ids for _, _, ids in data.loader(64, seed=0)]

    def update_seconds(tile: int) -> tuple[float, DeltaLog]:
        with flush_tile(tile):
            torch.manual_seed(0)
            model = torch.nn.Linear(side, side, bias=False).to(dev)
            log = DeltaLog(model, groups_by_class(data))
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            h = train(model, data.loader(64, seed=0), opt, epochs=1, delta_log=log, device=dev, progress=False)
            return h.update_seconds / len(batches), log

    update_seconds(segments.FLUSH_TILE)  # warm-up: the allocator and the pages
    tiled, whole = [], []
    for _ in range(repeats):
        secs, log = update_seconds(segments.FLUSH_TILE)
        tiled.append(secs)
        whole.append(update_seconds(WHOLE_ROWS)[0])
    traffic = log_traffic([log], batches)
    return {"width": side * side, "groups": groups, "steps": len(batches), "tile": segments.FLUSH_TILE,
            "tiled_seconds_per_step": statistics.median(tiled),
            "whole_rows_seconds_per_step": statistics.median(whole),
            "traffic_bytes_per_step": traffic, "floor_seconds_per_step": traffic / bandwidth}


def overhead(model_name: str, data: ArrayDataset, classes: int, cfg: BenchConfig, device, batch: int = 64,
             bandwidth: float | None = None) -> dict:
    """Training-time ratios (logged / plain) and bytes held for the standard log configurations; with the
    machine's streaming ``bandwidth`` (:func:`stream_bandwidth`), each row's traffic floor: the bytes per step its logs
    must move (:func:`log_traffic`) and the epoch that costs at that bandwidth beside the plain epoch."""
    in_ch = data.x.shape[1]
    model_fn = lambda: build_model(model_name, in_ch, classes)  # noqa: E731
    ids1 = random_ids(data, 0.01, seed=0)
    ids10 = random_ids(data, 0.10, seed=0)
    other = "loop" if layers.conv_kernel_for(device) == "grouped" else "grouped"
    classes_log = lambda m: [DeltaLog(m, groups_by_class(data))]  # noqa: E731
    configs = {  # name -> (logs, train's keyword arguments, the context it runs in if not the default)
        "class groups": (classes_log, {}),
        NEW_MEMORY_ROW: (classes_log, {}, buffers.new_memory_every_step),
        PARTITIONED_ROWS[0]: (classes_log, {"weight_grads": "partitioned"}),
        f"class groups, convolution groups {CONV_KERNEL_NAMES[other]}": (classes_log, {},
                                                                          lambda: layers.conv_kernel(other)),
        "class groups, torch.func per-sample (before)": (classes_log, {"group_grads": "vmap"}),
        "1% samples": (lambda m: [DeltaLog(m, groups_per_sample(ids1))], {}),
        PARTITIONED_ROWS[1]: (lambda m: [DeltaLog(m, groups_per_sample(ids1))], {"weight_grads": "partitioned"}),
        "10% samples": (lambda m: [DeltaLog(m, groups_per_sample(ids10))], {}),
        "10% samples, moments every step (before)": (
            lambda m: [DeltaLog(m, groups_per_sample(ids10), lazy_momentum=False)], {}),
        "1% samples, p=0.1 gradient (seed)": (
            lambda m: [DeltaLog(m, groups_per_sample(ids1), attribution="gradient", p=0.1)], {}),
        "per-batch store, 1% samples": (lambda m: [BatchLog(m, groups_per_sample(ids1))], {}),
        # plain and logged epochs both with SGD, momentum and weight decay
        DECAY_ROWS[0]: (lambda m: [DeltaLog(m, groups_per_sample(ids1))], {"optimizer": sgd_weight_decay}),
        DECAY_ROWS[1]: (lambda m: [DeltaLog(m, groups_per_sample(ids1), lazy_decay=True)],
                        {"optimizer": sgd_weight_decay}),
    }
    rows, plains = {}, []
    for name, (make, how, *context) in configs.items():
        with (context[0] if context else contextlib.nullcontext)():
            secs, plain, logs, phases = _paired(model_fn, data, batch, make, device, cfg.repeats, **how)
        plains.append(plain)
        peak = sum(getattr(log, "peak_bytes", log.nbytes) for log in logs)
        batches = [ids for _, _, ids in data.loader(batch, seed=0)]  # the epoch's steps, as training took them
        traffic = log_traffic(logs, batches)
        for log in logs:
            if isinstance(log, DeltaLog):
                log.finalize()
        rows[name] = {"seconds": secs, "plain_seconds": plain, "ratio": secs / plain,
                      "share_seconds": phases["share"], "update_seconds": phases["update"],
                      "bytes": sum(log.nbytes for log in logs), "peak_bytes": peak,
                      "traffic_bytes_per_step": traffic}
        if bandwidth:  # the epoch at the traffic floor: plain training plus the log's least traffic
            rows[name]["floor_ratio"] = 1 + len(batches) * traffic / bandwidth / plain
    rows = {"plain": {"seconds": statistics.median(plains), "ratio": 1.0, "bytes": 0, "peak_bytes": 0}} | rows
    return {"model": model_name, "n_params": sum(q.numel() for q in model_fn().parameters()), "n": len(data),
            "batch": batch, "rows": rows}


def latency(model_name: str, data: ArrayDataset, classes: int, device, repeats: int) -> dict:
    """Seconds to forget one class, one sample and 100 samples from a trained log (median of repeats)."""
    in_ch = data.x.shape[1]
    torch.manual_seed(0)
    model = build_model(model_name, in_ch, classes).to(device)
    samples = data.ids[:100]
    cls = int(data.y[0])
    class_log = DeltaLog(model, groups_by_class(data, [cls]))
    sample_log = DeltaLog(model, groups_per_sample(samples))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    h = train(model, data.loader(64, seed=0), opt, epochs=1, delta_log=[class_log, sample_log], device=device,
              progress=False)
    class_log.finalize()
    sample_log.finalize()
    layout = ParamLayout.of(model)
    delta = class_log.delta_vector([class_group(cls)])
    params = layout.params(model)

    def in_place():
        with torch.no_grad():
            for q, d in zip(params, layout.unflatten(delta).values()):
                q.sub_(d)
        if device.type == "cuda":
            torch.cuda.synchronize()

    class_request = Request(forget_groups=(class_group(cls),))
    cases = {
        "one class (unlearn: copy + subtract)": lambda: unlearn("amnesiac", model, class_request, log=class_log),
        "one class (in-place subtraction only)": in_place,
        "one sample": lambda: unlearn("amnesiac", model, Request(forget_groups=(int(samples[0]),)), log=sample_log),
        "100 samples": lambda: unlearn("amnesiac", model, Request(forget_groups=tuple(samples.tolist())),
                                       log=sample_log),
        "model copy alone": lambda: copy.deepcopy(model),
    }
    out = {name: _median_seconds(fn, repeats) for name, fn in cases.items()}
    return {"model": model_name, "n_params": layout.numel, "seconds": out, "train_epoch_seconds": h.wall_seconds,
            "n": len(data), "delta_bytes": delta.numel() * delta.element_size()}


def retrain_estimate(overhead_block: dict, latency_block: dict) -> None:
    """Add the seed-scale retraining time, from the measured plain training step, to a latency block."""
    steps = math.ceil(overhead_block["n"] / overhead_block["batch"])
    step_seconds = overhead_block["rows"]["plain"]["seconds"] / steps
    model = latency_block["model"]
    latency_block["retrain_seconds_estimate"] = (
        step_seconds * SEED_EPOCHS * math.ceil(SEED_TRAIN_SIZE[model] / SEED_BATCH)
    )
    latency_block["retrain_note"] = (
        f"measured seconds per plain training step x {SEED_EPOCHS} epochs of {SEED_TRAIN_SIZE[model]:,} samples "
        f"at batch {SEED_BATCH} (the seed's scale)"
    )


def scaling(data: ArrayDataset, cfg: BenchConfig, device) -> dict:
    """Overhead and bytes against tracked groups, batch size and parameter count; bytes against epochs."""
    out = {"groups": [], "batch": [], "params": [], "epochs": []}
    model_fn = lambda w=100: build_model("simple", 1, 10, width=w)  # noqa: E731
    for g in cfg.group_counts:
        ids = data.ids[torch.randperm(len(data), generator=torch.Generator().manual_seed(g))[:g]]
        make = lambda m, ids=ids: [DeltaLog(m, groups_per_sample(ids)), BatchLog(m, groups_per_sample(ids))]  # noqa: E731
        secs, plain, logs, _ = _paired(model_fn, data, 64, make, device, cfg.repeats)
        logs[0].finalize()
        out["groups"].append({"groups": g, "ratio": secs / plain, "ledger_bytes": logs[0].nbytes,
                              "per_batch_bytes": logs[1].nbytes})
    for b in cfg.batch_sizes:
        secs, plain, logs, _ = _paired(model_fn, data, b, lambda m: [DeltaLog(m, groups_by_class(data))], device,
                                       cfg.repeats)
        out["batch"].append({"batch": b, "ratio": secs / plain})
    for w in cfg.widths:
        fn = lambda w=w: model_fn(w)  # noqa: E731
        secs, plain, logs, _ = _paired(fn, data, 64, lambda m: [DeltaLog(m, groups_by_class(data))], device,
                                       cfg.repeats)
        logs[0].finalize()
        out["params"].append({"params": logs[0].layout.numel, "ratio": secs / plain, "ledger_bytes": logs[0].nbytes})
    # bytes against epochs at the seed's settings: the class ledger is one vector whatever the epochs; the
    # per-batch store for requests not known in advance keeps one vector per step
    n_params = sum(q.numel() for q in model_fn().parameters())
    for e in cfg.epochs_for_memory:
        out["epochs"].append({"epochs": e, "ledger_bytes": n_params * 4,
                              "per_batch_bytes": per_batch_formula_bytes(n_params, 60_000, e, 64)})
    return out


def bench_path(profile: str, device_type: str = "cpu", root: Path | None = None) -> Path:
    """Where a profile's benchmark lives: ``results/bench/<profile>.json`` for the CPU, ``<profile>-cuda.json`` for a
    CUDA run, so that a GPU run never replaces the CPU figures and the book can show both.

    Example:
        >>> bench_path("full", "cuda").name
        'full-cuda.json'
    """
    base = (root or results_root()) / "bench"
    return base / (f"{profile}.json" if device_type == "cpu" else f"{profile}-{device_type}.json")


def run_bench(profile: str = "full", *, device: str = "auto", out: Path | None = None) -> dict:
    """Run every benchmark at a profile, write the JSON (by default to :func:`bench_path` of the device) and return
    it."""
    if profile not in BENCH_PROFILES:
        raise ValueError(f"unknown bench profile {profile!r}; valid: {', '.join(BENCH_PROFILES)}")
    cfg = BENCH_PROFILES[profile]
    dev = pick_device(device)
    start = time.perf_counter()
    mnist_like = _data(cfg.n_simple, (1, 28, 28), 10)
    cifar_like = _data(cfg.n_resnet, (3, 32, 32), 10)  # 10 class groups: 100 would hold 4.5 GB of deltas
    stream_bytes = 2**28
    bandwidth = stream_bandwidth(dev, nbytes=stream_bytes, repeats=cfg.repeats)
    result = {
        "profile": profile, "config": asdict(cfg), "provenance": provenance(dev, semantics=BENCH_SEMANTICS),
        "stream_bandwidth": bandwidth, "stream_bytes": stream_bytes,
        "overhead": [overhead("simple", mnist_like, 10, cfg, dev, bandwidth=bandwidth),
                     overhead("resnet18", cifar_like, 10, cfg, dev, bandwidth=bandwidth)],
        "latency": [latency("simple", mnist_like, 10, dev, cfg.repeats),
                    latency("resnet18", cifar_like, 10, dev, cfg.repeats)],
        "scaling": scaling(mnist_like, cfg, dev),
        "flush": flush_profile(dev, bandwidth, width=cfg.flush_width, repeats=cfg.repeats),
    }
    for o, lat in zip(result["overhead"], result["latency"]):
        retrain_estimate(o, lat)
    result["targets"] = targets(result)
    result["wall_seconds"] = time.perf_counter() - start
    atomic_write_json(out or bench_path(profile, dev.type), result)
    return result


def targets(result: dict) -> dict:
    """The measured figure for each target of :data:`TARGETS` (:data:`GPU_TARGETS` for a run on CUDA), and
    whether it is met (value and met ``None`` where the run did not measure the figure: a run from before the
    traffic model has no floor)."""
    simple, resnet = (block["rows"] for block in result["overhead"])
    res = result["latency"][1]
    epochs = {row["epochs"]: row for row in result["scaling"]["epochs"]}
    seed_row = epochs.get(SEED_EPOCHS) or epochs[max(epochs)]
    figures = {
        "overhead_class_simple": simple["class groups"]["ratio"],
        "overhead_1pct_simple": simple["1% samples"]["ratio"],
        "overhead_class_resnet": resnet["class groups"]["ratio"],
        "overhead_1pct_resnet": resnet["1% samples"]["ratio"],
        "floor_class_resnet": (resnet["class groups"]["ratio"] / resnet["class groups"]["floor_ratio"]
                               if "floor_ratio" in resnet["class groups"] else None),  # runs before the model: none
        "resnet_class_ms": res["seconds"]["one class (in-place subtraction only)"] * 1e3,
        "resnet_speedup": res["retrain_seconds_estimate"] / res["seconds"]["one class (in-place subtraction only)"],
        "memory_ratio": seed_row["per_batch_bytes"] / seed_row["ledger_bytes"],
    }
    out = {}
    on_gpu = str(result["provenance"]["device"]).startswith("cuda")
    for name, (key, op, bound) in (GPU_TARGETS if on_gpu else TARGETS).items():
        value = figures[key]
        met = None if value is None else value <= bound if op == "<=" else value >= bound
        out[name] = {"value": value, "target": f"{op} {bound:g}", "met": met}
    return out


def side_by_side(cpu: dict, gpu: dict) -> tuple[list[str], list[list[str]]]:
    """Header and rows comparing two benchmark runs (the CPU's and a CUDA one): each overhead row both runs hold,
    per model, as × plain training on each device, then each device's targets judged on its own run."""
    header = ["", f"CPU ({cpu['provenance'].get('device_name') or 'cpu'})",
              f"GPU ({gpu['provenance'].get('device_name') or 'cuda'})"]
    rows = []
    for a, b in zip(cpu["overhead"], gpu["overhead"]):
        for name in a["rows"]:
            if name != "plain" and name in b["rows"]:
                rows.append([f"{a['model']}: {name} (× plain)", f"{a['rows'][name]['ratio']:.2f}×",
                             f"{b['rows'][name]['ratio']:.2f}×"])
        rows.append([f"{a['model']}: plain training, s per epoch of the benchmark",
                     f"{a['rows']['plain']['seconds']:.3g}", f"{b['rows']['plain']['seconds']:.3g}"])
    for name, t in targets(cpu).items():
        rows.append([f"CPU target: {name} {t['target']}", judged(t), ""])
    for name, t in targets(gpu).items():
        rows.append([f"GPU target: {name} {t['target']}", "", judged(t)])
    return header, rows


def judged(t: dict) -> str:
    """One judged target of :func:`targets` as text: its figure and whether it is met, or that it was not measured.

    Example:
        >>> judged({"value": 1.234, "target": "<= 1.3", "met": True}), judged({"value": None, "met": None})
        ('1.23 (met)', 'not measured')
    """
    if t["value"] is None:
        return "not measured"
    return f"{t['value']:,.2f} ({'met' if t['met'] else 'not met'})"


def format_bench(result: dict) -> str:
    """A plain-text summary of :func:`run_bench` output."""
    lines = []
    for block in result["overhead"]:
        lines.append(f"training overhead, {block['model']} ({block['n_params']:,} parameters, {block['n']} samples, "
                     f"batch {block['batch']}):")
        for name, row in block["rows"].items():
            floor = f"  floor {row['floor_ratio']:5.2f}x" if "floor_ratio" in row else ""
            lines.append(f"  {name:46s} {row['seconds']:8.2f} s  {row['ratio']:6.2f}x  {row['bytes'] / 2**20:9.2f} MiB"
                         f"  peak {row.get('peak_bytes', 0) / 2**20:9.2f} MiB{floor}")
    for block in result["latency"]:
        lines.append(f"unlearning latency, {block['model']}:")
        for name, s in block["seconds"].items():
            lines.append(f"  {name:46s} {s * 1e3:8.2f} ms")
        if "retrain_seconds_estimate" in block:
            lines.append(f"  {'retraining (estimate)':46s} {block['retrain_seconds_estimate']:8.0f} s  "
                         f"({block['retrain_note']})")
    lines.append("scaling with tracked per-sample groups (SimpleModel):")
    for row in result["scaling"]["groups"]:
        lines.append(f"  {row['groups']:6d} groups  {row['ratio']:6.2f}x  ledger {row['ledger_bytes'] / 2**20:8.2f} "
                     f"MiB  per-batch {row['per_batch_bytes'] / 2**20:8.2f} MiB")
    if "flush" in result:
        f = result["flush"]
        lines.append(f"the log's update per step ({f['width']:,} parameters, {f['groups']} groups present, Adam): "
                     f"tiled {f['tiled_seconds_per_step'] * 1e3:.1f} ms, whole rows "
                     f"{f['whole_rows_seconds_per_step'] * 1e3:.1f} ms, traffic floor "
                     f"{f['floor_seconds_per_step'] * 1e3:.1f} ms")
    if "targets" in result:
        lines.append("targets:")
        for name, t in result["targets"].items():
            lines.append(f"  {name:55s} {judged(t):>24s}  target {t['target']:>10s}")
    return "\n".join(lines)


KERNEL_ROWS = {f"class groups, convolution groups {name}" for name in CONV_KERNEL_NAMES.values()}
README_ROWS = (  # (overhead row, how the README names it)
    ("class groups", "class groups (10 groups, every row tracked)"),
    (PARTITIONED_ROWS[0], "the same, each weight gradient computed once, partitioned (`weight_grads=\"partitioned\"`)"),
    ("class groups, convolution groups in one grouped call", "the same, each convolution's groups in one grouped call"),
    ("class groups, convolution groups one call per group", "the same, one convolution call per group"),
    (NEW_MEMORY_ROW, "the same with new memory for the step's buffers at every step (before)"),
    ("class groups, torch.func per-sample (before)", "the same with `torch.func` per-sample gradients (before)"),
    ("1% samples", "1% of samples tracked individually"),
    (PARTITIONED_ROWS[1], "the same, weight gradients once, partitioned"),
    ("10% samples", "10% of samples tracked individually"),
    ("10% samples, moments every step (before)", "the same with Adam moments updated every step (before)"),
    ("per-batch store, 1% samples", "per-batch store (Graves), 1% tracked"),
    (DECAY_ROWS[0], "1% tracked, SGD with momentum and weight decay: every group moved every step (default)"),
    (DECAY_ROWS[1], "the same, the decay settled lazily (`lazy_decay=True`)"),
)


def readme_tables(result: dict) -> str:
    """The README's performance tables, generated from a bench result (the README holds exactly this text
    between its ``bench`` markers; a test keeps the two equal)."""
    prov = result["provenance"]
    simple, resnet = result["overhead"]
    lines = [f"Figures of `results/bench/{result['profile']}.json` ({prov['device']}, {prov['threads']} thread(s), "
             f"revision {prov['git']}, {prov['date'][:10]}):", "",
             f"| one training epoch, × plain training | SimpleModel ({simple['n_params'] / 1e3:.0f} k parameters) "
             f"| ResNet-18-GN ({resnet['n_params'] / 1e6:.1f} M, 32×32 inputs) |", "|---|---|---|"]
    for key, name in README_ROWS:
        if key not in simple["rows"] or key not in resnet["rows"]:
            if key in KERNEL_ROWS:  # a run has the row of the kernel its device does not use by default
                continue
            raise KeyError(f"readme_tables: the bench result has no overhead row {key!r}; README_ROWS names rows "
                           f"that `bench.overhead` writes (recompute the bench if the row is new: python -m "
                           f"amnesiac_paper bench --profile {result['profile']})")
        lines.append(f"| {name} | {simple['rows'][key]['ratio']:.2f}× | {resnet['rows'][key]['ratio']:.2f}× |")
    lines += ["", "| target | measured | met |", "|---|---|---|"]
    for name, t in targets(result).items():  # today's targets against the committed figures
        v = t["value"]
        if v is None:
            lines.append(f"| {name}, target {t['target']} | not measured (the run predates it) | – |")
            continue
        shown = f"{v:,.0f}×" if v >= 100 else f"{v:.1f} ms" if "(ms" in name else f"{v:.2f}×"
        lines.append(f"| {name}, target {t['target']} | {shown} | {'yes' if t['met'] else 'no'} |")
    return "\n".join(lines)


def ledger_read_times(storage: Path, *, model: str = "resnet18", n_samples: int = 500, dtype: str = "float32",
                      reads: tuple[int, ...] = (1, 100), repeats: int = 3, seed: int = 0) -> dict:
    """Read times of a memory-mapped per-sample ledger (``DeltaLog(storage=...)``) of ``n_samples`` groups.

    The ledger is filled with random rows (the read cost does not depend on their values) and finalized to
    ``dtype``; each read sums the deltas of ``k`` random samples (median of ``repeats``). The first read of
    each size is reported apart (``cold``), the operating system's page cache makes the others warm.
    """
    net = build_model(model, 3 if model == "resnet18" else 1, 10)
    log = DeltaLog(net, groups_per_sample(list(range(n_samples))), storage=storage, dtype=dtype)
    gen = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    for a in range(0, n_samples, 16):
        rows = log.deltas[a: a + 16]
        rows.copy_(torch.randn(rows.shape, generator=gen, dtype=rows.dtype))
    fill = time.perf_counter() - t0
    log.finalize()
    out = {"model": model, "n_params": log.layout.numel, "n_samples": n_samples, "dtype": dtype,
           "file_bytes": sum(p.stat().st_size for p in Path(storage).iterdir()), "fill_seconds": fill, "reads": {}}
    rng = np.random.default_rng(seed)
    for k in reads:
        times = []
        for _ in range(repeats + 1):
            ids = rng.choice(n_samples, size=k, replace=False).tolist()
            t0 = time.perf_counter()
            log.delta_vector(ids)
            times.append(time.perf_counter() - t0)
        out["reads"][str(k)] = {"cold_seconds": times[0], "warm_median_seconds": float(np.median(times[1:]))}
    return out


def readme_scaleout_tables(bench_dir: Path) -> str:
    """The README's scale-out tables (DistributedDataParallel, ledgers on disk), generated from the committed
    ``ddp.json`` and ``ledger-read-<dtype>.json`` in ``bench_dir`` (a test keeps the README equal to this)."""
    import json

    from .ddp_bench import format_scaling

    lines = []
    ddp = bench_dir / "ddp.json"
    if ddp.exists():
        r = json.loads(ddp.read_text())
        prov = r["provenance"]
        lines += [f"DistributedDataParallel with a sharded ledger (`results/bench/ddp.json`: SimpleModel, Adam, "
                  f"global batch {r['batch']}, gloo, one thread per process, revision {prov['git']}, "
                  f"{prov['date'][:10]}; median step times):", "", format_scaling(r)]
    reads = sorted(bench_dir.glob("ledger-read-*.json"))
    if reads:
        rows = []
        for path in reads:
            r = json.loads(path.read_text())
            one, hundred = r["reads"]["1"], r["reads"]["100"]
            rows.append(f"| {r['dtype']} | {r['file_bytes'] / 1e9:.1f} GB | {one['cold_seconds']:.2f} s | "
                        f"{one['warm_median_seconds']:.2f} s | {hundred['cold_seconds']:.1f} s | "
                        f"{hundred['warm_median_seconds']:.1f} s | {r['provenance']['git']} |")
        first = json.loads(reads[0].read_text())
        lines += ["", f"A memory-mapped per-sample ledger of {first['model']} ({first['n_params'] / 1e6:.1f} M "
                  f"parameters) for {first['n_samples']} samples on disk (`DeltaLog(storage=...)`, "
                  "`results/bench/ledger-read-*.json`), on a machine with 24 GB of memory; summing the deltas "
                  "of 1 or 100 random samples:", "",
                  "| storage | file | 1 sample, first read | 1 sample, again | 100 samples, first read | "
                  "100 samples, again | revision |", "|---|---|---|---|---|---|---|", *rows]
    return "\n".join(lines).strip("\n")


def _save_bench(name: str, result: dict) -> dict:
    """Stamp a CPU benchmark's result with provenance and write it to ``results/bench/<name>.json``."""
    result = {**result, "provenance": provenance(pick_device("cpu"), semantics=BENCH_SEMANTICS)}
    atomic_write_json(results_root() / "bench" / f"{name}.json", result)
    return result


def _ledger_folder_problem(folder: Path) -> str | None:
    """Why ``bench --ledger-read`` cannot write its ledger inside ``folder`` (``None``: it can)."""
    if folder.exists() and not folder.is_dir():
        return f"--ledger-read {folder}: not a directory; give a folder the ledger may be written in"
    if not folder.exists() and not folder.parent.is_dir():
        return f"--ledger-read {folder}: its parent folder {folder.parent} does not exist; create it first"
    return None


def ledger_read_bench(folder: Path, dtype: str = "float32", **sizes) -> dict:
    """Time reading a memory-mapped ledger (:func:`amnesiac_paper.bench.ledger_read_times`, ``sizes``: its keyword
    arguments), written in a new folder inside ``folder`` (made if missing), and save the result (``results/bench/
    ledger-read-<dtype>.json``). The ledger's folder is removed afterwards, whether the benchmark ends or fails, and
    so is ``folder`` if this made it and it is empty; nothing else in ``folder`` is ever touched."""
    folder = Path(folder)
    problem = _ledger_folder_problem(folder)
    if problem:
        raise ValueError(problem)
    try:
        folder.mkdir()
        made = True
    except FileExistsError:
        made = False
    work = Path(tempfile.mkdtemp(dir=folder, prefix="amnesiac-ledger-read-"))
    try:
        return _save_bench(f"ledger-read-{dtype}", ledger_read_times(work / "ledger", dtype=dtype, **sizes))
    finally:
        shutil.rmtree(work, ignore_errors=True)  # tens of GB, and only what this run wrote
        if made:
            with contextlib.suppress(OSError):  # rmdir removes an empty folder only
                folder.rmdir()

# ------------------------------------------------------------------------------------------- command line


def _cli_arguments(b) -> None:
    b.add_argument("--profile", default="full", choices=["smoke", "full"])
    b.add_argument("--device", default="auto", type=cli.device, help="auto (CUDA if available), cpu or cuda")
    b.add_argument("--tables", action="store_true",
                   help="print the README's tables from the committed results/bench/<profile>.json (no run)")
    b.add_argument("--ledger-read", type=Path, default=None, metavar="DIR",
                   help="build a memory-mapped ResNet-18 ledger of 500 per-sample groups (22 GB in float32) in a new "
                        "folder inside DIR, time reading 1 and 100 deltas (writes "
                        "results/bench/ledger-read-<dtype>.json), and remove that folder; nothing else in DIR is "
                        "touched")
    b.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16"],
                   help="the --ledger-read ledger's storage dtype")
    b.add_argument("--ddp", action="store_true",
                   help="measure DistributedDataParallel with a sharded ledger, 1 and 2 processes (writes "
                        "results/bench/ddp.json)")


def _cli_check(args) -> None:
    if args.ledger_read is not None:
        problem = _ledger_folder_problem(args.ledger_read)
        if problem:
            raise ValueError(problem)


def _cli_run(args) -> int:
    if args.tables:
        path = results_root() / "bench" / f"{args.profile}.json"
        if not path.is_file():
            return cli.error(f"no benchmark result at {path}; make one with: python -m amnesiac_paper bench "
                             f"--profile {args.profile}")
        print(readme_tables(json.loads(path.read_text())))
        print("\n" + readme_scaleout_tables(results_root() / "bench"))
        return 0
    if args.ledger_read is not None:
        print(ledger_read_bench(args.ledger_read, args.dtype))
        return 0
    if args.ddp:
        from .ddp_bench import format_scaling, scaling_benchmark

        print(format_scaling(_save_bench("ddp", scaling_benchmark())))
        return 0
    print(format_bench(run_bench(args.profile, device=args.device)))
    return 0


COMMAND = cli.Command("bench", "benchmark logging overhead, unlearning latency and memory", _cli_arguments, _cli_run,
                      _cli_check, options="common")
