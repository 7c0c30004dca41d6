"""k-Center greedy (Sener & Savarese 2018) on the penultimate embeddings of the selection model, per group,
with a seeded random first centre. Deviation: DeepCore embeds with an ImageNet-pretrained ResNet-18 at 224 px;
we use the (warmed-up) selection model, which works offline and for any input size."""

from __future__ import annotations

import torch

from ..greedy import kcenter_greedy as farthest_first
from ..registry import SelectionContext, register

__all__ = ["kcenter_greedy"]


@register("kcenter_greedy")
def kcenter_greedy(ctx: SelectionContext) -> tuple[torch.Tensor, None]:
    picks = []
    for g, (_, indices, k) in enumerate(ctx.groups):
        first = int(torch.randint(len(indices), (1,), generator=ctx.generator(g)))
        picks.append(indices[farthest_first(ctx.outputs.features[indices], k, first)])
    return torch.cat(picks), None
