"""CSD: Concrete Score Distillation (arXiv 2509.25837), its true value in O(V) closed form.

Per position, with the logit residual ``d = b - a`` (student minus teacher, untempered) and detached
vocabulary weights ``w1, w2``:

    L = 1/2 sum_{x,y} w1(y) w2(x) ((b_x - b_y) - (a_x - a_y))^2
      = 1/2 W1 W2 [Var_w1(d) + Var_w2(d) + (E_w1 d - E_w2 d)^2],   W_i = sum w_i,

with expectations/variances under the normalized weights (computed centered, so L >= 0 in floating point).
Its gradient (weights fixed) is the paper's ``w2 (d - E_w1 d) + w1 (d - E_w2 d)`` (times W1 W2).

Step size versus the reference code: the reference back-propagates a surrogate whose coefficient is half this
gradient, so ``0.5 * csd(...)`` (or half the learning rate) reproduces its updates. With weights
("student", "student") and temperature 1 the gradient is exactly twice the reverse-KL gradient.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .kernel import TokenKernel, support_of
from .reduction import apply_kernel
from .validation import check_choice, check_positive, check_unit_interval

__all__ = ["CSDKernel", "CSD_WEIGHTS", "csd"]

CSD_WEIGHTS = ("student", "teacher", "uniform", "mixture")


def _check_weights(weights: object) -> tuple[str, str]:
    if isinstance(weights, str) or not isinstance(weights, (tuple, list)) or len(weights) != 2:
        raise ValueError(f"weights must be a pair (w1, w2) of names from {CSD_WEIGHTS}, got {weights!r}")
    return (
        check_choice("weights[0]", weights[0], CSD_WEIGHTS),
        check_choice("weights[1]", weights[1], CSD_WEIGHTS),
    )


class CSDKernel(TokenKernel):
    """Per-token CSD value; see the module docstring."""

    name = "csd"

    def __init__(
        self,
        weights: tuple[str, str] = ("student", "student"),
        temperature: float = 1.0,
        mix_alpha: float = 0.15,
    ) -> None:
        super().__init__()
        self.weights = _check_weights(weights)
        self.temperature = check_positive("temperature", temperature)
        self.mix_alpha = check_unit_interval("mix_alpha", mix_alpha)
        self.options = {"weights": self.weights, "temperature": self.temperature, "mix_alpha": self.mix_alpha}

    @torch.no_grad()
    def _weight(self, kind: str, b: Tensor, a: Tensor, support: Tensor | None) -> Tensor:
        """Unnormalized detached weights ``[N, V]`` (0 outside the support)."""
        if kind == "student":
            w = torch.softmax(b / self.temperature, dim=-1)
        elif kind == "teacher":
            w = torch.softmax(a, dim=-1)
        elif kind == "uniform":
            if support is not None:  # uniform over the entries that exist in both models
                return support.to(b.dtype) / support.sum(-1, keepdim=True).clamp_min(1).to(b.dtype)
            w = torch.full_like(b, 1.0 / b.shape[-1])
        else:
            w = self.mix_alpha * torch.softmax(a, dim=-1) + (1.0 - self.mix_alpha) * torch.softmax(b, dim=-1)
        if support is not None:
            w = torch.where(support, w, torch.zeros((), dtype=w.dtype, device=w.device))
        return w

    def _weights(self, b: Tensor, a: Tensor, support: Tensor | None) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """Normalized weights ``[N, V]`` and their totals ``W1, W2`` ``[N]``."""
        b = b.detach()
        w1 = self._weight(self.weights[0], b, a, support)
        w2 = w1 if self.weights[1] == self.weights[0] else self._weight(self.weights[1], b, a, support)
        out = []
        for w in (w1, w2):
            total = w.sum(-1)
            safe = torch.where(total > 0, total, torch.ones_like(total))
            out += [w / safe.unsqueeze(-1), total]
        return out[0], out[2], out[1], out[3]

    def _residual(self, b: Tensor, a: Tensor, support: Tensor | None) -> Tensor:
        d = b - a.detach()
        if support is not None:
            d = torch.where(support, d, torch.zeros((), dtype=d.dtype, device=d.device))
        return d

    def _evaluate(self, b: Tensor, a: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        support = support_of(b, a)
        w1, w2, total1, total2 = self._weights(b, a, support)
        d = self._residual(b, a, support)
        scale = total1 * total2
        mean1 = (w1 * d).sum(-1, keepdim=True)
        centered1 = d - mean1
        var1 = (w1 * centered1**2).sum(-1)
        if self.weights[0] == self.weights[1]:
            value = scale * var1
            return value, (2.0 * scale.unsqueeze(-1) * w1 * centered1 if with_grad else None)
        mean2 = (w2 * d).sum(-1, keepdim=True)
        centered2 = d - mean2
        var2 = (w2 * centered2**2).sum(-1)
        value = 0.5 * scale * (var1 + var2 + (mean1 - mean2).squeeze(-1) ** 2)
        if not with_grad:
            return value, None
        # paper gradient: w2 (d - E_w1 d) + w1 (d - E_w2 d), times W1 W2
        return value, scale.unsqueeze(-1) * (w2 * centered1 + w1 * centered2)

    def value(self, b: Tensor, a: Tensor) -> Tensor:
        return self._evaluate(b, a, False)[0]

    @torch.no_grad()
    def value_and_grad(self, b: Tensor, a: Tensor) -> tuple[Tensor, Tensor]:
        return self._evaluate(b, a, True)


def csd(
    student_logits: Tensor,
    teacher_logits: Tensor,
    mask: Tensor | None = None,
    *,
    weights: tuple[str, str] = ("student", "student"),
    temperature: float = 1.0,
    mix_alpha: float = 0.15,
) -> Tensor:
    """True CSD value ``1/2 sum_{x,y} w1(y) w2(x) ((b_x-b_y)-(a_x-a_y))^2``, token-level mean.

    Args:
        student_logits, teacher_logits: ``[..., V]`` logits (teacher treated as constant).
        mask: bool ``[...]``, True where the position counts; None = every position.
        weights: (w1, w2), each "student" (softmax(b / temperature)), "teacher" (softmax(a)), "uniform"
            (1/V over the entries finite in both models) or "mixture" (mix_alpha p + (1 - mix_alpha) softmax(b)); always detached.
        temperature: > 0, tempers only the student weights (the residual b - a is untempered).
        mix_alpha: teacher share of the "mixture" weights, in [0, 1].

    Returns:
        0-dim tensor, the token-level mean (squared nats). Its gradient is the paper's; multiply by 0.5 to
        take the reference implementation's step size.
    """
    kernel = CSDKernel(weights=weights, temperature=temperature, mix_alpha=mix_alpha)
    return apply_kernel(kernel, student_logits, teacher_logits, mask)
