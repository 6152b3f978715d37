"""The ledger protocol: what every log shares (its group table and its read-out), whatever it stores.

A *ledger* records, during training, something per group from which a group's contribution can later be
subtracted: :class:`~amnesiac.DeltaLog` keeps each group's exact share of every update, and
:class:`~amnesiac.BatchLog` keeps the parameter changes of the steps whose batch held the group. Both are
driven the same way (:class:`~amnesiac.AttributedOptimizer` calls ``begin_step`` after the backward pass and
``end_step`` after the optimizer's step) and read out the same way (``delta_vector(groups)``, a flat vector
in the model's :class:`~amnesiac.ParamLayout`, which unlearning subtracts).

A ledger is kept on disk with :func:`save_ledger` (written atomically, with a checksum that :func:`load_ledger`
checks) and identified by :func:`ledger_fingerprint` (a SHA-256 of everything it holds), which binds a
:class:`~amnesiac.RequestRecord` to the one ledger its requests are served from.
"""

from __future__ import annotations

import ctypes
import hashlib
import io
import os
import re
import shutil
import stat
import tempfile
from abc import ABC, abstractmethod
from collections.abc import Hashable, Iterable, Mapping, Sequence
from pathlib import Path

import torch
from torch import nn
from torch.optim import Optimizer

from .data import normalise_groups
from .grads import ParamLayout


def tensor_bytes(t: torch.Tensor) -> bytes:
    """The exact bytes of a tensor's values (C order, on the CPU), without NumPy (the library needs torch alone).

    Example:
        >>> tensor_bytes(torch.tensor([1, 2], dtype=torch.uint8))
        b'\\x01\\x02'
    """
    flat = t.detach().reshape(-1).cpu().contiguous()
    if flat.numel() == 0:
        return b""
    if flat.dtype != torch.uint8:
        flat = flat.view(torch.uint8)
    # ctypes copies the contiguous CPU buffer in one call (bytes(storage) would walk it element by element in
    # Python: seconds for a model of a few hundred thousand parameters)
    return ctypes.string_at(flat.data_ptr(), flat.numel())


def require_keys(state: Mapping, required: Mapping, kind: str, *, _path: tuple = ()) -> None:
    """Raise ``ValueError`` naming the first key of ``required`` that ``state`` lacks (``required``: key -> the
    keys required inside its value, or ``None``): a state saved by an older or other version of amnesiac."""
    for k, inner in required.items():
        path = (*_path, k)
        if not isinstance(state, Mapping) or k not in state:
            raise ValueError(
                f"this {kind} state was saved by an older or other version of amnesiac (or is not a {kind} state): "
                f"it has no {'/'.join(path)!r}. Load it with the version that wrote it, or record the ledger again"
            )
        if inner:
            require_keys(state[k], inner, kind, _path=path)


def check_layout(saved: Mapping, layout: ParamLayout) -> None:
    """Raise ``ValueError`` naming the first parameter where a saved log's layout (``{"names", "shapes"}``)
    differs from ``layout``: its count, a name, or a shape (saved vs this model's)."""
    names, shapes = list(saved["names"]), [tuple(s) for s in saved["shapes"]]
    where = next((f"parameter {i} is {a!r} in the saved log but {b!r} in this model"
                  for i, (a, b) in enumerate(zip(names, layout.names)) if a != b), None)
    if len(names) != len(layout.names):
        where = (f"the saved log has {len(names)} parameter tensors, this model {len(layout.names)}"
                 + (f" ({where})" if where else ""))
    elif where is None:
        where = next((f"parameter {n!r} has shape {list(a)} in the saved log but {list(b)} in this model"
                      for n, a, b in zip(names, shapes, layout.shapes) if a != tuple(b)), None)
    if where is not None:
        raise ValueError(f"the saved log was recorded on another model layout: {where}. Build the log on the "
                         "architecture it was recorded on")


