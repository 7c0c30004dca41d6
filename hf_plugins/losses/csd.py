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
The functional form ``csd`` returns the token-level mean; its gradient is the paper's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .kernel import restrict, support_of
from .loss import Loss, functional, option, register
from .validation import one_of, positive, unit_interval

__all__ = ["CSDLoss", "CSD_WEIGHTS", "csd"]

CSD_WEIGHTS = ("student", "teacher", "uniform", "mixture")
_LETTERS = {name[0].upper(): name for name in CSD_WEIGHTS}


def _column(scale: Tensor | float) -> Tensor | float:
    return scale.unsqueeze(-1) if isinstance(scale, Tensor) else scale


def _check_weights(name: str, weights: object) -> tuple[str, str]:
    """A pair (w1, w2) of weight names, or of their letters S, T, U, M (e.g. "TS", "T,S")."""
    letters = weights.replace(",", "").replace(" ", "").upper() if isinstance(weights, str) else ""
    if len(letters) == 2:
        weights = tuple(letters)
    if isinstance(weights, str) or not isinstance(weights, (tuple, list)) or len(weights) != 2:
        raise ValueError(
            f"{name} must be a pair (w1, w2) of names from {CSD_WEIGHTS} or of their letters (e.g. 'TS'), "
            f"got {weights!r}"
        )
    check = one_of(CSD_WEIGHTS)
    return tuple(check(f"{name}[{i}]", _LETTERS.get(w, w)) for i, w in enumerate(weights))


@register("csd")
@dataclass(frozen=True)
class CSDLoss(Loss):
    """True CSD value ``1/2 sum_{x,y} w1(y) w2(x) ((b_x-b_y)-(a_x-a_y))^2`` per token, in squared nats.

    Computed in O(V) as described in the module docstring; multiply by 0.5 to take the reference
    implementation's step size.
    """

    weights: tuple[str, str] = option(
        ("student", "student"),
        _check_weights,
        '(w1, w2), each "student" (softmax(b / temperature)), "teacher" (softmax(a)), "uniform" (1/V over the '
        'entries finite in both models) or "mixture" (mix_alpha p + (1 - mix_alpha) softmax(b)), or the letters '
        'S, T, U, M (e.g. "TS"); always detached.',
    )
    temperature: float = option(1.0, positive, "> 0, tempers only the student weights (b - a is untempered).")
    mix_alpha: float = option(0.15, unit_interval, 'teacher share of the "mixture" weights, in [0, 1].')

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

    @torch.no_grad()
    def sparse_value_and_grad(self, b: Tensor, ids: Tensor, lp: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
        """CSD restricted to the teacher's kept set K (``ids [N, k]``), weights renormalised over K.

        The double sum runs over pairs in K only, with ``softmax(b_K / temperature)``, ``softmax(lp_K)``, ``1/k``
        or their mixture as weights (the tail mass ``tail`` is unused). Bias: pairs involving a non-kept token are
        dropped and the weights are those of the distributions conditioned on K, so student logits outside K get
        no gradient (mass the student moves outside K is not penalised). Exact when k = V.
        """
        values, grad_kept = self._evaluate(b.gather(-1, ids), lp, True)
        return values, torch.zeros_like(b).scatter_(-1, ids, grad_kept)


csd = functional(CSDLoss)
