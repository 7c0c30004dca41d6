"""DM: distribution matching (Zhao & Bilen, WACV 2023) of mean ConvNet embeddings per class."""

from __future__ import annotations

import torch
from torch import nn

from ..randomness import draw_seed, spawn
from ..registry import check_int
from .augmentation import DSA
from .class_step import step_class
from .objective import DEFAULT_DSA, OBJECTIVES, MatchingObjective
from .process_group import owned, sum_gradients, sum_value

__all__ = ["DistributionMatching", "distribution_matching_loss"]


def distribution_matching_loss(net: nn.Module, real: torch.Tensor, synthetic: torch.Tensor, augment: DSA,
                               seed: int | None) -> torch.Tensor:
    """``|| mean_r embed(A(real)) - mean_s embed(A(synthetic)) ||^2`` with one shared DSA draw (scalar)."""
    real_mean = net.embed(augment(real, seed)).mean(0).detach()
    synthetic_mean = net.embed(augment(synthetic, seed)).mean(0)
    return (real_mean - synthetic_mean).pow(2).sum()


@OBJECTIVES.register("dm")
class DistributionMatching(MatchingObjective):
    """Per iteration: a fresh random frozen ConvNet; per class, match the mean embedding of ``batch_real`` real images
    and all synthetic instances of the class (``batch_syn`` random ones if set).

    Args:
        step_per_class: False (FreD's DM code): sum the class losses and take one step (split over processes by
            class under a ``torch.distributed`` group); True (DDiF's DM code): one step per class that moves only
            that class's storage and optimiser state (:func:`step_class`), as DDiF's per-instance optimiser does
            (it runs whole on every process).
        batch_syn: synthetic instances per class per step (None = all).
        Other arguments: see :class:`MatchingObjective`.
    """

    def __init__(self, depth: int = 3, width: int = 128, norm: str = "instance", dsa: str = DEFAULT_DSA,
                 batch_real: int = 256, step_per_class: bool = False, batch_syn: int | None = None) -> None:
        super().__init__(depth, width, norm, dsa, batch_real)
        self.step_per_class, self.batch_syn = bool(step_per_class), check_int("batch_syn", batch_syn, optional=True)

    def _class_loss(self, net, parameterization, real, c, generator):
        indices = parameterization.class_instances(c)
        if self.batch_syn is not None and self.batch_syn < len(indices):
            indices = indices[torch.randperm(len(indices), generator=generator)[: self.batch_syn]]
        synthetic = parameterization.decode_indices(indices)
        return distribution_matching_loss(net, real.sample_class(c, self.batch_real, generator), synthetic,
                                          self.augment, draw_seed(generator))

    def step(self, parameterization, optimizer, real, generator=None) -> float:
        net = self.network(real, generator)
        net.requires_grad_(False)
        streams = spawn(generator, real.num_classes)
        total = 0.0
        if self.step_per_class:
            for c in range(real.num_classes):
                loss = self._class_loss(net, parameterization, real, c, streams[c])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                step_class(parameterization, optimizer, c)
                total += float(loss.detach())
            return total
        # under a process group each rank sums its own classes (process_group.owned) and the gradients are summed
        loss = sum(self._class_loss(net, parameterization, real, c, streams[c]) for c in owned(real.num_classes))
        optimizer.zero_grad(set_to_none=True)
        if isinstance(loss, torch.Tensor):
            loss.backward()
        sum_gradients(parameterization.parameters())
        optimizer.step()
        return sum_value(loss)
