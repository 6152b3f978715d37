"""Unlearning methods: one registry, one contract.

Every method takes a trained model, a :class:`Request` (what to forget and the data/recipe a method may
need) and its own keyword parameters, and returns a NEW model; the input model is never changed. An
optional repair (``repair_epochs``) trains the result on the retain set afterwards.

================  ================================================================================
``amnesiac``      subtract ``alpha`` times the forget groups' deltas from a :class:`DeltaLog`
``misindexed``    the same from a log recorded with the seed's indexing bug (an ablation only)
``batch``         Graves's "Original": subtract every stored per-batch change that touched the groups
``layer``         the "Layer p" variant: the same from a :class:`BatchLog` with a mask ``p``
``sisa``          exact: retrain the shards of a :class:`~amnesiac.SisaEnsemble` that hold ``request.forget``
                  from the checkpoint before their first slice holding it (``record=``; :mod:`amnesiac.sisa`)
``rewind``        exact: restore the last checkpoint before ``request.forget``'s first use and replay the
                  rest without it (``record=``, ``loader=``; :mod:`amnesiac.rewind`)
================  ================================================================================

The paper's trained baselines (``relabel``, ``finetune``, ``retrain``, ``neggrad_plus``, ``ssd``, ``scrub``)
register themselves here when :mod:`amnesiac_paper` is imported; :func:`register` adds any other. (``sisa`` and
``rewind`` register themselves from :mod:`amnesiac.sisa` and :mod:`amnesiac.rewind`, which :mod:`amnesiac` imports.)
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import inspect
import math
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import torch
from torch import nn

from .batchlog import BatchLog
from .data import ArrayDataset
from .deltalog import DeltaLog
from .ledger import Ledger
from .training import Recipe, train


@dataclass(frozen=True)
class Request:
    """What to forget, and what the methods that train need.

    Attributes:
        forget_groups: names of the log groups to forget (for log-based methods): a tuple (a list or other
            iterable is kept as a tuple), each group once; a bare string is refused (``("class3",)``, not
            ``"class3"``).
        forget: the forget samples (for ``relabel``).
        retain: the retain set (for ``finetune``, ``retrain`` and repair).
        recipe: the training recipe (optimizer, lr, batch size, epochs) for methods that train.
        model_fn: builds a fresh, untrained model (for ``retrain``).
        num_classes: number of classes (for ``relabel``).
        seed: seeds shuffling, relabelling and the retrained model's initialisation.
        device: where training runs (``"auto"``, ``"cpu"``, ``"cuda"``).
    """

    forget_groups: tuple[Hashable, ...] = ()
    forget: ArrayDataset | None = None
    retain: ArrayDataset | None = None
    recipe: Recipe | None = None
    model_fn: Callable[[], nn.Module] | None = None
    num_classes: int | None = None
    seed: int = 0
    device: str = "auto"

    def __post_init__(self):
        groups = self.forget_groups
        if isinstance(groups, (str, bytes)):
            raise TypeError(f"forget_groups must be a tuple of group names, got the {type(groups).__name__} "
                            f"{groups!r} (it would be read as one group per character): pass a tuple, e.g. "
                            f"forget_groups=({groups!r},)")
        try:
            groups = tuple(groups)
        except TypeError:
            raise TypeError(f"forget_groups must be a tuple of group names, got {type(groups).__name__} "
                            f"{groups!r}: pass a tuple, e.g. forget_groups=({groups!r},)") from None
        seen = set()
        for g in groups:
            try:
                again = g in seen
            except TypeError:
                raise TypeError(f"group names must be hashable (a str or an int, as the log's groups), got "
                                f"{g!r} ({type(g).__name__}) in forget_groups") from None
            if again:
                raise ValueError(f"forget_groups names group {g!r} more than once: its delta would be subtracted "
                                 "once per mention; name each group once")
            seen.add(g)
        object.__setattr__(self, "forget_groups", groups)  # a list given is kept as a tuple (the request is frozen)

    def need(self, *fields: str, method: str) -> None:
        missing = [f for f in fields if getattr(self, f) in (None, ())]
        if missing:
            raise ValueError(f"method {method!r} needs request field(s) {', '.join(missing)}")


METHODS: dict[str, Callable[..., nn.Module]] = {}


def register(name: str):
    """Add a method to :data:`METHODS` under ``name``."""

    def wrap(fn):
        METHODS[name] = fn
        return fn

    return wrap


def method_params(name: str) -> dict[str, object]:
    """A method's own keyword parameters and their defaults."""
    fn = _method(name)
    bound = getattr(fn, "keywords", {})  # fixed by functools.partial (the ledger methods' kind)
    return {
        k: p.default
        for k, p in inspect.signature(fn).parameters.items()
        if p.kind is inspect.Parameter.KEYWORD_ONLY and k != "progress" and k not in bound
    }


