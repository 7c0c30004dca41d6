"""Plain-pixel synthetic set: the baseline parameterization (DC/DM/MTT store images directly)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import as_labeled_tensors
from ..registry import check_choice
from .parameterization import PARAMETERIZATIONS, SyntheticParameterization, check_ipc

__all__ = ["PixelParameterization"]


@PARAMETERIZATIONS.register("pixel")
class PixelParameterization(SyntheticParameterization):
    """``ipc`` trainable images per class, ``images [K * ipc, C, *spatial]``; stored floats = ipc * C * H * W per class.

    Default learning rates (SGD, momentum 0.5, pixel units): DM 1.0, DC 0.1, TM 100.
    """

    default_lrs = {"dm": 1.0, "dc": 0.1, "tm": 100.0}

    def __init__(self, num_classes: int, channels: int, spatial: tuple[int, ...], ipc: int) -> None:
        super().__init__(num_classes, channels, spatial, ipc, instances_per_class=ipc)
        self.images = nn.Parameter(torch.zeros(self.num_instances, channels, *self.spatial))

    @classmethod
    def from_real(cls, dataset_or_tensors, ipc: int, init: str = "real", seed: int = 0) -> PixelParameterization:
        """Initialise from ``ipc`` distinct random real images per class (``init="real"``) or N(0, 1) noise.

        Raises ValueError when a class has fewer than ``ipc`` images, ``ipc <= 0`` or ``init`` is unknown.
        """
        check_ipc(ipc)
        check_choice("init", init, ("real", "noise"))
        real = as_labeled_tensors(dataset_or_tensors)
        real.require_per_class(ipc, f"ipc={ipc}")
        param = cls(real.num_classes, real.channels, real.spatial, ipc)
        generator = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            if init == "noise":
                param.images.copy_(torch.randn(param.images.shape, generator=generator))
            else:
                param.images.copy_(torch.cat([real.sample_class(c, ipc, generator) for c in range(real.num_classes)]))
        return param

    def decode_indices(self, indices, resolution=None) -> torch.Tensor:
        self._check_native_resolution(resolution)
        return self.images if indices is None else self.images[indices]

    def config(self) -> dict[str, Any]:
        return super().config()