class GroupTable:
    """Group names and the sample id -> group lookup of a ledger (built once, shared by every log kind).

    Example:
        >>> t = GroupTable({"a": [0, 2], "b": [5]})
        >>> t.owners(torch.tensor([2, 3, 5, 99])).tolist()
        [0, -1, 1, -1]
    """

    def __init__(self, groups: Mapping[Hashable, Sequence[int] | torch.Tensor]):
        names, ids, owner = normalise_groups(groups)
        self.names: list = names
        self.index = {n: g for g, n in enumerate(names)}
        self.group_of = torch.full((int(ids.max()) + 1,), -1, dtype=torch.long)  # sample id -> group row
        self.group_of[ids] = owner
        self.sizes = torch.bincount(owner, minlength=len(names))

    def __len__(self) -> int:
        return len(self.names)

    def owners(self, sample_ids: torch.Tensor) -> torch.Tensor:
        """The group row of each sample id (-1: in no group), on the CPU."""
        ids = torch.as_tensor(sample_ids).reshape(-1).to(torch.long).cpu()
        owner = torch.full((len(ids),), -1, dtype=torch.long)
        inside = (ids >= 0) & (ids < len(self.group_of))
        owner[inside] = self.group_of[ids[inside]]
        return owner

    def rows(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """Rows of these group names, in the order given; an unknown name raises KeyError listing the groups."""
        groups = list(groups)
        bad = [g for g in groups if g not in self.index]
        if bad:
            some = ", ".join(map(repr, self.names[:8]))
            raise KeyError(
                f"unknown group(s) {bad[:5]}; this log tracks {len(self.names)} groups "
                f"({some}{', ...' if len(self.names) > 8 else ''})"
            )
        return torch.tensor([self.index[g] for g in groups], dtype=torch.long)

    def groups_of_samples(self, sample_ids: Sequence[int] | torch.Tensor) -> list:
        """The groups holding these samples; a sample in no group raises KeyError."""
        ids = torch.as_tensor(sample_ids, dtype=torch.long).reshape(-1)
        owner = self.owners(ids)
        if bool((owner < 0).any()):
            raise KeyError(
                f"samples {ids[owner < 0][:10].tolist()} were not tracked by this log; "
                "record a log whose groups include them (they are in its remainder)"
            )
        return [self.names[g] for g in torch.unique(owner).tolist()]

    @property
    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in (self.group_of, self.sizes))


