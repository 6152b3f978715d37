"""Which code path torch's MKL took is recorded with every result, and tools/intel_mkl_path.sh moves MKL onto its
Intel path (how a result computed on an Intel Xeon is reproduced bit for bit on an AMD CPU)."""

import platform
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from amnesiac_paper import originals, store

ROOT = Path(__file__).resolve().parents[2]
PROBE = ("import hashlib, torch; from amnesiac_paper.store import mkl_code_path, short_mkl_path; "
         "torch.manual_seed(0); torch.set_num_threads(1); a, b = torch.randn(256, 784), torch.randn(784, 300); "
         "print(short_mkl_path(mkl_code_path()), hashlib.sha1((a @ b).numpy().tobytes()).hexdigest())")


def probe(*wrapper: str) -> tuple[str, str]:
    out = subprocess.run([*wrapper, sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=120,
                         check=True).stdout.split()
    return out[0], out[1]


def test_every_result_records_mkls_code_path():
    prov = store.provenance(torch.device("cpu"), semantics=1)
    assert prov["mkl_path"] == store.mkl_code_path()
    if torch.backends.mkl.is_available():
        assert prov["mkl_path"] and "Intel(R)" in prov["mkl_path"]


def test_the_kind_of_cpu_names_mkls_path_where_recorded():
    old = {"provenance": {"cpu": "AMD EPYC", "cpu_capability": "AVX512"}}
    new = {"provenance": {**old["provenance"], "mkl_path": "Intel(R) Architecture processors"}}
    assert originals.cpu_kind(old) == "AMD EPYC (AVX512)"
    assert originals.cpu_kind(new) == "AMD EPYC (AVX512, MKL generic)"
    assert originals.cpus_differ([originals.cpu_kind(old)], [originals.cpu_kind(new)])


@pytest.mark.skipif(platform.machine() not in ("x86_64", "AMD64") or not torch.backends.mkl.is_available()
                    or shutil.which("cc") is None, reason="needs an x86 CPU, torch with MKL and a C compiler")
def test_the_shim_puts_mkl_on_its_intel_path(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    plain_path, plain = probe()
    shim_path, shimmed = probe(str(ROOT / "tools" / "intel_mkl_path.sh"))
    assert (tmp_path / "amnesiac" / "libintel_mkl_path.so").is_file()
    assert shim_path != "generic", "under the shim MKL names the instruction set of its Intel path"
    if plain_path == "generic":  # a CPU of another vendor: the shim changed the kernels, and so the rounding
        assert shimmed != plain
    else:  # an Intel CPU: MKL was on its Intel path already
        assert (shim_path, shimmed) == (plain_path, plain)


def test_the_shim_says_how_to_use_it():
    run = subprocess.run([str(ROOT / "tools" / "intel_mkl_path.sh")], capture_output=True, text=True, timeout=60)
    assert run.returncode == 2 and "usage: tools/intel_mkl_path.sh COMMAND" in run.stderr
