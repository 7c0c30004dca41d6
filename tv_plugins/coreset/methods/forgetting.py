"""Forgetting (Toneva et al. 2019): per group, the samples with the most forgetting events (correct ->
wrong between consecutive presentations) during the warm-up; never-learnt samples count as most forgotten.
Ties are broken by a seeded random permutation. Needs ``warmup_epochs >= 2``."""

from __future__ import annotations

import torch

from ..registry import SelectionContext, register

__all__ = ["forgetting"]


@register("forgetting", needs_forgetting=True)
def forgetting(ctx: SelectionContext) -> tuple[torch.Tensor, None]:
    picks = []
    for g, (_, indices, k) in enumerate(ctx.groups):
        shuffle = torch.randperm(len(indices), generator=ctx.generator(g))
        events = ctx.forgetting[indices][shuffle]
        order = torch.sort(events, descending=True, stable=True).indices
        picks.append(indices[shuffle[order[:k]]])
    return torch.cat(picks), None
