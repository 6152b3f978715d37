"""The benchmark's smoke profile: every block is filled, ratios are positive, targets are judged."""

import json

import pytest
from amnesiac_paper import store
from amnesiac_paper.bench import NEW_MEMORY_ROW, TARGETS, format_bench, ledger_read_times, run_bench


@pytest.mark.slow  # the smoke benchmark: minutes on 2 CPU cores
def test_smoke_bench_writes_every_block_and_judges_the_targets(tmp_path):
    out = tmp_path / "bench.json"
    result = run_bench("smoke", device="cpu", out=out)
    assert json.loads(out.read_text())["profile"] == "smoke"
    for block in result["overhead"]:
        rows = block["rows"]
        assert rows["plain"]["ratio"] == 1.0
        assert all(r["seconds"] > 0 and r["ratio"] > 0 for r in rows.values())
        # the class ledger holds one vector per class present (several); the peak adds the step buffers
        assert rows["class groups"]["bytes"] >= 3 * block["n_params"] * 4
        assert rows["class groups"]["peak_bytes"] >= rows["class groups"]["bytes"]
        # on the CPU the default forms convolution group sums one call per group; the other kernel is timed too
        assert rows["class groups, convolution groups in one grouped call"]["bytes"] == rows["class groups"]["bytes"]
        # the same log with new memory for its step buffers at every step: the same ledger, timed beside it
        assert rows[NEW_MEMORY_ROW]["bytes"] == rows["class groups"]["bytes"]
    for block in result["latency"]:
        assert 0 < block["seconds"]["one class (in-place subtraction only)"] < block["retrain_seconds_estimate"]
    assert set(result["targets"]) == set(TARGETS)
    assert all(isinstance(t["met"], bool) for t in result["targets"].values())
    flush = result["flush"]
    assert flush["tiled_seconds_per_step"] > 0 and flush["floor_seconds_per_step"] > 0
    text = format_bench(result)
    assert "targets:" in text and "retraining (estimate)" in text and "traffic floor" in text


def test_readme_performance_tables_are_generated_from_the_committed_bench():
    import json
    from pathlib import Path

    from amnesiac_paper.bench import readme_tables

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- bench:begin -->\n", 1)[1].split("\n<!-- bench:end -->", 1)[0]
    want = readme_tables(json.loads((root / "results" / "bench" / "full.json").read_text()))
    assert block == want, "README tables differ from results/bench/full.json: regenerate with " \
                          "python -m amnesiac_paper bench --profile full --tables"

    result = json.loads((root / "results" / "bench" / "full.json").read_text())
    del result["overhead"][1]["rows"]["1% samples"]  # a row the README names and every run writes: an error
    with pytest.raises(KeyError, match="no overhead row '1% samples'.*python -m amnesiac_paper bench --profile full"):
        readme_tables(result)


def test_readme_scaleout_tables_are_generated_from_the_committed_results():
    from pathlib import Path

    from amnesiac_paper.bench import readme_scaleout_tables

    root = Path(__file__).resolve().parents[2]
    readme = (root / "README.md").read_text()
    block = readme.split("<!-- scaleout:begin -->\n", 1)[1].split("\n<!-- scaleout:end -->", 1)[0]
    assert block == readme_scaleout_tables(root / "results" / "bench"), \
        "README scale-out tables differ from results/bench: regenerate with python -m amnesiac_paper bench --tables"


def test_targets_are_judged_against_the_device_the_run_was_on():
    import json
    from pathlib import Path

    from amnesiac_paper.bench import GPU_TARGETS, targets

    result = json.loads((Path(__file__).resolve().parents[2] / "results" / "bench" / "full.json").read_text())
    cpu = targets(result)
    ratio = result["overhead"][0]["rows"]["class groups"]["ratio"]
    assert cpu["class-group log, SimpleModel (x plain)"] == {"value": ratio, "target": "<= 1.3",
                                                             "met": ratio <= 1.3}
    floor = result["overhead"][1]["rows"]["class groups"].get("floor_ratio")
    judged = cpu["class-group log, ResNet-18-GN (x its traffic floor)"]
    if floor is None:  # a run from before the traffic model: not measured, not judged
        assert judged == {"value": None, "target": "<= 1.5", "met": None}
    else:
        resnet = result["overhead"][1]["rows"]["class groups"]["ratio"]
        assert judged == {"value": resnet / floor, "target": "<= 1.5", "met": resnet / floor <= 1.5}
    result["provenance"]["device"] = "cuda:0"
    gpu = targets(result)
    assert set(gpu) == set(GPU_TARGETS) and gpu["class-group log, SimpleModel (x plain)"]["target"] == "<= 1.5"
    resnet = result["overhead"][1]["rows"]["class groups"]["ratio"]
    assert gpu["class-group log, ResNet-18-GN (x plain)"] == {"value": resnet, "target": "<= 1.5",
                                                              "met": resnet <= 1.5}


