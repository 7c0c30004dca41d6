"""Shared machinery of the matching objectives (the random ConvNet they probe with, the DSA pairing) and their
registry: a subclass registered with ``@OBJECTIVES.register(name)`` is usable as ``distill(data, ..., name)``, with
its constructor's keyword parameters as options."""

from __future__ import annotations

from typing import Any, ClassVar

import torch

from ..data import LabeledTensors
from ..networks import NORMS, ConvNet
from ..persistence import describe
from ..randomness import draw_seed, seeded
from ..registry import Registry, check_choice, check_int
from .augmentation import DSA
from .parameterization import SyntheticParameterization

__all__ = ["OBJECTIVES", "MatchingObjective"]

DEFAULT_DSA = "color_crop_cutout_flip_scale_rotate"
#: name -> objective class; options are the keyword parameters of its constructor.
OBJECTIVES = Registry("objective", "objective", signature_of=lambda cls: cls.__init__, skip=1, name_attribute="name")


class MatchingObjective:
    """Base class: ``step`` performs one outer distillation iteration (including optimiser steps). ``depth``,
    ``width``, ``norm``: the ConvNet comparing real and synthetic data (3 / 128 / instance: the papers' ConvNet-3);
    ``dsa``: DSA strategy ("" disables it; real and synthetic batches of a class share one draw); ``batch_real``:
    real images sampled per class per iteration.

    Every random draw of a step (network initialisation, real batches, augmentation) comes from the ``generator``
    passed to :meth:`step` (:func:`distill` passes one seeded by its ``seed``); per class, from a sub-generator
    spawned before any class is processed, so a class's draws do not depend on which other classes were.
    """

    name: ClassVar[str] = ""  # set by OBJECTIVES.register

    def __init__(self, depth: int = 3, width: int = 128, norm: str = "instance", dsa: str = DEFAULT_DSA,
                 batch_real: int = 256) -> None:
        for arg, value in (("depth", depth), ("width", width), ("batch_real", batch_real)):
            check_int(arg, value)
        self.depth, self.width, self.norm, self.batch_real = depth, width, check_choice("norm", norm, NORMS), batch_real
        self.augment = DSA(dsa)

    def network(self, real: LabeledTensors, generator: torch.Generator | None = None) -> ConvNet:
        """A freshly initialised ConvNet for ``real``'s channels, classes and image size (its initialisation is
        seeded from ``generator``; default: torch's global generator)."""
        with seeded(draw_seed(generator)):
            return ConvNet(real.channels, real.num_classes, real.spatial[0], depth=self.depth, width=self.width,
                           norm=self.norm)

    @staticmethod
    def _check_images(real: LabeledTensors) -> None:
        if len(real.spatial) != 2 or real.spatial[0] != real.spatial[1]:
            raise ValueError(f"the ConvNet objectives need square 2-D images; got spatial size {real.spatial}")

    def prepare(self, real: LabeledTensors, parameterization: SyntheticParameterization) -> None:
        """Check compatibility before the loop starts (raise ValueError on mismatch)."""
        if real.channels != parameterization.channels or real.spatial != parameterization.spatial \
                or real.num_classes != parameterization.num_classes:
            raise ValueError(f"dataset ({real.num_classes} classes, {real.channels} channels, {real.spatial}) does not "
                             f"match the parameterization ({parameterization.num_classes} classes, "
                             f"{parameterization.channels} channels, {parameterization.spatial})")
        self._check_images(real)

    def step(self, parameterization: SyntheticParameterization, optimizer: torch.optim.Optimizer,
             real: LabeledTensors, generator: torch.Generator | None = None) -> float:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Every public attribute except ``progress`` (the objective's options and its state at the start) as
        comparable values (:func:`tv_plugins.persistence.describe`)."""
        return describe({k: v for k, v in vars(self).items() if not k.startswith("_") and k != "progress"})

    @property
    def learned_lr(self) -> float | None:
        """A learning rate learned alongside the set (TM's ``syn_lr``), else None."""
        return None

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass
