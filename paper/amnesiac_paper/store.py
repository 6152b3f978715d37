"""The study store every study of the paper shares: where results live, the named profiles, config hashes,
cached pieces, provenance and atomic writes.

A study is a frozen config whose content hash (with the study's own semantics version) names its folder under
``results/``; the study computes *pieces* (one JSON file each: a seed, a method, a forget set) and caches each as it
finishes, so an interrupted run resumes at its last finished piece. Every piece is stamped with its provenance
(versions, device, git revision, date and the study's semantics version).

Example:
    >>> import tempfile
    >>> cache = PieceCache(Path(tempfile.mkdtemp()), stamp={"seed": 0})
    >>> cache.piece("a", lambda: {"x": 1})["x"], cache.piece("a", lambda: {"x": 2})["x"]  # the second is loaded
    (1, 1)
    >>> config_hash({"lr": 0.1}, semantics=1) == config_hash({"lr": 0.1}, semantics=2)
    False
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import json
import os
import platform
import re
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import torch

from amnesiac.ledger import atomic_torch_save

RESULTS_ROOT = Path(__file__).resolve().parents[2] / "results"  # the repository root holds results/
PROFILES = ("smoke", "full")  # smoke: minutes on a CPU; full: the scale the book reports


def results_root() -> Path:
    """Where results live: :data:`RESULTS_ROOT`, read at each call (a test points it elsewhere by setting
    ``store.RESULTS_ROOT``; every study, the benchmark and the command line read it through here)."""
    return RESULTS_ROOT


def check_profile(profile: str) -> None:
    """Refuse a profile name that is not one of :data:`PROFILES`, listing them."""
    if profile not in PROFILES:
        raise ValueError(f"unknown profile {profile!r}; valid profiles: {', '.join(PROFILES)}")


def config_hash(config: dict, *, semantics: int, **extra) -> str:
    """The 12-hex-digit content hash of a study's config and its semantics version (plus ``extra`` entries, e.g.
    the hash of the study it builds on); it names the study's folder, so a changed config is computed apart."""
    blob = json.dumps({"config": config, **extra, "semantics": semantics}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def atomic_write_json(path: Path, obj) -> None:
    """Write ``obj`` as JSON to ``path`` atomically (a temporary beside it, flushed, then renamed onto it)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; results are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def cached_json(path: Path, make: Callable[[], dict]) -> dict:
    """The JSON record at ``path``, or ``make()``'s, written there atomically first."""
    if path.exists():
        return json.loads(path.read_text())
    record = make()
    atomic_write_json(path, record)
    return record


def cached_tensors(path: Path, make: Callable[[], dict]) -> dict:
    """A cached tensor dict (weights, deltas) loaded from ``path``, or made, saved atomically and returned."""
    if path.exists():
        return torch.load(path, weights_only=True)
    value = make()
    atomic_torch_save(path, value)
    return value


class PieceCache:
    """A study's finished pieces in one folder: :meth:`piece` loads ``<name>.json`` if it is there, else makes it,
    stamps it (``wall_seconds`` and ``stamp``: provenance, optimizer, seed, ...), writes it atomically and keeps it
    in :attr:`records`."""

    def __init__(self, folder: Path, stamp: dict):
        self.folder = Path(folder)
        self.stamp = stamp
        self.records: dict[str, dict] = {}

    def piece(self, name: str, make: Callable[[], dict]) -> dict:
        def stamped():
            start = time.perf_counter()
            record = make()
            record.update(wall_seconds=time.perf_counter() - start, **self.stamp)
            return record

        self.records[name] = cached_json(self.folder / f"{name}.json", stamped)
        return self.records[name]


def restrict(study, *, seeds: Sequence[int] | None = None, optimizers: Sequence[str] | None = None,
             valid_optimizers: Sequence[str] = ()):
    """A frozen study config with ``seeds`` and/or ``optimizers`` in place of its profile's, checked first.

    Raises:
        ValueError: an empty or negative seed list, or an optimizer not in ``valid_optimizers`` (listed).

    Example:
        >>> @dataclasses.dataclass(frozen=True)
        ... class S:
        ...     seeds: tuple = (0,)
        >>> restrict(S(), seeds=[1, 2]).seeds
        (1, 2)
    """
    if seeds is not None:
        seeds = tuple(int(s) for s in seeds)
        if not seeds or any(s < 0 for s in seeds):
            raise ValueError(f"seeds must be a non-empty list of non-negative integers, got {seeds}")
        study = dataclasses.replace(study, seeds=seeds)
    if optimizers is not None:
        bad = [o for o in optimizers if o not in valid_optimizers]
        if bad or not optimizers:
            raise ValueError(f"unknown optimizer(s) {bad}; valid: {', '.join(valid_optimizers)}")
        study = dataclasses.replace(study, optimizers=tuple(optimizers))
    return study


def read_pieces(folder: Path) -> dict[str, dict]:
    """Every finished piece of a study folder (its ``*.json`` files but ``config.json``) by name; ``{}`` when the
    folder is absent. The studies cache one JSON file per finished piece and load whatever is on disk with this.

    Example:
        >>> read_pieces(Path("no-such-folder"))
        {}
    """
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json")) if p.stem != "config"}


def run_combos(study, run_combo, config: dict, *, results_root: Path | None = None, **kwargs) -> tuple[Path, dict]:
    """Write ``config`` as the study folder's ``config.json``, then run (or load) ``run_combo(study, optimizer, seed,
    results_root=..., **kwargs)`` one (optimizer, seed) at a time, every optimizer of a seed first; returns the
    folder and (optimizer, seed) -> what ``run_combo`` returned."""
    folder = study.folder(results_root)
    atomic_write_json(folder / "config.json", config)
    records = {}
    for seed in study.seeds:
        for opt in study.optimizers:
            records[(opt, seed)] = run_combo(study, opt, seed, results_root=results_root, **kwargs)
    return folder, records


def read_combos(folder: Path, combos) -> dict:
    """:func:`read_pieces` of each combo's subfolder, ``combos`` mapping a key to its path below ``folder``; combos
    with no piece yet are left out."""
    return {key: pieces for key, sub in combos.items() if (pieces := read_pieces(folder / sub))}


def cpu_model() -> str:
    """The CPU's model name (float results on the CPU depend on its instruction set, so replays and originals
    must come from the same kind of machine)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.machine() or "unknown"


@functools.cache
def mkl_code_path() -> str | None:
    """The code path Intel's MKL (torch's BLAS on x86) chose on this machine, as MKL names it (e.g. ``"Intel(R)
    Advanced Vector Extensions 512 (Intel(R) AVX-512) ..."``, or ``"Intel(R) Architecture processors"`` for its
    generic path), or None where torch has no MKL.

    MKL picks its kernels by the CPU's vendor as well as its instructions: on an AMD CPU with AVX-512 it takes its
    generic path, so a float32 matrix product, and every model trained from it, rounds differently than on an
    Intel CPU with the same instructions (``tools/intel_mkl_path.sh`` runs a command on MKL's Intel path).
    """
    if not torch.backends.mkl.is_available():
        return None
    try:  # torch links MKL into its CPU library (libtorch_cpu.so, .dylib; torch_cpu.dll)
        lib = ctypes.CDLL(str(next((Path(torch.__file__).parent / "lib").glob("*torch_cpu.*"))))
        get = lib.mkl_serv_get_version
    except (StopIteration, OSError, AttributeError):
        return None

    class MKLVersion(ctypes.Structure):  # MKLVersion of mkl_types.h
        _fields_ = [("major", ctypes.c_int), ("minor", ctypes.c_int), ("update", ctypes.c_int),
                    ("patch", ctypes.c_int), ("product_status", ctypes.c_char_p), ("build", ctypes.c_char_p),
                    ("processor", ctypes.c_char_p), ("platform", ctypes.c_char_p)]

    version = MKLVersion()
    get(ctypes.byref(version))
    return version.processor.decode() if version.processor else None


def short_mkl_path(path: str | None) -> str:
    """MKL's code path in a word: the instruction set it names (``"AVX-512"``, ``"AVX2"``), ``"generic"`` for
    its path for any x86 CPU, or ``"?"`` where not recorded.

    Example:
        >>> short_mkl_path("Intel(R) Advanced Vector Extensions 512 (Intel(R) AVX-512) with support of Intel(R) "
        ...                "Deep Learning Boost (Intel(R) DL Boost) and bfloat16")
        'AVX-512'
        >>> short_mkl_path("Intel(R) Architecture processors"), short_mkl_path(None)
        ('generic', '?')
    """
    if not path:
        return "?"
    named = re.search(r"\(Intel\(R\) ([^()]+)\)", path)
    return named.group(1) if named else "generic"


def provenance(device: torch.device, *, semantics: int) -> dict:
    """Versions, device, git revision and date, and the semantics version of the study that computed the result,
    written beside every result."""
    here = Path(__file__).parent
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=here, text=True,
                             capture_output=True, timeout=10).stdout.strip() or "unknown"
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=here,
                               text=True, capture_output=True, timeout=10).stdout.strip()
        rev += "+dirty" if dirty else ""
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    dev_name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    return {"python": platform.python_version(), "torch": torch.__version__, "device": str(device),
            "device_name": dev_name, "threads": torch.get_num_threads(), "git": rev, "cpu": cpu_model(),
            "cpu_capability": torch.backends.cpu.get_cpu_capability(), "mkl_path": mkl_code_path(),
            "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "semantics": semantics}
