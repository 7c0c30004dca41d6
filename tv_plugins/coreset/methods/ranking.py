"""Selection by a per-sample ranking within the group (ties to the lower position): uniform (a random order),
EL2N, GraNd, uncertainty sampling and forgetting events."""

from __future__ import annotations

import torch

from ...registry import check_choice
from . import METHODS, Group

__all__ = ["UNCERTAINTY_SCORES", "el2n", "forgetting", "grand", "top_k", "uncertainty", "uniform"]

UNCERTAINTY_SCORES = ("least_confidence", "margin", "entropy")


def top_k(scores: torch.Tensor, k: int, descending: bool = True) -> torch.Tensor:
    """Positions of the ``k`` highest (``descending``) or lowest ``scores [n]``; ties to the lower position.
    Raises ``FloatingPointError`` on NaN scores."""
    if torch.isnan(scores).any():
        raise FloatingPointError("selection scores contain NaN (the selection model produced non-finite logits)")
    return torch.sort(scores, descending=descending, stable=True).indices[:k]


@METHODS.register("uniform", needs_model=False)
def uniform(group: Group, k: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
    """``k`` positions drawn uniformly without replacement (depends on the seed only)."""
    return torch.randperm(len(group), generator=generator)[:k], None


@METHODS.register("el2n")
def el2n(group: Group, k: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
    """EL2N (Paul et al. 2021): the largest error norm ``||softmax(o_i) - e_y||_2`` at the early-trained model."""
    return top_k(group.outputs.residuals.norm(dim=1), k), None


@METHODS.register("grand")
def grand(group: Group, k: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
    """GraNd (Paul et al. 2021): the largest last-layer gradient norm ``||g_i|| = ||p_i - e_y|| * ||(1, z_i)||``.

    Deviations from DeepCore: the true CE gradient (DeepCore differentiates CE applied to softmax outputs) and
    one model (DeepCore's 10 "repeats" reload the same cached warm-up model, so they are one model too).
    """
    out = group.outputs
    return top_k(out.residuals.norm(dim=1) * out.augmented_features.norm(dim=1), k), None


@METHODS.register("uncertainty", check=lambda score: check_choice("score", score, UNCERTAINTY_SCORES))
def uncertainty(group: Group, k: int, generator: torch.Generator, score: str = "entropy") -> tuple[torch.Tensor, None]:
    """Uncertainty sampling (Coleman et al. 2020), most uncertain first: ``"least_confidence"`` (largest
    ``1 - max_k p_k``), ``"margin"`` (smallest top-1 minus top-2 probability) or ``"entropy"``.

    Deviation: DeepCore's least-confidence ranks by the max *logit*; the max probability is what the criterion
    means (the orders differ because the softmax normaliser varies between samples).
    """
    p = group.outputs.probs
    if score == "least_confidence":
        return top_k(1.0 - p.max(1).values, k), None
    if score == "margin":
        top2 = p.topk(2, dim=1).values if p.shape[1] > 1 else torch.cat([p, torch.zeros_like(p)], 1)
        return top_k(top2[:, 0] - top2[:, 1], k, descending=False), None
    return top_k(-(torch.special.xlogy(p, p)).sum(1), k), None


@METHODS.register("forgetting", needs_forgetting=True)
def forgetting(group: Group, k: int, generator: torch.Generator) -> tuple[torch.Tensor, None]:
    """Forgetting (Toneva et al. 2019): the most forgetting events (correct -> wrong between consecutive
    presentations) during the warm-up, never-learnt samples first; ties broken by a seeded random permutation.
    Needs ``warmup_epochs >= 2``."""
    shuffle = torch.randperm(len(group), generator=generator)
    order = torch.sort(group.forgetting[shuffle], descending=True, stable=True).indices
    return shuffle[order[:k]], None
