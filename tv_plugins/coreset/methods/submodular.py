"""Submodular selection (DeepCore's "FL"/"GC" baselines), per group, with the cosine similarity
``s(i, j) = 0.5 + 0.5 cos(g_i, g_j)`` of per-sample last-layer gradients:

* ``function="facility_location"``: ``F(S) = sum_i max_{j in S} s(i, j)``;
* ``function="graph_cut"``: ``f(S) = sum_{i in V, j in S} s(i, j) - lam sum_{i, j in S} s(i, j)``.

Deviation: true CE gradients (DeepCore applies CE to softmax outputs, spec Q9).
"""

from __future__ import annotations

import torch

from ..greedy import facility_location_greedy, graph_cut_greedy
from ..last_layer import gradient_gram
from ..registry import SelectionContext, register

__all__ = ["SUBMODULAR_FUNCTIONS", "cosine_similarity", "submodular"]

SUBMODULAR_FUNCTIONS = ("facility_location", "graph_cut")


def cosine_similarity(gram: torch.Tensor) -> torch.Tensor:
    """``0.5 + 0.5 cos`` from a Gram matrix ``[n, n]``; zero-norm vectors get cosine 0."""
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gram / denom.clamp_min(1e-300), torch.zeros_like(gram))
    return 0.5 + 0.5 * cos.clamp(-1.0, 1.0)


@register("submodular")
def submodular(ctx: SelectionContext, function: str = "facility_location", lam: float = 1.0) -> tuple[torch.Tensor, None]:
    """Options: ``function`` ("facility_location" | "graph_cut"), ``lam`` (graph-cut diversity weight)."""
    if function not in SUBMODULAR_FUNCTIONS:
        raise ValueError(f"function must be one of {SUBMODULAR_FUNCTIONS}, got {function!r}")
    chosen = []
    for _, indices, k in ctx.groups:
        similarity = cosine_similarity(gradient_gram(ctx.outputs.subset(indices)))
        if function == "facility_location":
            picks, _ = facility_location_greedy(similarity, k)
        else:
            picks = graph_cut_greedy(similarity, k, float(lam))
        chosen.append(indices[picks])
    return torch.cat(chosen), None
