"""SISA training and exact unlearning by retraining shards (Bourtoule et al., "Machine Unlearning", IEEE S&P 2021).

SISA (Sharded, Isolated, Sliced, Aggregated) splits the training samples once, by a seeded permutation, into
``shards`` disjoint shards and each shard into ``slices`` slices. Each shard trains its own model (isolated: no
shard sees another's data) in stages: stage ``r`` trains on slices ``0..r`` of the shard, and the model, the
optimizer and torch's random state are kept after every stage. The :class:`SisaEnsemble` aggregates the shard
models by averaging their softmax probabilities.

Forgetting a set F (:func:`sisa_unlearn`) touches only the shards that hold a sample of F: each rewinds to the
checkpoint taken before the first slice holding one of its samples of F and trains the remaining stages again
without them. Every stage before that checkpoint never saw F, so the result is, bit for bit on the CPU, the
ensemble that :func:`sisa_train` would have trained with ``drop_ids=F`` (same assignment, seeds and batch orders).
Its cost is the replayed stages: small for a sample in a late slice of one shard, a full retrain when F reaches
the first slice of every shard (a class spread over all shards). ``unlearn("sisa", ensemble, request,
record=record)`` serves one request through the unlearning registry.

Example:
    >>> import torch, amnesiac
    >>> from torch import nn
    >>> data = amnesiac.ArrayDataset(torch.randn(24, 4), torch.arange(24) % 2, torch.arange(24))
    >>> recipe = amnesiac.Recipe(optimizer="sgd", lr=0.1, batch_size=4, epochs=2)
    >>> ensemble, record = sisa_train(lambda: nn.Linear(4, 2), data, recipe, shards=3, slices=2, seed=0)
    >>> ensemble(data.x[:5]).shape  # [B, C] log-probabilities
    torch.Size([5, 2])
    >>> new, new_record, info = sisa_unlearn(ensemble, record, [7])
    >>> len(info["shards_retrained"]), sorted(new_record.removed)
    (1, [7])
    >>> ref, _ = sisa_train(lambda: nn.Linear(4, 2), data, recipe, shards=3, slices=2, seed=0, drop_ids=[7])
    >>> all(torch.equal(a, b) for a, b in zip(new.parameters(), ref.parameters()))
    True
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from .data import ArrayDataset
from .record import model_fingerprint
from .training import Recipe, pick_device, train
from .unlearning import Request, register


class SisaEnsemble(nn.Module):
    """The shard models, aggregated: ``forward(x)`` is the log of the mean of their softmax probabilities.

    The output [B, C] is a log-probability, usable as logits wherever logits are (cross-entropy, argmax accuracy,
    margins): its softmax is the ensemble's mean probability.

    Example:
        >>> torch.manual_seed(0)  # doctest: +ELLIPSIS
        <...>
        >>> ens = SisaEnsemble([nn.Linear(3, 2), nn.Linear(3, 2)])
        >>> ens(torch.randn(4, 3)).exp().sum(1)
        tensor([1.0000, 1.0000, 1.0000, 1.0000], grad_fn=<SumBackward1>)
    """

    def __init__(self, shards: Sequence[nn.Module]):
        super().__init__()
        if len(shards) == 0:
            raise ValueError("an ensemble needs at least one shard model")
        self.shards = nn.ModuleList(shards)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        logp = torch.stack([F.log_softmax(m(x), dim=-1) for m in self.shards])  # [S, B, C]
        return torch.logsumexp(logp, dim=0) - math.log(len(self.shards))  # [B, C]: log mean_s p_s


@dataclass(frozen=True, eq=False)
class SisaRecord:
    """What SISA keeps to unlearn: the assignment of samples to shards and slices, and each shard's checkpoints.

    Built by :func:`sisa_train` and replaced (never changed) by :func:`sisa_unlearn`; pass each ensemble's own
    record (the one returned with it) to the next request.

    Attributes:
        slice_ids: ``slice_ids[s][r]``, the sample ids of slice ``r`` of shard ``s`` (removed ones included: the
            assignment never changes).
        checkpoints: ``checkpoints[s][r + 1]``, shard ``s`` after stage ``r`` (``checkpoints[s][0]``: before
            training), each the ``torch.save`` bytes of the model's and the optimizer's state dicts and torch's
            random state.
        fingerprints: :func:`amnesiac.model_fingerprint` of each shard's final model (ties a record to its
            ensemble).
        recipe: the optimizer, learning rate, batch size and epochs (``recipe.epochs``: E of :func:`stage_epochs`).
        data: the training samples not removed (a removed sample's features and label are not kept).
        seed: seeds the assignment, each shard's initialisation and every stage's batch order.
        stage_epochs: epochs of every stage.
        removed: the sample ids removed so far (``drop_ids`` and every request served).
    """

    slice_ids: tuple[tuple[torch.Tensor, ...], ...]
    checkpoints: tuple[tuple[bytes, ...], ...]
    fingerprints: tuple[str, ...]
    recipe: Recipe
    data: ArrayDataset
    seed: int
    stage_epochs: int
    removed: frozenset[int] = frozenset()

    @property
    def shards(self) -> int:
        return len(self.slice_ids)

    @property
    def slices(self) -> int:
        return len(self.slice_ids[0])

    @property
    def nbytes(self) -> int:
        """Bytes held by the checkpoints (the data and the assignment aside)."""
        return sum(len(b) for shard in self.checkpoints for b in shard)

    def locations(self) -> dict[int, tuple[int, int]]:
        """Sample id -> (shard, slice), for every sample of the training (removed ones included)."""
        return {int(i): (s, r) for s, shard in enumerate(self.slice_ids) for r, ids in enumerate(shard)
                for i in ids.tolist()}

    def stage_ids(self, shard: int, stage: int) -> torch.Tensor:
        """The ids stage ``stage`` of shard ``shard`` trains on: its slices ``0..stage``, minus those removed."""
        ids = torch.cat(self.slice_ids[shard][: stage + 1])
        if self.removed:
            ids = ids[~torch.isin(ids, torch.tensor(sorted(self.removed), dtype=torch.long))]
        return ids

    def sample_passes(self) -> int:
        """Samples times epochs over every stage of every shard: the cost of training the ensemble from scratch
        without the removed samples (the unit of :func:`sisa_unlearn`'s ``fraction``)."""
        return sum(self.stage_epochs * len(self.stage_ids(s, r)) for s in range(self.shards)
                   for r in range(self.slices))


def stage_epochs(epochs: int, slices: int) -> int:
    """Epochs of each stage: SISA's ``2E / (R + 1)``, rounded up, at least 1.

    Stage ``r`` sees ``(r + 1) / R`` of the shard, so ``e`` epochs per stage cost ``e (R + 1) / 2`` passes over
    the shard: ``e = 2E / (R + 1)`` keeps the gradient computations of training the shard once for ``E`` epochs
    (Bourtoule et al. 2021, slicing; their code, cleverhans-lab/machine-unlearning ``sisa.py``, uses
    ``2E / (R + 1)`` on average per slice). Rounding up gives every stage the same count and never trains a slice
    for 0 epochs; ``R = 1`` (no slicing) gives ``E``.

    Example:
        >>> stage_epochs(4, 3), stage_epochs(4, 4), stage_epochs(1, 8), stage_epochs(10, 1)
        (2, 2, 1, 10)
    """
    if int(epochs) < 1 or int(slices) < 1:
        raise ValueError(f"need epochs >= 1 and slices >= 1 to plan SISA's stages, got {epochs} and {slices}")
    return max(1, -(-2 * int(epochs) // (int(slices) + 1)))


def sisa_train(
    model_fn: Callable[[], nn.Module],
    data: ArrayDataset,
    recipe: Recipe,
    *,
    shards: int,
    slices: int,
    seed: int,
    drop_ids: Sequence[int] | torch.Tensor | None = None,
    device: str | torch.device = "cpu",
) -> tuple[SisaEnsemble, SisaRecord]:
    """Train a SISA ensemble: ``shards`` models on disjoint shards, each in ``slices`` stages, checkpointed.

    The assignment is a permutation of ``data.ids`` seeded by ``seed``, cut into ``shards`` near-equal shards, each
    cut into ``slices`` near-equal slices in order. Shard ``s`` is initialised by ``model_fn()`` after
    ``torch.manual_seed(seed + s)``, with ``recipe.make_optimizer``; stage ``r`` trains it for
    :func:`stage_epochs` epochs on slices ``0..r`` with a loader seeded by ``(seed, s, r)``. The caller's random
    state is left as it was.

    Args:
        model_fn: builds a fresh, untrained shard model (its output: [B, C] logits).
        data: all training samples (ids unique).
        recipe: optimizer, learning rate, batch size and ``epochs`` (E, see :func:`stage_epochs`).
        shards: number of shards S (models).
        slices: number of slices R per shard (stages, checkpoints).
        seed: seeds the assignment, the initialisations and the batch orders.
        drop_ids: samples left out of every stage while keeping the assignment of the full data: the ensemble
            that unlearning them must reproduce.
        device: where training runs.

    Returns:
        The ensemble and its :class:`SisaRecord`.

    Raises:
        ValueError: bad ``shards``/``slices`` (every slice needs a sample), ``recipe.epochs`` < 1, repeated ids in
            ``data`` or ``drop_ids`` that are not in it.
    """
    n = len(data)
    for name, value in (("shards", shards), ("slices", slices)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    if shards * slices > n:
        raise ValueError(f"shards * slices = {shards * slices} exceeds the {n} samples: every slice needs a sample; "
                         "use fewer shards or slices")
    if recipe.epochs < 1:
        raise ValueError(f"recipe.epochs must be >= 1 for SISA training (E in 2E/(R+1)), got {recipe.epochs}")
    if len(torch.unique(data.ids)) != n:
        raise ValueError("data.ids repeat; SISA assigns each sample id to one shard and slice: make the ids unique")
    gen = torch.Generator().manual_seed(seed)
    perm = data.ids[torch.randperm(n, generator=gen)]
    slice_ids = tuple(tuple(torch.tensor_split(shard, slices)) for shard in torch.tensor_split(perm, shards))
    removed = _check_ids(data.ids, drop_ids, "drop_ids")
    record = SisaRecord(slice_ids, (), (), recipe, data.without(sorted(removed)), seed,
                        stage_epochs(recipe.epochs, slices), frozenset(removed))
    dev = pick_device(device)
    models, checkpoints = [], []
    with _own_rng(dev):
        for s in range(shards):
            torch.manual_seed(seed + s)
            model = model_fn()
            if not isinstance(model, nn.Module):
                raise TypeError(f"model_fn must return an nn.Module, got {type(model).__name__}")
            model.to(dev)
            optimizer = recipe.make_optimizer(model.parameters())
            blobs = [_snapshot(model, optimizer, dev)]
            blobs += _run_stages(model, optimizer, record, s, 0, dev)[0]
            models.append(model)
            checkpoints.append(tuple(blobs))
    ensemble = SisaEnsemble(models)
    return ensemble, replace(record, checkpoints=tuple(checkpoints),
                             fingerprints=tuple(model_fingerprint(m) for m in models))


def sisa_unlearn(
    ensemble: SisaEnsemble, record: SisaRecord, forget_ids: Sequence[int] | torch.Tensor
) -> tuple[SisaEnsemble, SisaRecord, dict]:
    """Forget ``forget_ids`` exactly: retrain, from the last checkpoint before them, the shards that hold them.

    A shard holding forget ids rewinds to the checkpoint before its earliest slice that holds one and trains the
    stages from there again without them (nor the samples removed before); the other shards are copied as they
    are. The result equals :func:`sisa_train` with ``drop_ids`` = every removed sample, bit for bit on the CPU.
    Neither ``ensemble`` nor ``record`` is changed.

    Args:
        ensemble: the ensemble ``record`` belongs to.
        record: its record (returned with it by :func:`sisa_train` or by the :func:`sisa_unlearn` that made it).
        forget_ids: sample ids to forget (each once, in the training, not removed yet).

    Returns:
        ``(new_ensemble, new_record, info)``; ``info`` holds ``shards_retrained`` (a tuple of shard indices),
        ``rewound_to`` (shard -> first stage trained again), ``stage_epochs_replayed`` (epochs trained over all replayed
        stages), ``samples_replayed`` (samples times epochs replayed) and ``fraction``: ``samples_replayed`` over the
        sample passes of training the whole new ensemble from scratch (1: as costly as a full retrain).

    Raises:
        ValueError: an empty request, repeated, unknown or already removed ids, or an ensemble that is not the
            record's.
    """
    if len(ensemble.shards) != record.shards:
        raise ValueError(f"the ensemble has {len(ensemble.shards)} shard models, the record {record.shards} shards: "
                         "pass the record returned with this ensemble")
    for s, (m, fp) in enumerate(zip(ensemble.shards, record.fingerprints)):
        if model_fingerprint(m) != fp:
            raise ValueError(f"shard model {s} is not the one its record's last checkpoint holds: pass the record "
                             "returned with this ensemble (by sisa_train or by the sisa_unlearn that made it)")
    ids = torch.as_tensor(forget_ids, dtype=torch.long).reshape(-1)
    if len(ids) == 0:
        raise ValueError("the request forgets no sample: give at least one sample id")
    if len(torch.unique(ids)) != len(ids):
        raise ValueError("forget_ids repeat; give each sample once")
    where = record.locations()
    unknown = [i for i in ids.tolist() if i not in where]
    if unknown:
        raise ValueError(f"forget_ids not in the SISA training: {unknown[:10]} (showing up to 10); forget only sample "
                         "ids of the data given to sisa_train")
    again = sorted(i for i in ids.tolist() if i in record.removed)
    if again:
        raise ValueError(f"sample ids already removed: {again[:10]} (showing up to 10); leave them out of the request "
                         "(record.removed lists the removed ids)")
    rewind: dict[int, int] = {}
    for i in ids.tolist():
        s, r = where[i]
        rewind[s] = min(r, rewind.get(s, r))
    new_record = replace(record, data=record.data.without(ids), removed=record.removed | set(ids.tolist()))
    dev = _device_of(ensemble)
    models = [copy.deepcopy(m) for m in ensemble.shards]
    checkpoints, fingerprints = list(record.checkpoints), list(record.fingerprints)
    epochs_replayed = samples_replayed = 0
    with _own_rng(dev):
        for s in sorted(rewind):
            start = rewind[s]
            model = models[s]
            optimizer = record.recipe.make_optimizer(model.parameters())
            _restore(record.checkpoints[s][start], model, optimizer, dev)  # the state before stage `start`
            blobs, passes, epochs = _run_stages(model, optimizer, new_record, s, start, dev)
            checkpoints[s] = record.checkpoints[s][: start + 1] + tuple(blobs)
            fingerprints[s] = model_fingerprint(model)
            epochs_replayed += epochs
            samples_replayed += passes
    new_record = replace(new_record, checkpoints=tuple(checkpoints), fingerprints=tuple(fingerprints))
    total = new_record.sample_passes()
    info = {
        "shards_retrained": tuple(sorted(rewind)),
        "rewound_to": dict(sorted(rewind.items())),
        "stage_epochs_replayed": epochs_replayed,
        "samples_replayed": samples_replayed,
        "fraction": samples_replayed / total if total else 0.0,
    }
    return SisaEnsemble(models), new_record, info


@register("sisa")
def _sisa(model: nn.Module, request: Request, *, record: SisaRecord | None = None, progress: bool = False):
    """The registry's form of :func:`sisa_unlearn`: forget ``request.forget.ids``; returns the new ensemble (its
    new record is not returned: serve a sequence of requests with :func:`sisa_unlearn`)."""
    if not isinstance(model, SisaEnsemble):
        raise TypeError(f"method 'sisa' unlearns a SisaEnsemble (from sisa_train), got {type(model).__name__}")
    if not isinstance(record, SisaRecord):
        raise TypeError(f"method 'sisa' needs record=<the SisaRecord returned with this ensemble>, got "
                        f"{type(record).__name__}")
    request.need("forget", method="sisa")
    return sisa_unlearn(model, record, request.forget.ids)[0]


# ------------------------------------------------------------------------------------------------ internals


def _run_stages(model: nn.Module, optimizer, record: SisaRecord, shard: int, start: int,
                dev: torch.device) -> tuple[list[bytes], int, int]:
    """Train ``shard``'s stages ``start..R-1`` on ``record``'s data (its removed samples left out), checkpointing
    after each; returns the checkpoints, the samples times epochs and the epochs trained."""
    blobs, passes, epochs = [], 0, 0
    for r in range(start, record.slices):
        stage = record.data.subset(record.stage_ids(shard, r))
        if len(stage):  # a stage whose samples were all removed trains nothing
            loader = stage.loader(record.recipe.batch_size, seed=_loader_seed(record, shard, r))
            train(model, loader, optimizer, epochs=record.stage_epochs, device=dev, progress=False,
                  desc=f"sisa shard {shard} stage {r}")
            passes += record.stage_epochs * len(stage)
            epochs += record.stage_epochs
        blobs.append(_snapshot(model, optimizer, dev))
    return blobs, passes, epochs


def _loader_seed(record: SisaRecord, shard: int, stage: int) -> int:
    """Each (seed, shard, stage) its own batch order (one-to-one for a given number of shards and slices)."""
    return (record.seed * record.shards + shard) * record.slices + stage


def _snapshot(model: nn.Module, optimizer, dev: torch.device) -> bytes:
    buf = io.BytesIO()
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(), "rng": torch.get_rng_state(),
                "cuda_rng": torch.cuda.get_rng_state(dev) if dev.type == "cuda" else None},
               buf)  # serialised at once: later steps cannot change it
    return buf.getvalue()


def _restore(blob: bytes, model: nn.Module, optimizer, dev: torch.device) -> None:
    state = torch.load(io.BytesIO(blob), weights_only=False)
    model.load_state_dict(state["model"])
    optimizer.load_state_dict(state["optimizer"])
    torch.set_rng_state(state["rng"])
    if dev.type == "cuda" and state["cuda_rng"] is not None:
        torch.cuda.set_rng_state(state["cuda_rng"], dev)


def _own_rng(dev: torch.device):
    """Training seeds and restores torch's random state; the caller's is put back afterwards."""
    return torch.random.fork_rng(devices=[dev.index or 0] if dev.type == "cuda" else [])


def _device_of(model: nn.Module) -> torch.device:
    p = next(model.parameters(), None)
    return p.device if p is not None else torch.device("cpu")


def _check_ids(known: torch.Tensor, sample_ids, name: str) -> set[int]:
    if sample_ids is None:
        return set()
    ids = torch.as_tensor(sample_ids, dtype=torch.long).reshape(-1)
    missing = ids[~torch.isin(ids, known)]
    if len(missing):
        raise ValueError(f"{name} not in the data: {missing[:10].tolist()} (showing up to 10); give ids of data.ids")
    return set(ids.tolist())
