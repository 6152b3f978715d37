"""An append-only record of the forget requests served from a ledger.

Forget requests arrive one after another, long after training: forget A, save the model, later forget B from the
saved model. :class:`RequestRecord` serves each request through :func:`amnesiac.unlearn` and appends one JSON line
per request: which groups, the method and alpha, when, and the SHA-256 of the model before and after. Each line
carries the hash of the line before it, so an edited, removed or reordered line is caught when the record is
opened. The record refuses what would silently corrupt the model: a group that was already forgotten (subtracting
its delta twice), and a model other than the one the last request returned (a request served on a stale copy).
Who asked is out of scope.

Example:
    >>> import tempfile, pathlib, torch
    >>> from amnesiac import DeltaLog, Request
    >>> model = torch.nn.Linear(2, 2); log = DeltaLog(model, {"a": [0], "b": [1]})
    >>> record = RequestRecord(pathlib.Path(tempfile.mkdtemp()) / "requests.jsonl")
    >>> model = record.serve(model, Request(forget_groups=("a",)), log=log)
    >>> model = record.serve(model, Request(forget_groups=("b",)), log=log, alpha=0.5)
    >>> [(e["index"], e["groups"], e["alpha"]) for e in record.entries()]
    [(0, ['a'], 1.0), (1, ['b'], 0.5)]
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
from pathlib import Path

import torch
from torch import nn

from .unlearning import Request, unlearn

RECORD_FORMAT = "amnesiac-requests-1"


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
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def _json_group(g) -> int | str:
    if isinstance(g, bool) or not isinstance(g, (int, str)):
        raise TypeError(f"group names in a request record must be int or str, got {g!r} ({type(g).__name__})")
    return g


def _line_hash(entry: dict) -> str:
    body = {k: v for k, v in entry.items() if k != "hash"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


class RequestRecord:
    """Serve forget requests one after another and keep an append-only, hash-chained record of them.

    Args:
        path: the JSON Lines file (created on the first request; an existing one is checked when opened).
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.entries()  # refuse a damaged record before anything is served

    def entries(self) -> list[dict]:
        """Every request served, oldest first, after checking the chain; a damaged record raises ``ValueError``."""
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
            if entry.get("format") != RECORD_FORMAT or entry.get("index") != n - 1:
                raise ValueError(f"{self.path}: line {n} is not request {n - 1} of an {RECORD_FORMAT} record "
                                 "(lines removed or reordered?)")
            if entry.get("prev") != prev or entry.get("hash") != _line_hash(entry):
                raise ValueError(f"{self.path}: line {n} was changed after it was written (its hash chain breaks)")
            out.append(entry)
            prev = entry["hash"]
        return out

    def forgotten(self) -> dict:
        """Group -> index of the request that forgot it."""
        return {g: e["index"] for e in self.entries() for g in e["groups"]}

    def serve(self, model: nn.Module, request: Request, *, log, method: str = "amnesiac", alpha: float = 1.0,
              **params) -> nn.Module:
        """Forget ``request.forget_groups`` from ``model`` with ``method`` (a ledger method; ``log`` is its
        ledger), append the request to the record, and return the new model (``model`` is untouched).

        Refused before anything changes: a group already forgotten by an earlier request, a model whose
        fingerprint is not the one the last request returned, and whatever :func:`amnesiac.unlearn` refuses.
        """
        entries = self.entries()
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
        new = unlearn(method, model, request, log=log, alpha=alpha, **params)
        entry = {
            "format": RECORD_FORMAT,
            "index": len(entries),
            "time": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "method": method,
            "groups": groups,
            "alpha": float(alpha),
            "params": {k: v for k, v in params.items() if isinstance(v, (int, float, str, bool))},
            "ledger_steps": int(getattr(log, "steps", 0)),
            "model_before": before,
            "model_after": model_fingerprint(new),
            "prev": entries[-1]["hash"] if entries else None,
        }
        entry["hash"] = _line_hash(entry)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf8") as f:
            f.write(json.dumps(entry, sort_keys=True) + "\n")
            f.flush()
            os.fsync(f.fileno())
        return new
