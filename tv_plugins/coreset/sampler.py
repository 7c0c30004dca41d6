"""``CoresetSampler``: a ``torch.utils.data.Sampler`` whose indices are re-selected from the live model
every ``every_k_epochs`` epochs. Because the sampler itself re-selects when an epoch's iteration starts,
it works in any PyTorch loop, with persistent workers and inside ``transformers.Trainer`` (where swapping
the dataloader from a callback would have no effect)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset, Sampler

from ..data import dataset_labels
from ..persistence import check_settings, describe, digest
from ..registry import check_int
from .methods import METHODS
from .select import check_fraction, group_budget, select_coreset
from .subset import CoresetSelection

__all__ = ["CoresetSampler"]


class CoresetSampler(Sampler[int]):
    """Yields dataset indices of the current coreset, shuffled per epoch. At the start of an epoch ``e`` with
    ``e >= first_epoch`` and ``(e - first_epoch) % every_k_epochs == 0`` it runs ``select_coreset(dataset, method,
    fraction, model, warmup_epochs=0, seed=seed + e, ...)`` on the current ``model`` (modes restored). The epoch
    comes from :meth:`set_epoch` (as ``Trainer`` and ``DistributedSampler`` users call it), else each new
    iteration advances it by one.

    Args:
        dataset: the full dataset (items ``(image, label)``) used for selection.
        fraction: share per class, in (0, 1]. ``len(sampler)`` is the total budget (constant).
        model: the model being trained (can be set later, e.g. by :class:`CoresetCallback`).
        method: a registered method name; ``every_k_epochs``: re-selection period (>= 1).
        shuffle: shuffle the current indices each epoch (seeded by ``seed`` and the epoch).
        weighted_sampling: draw ``len`` indices with replacement, probability proportional to the selection
            weights (a way to honour CRAIG/GradMatch/cluster-size weights without a weighted loss).
        **select_kwargs: passed to ``select_coreset`` (``balance``, ``batch_size``, ``device``,
            ``last_layer``, ``progress`` and method options such as ``eps``/``weights``).
    """

    def __init__(self, dataset: Dataset, fraction: float, model: nn.Module | None = None, method: str = "lcmat",
                 every_k_epochs: int = 1, first_epoch: int = 0, seed: int = 0, shuffle: bool = True,
                 weighted_sampling: bool = False, **select_kwargs: Any) -> None:
        for name, value, minimum in (("every_k_epochs", every_k_epochs, 1), ("first_epoch", first_epoch, 0),
                                     ("seed", seed, 0)):
            check_int(name, value, minimum)
        if "warmup_epochs" in select_kwargs:
            raise TypeError("CoresetSampler selects from the live model; warmup_epochs is not accepted")
        METHODS[method].resolve({k: v for k, v in select_kwargs.items() if k not in _SELECT_ARGS})
        self.dataset, self.fraction, self.model, self.method = dataset, check_fraction(fraction), model, method
        self.every_k_epochs, self.first_epoch, self.seed = every_k_epochs, first_epoch, seed
        self.shuffle, self.weighted_sampling, self.select_kwargs = shuffle, weighted_sampling, select_kwargs
        labels = dataset_labels(dataset)
        sizes = torch.unique(labels, return_counts=True)[1].tolist() if select_kwargs.get("balance", True) else [len(labels)]
        self._length = sum(group_budget(self.fraction, n) for n in sizes)
        self.epoch, self._epoch_pending = 0, True  # a pending epoch: the next __iter__ uses it without advancing
        self.selection: CoresetSelection | None = None
        self.selected_at: int | None = None
        self.history: list[dict[str, Any]] = []

    def __len__(self) -> int:
        return self._length

    def set_epoch(self, epoch: int) -> None:
        """Set the epoch of the next iteration (re-selection happens lazily when iteration starts)."""
        self.epoch = int(epoch)
        self._epoch_pending = True

    def is_selection_epoch(self, epoch: int) -> bool:
        return epoch >= self.first_epoch and (epoch - self.first_epoch) % self.every_k_epochs == 0

    def reselect(self, model: nn.Module | None = None) -> CoresetSelection:
        """Select now from ``model`` (default: ``self.model``) and record it in ``history``."""
        model = self.model if model is None else model
        if model is None and self.method != "uniform":
            raise RuntimeError("CoresetSampler has no model: pass model= or let CoresetCallback attach it")
        self.selection = select_coreset(self.dataset, self.method, self.fraction, model, warmup_epochs=0,
                                        seed=self.seed + self.epoch, **self.select_kwargs)
        self.selected_at = self.epoch
        self.history.append({"epoch": self.epoch, "indices": self.selection.indices.tolist(),
                             "weights": self.selection.weights.tolist()})
        return self.selection

    def __iter__(self) -> Iterator[int]:
        if not self._epoch_pending:
            self.epoch += 1
        self._epoch_pending = False
        if self.selection is None or (self.is_selection_epoch(self.epoch) and self.selected_at != self.epoch):
            self.reselect()
        indices, weights = self.selection.indices, self.selection.weights
        generator = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.weighted_sampling:
            positions = torch.multinomial(weights.double(), len(indices), replacement=True, generator=generator)
        elif self.shuffle:
            positions = torch.randperm(len(indices), generator=generator)
        else:
            positions = torch.arange(len(indices))
        yield from indices[positions].tolist()

    def weight_of(self, indices: torch.Tensor) -> torch.Tensor:
        """Current selection weights ``[B]`` of dataset ``indices`` (for a weighted loss); 0 if not selected."""
        lookup = torch.zeros(len(self.dataset))
        lookup[self.selection.indices] = self.selection.weights
        return lookup[torch.as_tensor(indices, dtype=torch.long)]

    def settings(self) -> dict[str, Any]:
        """Every setting that changes which indices the sampler yields (the dataset by size and label digest)."""
        labels = dataset_labels(self.dataset)
        return describe({"method": self.method, "fraction": self.fraction, "seed": self.seed,
                         "every_k_epochs": self.every_k_epochs, "first_epoch": self.first_epoch,
                         "shuffle": self.shuffle, "weighted_sampling": self.weighted_sampling,
                         **{k: v for k, v in self.select_kwargs.items() if k not in ("progress", "device")},
                         "dataset.size": len(labels), "dataset.labels": digest(labels)})

    def state_dict(self) -> dict[str, Any]:
        """Settings, epoch, current selection and history (plain Python types: JSON/torch.save friendly)."""
        current = None
        if self.selection is not None:
            current = {"indices": self.selection.indices.tolist(), "weights": self.selection.weights.tolist(),
                       "per_class_counts": {str(k): v for k, v in self.selection.per_class_counts.items()},
                       "method": self.selection.method, "options": self.selection.options}
        return {"settings": self.settings(), "epoch": self.epoch, "selected_at": self.selected_at,
                "selection": current, "history": [dict(h) for h in self.history]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`; a ``ValueError`` naming each setting that differs from this sampler's."""
        check_settings(state.get("settings", {}), self.settings(), "the state dict", "CoresetSampler state")
        self.epoch, self._epoch_pending, self.selected_at = int(state["epoch"]), True, state["selected_at"]
        self.history = [dict(h) for h in state["history"]]
        current = state["selection"]
        self.selection = None if current is None else CoresetSelection(
            torch.tensor(current["indices"], dtype=torch.long), torch.tensor(current["weights"], dtype=torch.float32),
            {int(k): int(v) for k, v in current["per_class_counts"].items()}, current["method"], current["options"])


_SELECT_ARGS = {"balance", "device", "batch_size", "last_layer", "warmup_lr", "selection_transform", "progress"}
