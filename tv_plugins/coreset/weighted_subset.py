"""``WeightedSubset``: a selected subset as an ordinary ``Dataset`` carrying per-sample weights, and the
``LCMatSubset`` shortcut (select + wrap)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch.utils.data import Dataset, WeightedRandomSampler

from .selection import CoresetSelection

__all__ = ["LCMatSubset", "WeightedSubset"]


class WeightedSubset(Dataset):
    """``dataset`` restricted to ``indices`` with per-sample ``weights``.

    Item ``k`` is ``dataset[indices[k]]`` (the wrapped dataset's transforms apply as usual); with
    ``return_weight=True`` the weight is appended: ``(*item, weight)``.

    Use the weights either as loss weights (``loss = (w * ce).sum() / w.sum()``, see :meth:`loss_weights`)
    or through :meth:`sampler`, which draws positions with probability proportional to the weights.

    Args:
        dataset: any map-style dataset.
        indices: ``[n]`` distinct indices into ``dataset``.
        weights: ``[n]`` non-negative finite weights, not all zero (default: ones).
        return_weight: append the weight to every item.
    """

    def __init__(
        self,
        dataset: Dataset,
        indices: Sequence[int] | torch.Tensor,
        weights: Sequence[float] | torch.Tensor | None = None,
        return_weight: bool = False,
    ) -> None:
        indices = torch.as_tensor(indices, dtype=torch.long).reshape(-1)
        n = len(dataset)
        if len(indices) and (int(indices.min()) < 0 or int(indices.max()) >= n):
            raise ValueError(f"indices must lie in [0, {n}), got range [{int(indices.min())}, {int(indices.max())}]")
        if len(torch.unique(indices)) != len(indices):
            raise ValueError("indices must be distinct")
        weights = torch.ones(len(indices)) if weights is None else torch.as_tensor(weights, dtype=torch.float32).reshape(-1)
        if len(weights) != len(indices):
            raise ValueError(f"weights has {len(weights)} entries for {len(indices)} indices")
        if not torch.isfinite(weights).all() or (weights < 0).any():
            raise ValueError("weights must be finite and >= 0")
        if len(weights) and float(weights.sum()) <= 0:
            raise ValueError("weights must not all be zero")
        self.dataset = dataset
        self.indices = indices
        self.weights = weights
        self.return_weight = return_weight

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int) -> Any:
        item = self.dataset[int(self.indices[k])]
        if self.return_weight:
            return (*item, self.weights[k]) if isinstance(item, tuple) else (item, self.weights[k])
        return item

    def loss_weights(self, positions: torch.Tensor | Sequence[int]) -> torch.Tensor:
        """Weights ``[B]`` of the given positions (0 ... len-1), normalised to mean 1 over the whole subset,
        so ``(w * per_sample_loss).mean()`` equals the weighted mean loss of the subset in expectation."""
        return self.weights[torch.as_tensor(positions, dtype=torch.long)] * (len(self.weights) / self.weights.sum())

    def sampler(
        self, num_samples: int | None = None, replacement: bool = True, generator: torch.Generator | None = None
    ) -> WeightedRandomSampler:
        """A ``WeightedRandomSampler`` over positions of this subset, probability proportional to ``weights``."""
        return WeightedRandomSampler(self.weights.double(), num_samples or len(self), replacement=replacement,
                                     generator=generator)

    @classmethod
    def from_selection(cls, dataset: Dataset, selection: CoresetSelection, return_weight: bool = False) -> WeightedSubset:
        return cls(dataset, selection.indices, selection.weights, return_weight=return_weight)


class LCMatSubset(WeightedSubset):
    """``select_coreset(selection_dataset or dataset, "lcmat", fraction, model, ...)`` wrapped as a
    :class:`WeightedSubset` of ``dataset`` (pass a non-augmenting ``selection_dataset`` or
    ``selection_transform=`` when ``dataset`` augments). The selection is kept in ``.selection``."""

    def __init__(
        self,
        dataset: Dataset,
        model: torch.nn.Module | None = None,
        fraction: float = 0.01,
        *,
        return_weight: bool = False,
        selection_dataset: Dataset | None = None,
        **select_kwargs: Any,
    ) -> None:
        from .select import select_coreset

        source = dataset if selection_dataset is None else selection_dataset
        if len(source) != len(dataset):
            raise ValueError(f"selection_dataset has {len(source)} samples, dataset {len(dataset)}; they must align")
        self.selection = select_coreset(source, method="lcmat", fraction=fraction, model=model, **select_kwargs)
        super().__init__(dataset, self.selection.indices, self.selection.weights, return_weight=return_weight)
