"""Per-class selection budgets: ``k_c = max(1, round_half_up(fraction * N_c))`` for every present class."""

from __future__ import annotations

import math

import torch

__all__ = ["check_fraction", "group_budget", "per_class_budgets"]


def check_fraction(fraction: float) -> float:
    """Return ``fraction`` as a float if it lies in (0, 1]; raise otherwise (nothing is clamped)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        raise TypeError(f"fraction must be a real number in (0, 1], got {fraction!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return float(fraction)


def group_budget(fraction: float, size: int) -> int:
    """``max(1, floor(fraction * size + 0.5))`` for a non-empty group of ``size`` samples.

    Deviation from the reference (spec quirk Q6): Python's banker's ``round`` and its ``ValueError`` on a
    zero budget are replaced by round-half-up with at least one sample per present class.
    """
    if size < 1:
        raise ValueError(f"a selection group must be non-empty, got size {size}")
    return max(1, min(size, math.floor(fraction * size + 0.5)))


def per_class_budgets(labels: torch.Tensor, fraction: float) -> dict[int, int]:
    """``{class: k_c}`` for every class present in ``labels`` (``LongTensor [N]``)."""
    fraction = check_fraction(fraction)
    classes, counts = torch.unique(labels, return_counts=True)
    return {int(c): group_budget(fraction, int(n)) for c, n in zip(classes.tolist(), counts.tolist())}
