"""The baseline divergence family between the teacher p = softmax(a) and the student q = softmax(b).

Every public function has the signature ``fn(student_logits, teacher_logits, mask=None, **options)`` with
logits ``[..., V]`` (any float dtype, computed in fp32 or fp64) and a bool ``mask`` ``[...]``, and returns the
token-level mean over the valid positions of the whole batch (a 0-dim fp32/fp64 tensor, in nats; 0 when no
position is valid). Only the student receives gradient. Mixtures are formed in log space.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .kernel import (
    LogPair,
    LogSpaceKernel,
    ab_terms,
    ab_value_and_grads,
    log_mixture,
    masked_sum,
)
from .reduction import apply_kernel
from .validation import check_finite_real, check_unit_interval

__all__ = [
    "ABDivergenceKernel",
    "ForwardKLKernel",
    "GeneralizedJSDKernel",
    "JeffreysKernel",
    "ReverseKLKernel",
    "SkewForwardKLKernel",
    "SkewReverseKLKernel",
    "TotalVariationKernel",
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


class ForwardKLKernel(LogSpaceKernel):
    """KL(p || q) per token."""

    name = "forward_kl"

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        return _kl(pair.p, pair.lp, pair.lq, pair), (-pair.p if with_grad else None)


class ReverseKLKernel(LogSpaceKernel):
    """KL(q || p) per token."""

    name = "reverse_kl"

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        log_ratio = pair.lq - pair.lp
        value = masked_sum(pair.q * log_ratio, pair.support)
        return value, (pair.q * (log_ratio + 1.0) if with_grad else None)


class SkewForwardKLKernel(LogSpaceKernel):
    """KL(p || lam p + (1 - lam) q) per token (DistiLLM's skew KL, true-divergence form)."""

    name = "skew_forward_kl"

    def __init__(self, lam: float = 0.1) -> None:
        super().__init__()
        self.lam = check_unit_interval("lam", lam)
        self.options = {"lam": self.lam}

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        l_m = log_mixture(pair.lp, pair.lq, self.lam)
        value = _kl(pair.p, pair.lp, l_m, pair)
        # d log m / d log q = (1 - lam) q / m
        return value, (-(1.0 - self.lam) * torch.exp(pair.lp + pair.lq - l_m) if with_grad else None)


class SkewReverseKLKernel(LogSpaceKernel):
    """KL(q || lam q + (1 - lam) p) per token (DistiLLM's skew reverse KL)."""

    name = "skew_reverse_kl"

    def __init__(self, lam: float = 0.1) -> None:
        super().__init__()
        self.lam = check_unit_interval("lam", lam)
        self.options = {"lam": self.lam}

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        log_ratio = pair.lq - log_mixture(pair.lq, pair.lp, self.lam)
        value = masked_sum(pair.q * log_ratio, pair.support)
        if not with_grad:
            return value, None
        return value, pair.q * (log_ratio + 1.0 - self.lam * torch.exp(log_ratio))


class GeneralizedJSDKernel(LogSpaceKernel):
    """TRL GKD's generalized JSD: ``beta KL(p||m) + (1-beta) KL(q||m)``, ``m = beta p + (1-beta) q``.

    As in TRL, beta=0 is the forward KL(p||q) and beta=1 the reverse KL(q||p).
    """

    name = "generalized_jsd"

    def __init__(self, beta: float = 0.5) -> None:
        super().__init__()
        self.beta = check_unit_interval("beta", beta)
        self.options = {"beta": self.beta}

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        if self.beta == 0.0:
            return ForwardKLKernel()._evaluate(pair, with_grad)
        if self.beta == 1.0:
            return ReverseKLKernel()._evaluate(pair, with_grad)
        l_m = log_mixture(pair.lp, pair.lq, self.beta)
        student_term = pair.q * (pair.lq - l_m)
        terms = self.beta * pair.p * (pair.lp - l_m) + (1.0 - self.beta) * student_term
        # the mixture's own derivatives cancel: d value / d log q = (1 - beta) q (log q - log m)
        return masked_sum(terms, pair.support), ((1.0 - self.beta) * student_term if with_grad else None)


class TotalVariationKernel(LogSpaceKernel):
    """Total variation ``1/2 sum |p - q|`` per token, in [0, 1]."""

    name = "total_variation"

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        diff = pair.p - pair.q
        value = 0.5 * diff.abs().sum(-1)
        return value, (-0.5 * torch.sign(diff) * pair.q if with_grad else None)


class ABDivergenceKernel(LogSpaceKernel):
    """Alpha-beta divergence ``D_AB^(alpha,beta)(p || q)`` per token, every limiting branch included.

    ``ab_divergence(1, 0) = KL(p||q)``, ``(0, 1) = KL(q||p)``, ``(0.5, 0.5) = 2 sum (sqrt p - sqrt q)^2``,
    ``(0, 0) = 1/2 sum (log q - log p)^2``. Exponents with magnitude below 1e-8 (alpha, beta or alpha+beta)
    use the closed-form limit of that branch. With a negative exponent the divergence is unbounded as one
    probability alone goes to 0, so it can overflow fp32 when a probability underflows on one side only.
    """

    name = "ab_divergence"

    def __init__(self, alpha: float = 0.2, beta: float = 0.7) -> None:
        super().__init__()
        self.alpha = check_finite_real("alpha", alpha)
        self.beta = check_finite_real("beta", beta)
        self.options = {"alpha": self.alpha, "beta": self.beta}

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        if not with_grad:
            return masked_sum(ab_terms(pair.lp, pair.lq, self.alpha, self.beta), pair.support), None
        value, _, grad_lq = ab_value_and_grads(
            pair.lp, pair.lq, self.alpha, self.beta, pair.support, need_x=False
        )
        return value, grad_lq


class JeffreysKernel(LogSpaceKernel):
    """Jeffreys divergence ``KL(p||q) + KL(q||p) = sum (p - q)(log p - log q)`` per token."""

    name = "jeffreys"

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        log_ratio = pair.lp - pair.lq
        value = masked_sum((pair.p - pair.q) * log_ratio, pair.support)
        return value, (pair.q - pair.p - pair.q * log_ratio if with_grad else None)


def forward_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Forward KL(p || q), token-level mean (a true divergence: 0 when the distributions are equal)."""
    return apply_kernel(ForwardKLKernel(), student_logits, teacher_logits, mask)


def reverse_kl(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Reverse KL(q || p), token-level mean."""
    return apply_kernel(ReverseKLKernel(), student_logits, teacher_logits, mask)


def skew_forward_kl(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, *, lam: float = 0.1
) -> Tensor:
    """Skew KL ``KL(p || lam p + (1 - lam) q)``, token-level mean; ``lam`` in [0, 1]."""
    return apply_kernel(SkewForwardKLKernel(lam=lam), student_logits, teacher_logits, mask)


def skew_reverse_kl(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, *, lam: float = 0.1
) -> Tensor:
    """Skew reverse KL ``KL(q || lam q + (1 - lam) p)``, token-level mean; ``lam`` in [0, 1]."""
    return apply_kernel(SkewReverseKLKernel(lam=lam), student_logits, teacher_logits, mask)


def generalized_jsd(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None, *, beta: float = 0.5
) -> Tensor:
    """TRL's generalized JSD (``GKDTrainer.generalized_jsd_loss`` convention), token-level mean.

    ``m = beta p + (1 - beta) q``; ``beta KL(p||m) + (1 - beta) KL(q||m)``; beta=0 forward KL, beta=1 reverse KL.
    """
    return apply_kernel(GeneralizedJSDKernel(beta=beta), student_logits, teacher_logits, mask)


def total_variation(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Total variation distance ``1/2 sum |p - q|``, token-level mean."""
    return apply_kernel(TotalVariationKernel(), student_logits, teacher_logits, mask)


def ab_divergence(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    alpha: float = 0.2,
    beta: float = 0.7,
) -> Tensor:
    """Alpha-beta divergence ``D_AB^(alpha,beta)(p || q)`` (Cichocki et al.), token-level mean."""
    return apply_kernel(ABDivergenceKernel(alpha=alpha, beta=beta), student_logits, teacher_logits, mask)


def jeffreys(student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
    """Jeffreys divergence ``KL(p||q) + KL(q||p)``, token-level mean."""
    return apply_kernel(JeffreysKernel(), student_logits, teacher_logits, mask)
