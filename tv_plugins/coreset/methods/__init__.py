"""Selection methods. Each is registered in :data:`METHODS` as ``fn(group, k, generator, **options) ->
(positions [k] into the group, weights [k] or None)``; ``select_coreset`` does the grouping, the budgets and the
final ordering once. Importing this package registers every method."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ...registry import Registry
from ..last_layer import LastLayerOutputs

__all__ = ["METHODS", "Group"]


@dataclass(eq=False)
class Group:
    """The samples one selection runs on (a class, or the whole dataset with ``balance=False``): their dataset
    ``indices [n]`` (ascending), the class ``label`` (or None), their last-layer ``outputs`` (None for methods
    registered with ``needs_model=False``) and warm-up ``forgetting`` counts ``[n]`` (``needs_forgetting=True``)."""

    indices: torch.Tensor
    label: int | None = None
    outputs: LastLayerOutputs | None = None
    forgetting: torch.Tensor | None = None

    def __len__(self) -> int:
        return len(self.indices)


#: ``needs_model``: the method reads last-layer outputs; ``needs_forgetting``: it reads the warm-up's forgetting
#: events; ``check``: validates the resolved options (called with all of them) before any work starts.
METHODS = Registry("coreset method", "method", skip=3,
                   attributes={"needs_model": True, "needs_forgetting": False, "check": None})

from . import embedding, facility_location, gradient_matching, ranking  # noqa: E402,F401  (registration)
