"""An append-only record of the forget requests served from a ledger.

Forget requests arrive one after another, long after training: forget A, save the model, later forget B from the
saved model. :class:`RequestRecord` serves each request through :func:`amnesiac.unlearn` and appends one JSON line
per request: which groups, the method and alpha, when, the SHA-256 of the model before and after, and the
fingerprint of the ledger it was served from (:func:`amnesiac.ledger.ledger_fingerprint`). Each line carries the
hash of the line before it, so an edited, inserted or reordered line is caught when the record is opened.

A chain alone cannot tell that lines were removed from its end, so a small *head* file beside the record
(``<record>.head``: the number of requests and the hash of the last line) is rewritten atomically after each
append, and the record is checked against it: fewer lines than the head says, a missing record or a replaced
last line are refused. Crash consistency: a request's line is appended and flushed to disk first, then the head
follows; a process killed in between leaves a record exactly one line past its head, chained to the line the head
names, which is accepted as complete (the head is repaired when the record is next opened or served). A record
killed in the middle of a line is refused with what to do. A record written before heads existed (no line bound to
a ledger) is read without one, and gets its head at its next request; a missing head beside lines bound to a ledger
is refused (it was removed): ``RequestRecord(path, rewrite_head=True)`` writes a new one after you have checked
that the record is complete.

The record refuses what would silently corrupt the model: a group that was already forgotten (subtracting its
delta twice), alpha <= 0 (nothing forgotten, yet recorded as forgotten), a model other than the one the last
request returned (a request served on a stale copy), and a ledger other than the one its requests were served
from (another run's ledger). Who asked is out of scope, and so are two processes serving one record at once.

Example:
    >>> import tempfile, pathlib, torch
    >>> from amnesiac import DeltaLog, Request
    >>> model = torch.nn.Linear(2, 2); log = DeltaLog(model, {"a": [0], "b": [1]})
    >>> record = RequestRecord(pathlib.Path(tempfile.mkdtemp()) / "requests.jsonl")
    >>> model = record.serve(model, Request(forget_groups=("a",)), log=log)
    >>> model = record.serve(model, Request(forget_groups=("b",)), log=log, alpha=0.5)
    >>> [(e["index"], e["groups"], e["alpha"]) for e in record.entries()]
    [(0, ['a'], 1.0), (1, ['b'], 0.5)]
    >>> json.loads(record.head.read_text())["requests"]
    2
"""

from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
from pathlib import Path

from torch import nn

from .ledger import Ledger, atomic_write_bytes, fsync_directory, ledger_fingerprint, tensor_bytes
from .unlearning import Request, unlearn

RECORD_FORMAT = "amnesiac-requests-1"
HEAD_FORMAT = "amnesiac-requests-head-1"


def model_fingerprint(model: nn.Module) -> str:
    """SHA-256 of a model's state (every parameter and buffer: names, dtypes, shapes and exact bytes).

    Example:
        >>> import torch
        >>> torch.manual_seed(0); a = torch.nn.Linear(2, 2)  # doctest: +ELLIPSIS
        <...>
        >>> model_fingerprint(a) == model_fingerprint(a) and len(model_fingerprint(a))
        64
    """
    h = hashlib.sha256()
    for name, t in model.state_dict().items():
        t = t.detach().cpu().contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(tensor_bytes(t))  # 0-dim buffers too
    return h.hexdigest()


def _json_group(g) -> int | str:
    if isinstance(g, bool) or not isinstance(g, (int, str)):
        raise TypeError(f"group names in a request record must be int or str, got {g!r} ({type(g).__name__})")
    return g


def _line_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def _write_head(head: Path, requests: int, last: str | None) -> None:
    """Atomically write the head of a record: how many requests it holds and the hash of its last line."""
    body = {"format": HEAD_FORMAT, "record": head.name.removesuffix(".head"), "requests": requests, "last": last}
    atomic_write_bytes(head, (json.dumps(body, sort_keys=True) + "\n").encode())


