"""The trained baselines of the paper, registered into the library's unlearning registry
(:data:`amnesiac.unlearning.METHODS`) when :mod:`amnesiac_paper` is imported; each has the one contract
(model and request in, a new model out; the input is never changed).

================  ================================================================================
``relabel``       Graves's baseline: train on the forget samples with random wrong labels
``finetune``      keep training on the retain set (the "repair only" control)
``retrain``       train a fresh model from scratch on the retain set (the gold standard)
``neggrad_plus``  descend on retain, ascend on forget, weighted (Kurmanji et al. 2023)
``ssd``           Selective Synaptic Dampening: shrink parameters important to the forget set (Foster et al. 2024)
``scrub``         max-min distillation from the original model (Kurmanji et al. NeurIPS 2023)
================  ================================================================================
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from amnesiac.data import ArrayDataset
from amnesiac.training import train
from amnesiac.unlearning import Request, _params_of, register, repair


@register("relabel")
def _relabel(model, request: Request, *, epochs: int = 1, lr: float | None = None, progress=False):
    request.need("forget", "recipe", "num_classes", method="relabel")
    forget = request.forget
    gen = torch.Generator().manual_seed(request.seed + 104729)
    shift = torch.randint(1, request.num_classes, (len(forget),), generator=gen)
    wrong = ArrayDataset(forget.x, (forget.y + shift) % request.num_classes, forget.ids, forget.name + "-relabelled")
    new = copy.deepcopy(model)
    rec = request.recipe
    train(
        new,
        wrong.loader(rec.batch_size, seed=request.seed + 1),
        _params_of(new, request, lr),
        epochs=epochs,
        device=request.device,
        progress=progress,
        desc="relabel",
    )
    return new


@register("finetune")
def _finetune(model, request: Request, *, epochs: int = 1, lr: float | None = None, progress=False):
    return repair(model, request, epochs=epochs, lr=lr, progress=progress, desc="finetune")


@register("retrain")
def _retrain(model, request: Request, *, epochs: int | None = None, progress=False):
    request.need("retain", "recipe", "model_fn", method="retrain")
    torch.manual_seed(request.seed)
    new = request.model_fn()
    rec = request.recipe
    train(
        new,
        request.retain.loader(rec.batch_size, seed=request.seed),
        rec.make_optimizer(new.parameters()),
        epochs=rec.epochs if epochs is None else epochs,
        device=request.device,
        progress=progress,
        desc="retrain",
    )
    return new


def _cycle(loader):
    while True:
        yield from loader


@register("neggrad_plus")
def _neggrad_plus(model, request: Request, *, epochs: int = 1, beta: float = 0.95, lr: float | None = None,
                  progress=False):
    """NegGrad+ (Kurmanji et al. 2023): each step descends on a retain batch and ascends on a forget batch,
    loss = beta * CE(retain) - (1 - beta) * CE(forget); ``epochs`` passes over the retain set."""
    request.need("forget", "retain", "recipe", method="neggrad_plus")
    if not 0.0 <= beta <= 1.0:
        raise ValueError(f"beta must be in [0, 1], got {beta}")
    from amnesiac.training import pick_device

    dev = pick_device(request.device)
    new = copy.deepcopy(model).to(dev)
    opt = _params_of(new, request, lr)
    rec = request.recipe
    forget = _cycle(request.forget.loader(rec.batch_size, seed=request.seed + 31))
    new.train()
    for _ in range(epochs):
        for x, y, _ in request.retain.loader(rec.batch_size, seed=request.seed + 37):
            xf, yf, _ = next(forget)
            opt.zero_grad(set_to_none=True)
            loss = beta * F.cross_entropy(new(x.to(dev)), y.to(dev)) \
                - (1 - beta) * F.cross_entropy(new(xf.to(dev)), yf.to(dev))
            loss.backward()
            opt.step()
    return new


def _importance(model: nn.Module, data: ArrayDataset, batch_size: int, dev) -> list[torch.Tensor]:
    """SSD's importances: the squared batch gradient of the loss, averaged over the batches of ``data``."""
    params = [q for q in model.parameters() if q.requires_grad]
    imp = [torch.zeros_like(q) for q in params]
    batches = 0
    for x, y, _ in data.loader(batch_size, shuffle=False):
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x.to(dev)), y.to(dev)).backward()
        for acc, q in zip(imp, params):
            acc += q.grad.detach() ** 2
        batches += 1
    model.zero_grad(set_to_none=True)
    return [acc / max(batches, 1) for acc in imp]


