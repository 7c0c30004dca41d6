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

from .kernel import TokenKernel, restrict, support_of
from .reduction import apply_kernel
from .validation import check_choice, check_positive, check_unit_interval

__all__ = ["CSDKernel", "CSD_WEIGHTS", "csd"]

CSD_WEIGHTS = ("student", "teacher", "uniform", "mixture")


def _column(scale: Tensor | float) -> Tensor | float:
    return scale.unsqueeze(-1) if isinstance(scale, Tensor) else scale


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
    def _weight(
        self, kind: str, b: Tensor, a: Tensor, support: Tensor | None
    ) -> tuple[Tensor, Tensor | float]:
        """Detached weights ``[N, V]`` normalized over the support, and their totals before normalizing.

        Without masked entries every kind sums to 1 by construction (the total is then the float 1).
        """
        if kind == "student":
            w = torch.softmax(b if self.temperature == 1.0 else b / self.temperature, dim=-1)
        elif kind == "teacher":
            w = torch.softmax(a, dim=-1)
        elif kind == "uniform":
            if support is not None:  # uniform over the entries that exist in both models
                return support.to(b.dtype) / support.sum(-1, keepdim=True).clamp_min(1).to(b.dtype), 1.0
            return torch.full_like(b, 1.0 / b.shape[-1]), 1.0
        else:
            w = (
                torch.softmax(a, dim=-1)
                .mul_(self.mix_alpha)
                .add_(torch.softmax(b, dim=-1), alpha=1 - self.mix_alpha)
            )
        if support is None:
            return w, 1.0
        w = restrict(w, support)
        total = w.sum(-1)
        safe = torch.where(total > 0, total, torch.ones_like(total))
        return w / safe.unsqueeze(-1), total

    def _evaluate(self, b: Tensor, a: Tensor, with_grad: bool) -> tuple[Tensor, Tensor | None]:
        support = support_of(b, a)
        w1, total1 = self._weight(self.weights[0], b.detach(), a, support)
        if self.weights[1] == self.weights[0]:
            w2, total2 = w1, total1
        else:
            w2, total2 = self._weight(self.weights[1], b.detach(), a, support)
        scale = total1 * total2  # W1 W2
        d = restrict(b - a.detach(), support)
        mean1 = (w1 * d).sum(-1, keepdim=True)
        centered1 = d - mean1
        weighted1 = w1 * centered1
        var1 = (weighted1 * centered1).sum(-1)
        if w2 is w1:  # L = W^2 Var_w(d), gradient 2 W^2 w (d - E_w d)
            value = scale * var1
            if not with_grad:
                return value, None
            return value, weighted1.mul_(2.0 * _column(scale))
        mean2 = (w2 * d).sum(-1, keepdim=True)
        centered2 = d - mean2
        var2 = (w2 * centered2 * centered2).sum(-1)
        value = 0.5 * scale * (var1 + var2 + (mean1 - mean2).squeeze(-1) ** 2)
        if not with_grad:
            return value, None
        # paper gradient: w2 (d - E_w1 d) + w1 (d - E_w2 d), times W1 W2
        return value, torch.addcmul(w1 * centered2, w2, centered1).mul_(_column(scale))

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
