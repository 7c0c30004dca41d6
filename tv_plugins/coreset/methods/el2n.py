"""EL2N (Paul et al. 2021): per group, the samples with the largest error norm ``||softmax(o_i) - e_y||_2``
at the early-trained selection model."""

from __future__ import annotations

import torch

from ..registry import SelectionContext, register
from .scores import top_k_by_score

__all__ = ["el2n"]


@register("el2n")
def el2n(ctx: SelectionContext) -> tuple[torch.Tensor, None]:
    return top_k_by_score(ctx, ctx.outputs.residuals.norm(dim=1), descending=True), None
