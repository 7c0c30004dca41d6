"""``CoresetCallback``: drives a :class:`CoresetSampler` inside ``transformers.Trainer.train()``.

Swapping a dataloader from a callback has no effect (the Trainer keeps its prepared loader), so the Trainer's
train sampler *is* the ``CoresetSampler``, which re-selects itself when an epoch starts; the callback hands it the
live model. This module imports transformers; ``tv_plugins.coreset`` exposes it lazily.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from transformers import Trainer, TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from .sampler import CoresetSampler

__all__ = ["CoresetCallback"]


def _use_train_sampler(trainer: Trainer, sampler: CoresetSampler) -> None:
    """Make ``trainer`` build its train DataLoader with ``sampler``.

    Works around transformers.Trainer offering no argument for a custom train sampler: ``get_train_dataloader``
    always asks ``self._get_train_sampler()`` (a RandomSampler or a length-grouped one), so this one method is
    replaced on this trainer instance only. Subclassing ``Trainer`` and overriding ``_get_train_sampler`` is the
    equivalent alternative.
    """
    trainer._get_train_sampler = lambda *args, **kwargs: sampler


def _samplers_of(dataloader: Any) -> list[Any]:
    """Every sampler reachable from a (possibly accelerate-wrapped) dataloader."""
    found, frontier = [], [dataloader]
    for _ in range(4):
        nxt = []
        for obj in frontier:
            for attr in ("sampler", "batch_sampler", "base_dataloader"):
                child = getattr(obj, attr, None)
                if child is not None and child is not obj:
                    found.append(child)
                    nxt.append(child)
        frontier = nxt
    return found


class CoresetCallback(TrainerCallback):
    """Re-selects the training coreset every ``sampler.every_k_epochs`` epochs from the model being trained.

    Usage::

        sampler = CoresetSampler(selection_view, fraction=0.1, every_k_epochs=2)
        trainer = Trainer(model=model, args=args, train_dataset=train_view, ...)
        CoresetCallback(sampler).attach(trainer)
        trainer.train()

    ``attach`` makes ``trainer`` use ``sampler`` as its train sampler and registers the callback (or subclass
    ``Trainer`` with ``_get_train_sampler`` returning the sampler). ``train_dataset`` and the sampler's ``dataset``
    must be index-aligned views of the same data (e.g. dict items for the Trainer, ``(image, label)`` for
    selection). The selections made are in ``sampler.history``.
    """

    def __init__(self, sampler: CoresetSampler) -> None:
        if not isinstance(sampler, CoresetSampler):
            raise TypeError(f"sampler must be a CoresetSampler, got {type(sampler).__name__}")
        self.sampler = sampler

    def attach(self, trainer: Trainer) -> Trainer:
        """Install the sampler as ``trainer``'s train sampler and add this callback; returns ``trainer``."""
        if len(trainer.train_dataset) != len(self.sampler.dataset):
            raise ValueError(
                f"trainer.train_dataset has {len(trainer.train_dataset)} samples but the sampler selects from "
                f"{len(self.sampler.dataset)}; they must be index-aligned views of the same data"
            )
        _use_train_sampler(trainer, self.sampler)
        trainer.add_callback(self)
        return trainer

    def on_train_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, train_dataloader: Any = None, **kwargs: Any) -> None:
        if train_dataloader is not None and not any(s is self.sampler for s in _samplers_of(train_dataloader)):
            raise RuntimeError(
                "the Trainer's train dataloader does not use this CoresetSampler, so re-selection would have no "
                "effect; call CoresetCallback(sampler).attach(trainer) before trainer.train()"
            )
        if model is not None:
            self.sampler.model = model

    def on_epoch_begin(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                       model: nn.Module | None = None, **kwargs: Any) -> None:
        if model is not None:
            self.sampler.model = model