def unlearn(
    method: str, model: nn.Module, request: Request, *, repair_epochs: int = 0, progress: bool = False, **params
) -> nn.Module:
    """Apply an unlearning method and return a new model (the input is left untouched).

    Args:
        method: a name in :data:`METHODS`.
        model: the trained model.
        request: what to forget and the data and recipe methods may need.
        repair_epochs: then train this many epochs on ``request.retain`` (0: no repair).
        progress: show progress bars for methods that train.
        **params: the method's own parameters (see :func:`method_params`), e.g. ``log=``, ``alpha=``.

    Example:
        >>> m = nn.Linear(2, 2); log = DeltaLog(m, {"a": [0]})
        >>> new = unlearn("amnesiac", m, Request(forget_groups=("a",)), log=log)
        >>> new is m
        False
    """
    fn = _method(method)
    allowed = method_params(method)
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise TypeError(f"method {method!r} takes no parameter(s) {unknown}; its parameters: {sorted(allowed)}")
    if repair_epochs < 0:
        raise ValueError(f"repair_epochs must be >= 0, got {repair_epochs}")
    out = fn(model, request, progress=progress, **params)
    if out is model:
        raise RuntimeError(f"method {method!r} returned its input model; methods must return a new model")
    if repair_epochs:
        out = repair(out, request, epochs=repair_epochs, progress=progress)
    return out


def repair(
    model: nn.Module, request: Request, *, epochs: int, lr: float | None = None, progress: bool = False,
    desc: str = "repair"
) -> nn.Module:
    """A copy of ``model`` trained ``epochs`` more epochs on the retain set with a fresh optimizer (the recipe's,
    at learning rate ``lr`` if given)."""
    request.need("retain", "recipe", method="repair")
    new = copy.deepcopy(model)
    rec = request.recipe
    train(
        new,
        request.retain.loader(rec.batch_size, seed=request.seed + 7919),
        _params_of(new, request, lr),
        epochs=epochs,
        device=request.device,
        progress=progress,
        desc=desc,
    )
    return new


def _method(name: str):
    if name not in METHODS:
        raise ValueError(f"unknown unlearning method {name!r}; valid methods: {', '.join(sorted(METHODS))}")
    return METHODS[name]


def subtract(model: nn.Module, vector: torch.Tensor, alpha: float = 1.0) -> nn.Module:
    """A copy of ``model`` with ``alpha * vector`` (flat, in the model's parameter layout) subtracted."""
    from .grads import ParamLayout

    if not math.isfinite(float(alpha)):
        raise ValueError(f"alpha must be a finite number, got {alpha!r}; alpha = 1 subtracts the whole delta")
    layout = ParamLayout.of(model)
    if vector.numel() != layout.numel:
        raise ValueError(
            f"the delta has {vector.numel()} entries but the model {layout.numel} parameters: "
            "the log was recorded on a different architecture"
        )
    new = copy.deepcopy(model)
    with torch.no_grad():
        for q, d in zip(layout.params(new), layout.unflatten(vector).values()):
            q.sub_(alpha * d.to(q.device, q.dtype))
    return new


# The four ledger methods are one subtraction; they differ only in which kind of log each one accepts.
# method -> (log class, what the log must be, the error when it is not)
LEDGER_METHODS: dict[str, tuple[type, Callable[[Ledger], bool], str]] = {
    "amnesiac": (DeltaLog, lambda log: log.indexing == "position",
                 "this log was recorded with the seed's mis-indexing; use method='misindexed' for that ablation, "
                 "or record a log with indexing='position'"),
    "misindexed": (DeltaLog, lambda log: log.indexing == "seed-misindexed",
                   "method 'misindexed' reproduces the seed's bug and needs a log recorded with "
                   "indexing='seed-misindexed'"),
    "batch": (BatchLog, lambda log: log.p is None,
              "this per-batch log keeps a p-subset of coordinates; use method='layer' for it"),
    "layer": (BatchLog, lambda log: log.p is not None,
              "method 'layer' needs a BatchLog recorded with a mask p; use method='batch' for full changes"),
}


def _subtract_ledger(model, request: Request, *, log: Ledger | None = None, alpha: float = 1.0, progress=False,
                     method: str):
    cls, ok, why = LEDGER_METHODS[method]
    if not isinstance(log, cls):
        raise TypeError(f"method {method!r} needs log=<a {cls.__name__}>, got {type(log).__name__}")
    log.layout.check(model)
    if not ok(log):
        raise ValueError(why)
    return subtract(model, log.delta_vector(request.forget_groups), alpha)


for _name in LEDGER_METHODS:
    register(_name)(functools.partial(_subtract_ledger, method=_name))


# ------------------------------------------------------------------------------------ baselines of the field


def _params_of(new: nn.Module, request: Request, lr: float | None):
    """A fresh optimizer of the request's recipe for ``new``, at learning rate ``lr`` if given."""
    if lr is not None and not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a positive finite number, got {lr!r}")
    rec = request.recipe
    recipe = rec if lr is None else dataclasses.replace(rec, lr=lr)
    return recipe.make_optimizer(new.parameters())


