"""A selected coreset: :class:`CoresetSelection` (indices, per-sample weights, per-class counts; lossless
save/load) and the same subset as an ordinary ``Dataset`` carrying its weights (:class:`WeightedSubset`, and the
:class:`LCMatSubset` shortcut that selects and wraps)."""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset, WeightedRandomSampler

from ..persistence import read_json, read_safetensors

__all__ = ["CoresetSelection", "LCMatSubset", "WeightedSubset"]

_WEIGHTS, _CONFIG = "coreset.safetensors", "coreset.json"


@dataclass(eq=False)
class CoresetSelection:
    """A selected subset of a dataset: ``indices`` (``LongTensor [n]``, distinct, class-major and ascending within
    each class as in the official LCMat code), ``weights`` (``FloatTensor [n]`` aligned training weights: ones for
    unweighted methods, cluster sizes / OMP weights otherwise), ``per_class_counts`` (``{class: number selected}``
    for every class present), ``method`` (its registry name) and ``options`` (JSON-serialisable settings).

    ``==`` compares indices and weights bit for bit, and counts, method and options: a saved and reloaded selection
    equals the original (safetensors stores the bytes). Indices are reproduced exactly on any machine; GradMatch's
    float weights (a float64 NNLS solve) can differ in the last bits between machines, so compare weights computed
    on different machines with ``torch.testing.assert_close``.
    """

    indices: torch.Tensor
    weights: torch.Tensor
    per_class_counts: dict[int, int]
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.numel())

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CoresetSelection):
            return NotImplemented
        return (self.method == other.method and self.options == other.options
                and self.per_class_counts == other.per_class_counts and torch.equal(self.indices, other.indices)
                and self.weights.dtype == other.weights.dtype and torch.equal(self.weights, other.weights))

    __hash__ = None  # mutable, compared by value

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``path/coreset.safetensors`` (indices, weights) and ``path/coreset.json`` (method, options, counts)."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"indices": self.indices.contiguous().to(torch.int64), "weights": self.weights.contiguous()},
                  str(path / _WEIGHTS))
        config = {"format_version": 1, "method": self.method, "options": self.options,
                  "per_class_counts": {str(k): int(v) for k, v in self.per_class_counts.items()}}
        (path / _CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> CoresetSelection:
        """Read a selection written by :meth:`save_pretrained`; it compares equal to the saved one.

        Raises:
            FileNotFoundError: a file is missing.  ValueError: a file is truncated or corrupt (the message names
            the file and what wrote it).
        """
        path, writer = Path(path), "CoresetSelection.save_pretrained"
        config = read_json(path / _CONFIG, writer, required=("method", "options", "per_class_counts"))
        tensors = read_safetensors(path / _WEIGHTS, writer, required=("indices", "weights"))
        counts = {int(k): int(v) for k, v in config["per_class_counts"].items()}
        return cls(tensors["indices"], tensors["weights"], counts, config["method"], config["options"])

    save = save_pretrained  # the earlier names, kept as aliases
    load = from_pretrained


class WeightedSubset(Dataset):
    """``dataset`` restricted to ``indices`` with per-sample ``weights``: item ``k`` is ``dataset[indices[k]]``
    (the wrapped dataset's transforms apply), with ``return_weight=True`` ``(*item, weight)``. Use the weights as
    loss weights (:meth:`loss_weights`) or through :meth:`sampler` (probability proportional to the weights).

    Args:
        dataset: any map-style dataset.
        indices: ``[n]`` distinct indices into ``dataset``.
        weights: ``[n]`` non-negative finite weights, not all zero (default: ones).
        return_weight: append the weight to every item.
    """

    def __init__(self, dataset: Dataset, indices: Sequence[int] | torch.Tensor,
                 weights: Sequence[float] | torch.Tensor | None = None, return_weight: bool = False) -> None:
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
        self.dataset, self.indices, self.weights, self.return_weight = dataset, indices, weights, return_weight

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

    def sampler(self, num_samples: int | None = None, replacement: bool = True,
                generator: torch.Generator | None = None) -> WeightedRandomSampler:
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

    def __init__(self, dataset: Dataset, model: torch.nn.Module | None = None, fraction: float = 0.01, *,
                 return_weight: bool = False, selection_dataset: Dataset | None = None, **select_kwargs: Any) -> None:
        from .select import select_coreset

        source = dataset if selection_dataset is None else selection_dataset
        if len(source) != len(dataset):
            raise ValueError(f"selection_dataset has {len(source)} samples, dataset {len(dataset)}; they must align")
        self.selection = select_coreset(source, method="lcmat", fraction=fraction, model=model, **select_kwargs)
        super().__init__(dataset, self.selection.indices, self.selection.weights, return_weight=return_weight)
