"""Uniform: per group, ``k`` indices drawn uniformly without replacement (depends on the seed only)."""

from __future__ import annotations

import torch

from ..registry import SelectionContext, register

__all__ = ["uniform"]


@register("uniform", needs_model=False)
def uniform(ctx: SelectionContext) -> tuple[torch.Tensor, None]:
    picks = [indices[torch.randperm(len(indices), generator=ctx.generator(g))[:k]]
             for g, (_, indices, k) in enumerate(ctx.groups)]
    return torch.cat(picks), None
