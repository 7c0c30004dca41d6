"""Uncertainty sampling (Coleman et al. 2020), per group, most uncertain first:

* ``"least_confidence"``: largest ``1 - max_k p_k``;
* ``"margin"``: smallest ``p_(1) - p_(2)`` (top-1 minus top-2 probability);
* ``"entropy"``: largest ``-sum_k p_k log p_k``.

Deviations: DeepCore's least-confidence ranks by the max *logit*; we use the max probability, which is what
the criterion means (the two orders differ because the softmax normaliser varies between samples).
"""

from __future__ import annotations

import torch

from ..registry import SelectionContext, register
from .scores import top_k_by_score

__all__ = ["UNCERTAINTY_SCORES", "uncertainty"]

UNCERTAINTY_SCORES = ("least_confidence", "margin", "entropy")


@register("uncertainty")
def uncertainty(ctx: SelectionContext, score: str = "entropy") -> tuple[torch.Tensor, None]:
    if score not in UNCERTAINTY_SCORES:
        raise ValueError(f"score must be one of {UNCERTAINTY_SCORES}, got {score!r}")
    p = ctx.outputs.probs
    if score == "least_confidence":
        return top_k_by_score(ctx, 1.0 - p.max(1).values, descending=True), None
    if score == "margin":
        top2 = p.topk(2, dim=1).values if p.shape[1] > 1 else torch.cat([p, torch.zeros_like(p)], 1)
        return top_k_by_score(ctx, top2[:, 0] - top2[:, 1], descending=False), None
    entropy = -(torch.special.xlogy(p, p)).sum(1)
    return top_k_by_score(ctx, entropy, descending=True), None
