"""The ConvNet family used by dataset condensation and coreset papers (DC/DM/MTT, FreD, DDiF, LCMat).

``ConvNet(depth, width, norm)``: ``depth`` blocks of [3x3 conv (padding 1) -> norm -> ReLU ->
2x2 average pool], then one linear classifier on the flattened features. The default
(depth 3, width 128, instance norm) is the "ConvNet-3" of the papers.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import check_choice

__all__ = ["ConvNet", "NORMS"]

NORMS = ("instance", "batch", "layer", "group", "none")


def _norm(kind: str, channels: int, spatial: int) -> nn.Module:
    if kind == "instance":
        return nn.GroupNorm(channels, channels, affine=True)  # instance norm with affine, as in the papers
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.LayerNorm([channels, spatial, spatial])
    if kind == "group":
        return nn.GroupNorm(4, channels, affine=True)
    return nn.Identity()


class ConvNet(nn.Module):
    """ConvNet-D/W with configurable normalisation.

    Args:
        in_channels: image channels C.
        num_classes: output logits K.
        image_size: input side H (= W); each block halves it (floor), down to at least 1.
        depth: number of conv blocks (>= 1).
        width: channels of every conv layer.
        norm: one of ``NORMS``.

    Shapes: ``forward(x [B, C, H, H]) -> logits [B, K]``; ``embed(x) -> features [B, F]``
    (the input of the final linear layer, ``classifier``).
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        image_size: int = 32,
        depth: int = 3,
        width: int = 128,
        norm: str = "instance",
    ) -> None:
        super().__init__()
        for name, value in (("in_channels", in_channels), ("num_classes", num_classes), ("image_size", image_size),
                            ("depth", depth), ("width", width)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        check_choice("norm", norm, NORMS)
        layers: list[nn.Module] = []
        channels, side = in_channels, image_size
        for _ in range(depth):
            layers += [nn.Conv2d(channels, width, kernel_size=3, padding=1), _norm(norm, width, side), nn.ReLU(inplace=True)]
            if side >= 2:
                layers.append(nn.AvgPool2d(kernel_size=2, stride=2))
                side //= 2
            channels = width
        self.features, self.feature_dim = nn.Sequential(*layers), width * side * side
        self.classifier = nn.Linear(self.feature_dim, num_classes)
        self.image_size, self.in_channels = image_size, in_channels

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features ``[B, F]`` (what the final linear layer sees)."""
        if x.ndim != 4 or x.shape[1] != self.in_channels or x.shape[-1] != self.image_size or x.shape[-2] != self.image_size:
            raise ValueError(
                f"expected input [B, {self.in_channels}, {self.image_size}, {self.image_size}], got {tuple(x.shape)}"
            )
        return self.features(x).flatten(1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))
