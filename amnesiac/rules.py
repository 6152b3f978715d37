"""Update rules: each optimizer's step written once, as a linear map of the groups' gradient shares.

The delta log follows several *tracks* through training: one per group (its delta ``d``, its share ``s`` of
this step's batch gradient and, for optimizers with a first moment, its share ``m`` of the moment buffer)
plus the remainder. An update rule says what one step of its optimizer does to a track, per coordinate:

    d <- shrink * d                     decoupled weight decay (AdamW)
    s <- s + wd * d                     coupled weight decay (L2 in the gradient)
    m <- beta * m + gamma * s           the first moment (momentum, Adam's m, RMSprop's buffer)
    d <- d - c * m - e * s              the step itself

Everything an optimizer computes from the whole batch that is not linear in the gradient (Adam's and
RMSprop's denominators, Adagrad's accumulated sum) is read from its realised state after the step and taken
as given; that is the one assumption (the group's influence on the second moment is ignored; the Method
chapter, book/method.md, derives every rule). The map is linear in (d, s, m), so the tracks of all groups
plus the remainder add up to the optimizer's real update, a checkable invariant.

Adding an optimizer is one function and one decorator::

    @register_update_rule(torch.optim.SGD)
    def sgd(optimizer, group, state, step) -> Step: ...

The function gets the optimizer, one of its ``param_groups``, one parameter's ``state`` (after the step)
and the number of steps this optimizer has taken (1 on the first), and returns a :class:`Step` whose fields
are floats, tensors shaped like the parameter, or ``None`` for an absent term. A rule with a first moment
and no weight decay is settled lazily by the log (once per segment of steps instead of every step).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, fields

import torch
from torch.optim import SGD, Adagrad, Adam, AdamW, Optimizer, RMSprop

from . import buffers
from .buffers import held_only_by_caller

Value = float | torch.Tensor | None


@dataclass(frozen=True)
class Step:
    """One optimizer step on one parameter tensor as a linear map of a track (see the module docstring).

    Example:
        >>> Step(e=0.1)  # plain SGD with learning rate 0.1: d <- d - 0.1 * s
        Step(shrink=None, wd=None, beta=None, gamma=None, c=None, e=0.1)
    """

    shrink: Value = None
    wd: Value = None
    beta: Value = None
    gamma: Value = None
    c: Value = None
    e: Value = None


STEP_FIELDS = tuple(f.name for f in fields(Step))
NEUTRAL = {"shrink": 1.0, "wd": 0.0, "beta": 0.0, "gamma": 0.0, "c": 0.0, "e": 0.0}  # the value of an absent term

RuleFn = Callable[[Optimizer, dict, dict, int], Step]


@dataclass(frozen=True)
class UpdateRule:
    """A registered rule: the function and the options its optimizer must keep at these values."""

    name: str
    fn: RuleFn
    required: tuple[tuple[str, object], ...]

    def check(self, group: dict) -> None:
        bad = [(k, group[k]) for k, v in self.required if k in group and group[k] != v]
        if bad:
            wanted = ", ".join(f"{k}={v!r}" for k, v in self.required if k in dict(bad))
            raise ValueError(
                f"the delta log cannot attribute {self.name} updates with "
                f"{', '.join(f'{k}={v!r}' for k, v in bad)}; use {wanted}"
                + (" (minimise the negated loss instead)" if "maximize" in dict(bad) else "")
            )


UPDATE_RULES: dict[type, UpdateRule] = {}


def register_update_rule(*optimizers: type, required: dict | None = None):
    """Register the decorated function as the update rule of these optimizer classes.

    Args:
        optimizers: ``torch.optim.Optimizer`` subclasses the rule describes (exact classes; a subclass that is
            not registered itself falls back to its nearest registered base class).
        required: options of the optimizer's param groups that must keep these values (others raise a clear
            error); ``maximize=False`` is always required.

    Example:
        >>> class ClippedSGD(torch.optim.SGD): ...  # a new class whose step is plain SGD's
        >>> @register_update_rule(ClippedSGD)
        ... def clipped_sgd(optimizer, group, state, step):
        ...     return Step(e=group["lr"])
        >>> rule_for(ClippedSGD([torch.zeros(1, requires_grad=True)], lr=0.1)).name
        'ClippedSGD'
        >>> del UPDATE_RULES[ClippedSGD]
    """
    if not optimizers or not all(isinstance(o, type) and issubclass(o, Optimizer) for o in optimizers):
        raise TypeError(f"register_update_rule needs torch.optim.Optimizer subclasses, got {optimizers}")
    req = {"maximize": False, **(required or {})}

    def decorate(fn: RuleFn) -> RuleFn:
        for o in optimizers:
            UPDATE_RULES[o] = UpdateRule(o.__name__, fn, tuple(req.items()))
        return fn

    return decorate


def supported_optimizers() -> list[str]:
    """Names of the optimizer classes with an update rule (built from the registry)."""
    return sorted(o.__name__ for o in UPDATE_RULES)


def rule_for(optimizer: Optimizer) -> UpdateRule:
    """The update rule of ``optimizer``'s class (or of its nearest registered base class)."""
    for cls in type(optimizer).__mro__:
        if cls in UPDATE_RULES:
            return UPDATE_RULES[cls]
    raise TypeError(
        f"the delta log cannot attribute {type(optimizer).__name__} updates; optimizers with an update rule: "
        f"{', '.join(supported_optimizers())}. Register one with amnesiac.register_update_rule, or use "
        "attribution='gradient' (raw gradients, no optimizer algebra)."
    )


