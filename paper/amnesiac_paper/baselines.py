"""The trained baselines of the paper, registered into the library's unlearning registry
(:data:`amnesiac.unlearning.METHODS`) when :mod:`amnesiac_paper` is imported; each has the one contract
(model and request in, a new model out; the input is never changed).

========================  ========================================================================
``relabel``               Graves's baseline: train on the forget samples with random wrong labels
``finetune``              keep training on the retain set (the "repair only" control)
``retrain``               train a fresh model from scratch on the retain set (the gold standard)
``neggrad_plus``          descend on retain, ascend on forget, weighted (Kurmanji et al. 2023)
``ssd``                   Selective Synaptic Dampening: shrink parameters important to the forget set
                          (Foster et al. 2024)
``scrub``                 max-min distillation from the original model (Kurmanji et al. NeurIPS 2023)
``certified_last_layer``  certified removal: one Newton step on an L2-regularised last layer over frozen
                          features (Guo et al. ICML 2020)
``logit_suppression``     a control for class forgetting: lower the class's output bias until no forget
                          example is predicted as it
``oracle_matching``       datamodel matching (Georgiev et al. 2024) with the oracle's outputs predicted from
                          the ledger: fine-tune towards f(theta) - alpha * J delta
========================  ========================================================================

Their public helpers: :func:`fit_last_layer` and :func:`newton_removal` (certified removal on a linear last
layer, pure functions on tensors) and :func:`predicted_outputs` (the ledger's first-order prediction of the
outputs of the model trained without the forget set).
"""

from __future__ import annotations

import copy
import functools
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, jvp

from amnesiac.data import ArrayDataset
from amnesiac.grads import ParamLayout
from amnesiac.ledger import Ledger
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


# ------------------------------------------------------------------ certified removal (Guo et al. ICML 2020)

LOSSES = ("cross_entropy", "squared")


def _last_layer_problem(features, labels, w, num_classes, loss):
    """Checked float64 pieces of a last-layer problem: features with a column of ones [n, d+1] (the bias),
    one-hot labels [n, C], and ``w`` (flat: weight row-major, then bias, as nn.Linear's ParamLayout) as one
    matrix [C, d+1] whose last column is the bias."""
    if loss not in LOSSES:
        raise ValueError(f"unknown loss {loss!r}; valid: {', '.join(LOSSES)}")
    if features.dim() != 2 or labels.shape != features.shape[:1]:
        raise ValueError(f"need features [n, d] and labels [n], got shapes {tuple(features.shape)} and "
                         f"{tuple(labels.shape)}; flatten the features first")
    n, d = features.shape
    a = torch.cat([features.detach().double(), features.new_ones(n, 1, dtype=torch.float64)], 1)  # [n, d+1]
    if w is not None:
        if w.numel() % (d + 1):
            raise ValueError(f"w has {w.numel()} entries, not a multiple of d + 1 = {d + 1}: it must be a Linear's "
                             "weight [C, d] and bias [C], flattened in that order")
        num_classes = w.numel() // (d + 1)
    num_classes = int(labels.max()) + 1 if num_classes is None else num_classes
    if len(labels) and not 0 <= int(labels.min()) <= int(labels.max()) < num_classes:
        raise ValueError(f"labels must lie in [0, {num_classes}), got {int(labels.min())}..{int(labels.max())}")
    y = F.one_hot(labels.long(), num_classes).to(a)  # [n, C]
    m = None if w is None else torch.cat([w[: num_classes * d].reshape(num_classes, d),
                                          w[num_classes * d:].reshape(num_classes, 1)], 1).to(a)
    return a, y, m


def _flat(m: torch.Tensor) -> torch.Tensor:
    """[C, d+1] (bias last) back to nn.Linear's flat layout (weight row-major, then bias)."""
    return torch.cat([m[:, :-1].reshape(-1), m[:, -1]])


def _terms(a, y, m, reg, b, loss):
    """J(m) = sum_i loss_i + reg/2 ||m||^2 + <b, m>, its gradient [C, d+1] and the class probabilities [n, C]
    (None for the squared loss)."""
    z = a @ m.T  # [n, C]
    if loss == "squared":
        value, probs, r = 0.5 * ((z - y) ** 2).sum(), None, z - y
    else:
        value, probs = (torch.logsumexp(z, 1) - (z * y).sum(1)).sum(), torch.softmax(z, 1)
        r = probs - y
    value = value + 0.5 * reg * (m**2).sum() + (b * m).sum()
    return value, r.T @ a + reg * m + b, probs