def test_a_gpu_benchmark_has_its_own_file_and_the_book_shows_it_beside_the_cpus(tmp_path, monkeypatch):
    import copy
    import json
    from pathlib import Path

    from amnesiac_paper import bench
    from amnesiac_paper.book import memory_time

    assert bench.bench_path("full").name == "full.json" and bench.bench_path("smoke", "cuda").name == "smoke-cuda.json"
    cpu = json.loads((Path(__file__).resolve().parents[2] / "results" / "bench" / "full.json").read_text())
    monkeypatch.setattr(store, "RESULTS_ROOT", tmp_path)
    assert "No GPU benchmark is committed" in memory_time.bench_gpu_comparison(cpu)
    gpu = copy.deepcopy(cpu)
    gpu["provenance"].update(device="cuda:0", device_name="NVIDIA H200")
    gpu["overhead"][0]["rows"]["class groups"]["ratio"] = 3.65
    bench.bench_path("full", "cuda").parent.mkdir(parents=True)
    bench.bench_path("full", "cuda").write_text(json.dumps(gpu))
    text = memory_time.bench_gpu_comparison(cpu)
    assert "The same benchmark on a GPU (NVIDIA H200" in text
    simple_class = cpu["overhead"][0]["rows"]["class groups"]["ratio"]
    assert f"| simple: class groups (× plain) | {simple_class:.2f}× | 3.65× |" in text
    # each device's targets are judged on its own run: 3.65 misses the GPU's 1.5
    assert "| GPU target: class-group log, SimpleModel (x plain) <= 1.5 |  | 3.65 (not met) |" in text
    assert "CPU target: class-group log, SimpleModel (x plain) <= 1.3" in text


def test_ledger_read_times_on_a_small_memory_mapped_ledger(tmp_path):
    out = ledger_read_times(tmp_path / "l", model="simple", n_samples=20, dtype="float16", reads=(1, 5), repeats=2)
    assert out["file_bytes"] == 20 * out["n_params"] * 2  # float16 rows, nothing else left on disk
    assert set(out["reads"]) == {"1", "5"} and out["reads"]["5"]["warm_median_seconds"] > 0


def test_the_traffic_floor_counts_present_groups_times_width_times_passes():
    """A log's least traffic per step: each step's present groups × its width × 4 bytes × the passes a group
    needs (6 once Adam's moments are kept: share written and read, delta and moment read and written; 4 without);
    a per-batch store writes what it holds once. Priced at a measured, positive streaming bandwidth."""
    import torch
    from amnesiac_paper.bench import PASSES_STATELESS, PASSES_WITH_MOMENT, log_traffic, stream_bandwidth

    from amnesiac.batchlog import BatchLog
    from amnesiac.data import ArrayDataset, groups_by_class, groups_per_sample
    from amnesiac.deltalog import DeltaLog
    from amnesiac.training import train

    gen = torch.Generator().manual_seed(0)
    data = ArrayDataset(torch.randn(40, 5, generator=gen), torch.arange(40) % 4, torch.arange(40))
    batches = [ids for _, _, ids in data.loader(8, seed=0)]
    present = [len(set((i % 4).tolist())) for i in batches]  # class groups present in each batch
    model = torch.nn.Linear(5, 4)
    P = sum(q.numel() for q in model.parameters())
    log = DeltaLog(model, groups_by_class(data))
    assert log_traffic([log], batches) == sum(present) * P * 4 * PASSES_STATELESS / len(batches)
    train(model, data.loader(8, seed=0), torch.optim.Adam(model.parameters()), epochs=1, delta_log=log,
          progress=False)
    assert log.moments is not None
    assert log_traffic([log], batches) == sum(present) * P * 4 * PASSES_WITH_MOMENT / len(batches)
    store = BatchLog(torch.nn.Linear(5, 4), groups_per_sample([0, 1]))
    assert log_traffic([store], batches) == store.nbytes / len(batches)
    assert stream_bandwidth("cpu", nbytes=2**20, repeats=3) > 0


def test_the_flush_profile_times_both_tilings_of_one_log_beside_its_floor():
    """The update's profile trains the same log twice per repeat, tiled and over whole rows, and prices the
    step's least traffic at the given bandwidth; the tile setting is restored afterwards."""
    from amnesiac_paper.bench import WHOLE_ROWS, flush_profile, flush_tile

    from amnesiac import segments

    before = segments.FLUSH_TILE
    out = flush_profile("cpu", 2.0e9, width=100 * 100, groups=3, steps=2, repeats=1)
    assert segments.FLUSH_TILE == before and out["tile"] == before
    assert out["width"] == 10_000 and out["steps"] == 2
    assert out["traffic_bytes_per_step"] == 3 * 10_000 * 4 * 6  # every group in each batch, with Adam's moments
    assert out["floor_seconds_per_step"] == out["traffic_bytes_per_step"] / 2.0e9
    assert out["tiled_seconds_per_step"] > 0 and out["whole_rows_seconds_per_step"] > 0
    with pytest.raises(RuntimeError), flush_tile(WHOLE_ROWS):  # restored after an error too
        assert segments.FLUSH_TILE == WHOLE_ROWS
        raise RuntimeError
    assert segments.FLUSH_TILE == before