def check_optimizer(optimizer: Optimizer) -> UpdateRule:
    """The update rule of ``optimizer``, after checking every param group's options against it.

    Cheap and changes nothing, so a log calls it before the optimizer's step: an optimizer without a rule
    raises ``TypeError`` and an option the rule cannot follow (``maximize=True``, ...) raises ``ValueError``
    while the model is still as it was.

    Example:
        >>> check_optimizer(torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)).name
        'SGD'
    """
    rule = rule_for(optimizer)
    for group in optimizer.param_groups:
        rule.check(group)
    return rule


def _nonzero(v: float) -> float | None:
    return v if v != 0 else None


# ------------------------------------------------------------------------------------------------ rules


@register_update_rule(SGD)
def sgd(optimizer: Optimizer, group: dict, state: dict, step: int) -> Step:
    """SGD with momentum, dampening, Nesterov and coupled weight decay (torch.optim.SGD's update).

    The momentum buffer starts as the first gradient itself (no dampening on the first step).
    """
    lr, wd, mu = float(group["lr"]), _nonzero(float(group["weight_decay"])), float(group["momentum"])
    if mu == 0:
        return Step(wd=wd, e=lr)
    gamma = 1.0 if step == 1 else 1.0 - float(group["dampening"])
    if group["nesterov"]:  # update = s + mu * m
        return Step(wd=wd, beta=mu, gamma=gamma, c=lr * mu, e=lr)
    return Step(wd=wd, beta=mu, gamma=gamma, c=lr)


@register_update_rule(Adam, AdamW)
def adam(optimizer: Optimizer, group: dict, state: dict, step: int) -> Step:
    """Adam and AdamW (AMSGrad too): m <- b1 m + (1 - b1) s, d <- d - lr / (1 - b1^t) / denom_t * m.

    ``denom_t = sqrt(v_t) / sqrt(1 - b2^t) + eps`` is read from the optimizer's state (``max_exp_avg_sq``
    under AMSGrad). Weight decay is coupled (Adam) or decoupled (AdamW: d <- (1 - lr wd) d first).
    """
    lr, wd = float(group["lr"]), float(group["weight_decay"])
    b1, b2 = (float(b) for b in group["betas"])
    t = float(state["step"])
    sq = state["max_exp_avg_sq"] if group["amsgrad"] else state["exp_avg_sq"]
    denom = sq.detach().sqrt().div_(math.sqrt(1 - b2**t)).add_(group["eps"])
    # lr / (1 - b1^t) / denom, in place: torch computes a number over a tensor as tensor.reciprocal() * number
    c = denom.reciprocal_().mul_(lr / (1 - b1**t))
    decoupled = bool(group.get("decoupled_weight_decay", isinstance(optimizer, AdamW)))
    if wd and decoupled:
        return Step(shrink=1 - lr * wd, beta=b1, gamma=1 - b1, c=c)
    return Step(wd=_nonzero(wd), beta=b1, gamma=1 - b1, c=c)


