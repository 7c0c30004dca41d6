"""Herding (Welling 2009; Chen et al. 2010) on the penultimate embeddings, per group.

Step t picks ``argmin_x ||(t + 1) mu - sum_{s in S} phi(s) - phi(x)||`` (the sample that brings the running
sum closest to the group mean). Deviation: the DeepCore/LCMat code takes the argmax (spec C), which picks
the sample that moves the mean estimate *away* from mu; we implement the textbook argmin.
"""

from __future__ import annotations

import torch

from ..registry import SelectionContext, register

__all__ = ["herding", "herding_order"]


def herding_order(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Herding picks ``[k]`` (positions, greedy order) for ``embeddings [n, d]``; ties to the lowest index."""
    mu = embeddings.mean(0)
    running = torch.zeros_like(mu)
    available = torch.ones(len(embeddings), dtype=torch.bool)
    picks = []
    for t in range(k):
        distance = ((t + 1) * mu - running - embeddings).norm(dim=1)
        distance[~available] = torch.inf
        j = int(torch.argmin(distance))
        picks.append(j)
        available[j] = False
        running = running + embeddings[j]
    return torch.tensor(picks, dtype=torch.long)


@register("herding")
def herding(ctx: SelectionContext) -> tuple[torch.Tensor, None]:
    picks = [indices[herding_order(ctx.outputs.features[indices], k)] for _, indices, k in ctx.groups]
    return torch.cat(picks), None
