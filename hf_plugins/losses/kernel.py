"""Per-token loss kernels and the log-space primitives they share.

A kernel maps the valid rows of student and teacher logits, ``b, a: [N, V]`` (already gathered and upcast to
fp32/fp64), to per-token values ``[N]`` in nats. ``value`` is differentiable in ``b`` (``a`` is a constant);
``value_and_grad`` also returns ``d value_n / d b_n`` (``[N, V]``) and is what the chunked path uses. Kernels
with a closed-form gradient override it; the default differentiates ``value`` with autograd.

Vocabulary entries whose logit is ``-inf`` in either model lie outside the shared support: they are left
out of every vocabulary sum (the reference code's ``inf_mask`` convention). When both models mask the same
entries this is exact (both probabilities are 0 there); it keeps every loss finite otherwise. NaN or
``+inf`` logits are rejected with a ValueError.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

__all__ = [
    "LogPair",
    "LogSpaceKernel",
    "TokenKernel",
    "ab_terms",
    "ab_terms_grads",
    "log_mixture",
    "log_pair",
    "masked_sum",
    "restrict",
    "softmax_backward",
    "support_of",
]

# |exponent| below this routes the AB divergence to its limiting closed form (as the reference code does)
AB_ZERO = 1e-8


class TokenKernel:
    """A configured per-token loss. Subclasses set ``name`` and implement ``value``."""

    name: str = ""

    def __init__(self) -> None:
        self.options: dict[str, object] = {}

    def value(self, b: Tensor, a: Tensor) -> Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def value_and_grad(self, b: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        """Per-token values ``[N]`` and their gradient with respect to ``b`` (``[N, V]``), both detached.

        This default differentiates ``value`` with autograd; kernels with a closed form override it.
        """
        with torch.enable_grad():
            b = b.detach().requires_grad_(True)
            values = self.value(b, a)
            (grad,) = torch.autograd.grad(values.sum(), b)
        return values.detach(), grad

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"{self.name}({opts})"


class LogSpaceKernel(TokenKernel):
    """A kernel given by ``_evaluate(pair, with_grad)``: per-token values and, on request, ``d value / d log q``.

    The gradient with respect to the logits then follows through the log-softmax Jacobian, in closed form.
    """

    def _evaluate(self, pair: LogPair, with_grad: bool) -> tuple[Tensor, Tensor | None]:  # pragma: no cover
        raise NotImplementedError

    def value(self, b: Tensor, a: Tensor) -> Tensor:
        return self._evaluate(log_pair(b, a), False)[0]

    @torch.no_grad()
    def value_and_grad(self, b: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        pair = log_pair(b, a)
        values, grad_lq = self._evaluate(pair, True)
        return values, softmax_backward(restrict(grad_lq, pair.support), pair.q_all)


def support_of(b: Tensor, a: Tensor) -> Tensor | None:
    """Bool ``[N, V]``: entries finite in both models, or None when every entry is (the common fast case)."""
    fin_b, fin_a = torch.isfinite(b), torch.isfinite(a)
    if bool(fin_b.all()) and bool(fin_a.all()):
        return None
    for name, x in (("student_logits", b), ("teacher_logits", a)):
        if bool(torch.isnan(x).any()) or bool(torch.isposinf(x).any()):
            raise ValueError(f"{name} contain NaN or +inf; only -inf (a masked vocabulary entry) is allowed")
    return fin_b & fin_a


def masked_sum(terms: Tensor, support: Tensor | None) -> Tensor:
    """Sum ``[N, V] -> [N]`` over the vocabulary entries inside the support."""
    return restrict(terms, support).sum(-1)


@dataclass
class LogPair:
    """Teacher/student log-probabilities and probabilities of the valid rows, ``[N, V]`` each.

    Outside the support, ``lp``/``lq`` hold 0 (so products never meet ``0 * inf``) and ``p``/``q`` hold 0.
    ``q_all`` is the student softmax over the whole vocabulary (the Jacobian of ``lq`` needs it).
    """

    lp: Tensor
    lq: Tensor
    p: Tensor
    q: Tensor
    support: Tensor | None
    q_all: Tensor


def log_pair(b: Tensor, a: Tensor) -> LogPair:
    """Log-softmax both rows (teacher detached) and apply the support convention."""
    support = support_of(b, a)
    lq = torch.log_softmax(b, dim=-1)
    lp = torch.log_softmax(a.detach(), dim=-1)
    if support is None:
        q = lq.exp()
        return LogPair(lp, lq, lp.exp(), q, None, q)
    q_all = lq.exp()
    lq, lp = restrict(lq, support), restrict(lp, support)
    return LogPair(lp, lq, restrict(lp.exp(), support), restrict(q_all, support), support, q_all)


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
    return grad_log - probs * grad_log.sum(-1, keepdim=True)


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


def ab_terms_grads(l_x: Tensor, l_y: Tensor, alpha: float, beta: float) -> tuple[Tensor, Tensor, Tensor]:
    """``ab_terms`` and its partial derivatives with respect to ``l_x`` and ``l_y`` (``[N, V]`` each)."""
    a0, b0, s0 = abs(alpha) < AB_ZERO, abs(beta) < AB_ZERO, abs(alpha + beta) < AB_ZERO
    if a0 and b0:
        diff = l_y - l_x
        return 0.5 * diff**2, -diff, diff
    if a0:
        y_b, x_b = torch.exp(beta * l_y), torch.exp(beta * l_x)
        diff = l_y - l_x
        return (y_b * (beta * diff - 1.0) + x_b) / beta**2, (x_b - y_b) / beta, y_b * diff
    if b0:
        x_a, y_a = torch.exp(alpha * l_x), torch.exp(alpha * l_y)
        diff = l_x - l_y
        return (x_a * (alpha * diff - 1.0) + y_a) / alpha**2, x_a * diff, (y_a - x_a) / alpha
    if s0:
        delta = l_y - l_x
        expo = torch.exp(-alpha * delta)
        g_y = (1.0 - expo) / alpha
        return (alpha * delta + expo - 1.0) / alpha**2, -g_y, g_y
    total = alpha + beta
    cross = torch.exp(alpha * l_x + beta * l_y)
    x_s, y_s = torch.exp(total * l_x), torch.exp(total * l_y)
    terms = -(cross - (alpha / total) * x_s - (beta / total) * y_s) / (alpha * beta)
    return terms, -(cross - x_s) / beta, -(cross - y_s) / alpha