@register_update_rule(RMSprop)
def rmsprop(optimizer: Optimizer, group: dict, state: dict, step: int) -> Step:
    """RMSprop, plain or centered, with or without momentum, coupled weight decay.

    ``avg_t = sqrt(square_avg_t [- grad_avg_t^2]) + eps`` is read from the state; without momentum
    d <- d - lr / avg_t * s; with it the buffer is m <- momentum m + s / avg_t and d <- d - lr m.
    """
    lr, wd, mom = float(group["lr"]), _nonzero(float(group["weight_decay"])), float(group["momentum"])
    sq = state["square_avg"].detach()
    if group["centered"]:
        sq = sq.addcmul(state["grad_avg"], state["grad_avg"], value=-1)
    avg = sq.sqrt().add_(group["eps"])
    if mom > 0:
        return Step(wd=wd, beta=mom, gamma=1.0 / avg, c=lr)
    return Step(wd=wd, e=lr / avg)


@register_update_rule(Adagrad)
def adagrad(optimizer: Optimizer, group: dict, state: dict, step: int) -> Step:
    """Adagrad with learning-rate decay and coupled weight decay: d <- d - clr_t / (sqrt(sum_t) + eps) * s,
    ``clr_t = lr / (1 + (t - 1) lr_decay)``; the accumulated ``sum_t`` is read from the state."""
    t = float(state["step"])
    clr = float(group["lr"]) / (1 + (t - 1) * float(group["lr_decay"]))
    std = state["sum"].detach().sqrt().add_(group["eps"])
    return Step(wd=_nonzero(float(group["weight_decay"])), e=clr / std)


# ------------------------------------------------------------------------- second moments (forward mode)


@dataclass(frozen=True)
class SecondMoment:
    """The tangent of an optimizer's second moment, for the forward-mode derivative of a step in a loss weight.

    A track's second-moment tangent ``q`` follows ``q <- beta2 * q + gamma2 * g * s`` (``g`` the gradient the
    optimizer used, ``s`` the track's share of it, weight decay included) and the step adds ``d <- d - c2 * q``:
    the change of the step that the change of its denominator causes. Used only by
    ``DeltaLog(attribution="propagated", propagate_second_moment=True)``; the ``"update"`` attribution takes the
    denominator as given (:class:`Step`), which keeps the shares exact sums of the real update.
    """

    beta2: float
    gamma2: float
    c2: torch.Tensor


SecondMomentFn = Callable[[Optimizer, dict, dict, int], SecondMoment]
SECOND_MOMENT_RULES: dict[type, SecondMomentFn] = {}


def second_moment_rule(optimizer: Optimizer) -> SecondMomentFn:
    """The second-moment tangent rule of ``optimizer``'s class, or ``None`` for an optimizer without one (SGD);
    an optimizer whose denominator the log cannot differentiate (RMSprop, Adagrad, AMSGrad's running maximum)
    raises ``ValueError``."""
    for cls in type(optimizer).__mro__:
        if cls in SECOND_MOMENT_RULES:
            fn = SECOND_MOMENT_RULES[cls]
            for group in optimizer.param_groups:
                if group.get("amsgrad"):
                    raise ValueError("propagate_second_moment cannot follow AMSGrad (the derivative of its running "
                                     "maximum is not a linear recursion); use amsgrad=False")
            return fn
    if isinstance(optimizer, (RMSprop, Adagrad)):
        raise ValueError(f"propagate_second_moment has a rule for Adam and AdamW only, not {type(optimizer).__name__};"
                         " use propagate_second_moment=False (its denominator taken as given)")
    return None


def _adam_second_moment(optimizer: Optimizer, group: dict, state: dict, step: int) -> SecondMoment:
    """Adam's update ``u = lr / (1 - b1^t) * m / D`` with ``D = sqrt(v) / sqrt(1 - b2^t) + eps`` and
    ``v <- b2 v + (1 - b2) g^2``: ``dv = b2 dv + 2 (1 - b2) g dg`` and the step's change through ``D`` is
    ``-lr / (1 - b1^t) * m / D^2 * dv / (2 sqrt(v) sqrt(1 - b2^t))`` (0 where ``v`` is 0: no gradient yet)."""
    lr = float(group["lr"])
    b1, b2 = (float(b) for b in group["betas"])
    t = float(state["step"])
    v = state["exp_avg_sq"].detach()
    root = v.sqrt()
    bc2 = math.sqrt(1 - b2**t)
    denom = root / bc2 + group["eps"]
    safe = torch.where(root > 0, root, torch.ones_like(root))
    c2 = -lr / (1 - b1**t) * state["exp_avg"].detach() / denom.square() / (2 * safe * bc2)
    return SecondMoment(beta2=b2, gamma2=2 * (1 - b2), c2=torch.where(root > 0, c2, torch.zeros_like(c2)))


