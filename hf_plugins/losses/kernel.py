"""The log-space primitives the per-token loss kernels share, on valid rows ``b, a: [N, V]``.

Vocabulary entries whose logit is ``-inf`` in either model lie outside the shared support: they are left
out of every vocabulary sum (the reference code's ``inf_mask`` convention). When both models mask the same
entries this is exact (both probabilities are 0 there); it keeps every loss finite otherwise. NaN or
``+inf`` logits are rejected with a ValueError, and so is a valid position where no entry is finite in both
models (e.g. a teacher row that is all ``-inf``): it has no distribution to compare.
"""

from __future__ import annotations

import math
from functools import cached_property

import torch
from torch import Tensor

__all__ = [
    "LogPair",
    "ab_terms",
    "ab_value_and_grads",
    "log_mixture",
    "log_pair",
    "masked_sum",
    "restrict",
    "softmax_backward",
    "support_of",
]

# |exponent| below this routes the AB divergence to its limiting closed form (as the reference code does)
AB_ZERO = 1e-8


def support_of(b: Tensor, a: Tensor) -> Tensor | None:
    """Bool ``[N, V]``: entries finite in both models, or None when every entry is (the common fast case)."""
    # one reduction per tensor and one device sync: any NaN or +-inf makes the sum non-finite (an overflowing sum
    # of huge finite logits only sends us down the exact slow path)
    if bool(torch.isfinite(b.sum() + a.sum())):
        return None
    for name, x in (("student_logits", b), ("teacher_logits", a)):
        if bool(torch.isnan(x).any()) or bool(torch.isposinf(x).any()):
            raise ValueError(f"{name} contain NaN or +inf; only -inf (a masked vocabulary entry) is allowed")
    support = torch.isfinite(b) & torch.isfinite(a)
    empty = int((~support.any(-1)).sum())
    if empty:
        raise ValueError(
            f"{empty} valid position(s) have no vocabulary entry finite in both student_logits and teacher_logits "
            "(e.g. a teacher row that is all -inf): there is no distribution to compare; mask these positions out"
        )
    return None if bool(support.all()) else support


def masked_sum(terms: Tensor, support: Tensor | None) -> Tensor:
    """Sum ``[N, V] -> [N]`` over the vocabulary entries inside the support."""
    return restrict(terms, support).sum(-1)


class LogPair:
    """Teacher/student log-probabilities of the valid rows, ``lp, lq: [N, V]``, and (computed on first use)
    the probabilities ``p, q``.

    Outside the support, ``lp``/``lq`` hold 0 (so products never meet ``0 * inf``) and ``p``/``q`` hold 0.
    ``q_all`` is the student softmax over the whole vocabulary (the Jacobian of ``lq`` needs it).
    """

    def __init__(self, lp: Tensor, lq: Tensor, support: Tensor | None, q_all: Tensor | None = None) -> None:
        self.lp, self.lq, self.support = lp, lq, support
        self._q_all = q_all

    @cached_property
    def p(self) -> Tensor:
        return restrict(self.lp.exp(), self.support)

    @cached_property
    def q_all(self) -> Tensor:
        return self.lq.exp() if self._q_all is None else self._q_all

    @cached_property
    def q(self) -> Tensor:
        return restrict(self.q_all, self.support)


def log_pair(b: Tensor, a: Tensor) -> LogPair:
    """Log-softmax both rows (teacher detached) and apply the support convention."""
    support = support_of(b, a)
    lq = torch.log_softmax(b, dim=-1)
    lp = torch.log_softmax(a.detach(), dim=-1)
    if support is None:
        return LogPair(lp, lq, None)
    q_all = lq.exp()
    return LogPair(restrict(lp, support), restrict(lq, support), support, q_all)


def restrict(x: Tensor, support: Tensor | None, fill: float = 0.0) -> Tensor:
    """``x`` inside the support, ``fill`` outside (no-op when every entry is inside)."""
    if support is None:
        return x
    return torch.where(support, x, torch.full((), fill, dtype=x.dtype, device=x.device))


def log_mixture(l_x: Tensor, l_y: Tensor, weight_x: float) -> Tensor:
    """``log(weight_x * X + (1 - weight_x) * Y)`` from log-probabilities, in log space (logaddexp)."""
    if weight_x == 0.0:
        return l_y
    if weight_x == 1.0:
        return l_x
    return torch.logaddexp(l_x + math.log(weight_x), l_y + math.log1p(-weight_x))


