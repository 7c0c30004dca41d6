"""The baseline divergence family between the teacher p = softmax(a) and the student q = softmax(b).

Every public function has the signature ``fn(student_logits, teacher_logits, mask=None, **options)`` with
logits ``[..., V]`` (any float dtype, computed in fp32 or fp64) and a bool ``mask`` ``[...]``, and returns the
token-level mean over the valid positions of the whole batch (a 0-dim fp32/fp64 tensor, in nats; 0 when no
position is valid). Only the student receives gradient. Mixtures are formed in log space.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .kernel import (
    LogPair,
    ab_terms,
    ab_value_and_grads,
    log_mixture,
    masked_sum,
)
from .loss import LogSpaceLoss, functional, option, register
from .validation import finite_real, unit_interval

__all__ = [
    "ABDivergenceLoss",
    "ForwardKLLoss",
    "GeneralizedJSDLoss",
    "JeffreysLoss",
    "ReverseKLLoss",
    "SkewForwardKLLoss",
    "SkewReverseKLLoss",
    "TotalVariationLoss",
    "ab_divergence",
    "forward_kl",
    "generalized_jsd",
    "jeffreys",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "total_variation",
]


def _kl(x: Tensor, l_x: Tensor, l_y: Tensor, pair: LogPair) -> Tensor:
    return masked_sum(x * (l_x - l_y), pair.support)


@register("forward_kl")
@dataclass(frozen=True)
class ForwardKLLoss(LogSpaceLoss):
    """KL(p || q) per token."""

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        return _kl(pair.p, pair.lp, pair.lq, pair), (-pair.p if with_grad else None)


@register("reverse_kl")
@dataclass(frozen=True)
class ReverseKLLoss(LogSpaceLoss):
    """KL(q || p) per token."""

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        log_ratio = pair.lq - pair.lp
        value = masked_sum(pair.q * log_ratio, pair.support)
        return value, (pair.q * (log_ratio + 1.0) if with_grad else None)


@register("skew_forward_kl")
@dataclass(frozen=True)
class SkewForwardKLLoss(LogSpaceLoss):
    """KL(p || lam p + (1 - lam) q) per token (DistiLLM's skew KL, true-divergence form)."""

    lam: float = option(0.1, unit_interval, "mixture weight lambda, in [0, 1].")

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        l_m = log_mixture(pair.lp, pair.lq, self.lam)
        value = _kl(pair.p, pair.lp, l_m, pair)
        # d log m / d log q = (1 - lam) q / m
        return value, (-(1.0 - self.lam) * torch.exp(pair.lp + pair.lq - l_m) if with_grad else None)


@register("skew_reverse_kl")
@dataclass(frozen=True)
class SkewReverseKLLoss(LogSpaceLoss):
    """KL(q || lam q + (1 - lam) p) per token (DistiLLM's skew reverse KL)."""

    lam: float = option(0.1, unit_interval, "mixture weight lambda, in [0, 1].")

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        log_ratio = pair.lq - log_mixture(pair.lq, pair.lp, self.lam)
        value = masked_sum(pair.q * log_ratio, pair.support)
        if not with_grad:
            return value, None
        return value, pair.q * (log_ratio + 1.0 - self.lam * torch.exp(log_ratio))


@register("generalized_jsd")
@dataclass(frozen=True)
class GeneralizedJSDLoss(LogSpaceLoss):
    """TRL GKD's generalized JSD: ``beta KL(p||m) + (1-beta) KL(q||m)``, ``m = beta p + (1-beta) q``.

    As in TRL, beta=0 is the forward KL(p||q) and beta=1 the reverse KL(q||p).
    """

    beta: float = option(0.5, unit_interval, "teacher weight of the mixture m, in [0, 1].")

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        if self.beta == 0.0:
            return ForwardKLLoss()._evaluate(pair, with_grad)
        if self.beta == 1.0:
            return ReverseKLLoss()._evaluate(pair, with_grad)
        l_m = log_mixture(pair.lp, pair.lq, self.beta)
        student_term = pair.q * (pair.lq - l_m)
        terms = self.beta * pair.p * (pair.lp - l_m) + (1.0 - self.beta) * student_term
        # the mixture's own derivatives cancel: d value / d log q = (1 - beta) q (log q - log m)
        return masked_sum(terms, pair.support), ((1.0 - self.beta) * student_term if with_grad else None)


@register("total_variation")
@dataclass(frozen=True)
class TotalVariationLoss(LogSpaceLoss):
    """Total variation ``1/2 sum |p - q|`` per token, in [0, 1]."""

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        diff = pair.p - pair.q
        value = 0.5 * diff.abs().sum(-1)
        return value, (-0.5 * torch.sign(diff) * pair.q if with_grad else None)


@register("ab_divergence")
@dataclass(frozen=True)
class ABDivergenceLoss(LogSpaceLoss):
    """Alpha-beta divergence ``D_AB^(alpha,beta)(p || q)`` per token, every limiting branch included.

    ``ab_divergence(1, 0) = KL(p||q)``, ``(0, 1) = KL(q||p)``, ``(0.5, 0.5) = 2 sum (sqrt p - sqrt q)^2``,
    ``(0, 0) = 1/2 sum (log q - log p)^2``. Exponents with magnitude below 1e-8 (alpha, beta or alpha+beta)
    use the closed-form limit of that branch. With a negative exponent the divergence is unbounded as one
    probability alone goes to 0, so it can overflow fp32 when a probability underflows on one side only (the
    loss then raises a ValueError instead of returning inf).
    """

    alpha: float = option(0.2, finite_real, "alpha exponent (any real).")
    beta: float = option(0.7, finite_real, "beta exponent (any real).")

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        if not with_grad:
            return masked_sum(ab_terms(pair.lp, pair.lq, self.alpha, self.beta), pair.support), None
        value, _, grad_lq = ab_value_and_grads(
            pair.lp, pair.lq, self.alpha, self.beta, pair.support, need_x=False
        )
        return value, grad_lq


@register("jeffreys")
@dataclass(frozen=True)
class JeffreysLoss(LogSpaceLoss):
    """Jeffreys divergence ``KL(p||q) + KL(q||p) = sum (p - q)(log p - log q)`` per token."""

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        log_ratio = pair.lp - pair.lq
        value = masked_sum((pair.p - pair.q) * log_ratio, pair.support)
        return value, (pair.q - pair.p - pair.q * log_ratio if with_grad else None)


forward_kl = functional(ForwardKLLoss)
reverse_kl = functional(ReverseKLLoss)
skew_forward_kl = functional(SkewForwardKLLoss)
skew_reverse_kl = functional(SkewReverseKLLoss)
generalized_jsd = functional(GeneralizedJSDLoss)
total_variation = functional(TotalVariationLoss)
ab_divergence = functional(ABDivergenceLoss)
jeffreys = functional(JeffreysLoss)