SECOND_MOMENT_RULES[Adam] = SECOND_MOMENT_RULES[AdamW] = _adam_second_moment


# ------------------------------------------------------------------- a step's coefficients per coordinate


def second_moment_coefficients(opt: Optimizer, param_ids: list[int], layout, steps: int, device, dtype) -> dict | None:
    """This step's second-moment tangent map (:class:`amnesiac.rules.SecondMoment`) as [P] tensors, or ``None``
    for an optimizer without a second moment."""
    fn = second_moment_rule(opt)
    if fn is None:
        return None
    where = {pid: i for i, pid in enumerate(param_ids)}
    parts: list = [None] * len(param_ids)
    for group in opt.param_groups:
        for q in group["params"]:
            i = where.get(id(q))
            if i is not None:
                parts[i] = fn(opt, group, opt.state[q], steps)
    sizes = layout.sizes()
    kw = dict(dtype=dtype, device=device)
    return {
        "beta2": torch.cat([torch.full((n,), x.beta2, **kw) for x, n in zip(parts, sizes)]),
        "gamma2": torch.cat([torch.full((n,), x.gamma2, **kw) for x, n in zip(parts, sizes)]),
        "c2": torch.cat([x.c2.reshape(-1).to(**kw) for x in parts]),
    }


def step_coefficients(opt: Optimizer, param_ids: list[int], layout, steps: int, device, dtype,
                      reuse: dict | None = None) -> dict:
    """This step's map (:class:`Step`) per coordinate of the flat parameter vector: floats when uniform, [P]
    tensors else. ``param_ids`` are ``id()`` of the parameters in ``layout``'s order (a
    :class:`~amnesiac.grads.ParamLayout`), ``steps`` the optimizer's step count (1 on the first); the tensors are
    made on ``device`` in ``dtype``. Raises ``ValueError`` for a parameter outside the optimizer, or an optimizer
    whose step count is not ``steps``.

    ``reuse``: field -> the [P] tensor an earlier call gave; where nothing but ``reuse`` holds it any more, this
    step's values are written into it instead of new memory, and ``reuse`` is updated with this step's tensors."""
    rule = rule_for(opt)
    where = {pid: i for i, pid in enumerate(param_ids)}
    sizes = layout.sizes()
    parts: dict[str, list] = {f: [None] * len(sizes) for f in STEP_FIELDS}
    seen = [False] * len(sizes)
    for group in opt.param_groups:
        rule.check(group)
        for q in group["params"]:
            i = where.get(id(q))
            if i is None:
                continue
            state = opt.state.get(q, {})
            if "step" in state and int(float(state["step"])) != steps:
                raise ValueError(
                    f"the optimizer has taken {int(float(state['step']))} steps but the log saw {steps}:"
                    " attach the log before the optimizer's first step (its buffers must start empty)"
                )
            step = rule.fn(opt, group, state, steps)
            seen[i] = True
            for f in STEP_FIELDS:
                parts[f][i] = getattr(step, f)
    missing = [layout.names[i] for i in range(len(sizes)) if not seen[i]]
    if missing:
        raise ValueError(
            f"parameters not in the optimizer: {missing[:5]}; the log needs every trainable "
            "parameter to be optimised (freeze others with requires_grad=False before logging)"
        )
    out = {}
    for f in STEP_FIELDS:
        vals = parts[f]
        if all(v is None for v in vals):
            out[f] = None
            continue
        vals = [NEUTRAL[f] if v is None else v for v in vals]
        if not any(torch.is_tensor(v) for v in vals) and all(v == vals[0] for v in vals):
            out[f] = None if f in ("shrink", "wd", "e") and vals[0] == NEUTRAL[f] else vals[0]
            continue
        flat = [v.detach().reshape(-1).to(device, dtype) if torch.is_tensor(v)
                else torch.full((n,), float(v), dtype=dtype, device=device) for v, n in zip(vals, sizes)]
        if (reuse is not None and reuse.get(f) is not None and reuse[f].numel() == layout.numel
                and reuse[f].dtype == dtype and reuse[f].device == torch.device(device)
                and buffers.REUSE and held_only_by_caller(reuse[f])):
            out[f] = torch.cat(flat, out=reuse[f])
        else:
            out[f] = torch.cat(flat)
        if reuse is not None:
            reuse[f] = out[f]
    if out["beta"] is not None and out["gamma"] is None:
        raise ValueError(f"the {rule.name} update rule gives a moment decay (beta) but no gamma")
    return out
