"""Shared machinery of the matching objectives: the random ConvNet they probe with and the DSA pairing."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..data import LabeledTensors
from ..networks import NORMS, ConvNet
from .augmentation import DSA
from .parameterization import SyntheticParameterization

__all__ = ["MatchingObjective"]

DEFAULT_DSA = "color_crop_cutout_flip_scale_rotate"


class MatchingObjective:
    """Base class: ``step`` performs one outer distillation iteration (including optimiser steps).

    Args:
        depth, width, norm: the ConvNet family used to compare real and synthetic data
            (``ConvNet(depth=3, width=128, norm="instance")`` is the papers' ConvNet-3).
        dsa: DSA strategy string ("" disables augmentation); real and synthetic batches of a class share one draw.
        batch_real: real images sampled per class per iteration.

    Randomness comes from torch's global RNG, which :func:`distill` seeds.
    """

    name: ClassVar[str] = ""

    def __init__(self, depth: int = 3, width: int = 128, norm: str = "instance", dsa: str = DEFAULT_DSA,
                 batch_real: int = 256) -> None:
        for arg, value in (("depth", depth), ("width", width), ("batch_real", batch_real)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{arg} must be a positive int, got {value!r}")
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
        self.depth, self.width, self.norm, self.batch_real = depth, width, norm, batch_real
        self.augment = DSA(dsa)

    def network(self, real: LabeledTensors) -> ConvNet:
        """A freshly initialised ConvNet for ``real``'s channels, classes and image size."""
        if len(real.spatial) != 2 or real.spatial[0] != real.spatial[1]:
            raise ValueError(f"the ConvNet objectives need square 2-D images; got spatial size {real.spatial}")
        return ConvNet(real.channels, real.num_classes, real.spatial[0], depth=self.depth, width=self.width,
                       norm=self.norm)

    def aug_seed(self) -> int:
        return int(torch.randint(0, 2**31 - 1, (1,)))

    def prepare(self, real: LabeledTensors, parameterization: SyntheticParameterization) -> None:
        """Check compatibility before the loop starts (raise ValueError on mismatch)."""
        if real.channels != parameterization.channels or real.spatial != parameterization.spatial \
                or real.num_classes != parameterization.num_classes:
            raise ValueError(f"dataset ({real.num_classes} classes, {real.channels} channels, {real.spatial}) does not "
                             f"match the parameterization ({parameterization.num_classes} classes, "
                             f"{parameterization.channels} channels, {parameterization.spatial})")
        self.network(real)  # validates the image shape

    def step(self, parameterization: SyntheticParameterization, optimizer: torch.optim.Optimizer,
             real: LabeledTensors) -> float:
        raise NotImplementedError

    @property
    def learned_lr(self) -> float | None:
        """A learning rate learned alongside the set (TM's ``syn_lr``), else None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
