"""FreD: synthetic instances stored as the DCT coefficients kept by a per-class explained-variance mask.

Instance i of class c decodes to ``idct2(M_c * F_i)`` (FreD, arXiv 2311.08819). Only the ``k`` coefficients per channel
inside the class mask are stored (the reference code also keeps the others, which never change and never
influence the image), so the stored floats per class are ``n * k * C <= ipc * C * H * W`` with
``n = floor(ipc * H * W / k)`` instances per class. The masks cost ``H * W`` bits per class,
reported separately in :attr:`FreDParameterization.overhead_bits`.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ..data import as_labeled_tensors
from ..registry import check_choice
from .dct import DCT_CONVENTIONS, dct2, idct2
from .parameterization import PARAMETERIZATIONS, SyntheticParameterization, check_ipc

__all__ = ["MASK_SOURCES", "FreDParameterization", "explained_variance_ratio"]

MASK_SOURCES = ("init", "class")


def explained_variance_ratio(coefficients: torch.Tensor) -> torch.Tensor:
    """EVR [H * W] of each frequency: unbiased variance over instances of the channel-averaged coefficients,
    divided by its sum. ``coefficients [n, C, H, W]`` with n >= 2."""
    if coefficients.shape[0] < 2:
        raise ValueError("explained_variance_ratio needs at least 2 instances")
    flat = coefficients.double().mean(dim=1).flatten(1)  # [n, HW]
    variance = flat.var(dim=0, unbiased=True)
    total = variance.sum()
    if total <= 0:  # identical images: every frequency explains nothing; rank uniformly (stable order)
        return torch.full_like(variance, 1.0 / variance.numel())
    return variance / total


@PARAMETERIZATIONS.register("fred")
class FreDParameterization(SyntheticParameterization):
    """Masked-DCT synthetic set (FreD, NeurIPS 2023) for 2-D images.

    Args:
        num_classes, channels, spatial (H, W), ipc: the set's shape and nominal budget.
        k: coefficients kept per channel per instance (``msz_per_channel``), 1 <= k <= min(H*W, ipc*H*W).
        convention: "reference" (FreD's unnormalised DCT, SciPy ``norm=None``) or "ortho". The mask ranking and
            the learning rates depend on it; see :mod:`tv_plugins.condensation.dct` for the conversion.

    Storage: ``coefficients [K * n, C, k]`` (trainable), ``mask_indices [K, k]`` (each class's kept row-major
    frequencies, fixed). Default SGD rates (momentum 0.5) in pixel-equivalent units: DM 244, DC 0.244, TM 24414
    (the reference's 1e6 / 1e3 / 1e8 at 32 x 32), times 4 * H * W in the reference convention.
    """

    default_lrs = {"dm": 1e6 / 4096, "dc": 1e3 / 4096, "tm": 1e8 / 4096}

    def __init__(self, num_classes: int, channels: int, spatial: tuple[int, ...], ipc: int, k: int,
                 convention: str = "reference") -> None:
        check_ipc(ipc)
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) != 2:
            raise ValueError(f"FreDParameterization handles 2-D images [C, H, W]; got spatial size {spatial}")
        check_choice("convention", convention, DCT_CONVENTIONS)
        hw = spatial[0] * spatial[1]
        if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= hw:
            raise ValueError(f"k (coefficients per channel per instance) must be an int in 1..H*W={hw}, got {k!r}")
        super().__init__(num_classes, channels, spatial, ipc, instances_per_class=ipc * hw // k)
        self.k, self.convention = k, convention
        self.coefficients = nn.Parameter(torch.zeros(self.num_instances, channels, k))
        self.register_buffer("mask_indices", torch.arange(k).repeat(num_classes, 1))

    @property
    def mask(self) -> torch.Tensor:
        """Boolean class masks [K, H, W] (True = kept frequency), identical for every channel and instance."""
        mask = torch.zeros(self.num_classes, self.spatial[0] * self.spatial[1], dtype=torch.bool,
                           device=self.mask_indices.device)
        mask.scatter_(1, self.mask_indices, True)
        return mask.view(self.num_classes, *self.spatial)

    @property
    def overhead_bits(self) -> int:
        return self.num_classes * self.spatial[0] * self.spatial[1]

    @classmethod
    def from_real(cls, dataset_or_tensors, ipc: int, k: int | None = None, convention: str = "reference",
                  mask_source: str = "init", seed: int = 0) -> FreDParameterization:
        """Initialise from real images.

        For each class, ``n = floor(ipc*H*W/k)`` distinct random real images are transformed; the class mask keeps
        the ``k`` frequencies of largest explained variance of the channel-averaged coefficients over those n init
        images (``mask_source="init"``, the reference) or over all the class's images (``"class"``, a more stable
        deviation; also used when n = 1, where the init ranking is undefined). ``k`` defaults to H*W // 4.
        Raises ValueError for ipc <= 0, a bad k/convention/mask_source, or a class with fewer than n images.
        """
        check_ipc(ipc)
        check_choice("mask_source", mask_source, MASK_SOURCES)
        real = as_labeled_tensors(dataset_or_tensors)
        if len(real.spatial) != 2:
            raise ValueError(f"FreDParameterization handles 2-D images [C, H, W]; got spatial size {real.spatial}")
        hw = real.spatial[0] * real.spatial[1]
        if k is None:
            k = max(1, hw // 4)
        param = cls(real.num_classes, real.channels, real.spatial, ipc, k, convention)
        n = param.instances_per_class
        real.require_per_class(max(n, 2) if k < hw else n,
                               f"FreD with ipc={ipc}, k={k} ({n} instances per class)")
        generator = torch.Generator().manual_seed(seed)
        coefficients, masks = [], []
        for c in range(real.num_classes):
            init = dct2(real.sample_class(c, n, generator).double(), convention)  # [n, C, H, W]
            if k == hw:
                keep = torch.arange(hw)
            else:
                source = init if (mask_source == "init" and n >= 2) else \
                    dct2(real.images[real.class_indices(c)].double(), convention)
                ratio = explained_variance_ratio(source)
                keep = torch.sort(torch.argsort(-ratio, stable=True)[:k]).values
            masks.append(keep)
            coefficients.append(init.flatten(2)[:, :, keep])
        with torch.no_grad():
            param.mask_indices.copy_(torch.stack(masks))
            param.coefficients.copy_(torch.cat(coefficients).float())
        return param

    def full_coefficients(self, indices: torch.Tensor | None = None) -> torch.Tensor:
        """Masked coefficient images ``M_c * F_i`` [n, C, H, W] (zeros outside the class mask)."""
        coefficients = self.coefficients if indices is None else self.coefficients[indices]
        labels = self.labels if indices is None else self.labels[indices]
        keep = self.mask_indices[labels][:, None, :].expand(-1, self.channels, -1)
        full = coefficients.new_zeros(coefficients.shape[0], self.channels, self.spatial[0] * self.spatial[1])
        return full.scatter(2, keep, coefficients).view(-1, self.channels, *self.spatial)

    def decode_indices(self, indices, resolution=None) -> torch.Tensor:
        self._check_native_resolution(resolution)
        return idct2(self.full_coefficients(indices), self.convention)

    def default_lr(self, objective: str) -> float:
        lr = super().default_lr(objective)
        return lr * 4 * self.spatial[0] * self.spatial[1] if self.convention == "reference" else lr

    def config(self) -> dict[str, Any]:
        return {**super().config(), "k": self.k, "convention": self.convention}
