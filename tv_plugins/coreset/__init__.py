"""Coreset selection for torchvision-style datasets: LCMat (loss-curvature matching) and baselines.

``select_coreset(dataset, method, fraction, model, ...)`` returns a :class:`CoresetSelection`;
:class:`WeightedSubset` / :class:`LCMatSubset` wrap it as a Dataset; :class:`CoresetSampler` re-selects
during training, and ``CoresetCallback`` (imported lazily, needs transformers) drives it in a Trainer.
"""

from __future__ import annotations

from typing import Any

from .budgets import per_class_budgets
from .registry import METHODS, register
from .sampler import CoresetSampler
from .select import select_coreset
from .selection import CoresetSelection
from .weighted_subset import LCMatSubset, WeightedSubset

__all__ = [
    "METHODS",
    "CoresetCallback",
    "CoresetSampler",
    "CoresetSelection",
    "LCMatSubset",
    "WeightedSubset",
    "per_class_budgets",
    "register",
    "select_coreset",
]


def __getattr__(name: str) -> Any:
    if name == "CoresetCallback":
        from .callback import CoresetCallback

        return CoresetCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
