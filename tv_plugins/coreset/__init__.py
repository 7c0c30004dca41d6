"""Coreset selection for torchvision-style datasets: LCMat (loss-curvature matching) and baselines.

``select_coreset(dataset, method, fraction, model, ...)`` returns a :class:`CoresetSelection`;
:class:`WeightedSubset` / :class:`LCMatSubset` wrap it as a Dataset; :class:`CoresetSampler` re-selects
during training, and ``CoresetCallback`` (imported lazily, needs transformers) drives it in a Trainer.
"""

from __future__ import annotations

from typing import Any

from .methods import METHODS, Group
from .sampler import CoresetSampler
from .select import per_class_budgets, select_coreset
from .subset import CoresetSelection, LCMatSubset, WeightedSubset

register = METHODS.register

__all__ = ["METHODS", "CoresetCallback", "CoresetSampler", "CoresetSelection", "Group", "LCMatSubset", "WeightedSubset",
           "per_class_budgets", "register", "select_coreset"]


def __getattr__(name: str) -> Any:
    if name == "CoresetCallback":  # needs transformers, which the `tv` extra does not install
        try:
            from .callback import CoresetCallback
        except ImportError as err:
            raise ImportError("tv_plugins.coreset.CoresetCallback drives a transformers.Trainer and needs the "
                              "`transformers` package: pip install transformers (or distill-plugins[hf])") from err
        return CoresetCallback
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
