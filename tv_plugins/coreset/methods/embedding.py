"""Greedy selection on the penultimate embeddings (the final linear layer's inputs ``z``): herding and
k-center greedy.

Deviation shared by both: DeepCore embeds with an ImageNet-pretrained ResNet-18 at 224 px for k-center; the
(warmed-up) selection model is used instead, which works offline and for any input size.
"""

from __future__ import annotations

import torch

from . import METHODS, Group

__all__ = ["herding", "herding_order", "kcenter_greedy", "kcenter_order"]


def herding_order(embeddings: torch.Tensor, k: int) -> torch.Tensor:
    """Herding (Welling 2009; Chen et al. 2010) picks ``[k]`` for ``embeddings [n, d]``: step t takes
    ``argmin_x ||(t + 1) mu - sum_{s in S} phi(s) - phi(x)||``, the sample bringing the running sum closest to
    the mean; ties to the lowest position.

    Deviation: the DeepCore/LCMat code takes the argmax, which moves the mean estimate *away* from mu; this is
    the textbook argmin.
    """
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


def kcenter_order(points: torch.Tensor, k: int, first: int) -> torch.Tensor:
    """Farthest-first traversal (Sener & Savarese 2018's k-center greedy) on ``points [n, d]`` from ``first``.
    Returns picks ``[k]`` in greedy order."""
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    picks = [first]
    nearest = torch.cdist(points, points[first : first + 1]).squeeze(1)
    nearest[first] = -1.0
    for _ in range(k - 1):
        j = int(torch.argmax(nearest))
        picks.append(j)
        nearest = torch.minimum(nearest, torch.cdist(points, points[j : j + 1]).squeeze(1))
        nearest[torch.tensor(picks)] = -1.0
    return torch.tensor(picks, dtype=torch.long)


@METHODS.register("herding")
def herding(group: Group, k: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
    """Herding on the group's embeddings (:func:`herding_order`)."""
    return herding_order(group.outputs.features, k), None


@METHODS.register("kcenter_greedy")
def kcenter_greedy(group: Group, k: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
    """k-center greedy on the group's embeddings from a seeded random first centre (:func:`kcenter_order`)."""
    first = int(torch.randint(len(group), (1,), generator=generator))
    return kcenter_order(group.outputs.features, k, first), None
