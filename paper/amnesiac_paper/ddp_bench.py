"""DistributedDataParallel with a sharded ledger, measured: step times with 1 and 2 processes and the bytes each
step sends (``python -m amnesiac_paper bench --ddp``)."""

from __future__ import annotations

import socket
import tempfile
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from amnesiac.distributed import ShardedDeltaLog, attach


def _bench_worker(rank: int, world: int, port: int, kind: str, steps: int, batch: int, out: str) -> None:
    import os
    import time

    import torch.nn.functional as F

    from amnesiac.attributed import AttributedOptimizer
    from amnesiac.data import ArrayDataset, groups_by_class, groups_per_sample

    from .models import SimpleModel

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        gen = torch.Generator().manual_seed(0)
        n = steps * batch
        data = ArrayDataset(torch.randn(n, 1, 28, 28, generator=gen), torch.randint(0, 10, (n,), generator=gen),
                            torch.arange(n), "timing")
        groups = groups_by_class(data) if kind == "class" else groups_per_sample(range(0, n, max(1, n // 100)))
        result = {}
        for logged in (False, True):
            torch.manual_seed(0)
            model = SimpleModel(1, 10)
            ddp = nn.parallel.DistributedDataParallel(model)
            log = ShardedDeltaLog(model, groups) if logged else None
            inner = torch.optim.Adam(model.parameters(), lr=1e-3)
            opt = AttributedOptimizer(inner, model, log) if logged else inner
            if logged:
                attach(ddp, opt)
            part = slice(rank * batch // world, (rank + 1) * batch // world)
            times = []
            for x, y, ids in data.loader(batch, seed=1):
                dist.barrier()
                t0 = time.perf_counter()
                opt.zero_grad()
                if logged:
                    opt.set_batch(ids[part])
                F.cross_entropy(ddp(x[part]), y[part]).backward()
                opt.step()
                times.append(time.perf_counter() - t0)
            if logged:
                opt.close()
            key = "logged" if logged else "plain"
            result[key] = {"step_seconds": sorted(times[1:])[len(times[1:]) // 2]}  # median, first step left out
            if logged:
                result[key]["share_bytes_per_step"] = log.bytes_sent / max(1, log.steps_logged)
        result["gradient_bytes"] = sum(q.numel() * q.element_size() for q in model.parameters())
        result["groups"] = len(groups)
        if rank == 0:
            import json

            Path(out).write_text(json.dumps(result))
    finally:
        dist.destroy_process_group()


def scaling_benchmark(*, world_sizes: Sequence[int] = (1, 2), kinds: Sequence[str] = ("class", "samples"),
                      steps: int = 30, batch: int = 128) -> dict:
    """Median step time of SimpleModel on MNIST-shaped random data (Adam, global batch ``batch``) with 1 and 2
    processes (gloo, one thread each), plain DDP and DDP with a :class:`ShardedDeltaLog` of 10 class groups or
    100 per-sample groups, and the bytes of shares each rank sends per step against the gradient's size (what
    DDP's all-reduce moves, about 2 (W - 1) / W times that per rank in a ring). Timing only: the data is noise."""


    out: dict = {"steps": steps, "batch": batch, "runs": []}
    with tempfile.TemporaryDirectory() as tmp:
        for kind in kinds:
            for world in world_sizes:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                path = str(Path(tmp) / f"{kind}-{world}.json")
                mp.spawn(_bench_worker, args=(world, port, kind, steps, batch, path), nprocs=world, join=True)
                import json

                out["runs"].append({"kind": kind, "world": world, **json.loads(Path(path).read_text())})
    return out


def format_scaling(result: dict) -> str:
    """A Markdown table of :func:`scaling_benchmark`'s runs.

    Example:
        >>> r = {"batch": 128, "runs": [{"kind": "class", "world": 2, "groups": 10, "gradient_bytes": 400,
        ...      "plain": {"step_seconds": 0.1}, "logged": {"step_seconds": 0.2, "share_bytes_per_step": 2000}}]}
        >>> print(format_scaling(r).splitlines()[2])
        | 10 class | 2 | 0.100 | 0.200 | 2.00x | 2,000 | 5.0x |
    """
    lines = ["| groups | processes | DDP step (s) | DDP + sharded ledger (s) | ratio | shares sent per rank per "
             "step (bytes) | vs. the gradient's size |", "|---|---|---|---|---|---|---|"]
    for r in result["runs"]:
        plain, logged = r["plain"]["step_seconds"], r["logged"]["step_seconds"]
        sent = r["logged"]["share_bytes_per_step"]
        lines.append(f"| {r['groups']} {r['kind']} | {r['world']} | {plain:.3f} | {logged:.3f} | "
                     f"{logged / plain:.2f}x | {sent:,.0f} | {sent / r['gradient_bytes']:.1f}x |")
    return "\n".join(lines)