def softmax_backward(grad_log: Tensor, probs: Tensor) -> Tensor:
    """Gradient w.r.t. logits from the gradient w.r.t. their log-softmax: ``g - probs * sum(g)``."""
    return torch.addcmul(grad_log, probs, grad_log.sum(-1, keepdim=True), value=-1.0)


def ab_terms(l_x: Tensor, l_y: Tensor, alpha: float, beta: float) -> Tensor:
    """Per-entry summands of the alpha-beta divergence ``D_AB^(alpha,beta)(X || Y)`` from log-probabilities.

    General case: ``-1/(alpha beta) [X^a Y^b - a/(a+b) X^(a+b) - b/(a+b) Y^(a+b)]``; the limits
    alpha=beta=0, alpha=0, beta=0 and alpha+beta=0 use their closed forms (Cichocki et al. 2011).
    """
    a0, b0, s0 = abs(alpha) < AB_ZERO, abs(beta) < AB_ZERO, abs(alpha + beta) < AB_ZERO
    if a0 and b0:
        return 0.5 * (l_y - l_x) ** 2
    if a0:
        y_b = torch.exp(beta * l_y)
        return (y_b * (beta * (l_y - l_x) - 1.0) + torch.exp(beta * l_x)) / beta**2
    if b0:
        x_a = torch.exp(alpha * l_x)
        return (x_a * (alpha * (l_x - l_y) - 1.0) + torch.exp(alpha * l_y)) / alpha**2
    if s0:
        delta = l_y - l_x
        return (alpha * delta + torch.exp(-alpha * delta) - 1.0) / alpha**2
    total = alpha + beta
    cross = torch.exp(alpha * l_x + beta * l_y)
    return -(cross - (alpha / total) * torch.exp(total * l_x) - (beta / total) * torch.exp(total * l_y)) / (
        alpha * beta
    )


@torch.no_grad()
def ab_value_and_grads(
    l_x: Tensor,
    l_y: Tensor,
    alpha: float,
    beta: float,
    support: Tensor | None,
    need_x: bool = True,
    need_y: bool = True,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """Per-token ``D_AB(X || Y)`` ``[N]`` and (where requested) its partial derivatives w.r.t. ``l_x``, ``l_y``.

    Gradient path only (no autograd); the partials are ``[N, V]`` and not yet restricted to the support.
    """
    if abs(alpha) < AB_ZERO or abs(beta) < AB_ZERO or abs(alpha + beta) < AB_ZERO:
        return _ab_limit_value_and_grads(l_x, l_y, alpha, beta, support, need_x, need_y)
    total = alpha + beta
    cross = torch.exp(torch.add(l_x, l_y, alpha=beta / alpha).mul_(alpha))
    x_s, y_s = torch.exp(l_x * total), torch.exp(l_y * total)
    if support is None:
        sums = cross.sum(-1) - (alpha / total) * x_s.sum(-1) - (beta / total) * y_s.sum(-1)
    else:
        sums = masked_sum(cross - (alpha / total) * x_s - (beta / total) * y_s, support)
    grad_x = (x_s - cross).div_(beta) if need_x else None
    grad_y = y_s.sub_(cross).div_(alpha) if need_y else None
    return sums * (-1.0 / (alpha * beta)), grad_x, grad_y


def _ab_limit_value_and_grads(
    l_x: Tensor, l_y: Tensor, alpha: float, beta: float, support: Tensor | None, need_x: bool, need_y: bool
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """The limiting branches (alpha, beta or alpha + beta = 0) of ``ab_value_and_grads``."""
    a0, b0 = abs(alpha) < AB_ZERO, abs(beta) < AB_ZERO
    if a0 and b0:
        diff = l_y - l_x
        return masked_sum(0.5 * diff**2, support), (-diff if need_x else None), diff
    if a0:  # alpha = 0 is the beta = 0 branch with X and Y (and alpha and beta) swapped
        value, grad_y, grad_x = _ab_limit_value_and_grads(l_y, l_x, beta, 0.0, support, need_y, need_x)
        return value, grad_x, grad_y
    if b0:
        x_a, y_a = torch.exp(alpha * l_x), torch.exp(alpha * l_y)
        diff = l_x - l_y
        terms = (x_a * (alpha * diff - 1.0) + y_a) / alpha**2
        return (
            masked_sum(terms, support),
            (x_a * diff if need_x else None),
            ((y_a - x_a) / alpha if need_y else None),
        )
    delta = l_y - l_x
    expo = torch.exp(-alpha * delta)
    g_y = (1.0 - expo) / alpha
    terms = (alpha * delta + expo - 1.0) / alpha**2
    return masked_sum(terms, support), (-g_y if need_x else None), g_y
