"""Base class of synthetic-set parameterizations (trainable storage that decodes to labelled images) and their
registry: a subclass registered with ``@PARAMETERIZATIONS.register(name)`` is usable as ``distill(data, name)``,
with the keyword parameters of its ``from_real`` as options."""

from __future__ import annotations

import math
from typing import Any, ClassVar

import torch
from torch import nn

from ..registry import Registry, check_int, check_number

__all__ = ["PARAMETERIZATIONS", "SyntheticParameterization", "check_ipc"]

#: name -> parameterization class; options are the keyword parameters of ``from_real(data, ipc, ...)``.
PARAMETERIZATIONS = Registry("parameterization", "parameterization", signature_of=lambda cls: cls.from_real, skip=2,
                             name_attribute="kind")


def check_ipc(ipc) -> int:
    return check_int("ipc (images per class)", ipc)


class SyntheticParameterization(nn.Module):
    """Trainable storage of a synthetic set of ``num_classes * instances_per_class`` labelled instances.

    Subclasses implement :meth:`decode_indices` and :meth:`config`; every trainable float is part of the
    stored budget (``num_stored_floats``), which never exceeds ``ipc * C * prod(spatial)`` per class. Labels
    are fixed hard labels, contiguous by class: ``[0]*n + [1]*n + ...`` (not counted in the budget).

    Attributes:
        num_classes: K.  channels: C.  spatial: the training resolution, e.g. (H, W).  ipc: the nominal
        images-per-class budget.  instances_per_class: n, the number of synthetic instances per class.
    """

    kind: ClassVar[str] = ""  # set by PARAMETERIZATIONS.register
    #: default learning rate per objective, in this parameterization's own units.
    default_lrs: ClassVar[dict[str, float]] = {}
    optimizer_class: ClassVar[type[torch.optim.Optimizer]] = torch.optim.SGD
    optimizer_options: ClassVar[dict[str, Any]] = {"momentum": 0.5}

    def __init__(self, num_classes: int, channels: int, spatial: tuple[int, ...], ipc: int,
                 instances_per_class: int) -> None:
        super().__init__()
        for name, value in (("num_classes", num_classes), ("channels", channels),
                            ("instances_per_class", instances_per_class)):
            check_int(name, value)
        check_ipc(ipc)
        spatial = tuple(int(s) for s in spatial)
        if not spatial or any(s < 1 for s in spatial):
            raise ValueError(f"spatial size must be a non-empty tuple of positive ints, got {spatial!r}")
        self.num_classes, self.channels, self.spatial, self.ipc = num_classes, channels, spatial, ipc
        self.instances_per_class = instances_per_class
        self.register_buffer("labels", torch.arange(num_classes).repeat_interleave(instances_per_class))

    @property
    def num_instances(self) -> int:
        return self.num_classes * self.instances_per_class

    @property
    def budget_per_class(self) -> int:
        """The pixel budget B = ipc * C * prod(spatial) floats per class."""
        return self.ipc * self.channels * math.prod(self.spatial)

    @property
    def num_stored_floats(self) -> int:
        """Trainable floats stored for the whole set (all classes); labels and masks excluded."""
        return sum(p.numel() for p in self.parameters())

    @property
    def overhead_bits(self) -> int:
        """Extra non-trainable storage (e.g. FreD's class masks) in bits; 0 when there is none."""
        return 0

    def class_instances(self, c: int) -> torch.Tensor:
        """Indices [n] of the instances of class ``c``."""
        n = self.instances_per_class
        return torch.arange(c * n, (c + 1) * n)

    def decode(self, resolution: int | tuple[int, ...] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """All instances: ``(images [N, C, *spatial], labels [N])``; differentiable w.r.t. the storage."""
        return self.decode_indices(None, resolution), self.labels

    def decode_indices(self, indices: torch.Tensor | None,
                       resolution: int | tuple[int, ...] | None = None) -> torch.Tensor:
        """Images [len(indices), C, *spatial] of the given instances (all when ``indices`` is None)."""
        raise NotImplementedError

    def _check_native_resolution(self, resolution) -> None:
        if resolution is None:
            return
        wanted = (resolution,) * len(self.spatial) if isinstance(resolution, int) else tuple(resolution)
        if wanted != self.spatial:
            raise ValueError(f"{type(self).__name__} decodes only at its training resolution {self.spatial}, got "
                             f"resolution={resolution!r}; use DDiFParameterization for any-resolution decoding")

    def config(self) -> dict[str, Any]:
        """JSON-serialisable constructor arguments (``type(self)(**config)`` rebuilds the same shapes)."""
        return {"num_classes": self.num_classes, "channels": self.channels, "spatial": list(self.spatial),
                "ipc": self.ipc}

    def default_lr(self, objective: str) -> float:
        if objective not in self.default_lrs:
            raise ValueError(f"{type(self).__name__} has no default learning rate for objective {objective!r} "
                             f"(it has one for {sorted(self.default_lrs)}); pass lr=")
        return self.default_lrs[objective]

    def make_optimizer(self, objective: str = "dm", lr: float | None = None) -> torch.optim.Optimizer:
        """The paper's optimiser for this storage at ``lr`` (default :meth:`default_lr`): ``optimizer_class`` with
        ``optimizer_options`` (SGD momentum 0.5 for pixels / FreD, Adam for DDiF)."""
        lr = check_number("lr", self.default_lr(objective) if lr is None else lr, positive=True)
        return self.optimizer_class(self.parameters(), lr=lr, **self.optimizer_options)

    def extra_repr(self) -> str:
        return (f"classes={self.num_classes}, instances_per_class={self.instances_per_class}, "
                f"channels={self.channels}, spatial={self.spatial}, ipc={self.ipc}, "
                f"stored_floats={self.num_stored_floats}")
