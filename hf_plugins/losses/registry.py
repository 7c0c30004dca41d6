"""Loss lookup by name: ``get(name, **options)`` returns a configured loss callable."""

from __future__ import annotations

import inspect

from torch import Tensor

from .amid import AMiDKernel
from .csd import CSDKernel
from .divergences import (
    ABDivergenceKernel,
    ForwardKLKernel,
    GeneralizedJSDKernel,
    JeffreysKernel,
    ReverseKLKernel,
    SkewForwardKLKernel,
    SkewReverseKLKernel,
    TotalVariationKernel,
)
from .kernel import TokenKernel
from .reduction import apply_kernel

__all__ = ["LOSS_NAMES", "Loss", "get", "loss_options", "make_kernel"]

_KERNELS: dict[str, type[TokenKernel]] = {
    cls.name: cls
    for cls in (
        AMiDKernel,
        CSDKernel,
        ForwardKLKernel,
        ReverseKLKernel,
        SkewForwardKLKernel,
        SkewReverseKLKernel,
        GeneralizedJSDKernel,
        TotalVariationKernel,
        ABDivergenceKernel,
        JeffreysKernel,
    )
}
LOSS_NAMES: tuple[str, ...] = tuple(_KERNELS)


def loss_options(name: str) -> dict[str, object]:
    """The option names of loss ``name`` and their defaults."""
    if name not in _KERNELS:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(LOSS_NAMES)}")
    params = list(inspect.signature(_KERNELS[name].__init__).parameters.values())[1:]
    return {p.name: p.default for p in params}


def make_kernel(name: str, options: dict[str, object]) -> TokenKernel:
    """Validate ``options`` for loss ``name`` and build its per-token kernel (ValueError on anything unknown)."""
    valid = loss_options(name)
    unknown = sorted(set(options) - set(valid))
    if unknown:
        listed = ", ".join(valid) if valid else "none"
        raise ValueError(f"unknown option(s) {unknown} for loss {name!r}; valid options: {listed}")
    return _KERNELS[name](**options)


class Loss:
    """A loss with its options fixed: ``loss(student_logits, teacher_logits, mask=None) -> 0-dim tensor``."""

    def __init__(self, kernel: TokenKernel) -> None:
        self.kernel = kernel

    @property
    def name(self) -> str:
        return self.kernel.name

    @property
    def options(self) -> dict[str, object]:
        return dict(self.kernel.options)

    def __call__(self, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None = None) -> Tensor:
        return apply_kernel(self.kernel, student_logits, teacher_logits, mask)

    def __repr__(self) -> str:
        return f"Loss({self.kernel!r})"


def get(name: str, **options: object) -> Loss:
    """Return loss ``name`` configured with ``options`` (validated now, before any computation).

    Valid names: "amid", "csd", "forward_kl", "reverse_kl", "skew_forward_kl", "skew_reverse_kl",
    "generalized_jsd", "total_variation", "ab_divergence", "jeffreys".
    """
    return Loss(make_kernel(name, options))
