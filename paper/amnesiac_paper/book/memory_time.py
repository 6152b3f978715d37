"""Chapter *Memory and time* (``book/memory_time.md``): the benchmark it renders, and the GPU's beside the CPU's."""

from __future__ import annotations

import json

from ..bench import bench_path, run_bench, side_by_side
from ..store import results_root
from .common import markdown_table, validate


def bench_results(profile: str = "full", *, recompute: bool = False, device: str = "auto") -> dict:
    """The benchmark output for a profile: ``results/bench/<profile>.json``, computed if missing or asked."""
    validate(profile=profile, recompute=recompute, device=device)
    path = bench_path(profile)
    if recompute:
        return run_bench(profile, device=device)
    if path.exists():
        return json.loads(path.read_text())
    # the full benchmark takes long on a CPU: without a committed one, run (and label) the small one
    smoke = results_root() / "bench" / "smoke.json"
    return json.loads(smoke.read_text()) if smoke.exists() else run_bench("smoke", device=device)


def bench_gpu_comparison(cpu: dict, profile: str = "full") -> str:
    """The CPU benchmark beside the committed CUDA one of the same profile (``results/bench/<profile>-cuda.json``),
    as a Markdown table, or a sentence saying that none is committed and how to make one."""
    path = bench_path(profile, "cuda")
    if not path.exists():
        return (f"*No GPU benchmark is committed for the `{profile}` profile, so only the CPU's figures are shown. On "
                f"a machine with CUDA, `python -m amnesiac_paper bench --profile {profile} --device cuda` writes "
                f"`results/bench/{path.name}` (or `bash tools/device_check.sh bench`), and this chapter then shows it "
                "beside the CPU's.*")
    gpu = json.loads(path.read_text())
    header, rows = side_by_side(cpu, gpu)
    prov = gpu["provenance"]
    return (f"The same benchmark on a GPU ({prov.get('device_name')}, torch {prov['torch']}, revision {prov['git']}), "
            "beside the CPU's; ratios are within one run and device:\n\n" + markdown_table(header, rows))


def traffic_table(bench: dict) -> str:
    """Each overhead row beside its traffic floor (:func:`amnesiac_paper.bench.log_traffic`): the bytes per step its
    logs must move at least, the epoch that costs at the run's measured streaming bandwidth (× plain training), the
    measured epoch (× plain) and how far above the floor it is; or why the run has no floor."""
    if "stream_bandwidth" not in bench:
        return (f"*This benchmark run (revision {bench['provenance']['git']}) predates the traffic model: recompute it "
                f"(`python -m amnesiac_paper bench --profile {bench['profile']}`, alone on the machine) for each "
                "row's floor.*")
    out = [f"The least memory traffic of each log and what it costs at this machine's streaming bandwidth "
           f"({bench['stream_bandwidth'] / 1e9:.1f} GB/s read plus written, the fastest of a copy, an in-place add, "
           f"an in-place scale and a sum over {bench.get('stream_bytes', 2**28) / 2**20:.0f} MiB):"]
    for block in bench["overhead"]:
        rows = [(k, v) for k, v in block["rows"].items() if "floor_ratio" in v]
        out.append(f"\n**{block['model']}**\n")
        out.append(markdown_table(
            ["log", "least traffic per step (MB)", "floor (× plain)", "measured (× plain)", "measured ÷ floor"],
            [[k, f"{v['traffic_bytes_per_step'] / 1e6:.1f}", f"{v['floor_ratio']:.2f}", f"{v['ratio']:.2f}",
              f"{v['ratio'] / v['floor_ratio']:.2f}"] for k, v in rows]))
    return "\n".join(out)


def flush_table(bench: dict) -> str:
    """The log's update after each step with the flush tiled and over whole rows, beside its traffic floor
    (:func:`amnesiac_paper.bench.flush_profile`); or why the run has no such row."""
    f = bench.get("flush")
    if f is None:
        return (f"*This benchmark run (revision {bench['provenance']['git']}) predates the tiled flush and its "
                f"profile: recompute it (`python -m amnesiac_paper bench --profile {bench['profile']}`, alone on the "
                "machine) to time the update against its floor.*")
    floor = f["floor_seconds_per_step"]
    rows = [["tiled over {:,} coordinates (default)".format(f["tile"]), f["tiled_seconds_per_step"]],
            ["whole rows (before)", f["whole_rows_seconds_per_step"]]]
    return (f"The log's update after each step on its own: a linear layer of {f['width']:,} parameters, Adam, "
            f"{f['groups']} class groups all present in each of {f['steps']} steps (one-step segments, as for "
            f"ResNet-18's class groups); least traffic {f['traffic_bytes_per_step'] / 1e6:.0f} MB per step, "
            f"{floor * 1e3:.1f} ms at the streaming bandwidth.\n\n"
            + markdown_table(["flush", "ms per step", "÷ floor"],
                             [[name, f"{secs * 1e3:.1f}", f"{secs / floor:.2f}"] for name, secs in rows]))