class RequestRecord:
    """Serve forget requests one after another and keep an append-only, hash-chained record of them.

    Args:
        path: the JSON Lines file (created on the first request; an existing one is checked when opened). Its
            head is ``<path>.head`` beside it (see the module's description); keep the two together.
        rewrite_head: write a new head for the record as it stands (its chain still checked) instead of checking
            the record against its head. Only for a head that is lost or damaged, once you have checked that no
            request is missing from the end of the record.

    Raises:
        ValueError: the record is damaged: a line edited, reordered or cut short, lines removed (fewer than its
            head says), or its head missing or damaged.
    """

    def __init__(self, path: str | Path, *, rewrite_head: bool = False):
        self.path = Path(path)
        self.head = self.path.with_name(self.path.name + ".head")
        if rewrite_head:
            entries = self._chain()
            _write_head(self.head, len(entries), entries[-1]["hash"] if entries else None)
            return
        entries, state = self._read()  # refuse a damaged record before anything is served
        if state == "lags":  # killed between a request's line and its head: complete the head now
            try:
                _write_head(self.head, len(entries), entries[-1]["hash"])
            except OSError:  # a read-only copy: readable as it is; serve repairs the head before it appends
                pass

    def entries(self) -> list[dict]:
        """Every request served, oldest first, after checking the chain and the head; a damaged record raises
        ``ValueError``."""
        return self._read()[0]

    def _chain(self) -> list[dict]:
        """The record's lines, after checking that each is whole, in its place and chained to the one before."""
        if not self.path.exists():
            return []
        text = self.path.read_text(encoding="utf8")
        if text and not text.endswith("\n"):
            raise ValueError(f"{self.path}: the last line is incomplete (a write was interrupted). The request on it "
                             "was not recorded: remove that line, and serve the request again from the model the "
                             "line before it produced")
        out, prev = [], None
        for n, line in enumerate(text.splitlines(), 1):
            try:
                entry = json.loads(line)
            except json.JSONDecodeError:
                raise ValueError(f"{self.path}: line {n} is not JSON; the record is damaged") from None
            if not isinstance(entry, dict) or entry.get("format") != RECORD_FORMAT or entry.get("index") != n - 1:
                raise ValueError(f"{self.path}: line {n} is not request {n - 1} of an {RECORD_FORMAT} record "
                                 "(lines removed or reordered?)")
            if entry.get("prev") != prev or entry.get("hash") != _line_hash(entry):
                raise ValueError(f"{self.path}: line {n} was changed after it was written (its hash chain breaks)")
            out.append(entry)
            prev = entry["hash"]
        return out

    def _read(self) -> tuple[list[dict], str]:
        """The checked entries, and the head's state: ``"ok"``, ``"none"`` (no head, none needed yet: an empty or
        older record) or ``"lags"`` (one line past the head, chained to it: killed before the head followed)."""
        entries = self._chain()
        fix = (f"restore the record (and {self.head.name}) from a copy; or, if you have checked that no request is "
               f"missing, open it with RequestRecord(path, rewrite_head=True)")
        if not self.head.exists():
            bound = [e["index"] for e in entries if "ledger" in e]
            if bound:  # this version writes the head before the first line bound to a ledger
                raise ValueError(f"{self.path}: its head {self.head} is missing, but the record was written with one "
                                 f"(request {bound[0]} on are bound to a ledger): it was removed, or not copied with "
                                 f"the record, and removed lines could not be told. Put the head back beside the "
                                 f"record; or {fix}")
            return entries, "none"
        try:
            head = json.loads(self.head.read_text(encoding="utf8"))
            ok = (isinstance(head, dict) and head.get("format") == HEAD_FORMAT and type(head.get("requests")) is int
                  and head["requests"] >= 0 and (head.get("last") is None or isinstance(head["last"], str)))
        except (json.JSONDecodeError, UnicodeDecodeError):
            ok = False
        if not ok:
            raise ValueError(f"{self.path}: its head {self.head} is not an {HEAD_FORMAT} head (damaged?); {fix}")
        n, m, last = len(entries), head["requests"], head.get("last")
        names = (entries[m - 1]["hash"] if m else None) if m <= n else None
        if n < m:
            raise ValueError(f"{self.path}: the record holds {n} requests but its head says {m}: lines were removed "
                             f"(or the record was replaced by an older copy); {fix}")
        if names != last:
            raise ValueError(f"{self.path}: its line {m} is not the last line its head names (hash "
                             f"{str(last)[:12]}...): the record was replaced or rewritten after the head; {fix}")
        if n == m:
            return entries, "ok"
        if n == m + 1:
            return entries, "lags"
        raise ValueError(f"{self.path}: the record holds {n} requests but its head says {m}: lines were added "
                         f"without their head; {fix}")

    def forgotten(self) -> dict:
        """Group -> index of the request that forgot it."""
        return {g: e["index"] for e in self.entries() for g in e["groups"]}

    def serve(self, model: nn.Module, request: Request, *, log: Ledger, method: str = "amnesiac", alpha: float = 1.0,
              **params) -> nn.Module:
        """Forget ``request.forget_groups`` from ``model`` with ``method`` (a ledger method; ``log`` is its
        ledger), append the request to the record, and return the new model (``model`` is untouched).

        Refused before anything changes (nothing appended, the head as it was): alpha not a positive finite
        number, a group already forgotten by an earlier request, a model whose fingerprint is not the one the last
        request returned, a ledger whose fingerprint is not the one of the record's requests (the first request
        bound to a ledger names it; an older record's requests before binding name none), and whatever
        :func:`amnesiac.unlearn` refuses.

        The ledger is fingerprinted at each request (:func:`amnesiac.ledger.ledger_fingerprint`: every byte is
        hashed; a pending lazy segment of a :class:`~amnesiac.DeltaLog` is settled, as the read-out would).
        """
        entries, state = self._read()
        try:
            ok = math.isfinite(float(alpha)) and float(alpha) > 0
        except (TypeError, ValueError):
            ok = False
        if not ok:
            raise ValueError(f"alpha must be a positive finite number for a forget request, got {alpha!r}: alpha = 1 "
                             "subtracts the whole delta; alpha <= 0 would forget nothing (or add the delta back) yet "
                             "record the groups as forgotten")
        if not isinstance(log, Ledger):
            raise TypeError(f"serve needs log=<the ledger the requests are served from (a DeltaLog or a BatchLog)>, "
                            f"got {type(log).__name__}")
        groups = [_json_group(g) for g in request.forget_groups]
        if not groups:
            raise ValueError("the request names no group to forget (request.forget_groups is empty)")
        done = {g: e["index"] for e in entries for g in e["groups"]}
        again = [g for g in groups if g in done]
        if again:
            raise ValueError(f"group(s) {again} were already forgotten (request(s) "
                             f"{sorted({done[g] for g in again})}); subtracting a delta twice would overshoot")
        before = model_fingerprint(model)
        if entries and entries[-1]["model_after"] != before:
            raise ValueError(f"this model (SHA-256 {before[:12]}...) is not the one request {entries[-1]['index']} "
                             f"returned ({entries[-1]['model_after'][:12]}...): serve each request from the model the "
                             "previous one returned (load the model saved after it)")
        ledger = ledger_fingerprint(log)
        bound = next((e for e in entries if "ledger" in e), None)
        if bound is not None and bound["ledger"] != ledger:
            raise ValueError(f"this ledger ({type(log).__name__}, {int(getattr(log, 'steps', 0))} steps, fingerprint "
                             f"{ledger[:12]}...) is not the one this record's requests were served from (request "
                             f"{bound['index']}: fingerprint {bound['ledger'][:12]}..., {bound['ledger_steps']} "
                             "steps): serve every request of a record from the same ledger (load the ledger file the "
                             "first request used; finalizing a ledger makes it another one)")
        new = unlearn(method, model, request, log=log, alpha=alpha, **params)
        entry = {
            "format": RECORD_FORMAT,
            "index": len(entries),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "method": method,
            "groups": groups,
            "alpha": float(alpha),
            "params": {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))},
            "ledger": ledger,
            "ledger_steps": int(getattr(log, "steps", 0)),
            "model_before": before,
            "model_after": model_fingerprint(new),
            "prev": entries[-1]["hash"] if entries else None,
        }
        entry["hash"] = _line_hash(entry)
        if state != "ok":  # a new or older record, or one killed before its head followed: head first, then line
            _write_head(self.head, len(entries), entries[-1]["hash"] if entries else None)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        created = not self.path.exists()
        with open(self.path, "a", encoding="utf8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        if created:
            fsync_directory(self.path.parent)
        _write_head(self.head, len(entries) + 1, entry["hash"])  # killed before this: one line past the head
        return new