def _hessian(a, probs, reg, num_classes, chunk: int = 4096):
    """The Hessian of J in flat [C (d+1)] order: I_C (x) A^T A for the squared loss; for cross-entropy
    sum_i (diag(p_i) - p_i p_i^T) (x) a_i a_i^T, the block diagonal minus B^T B with B_i = p_i (x) a_i."""
    d1 = a.shape[1]
    if probs is None:
        h = torch.kron(torch.eye(num_classes, dtype=a.dtype, device=a.device), a.T @ a)
    else:
        h = torch.block_diag(*[(a * probs[:, c: c + 1]).T @ a for c in range(num_classes)])
        for lo in range(0, len(a), chunk):
            bmat = (probs[lo: lo + chunk, :, None] * a[lo: lo + chunk, None, :]).reshape(-1, num_classes * d1)
            h -= bmat.T @ bmat
    return h + reg * torch.eye(len(h), dtype=a.dtype, device=a.device)


def _newton_direction(h, g):
    """H^{-1} g for a symmetric positive definite H (Cholesky), as [C, d+1] like ``g``."""
    return torch.cholesky_solve(g.reshape(-1, 1), torch.linalg.cholesky(h)).reshape(g.shape)


def fit_last_layer(
    features: torch.Tensor,
    labels: torch.Tensor,
    lam: float,
    *,
    loss: str = "cross_entropy",
    num_classes: int | None = None,
    init: torch.Tensor | None = None,
    noise: torch.Tensor | None = None,
    tol: float = 1e-10,
    max_steps: int = 100,
) -> torch.Tensor:
    """The minimiser of Guo et al.'s objective for a linear last layer over fixed features, in float64.

    J(w) = sum_i loss_i(w) + (lam * n / 2) ||w||^2 + <noise, w> over the n rows, w = (weight, bias) of an
    nn.Linear flattened as its ParamLayout (weight row-major, then bias; the bias is regularised too).
    ``loss="cross_entropy"`` is softmax cross-entropy (Guo et al. fit binary logistic regressions one class
    against the rest; the multinomial loss is as convex); ``"squared"`` is 0.5 ||W phi + b - onehot(y)||^2.
    ``noise`` is Guo's loss perturbation b (drawn b ~ N(0, sigma^2 I) by the caller) which makes the later
    removal certifiable. Newton's method with a backtracking line search from ``init`` (default zeros) until
    ||grad J|| <= ``tol`` * ||grad J(0)||; J is strongly convex (lam > 0), so the minimiser is unique.

    Args:
        features: [n, d] frozen features (the output of every layer before the last).
        labels: [n] class indices.
        lam: the L2 strength per sample (> 0).
        loss: ``"cross_entropy"`` or ``"squared"``.
        num_classes: C (default: from ``init``, else the largest label + 1).
        init: a flat [C (d+1)] starting point, e.g. the trained layer.
        noise: a flat [C (d+1)] vector b added as <b, w> to the objective.
        tol: the gradient norm to reach, relative to the gradient at zero.
        max_steps: raise if not reached within this many Newton steps.

    Returns:
        The flat [C (d+1)] float64 minimiser.

    Example:
        >>> phi, y = torch.eye(2), torch.tensor([0, 1])
        >>> w = fit_last_layer(phi, y, 0.5, loss="squared")  # ridge: (A^T A + lam n I) w = A^T Y, A = [Phi, 1]
        >>> w.shape, round(float(w[0]), 4)
        (torch.Size([6]), 0.375)
    """
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a positive finite number (the L2 strength), got {lam!r}")
    a, y, m = _last_layer_problem(features, labels, init, num_classes, loss)
    c = y.shape[1]
    m = torch.zeros(c, a.shape[1], dtype=a.dtype, device=a.device) if m is None else m
    b = torch.zeros_like(m) if noise is None else _last_layer_problem(features, labels, noise, None, loss)[2]
    reg = lam * len(a)
    scale = max(float(torch.linalg.vector_norm(_terms(a, y, torch.zeros_like(m), reg, b, loss)[1])), 1e-300)
    value, g, probs = _terms(a, y, m, reg, b, loss)
    for _ in range(max_steps):
        if float(torch.linalg.vector_norm(g)) <= tol * scale:
            return _flat(m)
        step = _newton_direction(_hessian(a, probs, reg, c), g)
        decrease, t = float((g * step).sum()), 1.0
        while True:  # Armijo backtracking; the slack of a few ulps of J lets the last, tiny steps through
            new = _terms(a, y, m - t * step, reg, b, loss)
            if float(new[0]) <= float(value) - 1e-4 * t * decrease + 1e-13 * abs(float(value)) or t < 1e-6:
                break
            t /= 2
        m = m - t * step
        value, g, probs = new
    raise RuntimeError(f"fit_last_layer did not converge: gradient norm {float(torch.linalg.vector_norm(g)):.3g} "
                       f"after {max_steps} Newton steps (target {tol * scale:.3g}); raise lam or max_steps, or "
                       "check the features for NaN or huge values")