@register("ssd")
def _ssd(model, request: Request, *, selection: float = 10.0, dampening: float = 1.0, progress=False):
    """Selective Synaptic Dampening (Foster et al. AAAI 2024): with importances I_D on the whole training set
    (retain and forget) and I_f on the forget set, every parameter with I_f > ``selection`` * I_D is multiplied by
    min(``dampening`` * I_D / I_f, 1). No training."""
    request.need("forget", "retain", "recipe", method="ssd")
    if selection <= 0 or dampening <= 0:
        raise ValueError(f"selection and dampening must be positive, got {selection}, {dampening}")
    from amnesiac.training import pick_device

    dev = pick_device(request.device)
    new = copy.deepcopy(model).to(dev)
    new.eval()  # as the authors' code: importances with the model in eval mode
    r, f = request.retain, request.forget
    full = ArrayDataset(torch.cat([r.x, f.x]), torch.cat([r.y, f.y]), torch.cat([r.ids, f.ids]), "train")
    bs = request.recipe.batch_size
    imp_d, imp_f = _importance(new, full, bs, dev), _importance(new, request.forget, bs, dev)
    with torch.no_grad():
        for q, d, f in zip([q for q in new.parameters() if q.requires_grad], imp_d, imp_f):
            chosen = f > selection * d
            factor = torch.clamp(dampening * d / f.clamp_min(1e-30), max=1.0)
            q.mul_(torch.where(chosen, factor, torch.ones_like(factor)))
    new.train(model.training)
    return new


def _distill_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL(teacher || student) of the temperature-softened outputs, times T^2, mean over the batch (SCRUB's)."""
    p_s = F.log_softmax(student_logits / temperature, dim=1)
    p_t = F.softmax(teacher_logits / temperature, dim=1)
    return F.kl_div(p_s, p_t, reduction="batchmean") * temperature**2


@register("scrub")
def _scrub(model, request: Request, *, epochs: int = 3, max_epochs: int = 1, alpha: float = 1.0, gamma: float = 1.0,
           temperature: float = 4.0, lr: float | None = None, progress=False):
    """SCRUB (Kurmanji et al. NeurIPS 2023): a student initialised from the model moves away from the frozen
    original (the teacher) on the forget set (max steps: ascend the KL) and stays close to it on the retain set
    (min steps: alpha * KL + gamma * CE). Each of ``epochs`` passes does a max epoch over the forget set while
    the epoch index is below ``max_epochs``, then a min epoch over the retain set."""
    request.need("forget", "retain", "recipe", method="scrub")
    if max_epochs > epochs or epochs < 1 or temperature <= 0:
        raise ValueError(f"need 1 <= epochs, max_epochs <= epochs and temperature > 0; got {epochs}, {max_epochs}, "
                         f"{temperature}")
    from amnesiac.training import pick_device

    dev = pick_device(request.device)
    teacher = copy.deepcopy(model).to(dev).eval()
    new = copy.deepcopy(model).to(dev)
    opt = _params_of(new, request, lr)
    bs = request.recipe.batch_size
    new.train()
    for e in range(epochs):
        if e < max_epochs:
            for x, _, _ in request.forget.loader(bs, seed=request.seed + 41 + e):
                x = x.to(dev)
                with torch.no_grad():
                    t = teacher(x)
                opt.zero_grad(set_to_none=True)
                (-_distill_kl(new(x), t, temperature)).backward()
                opt.step()
        for x, y, _ in request.retain.loader(bs, seed=request.seed + 43 + e):
            x, y = x.to(dev), y.to(dev)
            with torch.no_grad():
                t = teacher(x)
            opt.zero_grad(set_to_none=True)
            out = new(x)
            (alpha * _distill_kl(out, t, temperature) + gamma * F.cross_entropy(out, y)).backward()
            opt.step()
    return new
