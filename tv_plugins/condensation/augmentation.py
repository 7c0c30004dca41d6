"""Differentiable siamese augmentation (DSA, Zhao & Bilen, ICML 2021, arXiv 2102.08259) for images [B, C, H, W].

Strategy ``"color_crop_cutout_flip_scale_rotate"``: each call picks ONE of the groups uniformly and applies it.
``color`` = brightness (+U-0.5), saturation (x 2U about the per-pixel channel mean), contrast (x (U+0.5) about the
image mean); ``crop`` = integer translation of up to round(0.125 H) px with zero fill; ``cutout`` = a zeroed square
of half the side; ``flip`` = horizontal flip with p 0.5; ``scale`` = independent x/y factors in U(1/1.2, 1.2);
``rotate`` = U(-15, 15) degrees. Siamese mode (``seed`` given): one draw shared by the whole batch, the same seed
giving the same transform, so real and synthetic batches augmented with one seed match. Without a seed every
sample gets its own draw from ``generator`` (default: torch's global one). Differentiable w.r.t. the images.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["DSA", "DSA_GROUPS"]

DSA_GROUPS = ("color", "crop", "cutout", "flip", "scale", "rotate")


class DSA:
    """``DSA(strategy)(images [B, C, H, W], seed=None, generator=None) -> augmented [B, C, H, W]``.

    Args:
        strategy: groups joined by "_" (subset of ``DSA_GROUPS``), or "" / "none" for the identity.
        crop_ratio, cutout_ratio, scale, rotate_degrees, brightness, saturation, contrast: DSA's constants.
    """

    def __init__(self, strategy: str = "color_crop_cutout_flip_scale_rotate", crop_ratio: float = 0.125,
                 cutout_ratio: float = 0.5, scale: float = 1.2, rotate_degrees: float = 15.0,
                 brightness: float = 1.0, saturation: float = 2.0, contrast: float = 0.5) -> None:
        if not isinstance(strategy, str):
            raise TypeError(f"strategy must be a str, got {type(strategy).__name__}")
        groups = tuple(g for g in strategy.split("_") if g) if strategy not in ("", "none") else ()
        unknown = [g for g in groups if g not in DSA_GROUPS]
        if unknown:
            raise ValueError(f"unknown DSA group(s) {unknown}; strategy is made of {DSA_GROUPS} joined by '_'")
        self.strategy, self.groups = strategy, groups
        self.crop_ratio, self.cutout_ratio, self.scale, self.rotate_degrees = crop_ratio, cutout_ratio, scale, rotate_degrees
        self.brightness, self.saturation, self.contrast = brightness, saturation, contrast

    def __repr__(self) -> str:
        return f"DSA(strategy={self.strategy!r})"

    def __call__(self, images: torch.Tensor, seed: int | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        if images.ndim != 4:
            raise ValueError(f"DSA expects images [B, C, H, W], got shape {tuple(images.shape)}")
        if not self.groups:
            return images
        if seed is not None:
            generator = torch.Generator().manual_seed(int(seed))
        group = self.groups[int(torch.randint(len(self.groups), (1,), generator=generator))]
        count = 1 if seed is not None else images.shape[0]  # one draw for the batch (siamese) or one per sample

        def draw(*shape: int) -> torch.Tensor:
            return torch.rand(count, *shape, generator=generator).to(images.device, images.dtype)

        return getattr(self, f"_{group}")(images, draw)

    def _color(self, x, draw):
        x = x + (draw() - 0.5).view(-1, 1, 1, 1) * self.brightness
        mean = x.mean(dim=1, keepdim=True)
        x = (x - mean) * (draw() * self.saturation).view(-1, 1, 1, 1) + mean
        mean = x.mean(dim=(1, 2, 3), keepdim=True)
        return (x - mean) * (draw() + self.contrast).view(-1, 1, 1, 1) + mean

    def _affine(self, x, theta, mode: str):
        theta = theta.expand(x.shape[0], 2, 3) if theta.shape[0] == 1 else theta
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        return F.grid_sample(x, grid, mode=mode, padding_mode="zeros", align_corners=False)

    def _crop(self, x, draw):
        h, w = x.shape[-2:]
        max_h, max_w = int(self.crop_ratio * h + 0.5), int(self.crop_ratio * w + 0.5)
        shift = draw(2)
        dy = torch.floor(shift[:, 0] * (2 * max_h + 1)) - max_h
        dx = torch.floor(shift[:, 1] * (2 * max_w + 1)) - max_w
        theta = torch.zeros(shift.shape[0], 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0] = theta[:, 1, 1] = 1.0
        theta[:, 0, 2], theta[:, 1, 2] = -2.0 * dx / w, -2.0 * dy / h  # output(i, j) = input(i - dy, j - dx)
        return self._affine(x, theta, "nearest")

    def _cutout(self, x, draw):
        h, w = x.shape[-2:]
        ch, cw = int(self.cutout_ratio * h + 0.5), int(self.cutout_ratio * w + 0.5)
        centre = draw(2)
        cy = torch.floor(centre[:, 0] * (h + 1 - ch % 2))
        cx = torch.floor(centre[:, 1] * (w + 1 - cw % 2))
        rows = torch.arange(h, device=x.device, dtype=x.dtype)[None, :]
        cols = torch.arange(w, device=x.device, dtype=x.dtype)[None, :]
        in_rows = (rows >= (cy[:, None] - ch // 2)) & (rows < (cy[:, None] - ch // 2 + ch))
        in_cols = (cols >= (cx[:, None] - cw // 2)) & (cols < (cx[:, None] - cw // 2 + cw))
        keep = ~(in_rows[:, :, None] & in_cols[:, None, :])
        return x * keep[:, None].to(x.dtype)

    def _flip(self, x, draw):
        flip = (draw() < 0.5).view(-1, 1, 1, 1)
        return torch.where(flip, x.flip(-1), x)

    def _scale(self, x, draw):
        factors = draw(2) * (self.scale - 1.0 / self.scale) + 1.0 / self.scale
        theta = torch.zeros(factors.shape[0], 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0], theta[:, 1, 1] = factors[:, 0], factors[:, 1]
        return self._affine(x, theta, "bilinear")

    def _rotate(self, x, draw):
        angle = (draw() - 0.5) * 2 * self.rotate_degrees * math.pi / 180.0
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = torch.zeros(angle.shape[0], 2, 3, dtype=x.dtype, device=x.device)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        return self._affine(x, theta, "bilinear")