def newton_removal(
    features: torch.Tensor,
    labels: torch.Tensor,
    w: torch.Tensor,
    forget_mask: torch.Tensor,
    lam: float,
    *,
    loss: str = "cross_entropy",
    noise: torch.Tensor | None = None,
) -> tuple[torch.Tensor, float]:
    """Guo et al.'s removal: one Newton step from the minimiser ``w`` of J_D towards that of J_R.

    D is every row, F the rows of ``forget_mask``, R = D minus F. As in Guo et al. (their Delta = lam w +
    grad loss(w, x_n) for one removed sample, and their code's Hessian ``lam * X.size(0)`` over the remaining
    rows), the retain objective is J_R(w) = sum_{i in R} loss_i(w) + (lam |R| / 2) ||w||^2 (+ <b, w>): lam is
    per sample, so removing a sample removes its share lam/2 ||w||^2 of the regulariser too, and J_R is the
    objective a refit on R alone minimises. The step is

        w_new = w + H_R^{-1} Delta,   Delta = sum_{i in F} (grad loss_i(w) + lam w),

    with H_R the Hessian of J_R at w; where grad J_D(w) + b = 0 this is w - H_R^{-1} grad (J_R + <b, .>)(w),
    one Newton step on the retain objective. It is exact for the squared loss (J_R quadratic) and leaves
    a gradient residual of order ||H_R^{-1} Delta||^2 for cross-entropy; Guo et al.'s certificate bounds
    that residual and hides it under the noise b of :func:`fit_last_layer`.

    Args:
        features: [n, d] frozen features of D (retain and forget rows).
        labels: [n] class indices.
        w: flat [C (d+1)] minimiser of J_D (nn.Linear's layout: weight row-major, then bias).
        forget_mask: [n] bool, True on the rows to remove.
        lam: the L2 strength per sample, as in the fit.
        loss: ``"cross_entropy"`` or ``"squared"``, as in the fit.
        noise: the fit's perturbation b, if any (it stays in the objective; only the residual reads it).

    Returns:
        (the new flat w in float64, the gradient residual ||grad (J_R + <b, .>)(w_new)||).

    Example:
        >>> phi, y = torch.eye(3), torch.tensor([0, 1, 1])
        >>> w = fit_last_layer(phi, y, 0.1, loss="squared")
        >>> new, residual = newton_removal(phi, y, w, torch.tensor([False, False, True]), 0.1, loss="squared")
        >>> residual < 1e-12  # one Newton step minimises a quadratic
        True
    """
    if not (math.isfinite(lam) and lam > 0):
        raise ValueError(f"lam must be a positive finite number (the L2 strength), got {lam!r}")
    a, y, m = _last_layer_problem(features, labels, w, None, loss)
    forget = torch.as_tensor(forget_mask, dtype=torch.bool, device=a.device)
    if forget.shape != (len(a),):
        raise ValueError(f"forget_mask must be a bool [n] = [{len(a)}] row mask, got shape {tuple(forget.shape)}")
    keep = ~forget
    if not bool(keep.any()):
        raise ValueError("forget_mask marks every row: nothing is left to fit; keep at least one retain row")
    b = torch.zeros_like(m) if noise is None else _last_layer_problem(features, labels, noise, None, loss)[2]
    reg_r = lam * int(keep.sum())
    nothing = torch.zeros_like(m)
    delta = _terms(a[forget], y[forget], m, lam * int(forget.sum()), nothing, loss)[1]  # sum_F grad loss_i + lam w
    probs = _terms(a[keep], y[keep], m, reg_r, b, loss)[2]
    m_new = m + _newton_direction(_hessian(a[keep], probs, reg_r, y.shape[1]), delta)
    residual = _terms(a[keep], y[keep], m_new, reg_r, b, loss)[1]
    return _flat(m_new), float(torch.linalg.vector_norm(residual))


