"""The DistributedDataParallel example and benchmark: `torchrun --nproc_per_node 2 examples/ddp_ledger.py` runs
(as the README shows it, on MNIST-format stand-in data), and the committed 1- vs 2-process benchmark is from a
clean revision and formats."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from amnesiac_paper.ddp_bench import format_scaling
from helpers import free_port, write_fake_mnist


@pytest.mark.slow  # torchrun: two processes training
def test_the_readmes_torchrun_example_runs(tmp_path):
    """`torchrun --nproc_per_node 2 examples/ddp_ledger.py` (as the README shows it), on MNIST-format fake data."""
    root = Path(__file__).resolve().parents[2]
    write_fake_mnist(tmp_path / "data", n_train=400, n_test=100)
    env = {**os.environ, "AMNESIAC_DATA": str(tmp_path / "data"), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(root / "examples" / "ddp_ledger.py"), "--subset", "1.0", "--batch", "64"]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "2 process(es); process 0 keeps ['class0', 'class2', 'class4', 'class6', 'class8']" in proc.stdout
    assert "class 3: test accuracy" in proc.stdout and "; rest " in proc.stdout and "(alpha 0.03)" in proc.stdout


def test_the_committed_ddp_benchmark_is_from_a_clean_revision_and_formats():
    path = Path(__file__).resolve().parents[2] / "results" / "bench" / "ddp.json"
    if not path.exists():
        pytest.skip("no committed DDP benchmark")
    result = json.loads(path.read_text())
    assert not result["provenance"]["git"].endswith("+dirty")
    assert {(r["kind"], r["world"]) for r in result["runs"]} == {("class", 1), ("class", 2), ("samples", 1),
                                                                 ("samples", 2)}
    for r in result["runs"]:  # one process sends nothing; two send each share once, never the whole matrix
        sent = r["logged"]["share_bytes_per_step"]
        assert (sent == 0) if r["world"] == 1 else (0 < sent < r["groups"] * r["gradient_bytes"])
    assert format_scaling(result).count("\n") == len(result["runs"]) + 1
