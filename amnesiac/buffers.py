"""Reusing a large buffer once nothing else holds it.

A tensor of the parameters' size (or groups x parameters) is too large for the allocator to keep: each new one is
mapped from the OS and zeroed page by page, and for ResNet-18's logs that, at every step, measured as a large part
of their cost. Where a step's buffer is handed on (a log keeps a group's shares until its lazy segment settles) its
owner cannot know when it is free; :func:`held_only_by_caller` tells it. Reuse changes where the numbers are
written, never which: the ledger is the same bit for bit with :func:`new_memory_every_step` (tests compare them;
the benchmark times both).
"""

from __future__ import annotations

import contextlib
import sys

import torch

REUSE = True  # whether the log's step buffers are reused (see new_memory_every_step)


@contextlib.contextmanager
def new_memory_every_step():
    """Within the block, every step's buffers are new memory, as before they were reused (the benchmark's
    comparison); the setting is restored on leaving, also after an error."""
    global REUSE
    saved, REUSE = REUSE, False
    try:
        yield
    finally:
        REUSE = saved


def held_only_by_caller(t: torch.Tensor) -> bool:
    """Whether the one reference the caller passes in (an attribute, ``f(self.buf)``) is all that refers to ``t``:
    no other name for the tensor (CPython's reference count) and no view of its memory (the storage's use count).
    Then the caller may overwrite it. ``False`` where either count cannot be read.

    Example:
        >>> class Owner:
        ...     buf = torch.zeros(3)
        >>> o = Owner()
        >>> held_only_by_caller(o.buf)
        True
        >>> view = o.buf[1:]
        >>> held_only_by_caller(o.buf)
        False
    """
    try:
        storage_users = torch._C._storage_Use_Count(t.untyped_storage()._cdata)
    except (AttributeError, RuntimeError):  # not exposed by this torch version: never reuse
        return False
    # references: the caller's, this function's argument and getrefcount's; storage: t and the temporary storage
    return sys.getrefcount(t) == 3 and storage_users == 2