def _features(body: nn.Module, x: torch.Tensor, dev, chunk: int = 1024) -> torch.Tensor:
    """``body(x)`` in float64, eval mode, no grad, on a copy (the caller's modules keep their dtype and mode)."""
    body = copy.deepcopy(body).to(dev, torch.float64).eval()
    with torch.no_grad():
        return torch.cat([body(xb.to(dev, torch.float64)) for xb in x.split(chunk)])


@register("certified_last_layer")
def _certified(model, request: Request, *, lam: float = 1e-3, loss: str = "cross_entropy", refit: bool = True,
               sigma: float = 0.0, progress=False):
    """Certified removal (Guo, Goldstein, Hannun, van der Maaten, ICML 2020) on the last layer of an
    nn.Sequential ending in an nn.Linear: the features model[:-1](x) stay frozen, the last layer is (with
    ``refit``) first fitted to J_D on D = retain + forget (Guo et al. train it that way, with loss perturbation
    b ~ N(0, ``sigma``^2 I) seeded by request.seed when ``sigma`` > 0), then :func:`newton_removal` removes the
    forget samples. Without ``refit`` the step starts from the trained layer (an influence-function removal of
    the forget samples; not certified). Needs request.forget and request.retain."""
    request.need("forget", "retain", method="certified_last_layer")
    if not isinstance(model, nn.Sequential) or not len(model):
        got = f"a {type(model).__name__}, not an nn.Sequential"
    elif not isinstance(model[-1], nn.Linear) or model[-1].bias is None:
        got = f"an nn.Sequential ending in {model[-1]}"
    else:
        got = None
    if got:
        raise ValueError(f"method 'certified_last_layer' needs an nn.Sequential whose last module is an nn.Linear "
                         f"with a bias (the layer it refits over the frozen features model[:-1](x)), got {got}; "
                         "build the model as nn.Sequential(body, nn.Linear(d, classes))")
    if not (math.isfinite(sigma) and sigma >= 0) or (sigma > 0 and not refit):
        raise ValueError(f"sigma must be a finite number >= 0, and sigma > 0 (the loss perturbation of the fit) needs "
                         f"refit=True; got sigma={sigma!r}, refit={refit!r}")
    from amnesiac.training import pick_device

    dev = pick_device(request.device)
    new = copy.deepcopy(model).to(dev)
    layer = new[-1]
    r, f = request.retain, request.forget
    phi = _features(new[:-1], torch.cat([r.x, f.x]), dev)
    if phi.dim() != 2 or phi.shape[1] != layer.in_features:
        raise ValueError(f"model[:-1] gives features of shape {tuple(phi.shape)}, the last layer takes "
                         f"[n, {layer.in_features}]; end the body with nn.Flatten()")
    labels = torch.cat([r.y, f.y]).to(dev)
    forget_mask = torch.cat([torch.zeros(len(r), dtype=torch.bool), torch.ones(len(f), dtype=torch.bool)]).to(dev)
    w = torch.cat([layer.weight.detach().reshape(-1), layer.bias.detach()]).to(torch.float64)
    noise = None
    if sigma > 0:
        gen = torch.Generator().manual_seed(request.seed + 7877)
        noise = (sigma * torch.randn(w.numel(), generator=gen, dtype=torch.float64)).to(dev)
    if refit:
        w = fit_last_layer(phi, labels, lam, loss=loss, init=w, noise=noise)
    w, _ = newton_removal(phi, labels, w, forget_mask, lam, loss=loss, noise=noise)
    with torch.no_grad():
        layer.weight.copy_(w[: layer.weight.numel()].reshape(layer.weight.shape))
        layer.bias.copy_(w[layer.weight.numel():])
    return new


# ------------------------------------------------------------------------------------- a class-forgetting control


