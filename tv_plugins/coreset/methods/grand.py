"""GraNd (Paul et al. 2021): per group, the samples with the largest last-layer gradient norm
``||g_i||_2 = ||p_i - e_y|| * ||(1, z_i)||`` at the (early-trained) selection model.

Deviations: the true CE gradient (DeepCore differentiates CE applied to softmax outputs, spec Q9) and a
single model (DeepCore's 10 "repeats" reload the same cached warm-up model, Q4, so they are one model too).
"""

from __future__ import annotations

import torch

from ..registry import SelectionContext, register
from .scores import top_k_by_score

__all__ = ["grand"]


@register("grand")
def grand(ctx: SelectionContext) -> tuple[torch.Tensor, None]:
    out = ctx.outputs
    scores = out.residuals.norm(dim=1) * out.augmented_features.norm(dim=1)
    return top_k_by_score(ctx, scores, descending=True), None
