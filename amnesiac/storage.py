"""The ledger's files: storage dtypes and the memory-mapped files a :class:`~amnesiac.DeltaLog` keeps its deltas in
(``storage=``), preallocated on disk with a free-space check, so a full disk is an error at creation and never a
SIGBUS in the middle of training.
"""

from __future__ import annotations

import errno
import os
import shutil
from collections.abc import Sequence
from pathlib import Path

import torch

STORAGE_DTYPES = {
    "float32": torch.float32,
    "float64": torch.float64,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


def storage_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """``dtype`` (a ``torch.dtype``, its name, or ``None``) as one of :data:`STORAGE_DTYPES`; others raise ValueError.

    Example:
        >>> storage_dtype("bfloat16"), storage_dtype(None)
        (torch.bfloat16, None)
    """
    if dtype is None:
        return None
    if isinstance(dtype, str):
        found = STORAGE_DTYPES.get(dtype.removeprefix("torch."))
    else:
        found = dtype if dtype in STORAGE_DTYPES.values() else None
    if found is None:
        raise ValueError(
            f"dtype {dtype!r} cannot store the deltas (an integer or boolean dtype would round every delta to 0); "
            f"use one of {', '.join(STORAGE_DTYPES)}, or None for the parameters' own dtype"
        )
    return found


def is_ledger_file(name: str) -> bool:
    """Whether a storage directory's file ``name`` holds a log's deltas or moments (``deltas.<dtype>.bin`` too)."""
    if name in ("deltas.bin", "moments.bin"):
        return True
    return name.startswith("deltas.") and name.endswith(".bin") and name[len("deltas."):-len(".bin")] in STORAGE_DTYPES


def _allocated_bytes(path: Path) -> int:
    try:
        st = path.stat()
    except FileNotFoundError:
        return 0
    return st.st_blocks * 512 if hasattr(st, "st_blocks") else st.st_size


def _no_room(path: Path, nbytes: int, free: int, *, refused: bool = False) -> OSError:
    why = (f"the file system refused to allocate them ({free} bytes reported free in {path.parent})" if refused
           else f"only {free} bytes are free in {path.parent}")
    return OSError(errno.ENOSPC, f"{path.name}: memory-mapped storage needs {nbytes} bytes ({nbytes / 2**30:.2f} GiB) "
                                 f"but {why}. Free some space or choose another storage= directory (dtype= or p= make "
                                 "a ledger smaller)", str(path))


def _fill(fd: int, nbytes: int) -> None:
    """Give the open file ``fd`` ``nbytes`` of allocated zeros: ``posix_fallocate`` where the platform and file
    system have it, else written zeros (never a sparse file, whose pages could find the disk full later)."""
    if hasattr(os, "posix_fallocate"):
        try:
            os.posix_fallocate(fd, 0, nbytes)
            return
        except OSError as err:
            if err.errno not in {errno.EINVAL, errno.ENOSYS, getattr(errno, "EOPNOTSUPP", -1),
                                 getattr(errno, "ENOTSUP", -1)}:
                raise
    zeros = bytes(min(nbytes, 64 * 2**20))
    os.lseek(fd, 0, os.SEEK_SET)
    done = 0
    while done < nbytes:
        done += os.write(fd, zeros[: nbytes - done])


def allocate_file(path: Path, nbytes: int, *, replaces: Sequence[Path] = ()) -> None:
    """Create ``path`` with ``nbytes`` of zeros allocated on disk, replacing the files ``replaces``.

    The free space (``shutil.disk_usage``, plus what the replaced files hold) is checked first and nothing is
    removed when it is short; a file system that then refuses the allocation leaves no file behind. Both raise
    ``OSError`` (``ENOSPC``) naming the bytes needed and free.
    """
    replaced = {Path(p) for p in replaces}
    free = shutil.disk_usage(path.parent).free + sum(_allocated_bytes(p) for p in replaced)
    if nbytes > free:
        raise _no_room(path, nbytes, free)
    for p in replaced:
        p.unlink(missing_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        _fill(fd, nbytes)
    except BaseException as err:
        os.close(fd)
        path.unlink(missing_ok=True)
        if isinstance(err, OSError) and err.errno == errno.ENOSPC:
            raise _no_room(path, nbytes, shutil.disk_usage(path.parent).free, refused=True) from None
        raise
    os.close(fd)