@register("logit_suppression")
def _logit_suppression(model, request: Request, *, shift: float | None = None, margin: float = 1.0, progress=False):
    """A control for class forgetting: does forgetting a class amount to silencing one output? A copy with the
    output bias of the forget set's one class lowered by ``shift``; every other logit is unchanged. With
    ``shift=None``, the smallest shift that puts the class's logit below the largest other logit on every
    forget example, plus ``margin`` (from the model's outputs on request.forget, eval mode, no grad). The
    output layer is the model's last module (its last registered one when not an nn.Sequential), which must
    be an nn.Linear with a bias; the method checks that the bias moves the outputs as it should."""
    request.need("forget", method="logit_suppression")
    classes = request.forget.y.unique()
    if len(classes) != 1:
        raise ValueError(f"logit_suppression is a control for class forgetting: the forget set must hold one class, "
                         f"got labels {classes.tolist()[:10]}; pass one class's samples as request.forget")
    if shift is not None and not (math.isfinite(shift) and shift >= 0):
        raise ValueError(f"shift must be a finite number >= 0 (how far the class's bias is lowered), got {shift!r}; "
                         "or shift=None for the smallest shift that silences the class on the forget set")
    if not (math.isfinite(margin) and margin >= 0):
        raise ValueError(f"margin must be a finite number >= 0, got {margin!r}")
    from amnesiac.training import pick_device

    dev = pick_device(request.device)
    new = copy.deepcopy(model).to(dev).eval()
    last = new[-1] if isinstance(new, nn.Sequential) and len(new) else list(new.modules())[-1]
    c = int(classes[0])
    if not (isinstance(last, nn.Linear) and last.bias is not None and 0 <= c < last.out_features
            and last.out_features > 1):
        raise ValueError(f"method 'logit_suppression' needs a model whose last module is an nn.Linear with a bias and "
                         f"more than {c} outputs (the output layer whose bias it lowers), got a "
                         f"{type(last).__name__}; put the classifier last")

    def logits():
        with torch.no_grad():
            return torch.cat([new(xb.to(dev)) for xb in request.forget.x.split(1024)])

    before = logits()  # [n, C]
    if shift is None:
        others = before.clone()
        others[:, c] = -math.inf
        shift = max(float((before[:, c] - others.max(1).values).max()), 0.0) + margin
    with torch.no_grad():
        last.bias[c] -= shift
    want = before.clone()
    want[:, c] -= shift
    if not torch.allclose(logits(), want, rtol=1e-4, atol=1e-4 * (1 + abs(shift))):
        raise ValueError(f"the model's last registered module ({type(last).__name__}) is not its output layer: "
                         "lowering its bias did not lower one output alone; use an nn.Sequential ending in the "
                         "classifier")
    new.train(model.training)
    return new


# ---------------------------------------------------- datamodel matching with the ledger (Georgiev et al. 2024)


def predicted_outputs(model: nn.Module, delta: torch.Tensor, x: torch.Tensor, *, alpha: float = 1.0,
                      chunk_size: int = 256) -> torch.Tensor:
    """The ledger's first-order prediction of the outputs without the forget set: f(theta)(x) - alpha J delta.

    J is the Jacobian of the outputs in the trainable parameters theta at the model's current values, so this is
    the linearisation of f(theta - alpha delta)(x) around theta (exact for a model linear in its parameters);
    ``delta`` is flat in the model's :class:`~amnesiac.ParamLayout` (e.g. ``log.delta_vector(groups)``). One
    Jacobian-vector product (``torch.func.jvp`` of ``functional_call``) per ``chunk_size`` rows, in eval mode, on
    a copy: the model's parameters and buffers do not change. These are the oracle outputs that datamodel matching
    (Georgiev et al., "Attribute-to-delete: machine unlearning via datamodel matching", ICLR 2025) fine-tunes
    towards; there they come from datamodels fit on many retrained models, here from the ledger.

    Args:
        model: the trained model.
        delta: flat [P] parameter change to remove.
        x: [N, ...] inputs.
        alpha: the scale of ``delta``.
        chunk_size: rows per product.

    Returns:
        [N, C] predicted outputs (detached).

    Example:
        >>> m = nn.Linear(2, 1, bias=False); x = torch.ones(1, 2)
        >>> out = predicted_outputs(m, torch.tensor([1.0, 1.0]), x)
        >>> torch.allclose(out, m(x) - 2.0)
        True
    """
    layout = ParamLayout.of(model)
    if delta.numel() != layout.numel:
        raise ValueError(f"delta has {delta.numel()} entries, the model {layout.numel} trainable parameters: pass a "
                         "flat delta in the model's ParamLayout (e.g. log.delta_vector(groups) of its own log)")
    net = copy.deepcopy(model).eval()
    named = dict(net.named_parameters())
    params = {n: named[n].detach() for n in layout.names}
    frozen = {n: q.detach() for n, q in named.items() if n not in params}
    buffers = {n: b.detach() for n, b in net.named_buffers()}
    dev = params[layout.names[0]].device
    tangent = {n: t.to(dev, params[n].dtype) for n, t in layout.unflatten(delta.detach().reshape(-1)).items()}

    def outputs(p, xb):
        return functional_call(net, ({**p, **frozen}, buffers), (xb,))

    outs = []
    with torch.no_grad():
        for xb in x.to(dev).split(chunk_size):
            out, jv = jvp(functools.partial(outputs, xb=xb), (params,), (tangent,))  # f(theta)(x), J delta: [B, C]
            outs.append(out - alpha * jv)
    return torch.cat(outs)


