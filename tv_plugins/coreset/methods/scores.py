"""Top-k per group by a per-sample score (shared by the score-based baselines)."""

from __future__ import annotations

import torch

from ..registry import SelectionContext

__all__ = ["top_k_by_score"]


def top_k_by_score(ctx: SelectionContext, scores: torch.Tensor, descending: bool = True) -> torch.Tensor:
    """Per group, the ``k`` indices with the highest (``descending``) or lowest scores; ties to the lower index.

    ``scores``: ``[N]`` over the whole dataset. Raises ``FloatingPointError`` on NaN scores.
    """
    if torch.isnan(scores).any():
        raise FloatingPointError("selection scores contain NaN (the selection model produced non-finite logits)")
    picks = [indices[torch.sort(scores[indices], descending=descending, stable=True).indices[:k]]
             for _, indices, k in ctx.groups]
    return torch.cat(picks)
