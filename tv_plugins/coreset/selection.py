"""The result of a coreset selection: indices, per-sample weights, per-class counts; lossless save/load."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from typing import Any

import torch
from safetensors.torch import load_file, save_file

__all__ = ["CoresetSelection"]


@dataclass
class CoresetSelection:
    """A selected subset of a dataset.

    Attributes:
        indices: ``LongTensor [n]`` of dataset indices, class-major and ascending within each class
            (the order of the official LCMat code), no duplicates.
        weights: ``FloatTensor [n]`` of per-sample training weights aligned with ``indices`` (all ones
            for unweighted methods; cluster sizes / OMP weights for weighted ones).
        per_class_counts: ``{class: number selected}`` for every class present in the dataset.
        method: the registry name of the method that produced it.
        options: the method options and selection settings (JSON-serialisable).
    """

    indices: torch.Tensor
    weights: torch.Tensor
    per_class_counts: dict[int, int]
    method: str
    options: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.indices.numel())

    def save(self, path: str | os.PathLike) -> None:
        """Write indices and weights as safetensors; method/options/counts go into its JSON metadata."""
        metadata = {
            "method": self.method,
            "options": json.dumps(self.options, sort_keys=True),
            "per_class_counts": json.dumps({str(k): int(v) for k, v in self.per_class_counts.items()}),
        }
        tensors = {"indices": self.indices.contiguous().to(torch.int64), "weights": self.weights.contiguous()}
        save_file(tensors, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | os.PathLike) -> CoresetSelection:
        """Read a selection written by :meth:`save` (bit-identical indices and weights)."""
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        missing = {"method", "options", "per_class_counts"} - set(metadata)
        if missing:
            raise ValueError(f"{path} is not a saved CoresetSelection (metadata lacks {sorted(missing)})")
        tensors = load_file(str(path))
        counts = {int(k): int(v) for k, v in json.loads(metadata["per_class_counts"]).items()}
        return cls(
            indices=tensors["indices"],
            weights=tensors["weights"],
            per_class_counts=counts,
            method=metadata["method"],
            options=json.loads(metadata["options"]),
        )