@register("oracle_matching")
def _oracle_matching(model, request: Request, *, log: Ledger | None = None, delta: torch.Tensor | None = None,
                     alpha: float = 1.0, epochs: int = 2, lr: float | None = None, retain_size: int | None = None,
                     progress=False):
    """Datamodel matching (DMM; Georgiev et al., "Attribute-to-delete", ICLR 2025) with the oracle's outputs
    predicted from the ledger: targets = :func:`predicted_outputs` (f(theta) - ``alpha`` J delta, computed once)
    on a matching set of the forget samples and ``retain_size`` random retain samples (default as many as the
    forget set, at least one batch; seeded by request.seed), then a copy is fine-tuned ``epochs`` passes over
    the matching set with the recipe's optimizer (at ``lr`` if given) on the squared error to the targets (sum
    over outputs, mean over the batch), in shuffled batches of recipe.batch_size. The delta is ``log``'s delta of
    request.forget_groups, or ``delta`` (a flat vector in the model's layout); give exactly one. Needs
    request.forget, request.retain and request.recipe."""
    request.need("forget", "retain", "recipe", method="oracle_matching")
    if (log is None) == (delta is None):
        raise ValueError("method 'oracle_matching' needs exactly one of log=<a ledger recorded in training, with "
                         "request.forget_groups> and delta=<a flat tensor in the model's ParamLayout>, got "
                         f"{'both' if log is not None else 'neither'}")
    if log is not None:
        if not isinstance(log, Ledger):
            raise TypeError(f"method 'oracle_matching' needs log=<a Ledger such as DeltaLog>, got {type(log).__name__}")
        request.need("forget_groups", method="oracle_matching")
        log.layout.check(model)
        delta = log.delta_vector(request.forget_groups)
    if not math.isfinite(alpha) or epochs < 1:
        raise ValueError(f"need a finite alpha and epochs >= 1, got alpha={alpha!r}, epochs={epochs!r}")
    forget, retain, bs = request.forget, request.retain, request.recipe.batch_size
    k = min(len(retain), max(len(forget), bs)) if retain_size is None else retain_size
    if not 0 <= k <= len(retain):
        raise ValueError(f"retain_size must be in [0, {len(retain)}] (the retain set's size), got {retain_size!r}")
    gen = torch.Generator().manual_seed(request.seed + 6007)
    x = torch.cat([forget.x, retain.x[torch.randperm(len(retain), generator=gen)[:k]]])
    from amnesiac.training import pick_device

    dev = pick_device(request.device)
    new = copy.deepcopy(model).to(dev)
    targets = predicted_outputs(new, delta, x.to(dev), alpha=alpha)  # [m, C], from the unchanged copy
    opt = _params_of(new, request, lr)
    new.train()
    for _ in range(epochs):
        for rows in torch.randperm(len(x), generator=gen).split(bs):
            opt.zero_grad(set_to_none=True)
            ((new(x[rows].to(dev)) - targets[rows.to(dev)]) ** 2).sum(1).mean().backward()
            opt.step()
    return new