class Ledger(ABC):
    """Base of every log: the group table, the training hooks and the read-out.

    Subclasses set :attr:`layout` and :attr:`table` and implement the hooks and :meth:`delta_vector`.
    """

    layout: ParamLayout
    table: GroupTable

    # ------------------------------------------------------------------------------ training hooks

    @property
    @abstractmethod
    def needs_per_sample_grads(self) -> bool:
        """Whether the log needs each group's share of the batch gradient at every step."""

    @abstractmethod
    def begin_step(self, model: nn.Module, sample_ids: torch.Tensor) -> torch.Tensor:
        """After the backward pass: note this batch; returns the batch positions it needs gradients for."""

    def accumulate(self, rows: torch.Tensor, grads: torch.Tensor) -> None:  # noqa: B027 - optional hook
        """Per-sample gradients of batch positions ``rows`` (only logs that need them override this)."""

    def set_grad_scale(self, scale: float) -> None:  # noqa: B027 - optional hook
        """This step's gradients were multiplied by ``scale`` after backward (clipping); logs of gradient
        shares scale them alike, logs of parameter changes need nothing."""

    @abstractmethod
    def end_step(self, optimizer: Optimizer | None) -> None:
        """After the optimizer's step: fold this step in."""

    # ------------------------------------------------------------------------------------- read-out

    @abstractmethod
    def delta_vector(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """What forgetting these groups subtracts, as one flat [P] vector (layout: :attr:`layout`)."""

    @property
    @abstractmethod
    def nbytes(self) -> int:
        """Bytes held by the log's tensors."""

    @abstractmethod
    def state_dict(self) -> dict:
        """Everything needed to resume training with this log (see :func:`save_ledger`)."""

    @abstractmethod
    def load_state_dict(self, state: dict) -> Ledger:
        """Restore :meth:`state_dict` into a log built the same way."""

    def delta(self, groups: Iterable[Hashable]) -> dict[str, torch.Tensor]:
        """:meth:`delta_vector` as name -> tensor shaped like the parameter."""
        return self.layout.unflatten(self.delta_vector(groups))

    @property
    def group_names(self) -> list:
        return self.table.names

    def rows_of(self, groups: Iterable[Hashable]) -> torch.Tensor:
        """Rows of these groups (KeyError for an unknown name, listing the groups)."""
        return self.table.rows(groups)

    def groups_of_samples(self, sample_ids: Sequence[int] | torch.Tensor) -> list:
        """The groups holding these samples; a sample the log did not track raises KeyError."""
        return self.table.groups_of_samples(sample_ids)


LEDGER_FORMAT = "amnesiac-ledger-1"

# Entries of a log's state that say how it was held or timed, not what it holds: left out of its fingerprint.
_NOT_IDENTITY = frozenset({"optimizer_attached", "masks_cached", "peak_bytes", "hvp_seconds", "lazy_steps"})
_HASH_CHUNK = 64 * 2**20  # bytes of a tensor hashed at a time (a memory-mapped ledger is read, never copied whole)


def _hash_state(h, obj) -> None:
    """Feed ``obj`` (nested dicts, lists and tuples of tensors, numbers, strings, dtypes) to ``h``, each value
    tagged with its type, so that different states never give the same stream of bytes."""
    if torch.is_tensor(obj):
        t = obj.detach()
        h.update(f"T{t.dtype}{tuple(t.shape)}:".encode())
        flat = t.reshape(-1)
        step = max(1, _HASH_CHUNK // max(1, t.element_size()))
        for a in range(0, flat.numel(), step):
            part = flat[a: a + step].cpu().contiguous()
            h.update(tensor_bytes(part))
    elif isinstance(obj, Mapping):
        items = sorted(((repr(k), v) for k, v in obj.items() if k not in _NOT_IDENTITY), key=lambda kv: kv[0])
        h.update(f"D{len(items)}:".encode())
        for k, v in items:
            h.update(f"{len(k)}:{k}".encode())
            _hash_state(h, v)
    elif isinstance(obj, (list, tuple)):
        h.update(f"{'L' if isinstance(obj, list) else 'U'}{len(obj)}:".encode())
        for v in obj:
            _hash_state(h, v)
    elif obj is None or isinstance(obj, (bool, int, float, str, bytes, torch.dtype, torch.device)):
        text = repr(obj)
        h.update(f"{type(obj).__name__}{len(text)}:{text}".encode())
    else:
        raise TypeError(f"cannot fingerprint a {type(obj).__name__} in a ledger's state (only tensors, numbers, "
                        "strings, dtypes and dicts, lists and tuples of them)")


def ledger_fingerprint(log: Ledger) -> str:
    """SHA-256 of what identifies a ledger: its kind, model layout (names, shapes), group names, steps and
    everything in its :meth:`~Ledger.state_dict` (tensors by dtype, shape and exact bytes). The same ledger saved
    and loaded again has the same fingerprint; another run's ledger, even with the same groups, another one.

    A pending lazy segment of a :class:`~amnesiac.DeltaLog` is settled first (as reading the log out does), so
    the fingerprint is the same before and after a read-out. :meth:`~amnesiac.DeltaLog.finalize` changes the
    stored bytes, so it changes the fingerprint. Entries saying how the log was held or timed (whether an
    optimizer is attached, whether masks are cached, peak bytes, seconds spent) are left out.

    Cost: every byte of the ledger is hashed (about a second per GB); a memory-mapped ledger is read through in
    chunks, never copied whole into memory, but one much larger than memory is read from disk each time.

    Raises:
        RuntimeError: the log is between ``begin_step`` and ``end_step`` (fingerprint it after the step).

    Example:
        >>> from amnesiac import DeltaLog
        >>> torch.manual_seed(0); log = DeltaLog(nn.Linear(2, 2), {"a": [0]})  # doctest: +ELLIPSIS
        <...>
        >>> fp = ledger_fingerprint(log); len(fp), fp == ledger_fingerprint(log)
        (64, True)
    """
    state = log.state_dict()  # refuses a log in the middle of a step
    if isinstance(state, Mapping) and state.get("segment") is not None:  # a DeltaLog's lazy segment
        log.delta_vector([])  # a read-out (of no group) settles its buffered steps, as every read-out does
        state = log.state_dict()
    h = hashlib.sha256()
    layout = getattr(log, "layout", None)
    _hash_state(h, {
        "kind": type(log).__name__,
        "layout": None if layout is None else {"names": list(layout.names), "shapes": [list(x) for x in layout.shapes]},
        "groups": list(log.group_names),
        "steps": getattr(log, "steps", None),
        "state": state,
    })
    return h.hexdigest()


def save_ledger(path: str | Path, log: Ledger) -> Path:
    """Write ``log.state_dict()`` to ``path`` atomically (see :func:`atomic_torch_save`) with a SHA-256 of its
    bytes, so :func:`load_ledger` can tell a truncated or corrupted file from a good one.

    Example:
        >>> import tempfile, pathlib
        >>> from amnesiac import DeltaLog
        >>> log = DeltaLog(nn.Linear(2, 2), {"a": [0]})
        >>> p = save_ledger(pathlib.Path(tempfile.mkdtemp()) / "log.pt", log)
        >>> load_ledger(p, DeltaLog(nn.Linear(2, 2), {"a": [0]})).steps
        0
    """
    buf = io.BytesIO()
    torch.save(log.state_dict(), buf)
    payload = buf.getvalue()
    record = {"format": LEDGER_FORMAT, "sha256": hashlib.sha256(payload).hexdigest(),
              "payload": torch.frombuffer(bytearray(payload), dtype=torch.uint8)}
    return atomic_torch_save(path, record)


def _temporary_pattern(path: Path) -> re.Pattern:
    """The names of the temporaries :func:`atomic_torch_save` makes beside ``path``: ``.{name}.XXXXXXXX.tmp``
    (eight characters of :func:`tempfile.mkstemp`'s alphabet), and nothing else: not another file's
    temporaries (``.{name}.head.XXXXXXXX.tmp`` is the temporary of ``{name}.head``)."""
    return re.compile(re.escape(f".{path.name}.") + r"[a-z0-9_]{8}" + re.escape(".tmp"))


def _remove_stale_temporaries(path: Path) -> None:
    """Remove the temporaries an earlier save of ``path`` left when it was killed mid-write (each may be as
    large as the file); only plain files named by :func:`_temporary_pattern`."""
    pattern = _temporary_pattern(path)
    try:
        names = os.listdir(path.parent)
    except OSError:
        return
    for name in names:
        if pattern.fullmatch(name):
            stale = path.parent / name
            try:
                if stat.S_ISREG(stale.lstat().st_mode):
                    stale.unlink()
            except OSError:  # gone already, or not ours to remove: the save goes on
                pass


def fsync_directory(folder: str | Path) -> None:
    """Flush a directory's entries (a file just created or renamed in it) to disk, where the platform allows it
    (Windows cannot open a directory: there it does nothing)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:  # some file systems refuse fsync on a directory
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` as :func:`atomic_torch_save` writes: a temporary beside it, flushed to disk,
    renamed onto ``path``, the directory flushed; ``path`` holds the old bytes or the new ones, never half.

    Example:
        >>> import tempfile, pathlib
        >>> p = atomic_write_bytes(pathlib.Path(tempfile.mkdtemp()) / "head", b"{}")
        >>> p.read_bytes()
        b'{}'
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        fsync_directory(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_torch_save(path: str | Path, obj) -> Path:
    """``torch.save(obj)`` to a temporary file beside ``path``, then renamed onto it: ``path`` holds the old file or
    the whole new one, never half of it.

    The temporary is flushed to disk (``fsync``) before the rename and the directory after it, so a power cut
    leaves the old file or the new one. Temporaries an earlier save of ``path`` left when it was killed are
    removed first (only ``.{name}.XXXXXXXX.tmp`` beside ``path``). Two saves of the same ``path`` at once are not
    supported: the later rename wins, or one of them fails because the other removed its temporary.

    Raises:
        OSError: writing the temporary failed (a full disk, typically: torch reports it as a ``RuntimeError``
            "file write failed"); the temporary is removed and the old file at ``path`` is left as it was.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    try:
        try:
            torch.save(obj, tmp)
            fd = os.open(tmp, os.O_RDWR)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        except (RuntimeError, OSError) as err:
            Path(tmp).unlink(missing_ok=True)
            try:
                free = f"{shutil.disk_usage(path.parent).free:,} bytes are free there"
            except OSError:
                free = "its free space could not be read"
            before = (f"the old file at {path} is intact" if path.exists() else
                      f"no file was there before and none was made at {path}")
            raise OSError(f"could not write {path}: writing its temporary failed ({type(err).__name__}: {err}); "
                          f"{free}: the disk is full, or the write failed. The temporary was removed and {before}; "
                          "free some space (or save elsewhere) and save again") from err
        try:
            os.replace(tmp, path)
        except FileNotFoundError as err:
            raise OSError(f"could not rename the temporary {tmp} onto {path}: it was removed meanwhile, by another "
                          f"save of {path} (two saves of one path at once are not supported)") from err
        fsync_directory(path.parent)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def load_ledger(path: str | Path, log: Ledger) -> Ledger:
    """Restore a file written by :func:`save_ledger` into ``log`` (built the same way).

    Raises:
        ValueError: the file is damaged (truncated, its checksum does not match), is not a ledger file, or is
            one of another format or version; the message names the file and what it holds. ``log`` is left
            as it was.
    """
    path = Path(path)
    try:
        record = torch.load(path, weights_only=True)
    except Exception as err:  # torch raises several types for a truncated archive
        raise ValueError(f"{path} is not a readable ledger file ({type(err).__name__}: {err}); it may be truncated") \
            from None
    if not isinstance(record, dict):
        raise ValueError(f"{path} is not a ledger written by save_ledger (it holds a {type(record).__name__})")
    if "format" not in record:
        if "kind" in record:
            raise ValueError(f"{path} holds a log.state_dict() ({record['kind']!r}) saved with torch.save, not a "
                             "ledger file of save_ledger: restore it with log.load_state_dict(torch.load(path)), "
                             "and save ledgers with save_ledger")
        raise ValueError(f"{path} is not a ledger written by save_ledger: it has no 'format' entry "
                         f"(its entries: {sorted(map(str, record))[:8]})")
    fmt = record["format"]
    if fmt != LEDGER_FORMAT:
        raise ValueError(f"{path} is a ledger file of format {fmt!r}; this version of amnesiac reads "
                         f"{LEDGER_FORMAT!r}: load it with the version that wrote it, or save the log again with "
                         "this one")
    missing = [k for k in ("sha256", "payload") if k not in record]
    if missing:
        raise ValueError(f"{path} is an {LEDGER_FORMAT!r} ledger file without its {' and '.join(map(repr, missing))} "
                         "entry: it is damaged, or was not written by save_ledger")
    payload = record["payload"]
    if not torch.is_tensor(payload) or payload.dtype != torch.uint8:
        raise ValueError(f"{path} is an {LEDGER_FORMAT!r} ledger file whose payload is not bytes: it is damaged")
    payload = tensor_bytes(payload)
    if hashlib.sha256(payload).hexdigest() != record["sha256"]:
        raise ValueError(f"{path} is corrupted: its checksum does not match its contents")
    return log.load_state_dict(torch.load(io.BytesIO(payload), weights_only=True))
