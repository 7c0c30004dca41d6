"""AMiD: distillation through the alpha-mixture assistant distribution (arXiv 2510.15982).

The assistant between teacher p and student q is the normalized weighted power mean

    r ∝ (lam p^s + (1 - lam) q^s)^(1/s),   s = (1 - alpha) / 2,

i.e. the arithmetic mixture at alpha = -1, the geometric mean ``p^lam q^(1-lam)`` at alpha = 1, the
harmonic mean at alpha = 3, max(p, q) as alpha -> -inf and min(p, q) as alpha -> +inf. ``lam`` is the
teacher's weight. The loss is a divergence D(p||r), D(q||r), D(r||p) or D(r||q) (``order`` "pr", "qr",
"rp", "rq") with D the KL or the alpha-beta divergence. Gradient flows through q and through r.

Differences from the authors' reference code: alpha > 1 follows the paper's power mean (the reference
silently treats every alpha >= 1 as alpha = 1); the AB exponents are options (hard-coded 0.2/0.7 there); the
softmaxes run in fp32 or fp64; an empty mask gives 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .kernel import (
    LogPair,
    ab_terms,
    ab_value_and_grads,
    masked_sum,
    restrict,
    softmax_backward,
)
from .loss import LogSpaceLoss, functional, option, register
from .validation import finite_real, one_of, unit_interval

__all__ = ["AMID_DIVERGENCES", "AMID_ORDERS", "AMiDLoss", "amid", "assistant_log_probs"]

AMID_DIVERGENCES = ("kl", "ab")
AMID_ORDERS = ("pr", "qr", "rp", "rq")


# below this |s| the power mean is evaluated around its geometric limit (expm1/log1p) to avoid cancellation
_SMALL_S = 0.1


def _unnormalized_log_assistant(
    lp: Tensor, lq: Tensor, alpha: float, lam: float, need_w: bool = True
) -> tuple[Tensor, Tensor | float | None]:
    """Log of the unnormalized power mean ``u`` ``[N, V]`` and its derivative ``w = du/dlq``.

    ``w = (1-lam) q^s / (lam p^s + (1-lam) q^s)``, returned as a float where it is constant (None unless
    ``need_w``).
    For |s| >= 0.1: ``s u = logaddexp(log(lam) + s lp, log(1-lam) + s lq)``. Closer to the geometric
    mean, with ``t = s (lp - lq)`` the mean is factored around the larger of ``s lp`` and ``s lq``:
    ``u = lp + log1p((1-lam) expm1(-t)) / s`` if t > 0, else ``lq + log1p(lam expm1(t)) / s``, which stays
    accurate as s -> 0 (alpha -> 1). Both are exact for either sign of s and never overflow.
    """
    if lam == 0.0:
        return lq, 1.0
    if lam == 1.0:
        return lp, 0.0
    if alpha == 1.0:
        return lam * lp + (1.0 - lam) * lq, 1.0 - lam
    s = (1.0 - alpha) / 2.0
    if abs(s) >= _SMALL_S:
        teacher_part = (lp * s).add_(math.log(lam))
        student_part = (lq * s).add_(math.log1p(-lam))
        su = torch.logaddexp(teacher_part, student_part)
        w = torch.sub(student_part, su).exp_() if need_w else None
        return su / s, w
    t = s * (lp - lq)
    positive = t > 0
    e = torch.expm1(-t.abs())
    base = torch.where(positive, lp, lq)
    coef = lam + (1.0 - 2.0 * lam) * positive.to(lp.dtype)  # 1 - lam where t > 0, else lam
    u = base + torch.log1p(coef * e) / s
    w = torch.sigmoid(math.log1p(-lam) - math.log(lam) - t) if need_w else None
    return u, w


def assistant_log_probs(
    pair: LogPair, alpha: float, lam: float, need_w: bool = True
) -> tuple[Tensor, Tensor | float | None]:
    """Log-probabilities ``log r`` ``[N, V]`` of the alpha-mixture assistant (0 outside the support) and ``w``."""
    u, w = _unnormalized_log_assistant(pair.lp, pair.lq, alpha, lam, need_w)
    if pair.support is None:
        return torch.log_softmax(u, dim=-1), w
    u = torch.where(pair.support, u, torch.full((), -math.inf, dtype=u.dtype, device=u.device))
    lr = torch.log_softmax(u, dim=-1)
    return torch.where(pair.support, lr, torch.zeros((), dtype=lr.dtype, device=lr.device)), w


@register("amid")
@dataclass(frozen=True)
class AMiDLoss(LogSpaceLoss):
    """AMiD loss ``D(X || Y)`` with the alpha-mixture assistant r of teacher p and student q.

    The assistant and the argument orders are described in the module docstring.
    """

    alpha: float = option(0.5, finite_real, "the mixture's alpha (any real; -1 arithmetic, 1 geometric).")
    lam: float = option(0.1, unit_interval, "teacher weight in the mixture, in [0, 1].")
    divergence: str = option("ab", one_of(AMID_DIVERGENCES), '"kl" or "ab" (alpha-beta divergence).')
    order: str = option("pr", one_of(AMID_ORDERS), '"pr" D(p||r), "qr" D(q||r), "rp" D(r||p) or "rq" D(r||q).')
    ab_alpha: float = option(0.2, finite_real, "alpha exponent of the alpha-beta divergence.")
    ab_beta: float = option(0.7, finite_real, "beta exponent of the alpha-beta divergence.")

    def _arguments(self, pair: LogPair, lr: Tensor) -> tuple[Tensor, Tensor]:
        """(log X, log Y) of D(X || Y) for the configured order."""
        return {
            "pr": (pair.lp, lr),
            "qr": (pair.lq, lr),
            "rp": (lr, pair.lp),
            "rq": (lr, pair.lq),
        }[self.order]

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        lr, w = assistant_log_probs(pair, self.alpha, self.lam, need_w=with_grad)
        l_x, l_y = self._arguments(pair, lr)
        if not with_grad:
            if self.divergence == "kl":
                terms = l_x.exp() * (l_x - l_y)
            else:
                terms = ab_terms(l_x, l_y, self.ab_alpha, self.ab_beta)
            return masked_sum(terms, pair.support), None
        # D(X || Y): which partial derivatives reach the student (p is a constant)
        need_x, need_y = {"pr": (False, True), "qr": (True, True), "rp": (True, False), "rq": (True, True)}[
            self.order
        ]
        if self.divergence == "kl":
            x = l_x.exp()
            log_ratio = l_x - l_y
            value = masked_sum(x * log_ratio, pair.support)
            grad_x = log_ratio.add_(1.0).mul_(x) if need_x else None
            grad_y = x.neg_() if need_y else None
        else:
            value, grad_x, grad_y = ab_value_and_grads(
                l_x, l_y, self.ab_alpha, self.ab_beta, pair.support, need_x, need_y
            )
        if pair.support is not None:
            grad_x = None if grad_x is None else restrict(grad_x, pair.support)
            grad_y = None if grad_y is None else restrict(grad_y, pair.support)
        # split d D / d(log X), d(log Y) into the direct log q part and the log r part
        grad_lq, grad_lr = {
            "pr": (None, grad_y),
            "qr": (grad_x, grad_y),
            "rp": (None, grad_x),
            "rq": (grad_y, grad_x),
        }[self.order]
        r = restrict(lr.exp(), pair.support)
        through_r = softmax_backward(grad_lr, r)  # through log r = log_softmax(u)
        through_r = through_r.mul_(w)  # u depends on log q elementwise: du/dlog q = w
        return value, through_r if grad_lq is None else through_r.add_(grad_lq)


amid = functional(AMiDLoss)
