"""Lazy segments: a delta log's steps buffered, then settled for every group at once: first moments without weight
decay (:class:`Segment`), and rules whose every step decays every group (:class:`DecaySegment`, at the end).

For a rule with a first moment and no weight decay (SGD with momentum, Adam, AMSGrad), group k's moment and
delta over a segment of L steps obey

    m_k(j) = beta m_k(j-1) + gamma_j s_k(j),   and its delta moves by  -c_j m_k(j) - e_j s_k(j)  at step j,

with per-coordinate c_j, gamma_j, e_j (e.g. Adam: gamma = 1 - b1, c_j = lr / (1 - b1^t) / denom_t). Unrolled, the
segment's total movement of the delta is

    -beta m_k(-1) R_0  -  sum over k's appearances e of s_k(e) (gamma_e R_e + e_e),

where R_j = c_j + beta R_{j+1} (R_L = 0) is one backward sweep over the buffered c_j, shared by all groups, and
the moment at the segment's end is beta^L m_k(-1) + sum_e beta^(L-1-e) gamma_e s_k(e). A group absent from a
step therefore costs nothing at that step: :class:`Segment` buffers the steps' coefficients and the present
groups' shares, and :meth:`Segment.settle` moves every involved group's moment and delta to the segment's end.

The settling runs over tiles of :data:`FLUSH_TILE` coordinates, each carried through the whole segment before
the next, so a tile of the involved rows' moments, deltas and shares stays in cache across the segment's
operations. Every operation is elementwise, and the tiles apply the same operations in the same order as whole
rows would, so the result is the same bit for bit whatever the tile (a test compares them).

:class:`amnesiac.DeltaLog` owns the segment (when it starts, when it is settled, how it is checkpointed); this
module holds the algebra, on tensors it is handed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

# Coordinates per tile when a segment is settled: small enough that a tile of the involved rows' moments, deltas and
# shares stays in cache across the segment's operations; the result does not depend on it.
FLUSH_TILE = 1 << 14


def same(a, b) -> bool:
    """Whether two coefficients (Python numbers or tensors) are equal, so one segment may hold both steps."""
    if torch.is_tensor(a) or torch.is_tensor(b):
        return torch.is_tensor(a) and torch.is_tensor(b) and torch.equal(a, b)
    return a == b


def power(b, n: int):
    """``b ** n`` for a number or a per-coordinate tensor."""
    return b**n if not torch.is_tensor(b) else torch.pow(b, n)


@dataclass
class Segment:
    """Steps of one lazy segment, not yet applied to the groups' moments and deltas.

    Attributes:
        beta: the moment's decay, shared by every step of the segment (a new one starts a new segment).
        carried: indices of the groups whose moment was in flight when the segment began (``[n]``, CPU).
        steps: each step's ``(c, gamma, e)`` coefficients, numbers or ``[P]`` tensors (``e`` may be ``None``).
        events: ``(step, rows, shares)`` for each step with groups present: their rows and shares (``[n, K]``,
            owned by the segment, which reuses their memory when it settles).
        bytes: memory held by the buffered coefficients and shares.

    Example:
        >>> seg = Segment(beta=0.5, carried=torch.tensor([], dtype=torch.long))
        >>> seg.record(1.0, 1.0, None, torch.tensor([0]), torch.ones(1, 3))
        >>> moments, deltas = torch.zeros(1, 3), torch.zeros(1, 3)
        >>> seg.settle(moments, deltas, numel=3)
        >>> moments[0].tolist(), deltas[0].tolist()
        ([1.0, 1.0, 1.0], [-1.0, -1.0, -1.0])
    """

    beta: float | torch.Tensor
    carried: torch.Tensor
    steps: list = field(default_factory=list)
    events: list = field(default_factory=list)
    bytes: int = 0

    def record(self, c, gamma, e, present: torch.Tensor, shares: torch.Tensor) -> None:
        """Buffer one step: its coefficients and, when groups were present, their rows and shares."""
        self.steps.append((c, gamma, e))
        self.bytes += sum(v.numel() * v.element_size() for v in (c, gamma, e) if torch.is_tensor(v))
        if len(present):
            self.events.append((len(self.steps) - 1, present, shares))
            self.bytes += shares.numel() * shares.element_size()

    def state(self) -> dict:
        """The buffers as plain containers (what :meth:`amnesiac.DeltaLog.state_dict` saves)."""
        return {"beta": self.beta, "steps": [list(t) for t in self.steps],
                "events": [[j, rows, sh] for j, rows, sh in self.events], "carried": self.carried,
                "bytes": self.bytes}

    @classmethod
    def from_state(cls, state: dict) -> Segment:
        """The inverse of :meth:`state`."""
        return cls(beta=state["beta"], carried=state["carried"], steps=[tuple(t) for t in state["steps"]],
                   events=[(j, rows, sh) for j, rows, sh in state["events"]], bytes=state["bytes"])

    def settle(self, moments: torch.Tensor, deltas: torch.Tensor, *,
               mask: Callable[[torch.Tensor], torch.Tensor] | None = None, numel: int) -> None:
        """Move every involved group's moment and delta (rows of ``moments`` and ``deltas``, ``[G, K]``) to the
        segment's end, in place.

        Args:
            moments: the groups' first moments, ``[G, K]``.
            deltas: the groups' deltas, ``[G, K]``.
            mask: for a masked log, rows -> the parameter coordinates each row's K columns stand for
                (``[n, K]``); ``None`` when a row is the whole parameter vector (K = ``numel``).
            numel: the number of parameters (the length of the steps' per-coordinate coefficients).
        """
        if not self.steps:
            return
        carried = self.carried.to(deltas.device)
        events: dict[int, list] = {}
        for j, rows, sh in self.events:
            events.setdefault(j, []).append((rows, sh))
        width = deltas.shape[1]
        tile = width if mask is not None else max(1, FLUSH_TILE)  # a masked row's coordinates are scattered
        for a in range(0, width, tile):
            self._settle_tile(moments, deltas, events, carried, slice(a, min(a + tile, width)), mask, numel)

    def _settle_tile(self, moments: torch.Tensor, deltas: torch.Tensor, events: dict, carried: torch.Tensor,
                     cols: slice, mask, numel: int) -> None:
        """:meth:`settle` on the columns ``cols`` (all columns when the log is masked)."""
        beta, L = self.beta, len(self.steps)
        masked = mask is not None
        moments, deltas = moments[:, cols], deltas[:, cols]

        def at(v, rows):  # a [P] (or scalar) quantity on the coordinates of these group rows, in this tile
            if not torch.is_tensor(v):
                return v
            return v[mask(rows)] if masked else v[cols]

        m_old = moments.index_select(0, carried) if len(carried) else None  # m_k(-1), [n_carried, tile]
        R = torch.zeros(numel if masked else cols.stop - cols.start, dtype=moments.dtype, device=moments.device)
        for j in range(L - 1, -1, -1):
            c, gamma, e = self.steps[j]
            R.mul_(beta if masked or not torch.is_tensor(beta) else beta[cols])
            R.add_(c if masked or not torch.is_tensor(c) else c[cols])
            for rows, sh in events.get(j, ()):  # the segment owns sh: reuse its memory
                sh = sh[:, cols]
                r = R[mask(rows)] if masked else R  # R on the coordinates of these rows in this tile
                if not any(torch.is_tensor(v) for v in (beta, gamma, e)):  # scalars (Adam, momentum): cheapest
                    moments.index_add_(0, rows, sh, alpha=beta ** (L - 1 - j) * gamma)
                    if e is not None:  # the direct term first, while sh is intact
                        deltas.index_add_(0, rows, sh, alpha=-e)
                    deltas.index_add_(0, rows, sh.mul_(r), alpha=-gamma)
                else:
                    g = at(gamma, rows)
                    moments.index_add_(0, rows, at(power(beta, L - 1 - j), rows) * g * sh)
                    w = g * r
                    if e is not None:
                        w = w + at(e, rows)
                    deltas.index_add_(0, rows, -(w * sh))
        if m_old is not None:
            r = R[mask(carried)] if masked else R
            # moments: beta^L m_k(-1) plus the appearances already added above
            if not torch.is_tensor(beta):
                moments.index_add_(0, carried, m_old, alpha=beta**L - 1)
                deltas.index_add_(0, carried, m_old.mul_(r), alpha=-beta)
            else:
                moments.index_add_(0, carried, (at(power(beta, L), carried) - 1) * m_old)
                deltas.index_add_(0, carried, -at(beta, carried) * m_old * r)


# Lazy decay: rules whose every step shrinks or decays every group's delta (coupled weight decay, as SGD's
# weight_decay; decoupled, as AdamW's), so that a group absent from a step still moves. Per coordinate, a group's
# delta d and moment m follow a 2 x 2 linear recursion whose matrix is the same for every group:
#
#     d1 = shrink d,   u = s + wd d1,   m' = beta m + gamma u,   d' = d1 - c m' - e u,
#
# that is (d', m') = A (d, m) + b s with
#
#     A = [[shrink (1 - wd (c gamma + e)), -c beta], [gamma wd shrink, beta]],   b = (-(c gamma + e), gamma).
#
# Over a segment of L steps, (d, m)(L) = Phi(L, 0) (d, m)(0) + sum over appearances j of Phi(L, j + 1) b_j s(j),
# with Phi(L, j) = A_{L-1} ... A_j: one backward sweep over the buffered coefficients, shared by all groups.


def _fused(a, b, c, d):
    """``a b + c d`` for numbers or tensors."""
    return a * b + c * d


@dataclass
class DecaySegment:
    """Steps of one lazy decay segment (:data:`amnesiac.DeltaLog` with ``lazy_decay=True``), not yet applied.

    Attributes:
        stateful: whether the rule keeps a first moment (every step of a segment does, or none does).
        steps: each step's ``(shrink, wd, beta, c, gamma, e)``: numbers or ``[P]`` tensors, ``None`` for an absent
            term (no shrink, no coupled decay, no moment).
        events: ``(step, rows, shares)`` for each step with groups present (``[n, P]`` shares, owned).
        bytes: memory held by the buffered coefficients and shares.

    A settled segment moves every group: the coefficients act on all rows, present in the segment or not, which
    is what the eager form does at every step. Rounding differs from the eager form (the products of the steps'
    matrices are formed first), by about the float epsilon times the segment's length, relative.

    Example:
        >>> seg = DecaySegment(stateful=False)
        >>> seg.record((None, 0.5, None, None, None, 1.0), torch.tensor([0]), torch.ones(1, 2))  # SGD, wd 0.5
        >>> seg.record((None, 0.5, None, None, None, 1.0), torch.tensor([], dtype=torch.long), torch.ones(0, 2))
        >>> deltas = torch.zeros(2, 2)
        >>> seg.settle(None, deltas, numel=2)
        >>> deltas.tolist()  # step 1: d = -1; step 2: d = d - 1 * (0 + 0.5 d) = -0.5
        [[-0.5, -0.5], [0.0, 0.0]]
    """

    stateful: bool = True
    steps: list = field(default_factory=list)
    events: list = field(default_factory=list)
    bytes: int = 0
    kind = "decay"

    def record(self, coefficients: tuple, present: torch.Tensor, shares: torch.Tensor) -> None:
        """Buffer one step: ``(shrink, wd, beta, c, gamma, e)`` and, when groups were present, their rows and
        shares."""
        self.steps.append(tuple(coefficients))
        self.bytes += sum(v.numel() * v.element_size() for v in coefficients if torch.is_tensor(v))
        if len(present):
            self.events.append((len(self.steps) - 1, present, shares))
            self.bytes += shares.numel() * shares.element_size()

    def state(self) -> dict:
        """The buffers as plain containers (what :meth:`amnesiac.DeltaLog.state_dict` saves)."""
        return {"kind": self.kind, "stateful": self.stateful, "steps": [list(t) for t in self.steps],
                "events": [[j, rows, sh] for j, rows, sh in self.events], "bytes": self.bytes}

    @classmethod
    def from_state(cls, state: dict) -> DecaySegment:
        """The inverse of :meth:`state`."""
        return cls(stateful=state["stateful"], steps=[tuple(t) for t in state["steps"]],
                   events=[(j, rows, sh) for j, rows, sh in state["events"]], bytes=state["bytes"])

    def settle(self, moments: torch.Tensor | None, deltas: torch.Tensor, *, numel: int) -> None:
        """Move every group's delta and moment (``[G, P]``; ``moments`` None for a rule without one) to the segment's
        end, in place, tiled over :data:`FLUSH_TILE` coordinates."""
        if not self.steps:
            return
        events: dict[int, list] = {}
        for j, rows, sh in self.events:
            events.setdefault(j, []).append((rows, sh))
        for a in range(0, numel, max(1, FLUSH_TILE)):
            cols = slice(a, min(a + FLUSH_TILE, numel))
            self._settle_tile(None if moments is None else moments[:, cols], deltas[:, cols], events, cols)

    def _settle_tile(self, moments, deltas, events: dict, cols: slice) -> None:
        def at(v, neutral):
            return neutral if v is None else v[cols] if torch.is_tensor(v) else v

        p, q, r, t = 1.0, 0.0, 0.0, 1.0  # Phi(L, j + 1) as [[p, q], [r, t]]: the identity at j = L - 1
        adds = []  # (rows, shares, weight on the delta, weight on the moment)
        for j in range(len(self.steps) - 1, -1, -1):
            shrink, wd, beta, c, gamma, e = (at(v, n) for v, n in zip(self.steps[j], (1.0, 0.0, 0.0, 0.0, 0.0, 0.0)))
            b0, b1 = -(c * gamma + e), gamma
            for rows, sh in events.get(j, ()):
                adds.append((rows, sh[:, cols], _fused(p, b0, q, b1), _fused(r, b0, t, b1)))
            a11, a12 = shrink * (1.0 - wd * (c * gamma + e)), -c * beta
            a21, a22 = gamma * wd * shrink, beta
            p, q, r, t = _fused(p, a11, q, a21), _fused(p, a12, q, a22), _fused(r, a11, t, a21), _fused(r, a12, t, a22)
        if moments is None:  # no moment: the m components stay 0
            deltas.mul_(p)
        else:
            d0 = deltas.clone()
            deltas.mul_(p).add_(moments * q)
            moments.mul_(t).add_(d0 * r)
        for rows, sh, wd_, wm in adds:
            if moments is not None:
                moments.index_add_(0, rows, sh * wm)
            deltas.index_add_(0, rows, sh.mul_(wd_))

