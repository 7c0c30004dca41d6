"""Loss lookup by name: ``get(name, **options)`` returns the configured loss (a ``Loss`` instance)."""

from __future__ import annotations

from . import amid, csd, divergences  # noqa: F401  (each registers its losses)
from .loss import Loss, registered

__all__ = ["LOSS_NAMES", "get", "loss_class", "loss_options"]

LOSS_NAMES: tuple[str, ...] = tuple(registered())


def loss_class(name: str) -> type[Loss]:
    """The ``Loss`` subclass registered as ``name`` (ValueError listing the valid names otherwise)."""
    classes = registered()
    if not isinstance(name, str) or name not in classes:
        raise ValueError(f"unknown loss {name!r}; valid names: {', '.join(classes)}")
    return classes[name]


def loss_options(name: str) -> dict[str, object]:
    """The option names of loss ``name`` and their defaults."""
    return loss_class(name)().options


def get(name: str, **options: object) -> Loss:
    """Loss ``name`` configured with ``options``, validated now, before any computation.

    Unknown name: ValueError listing ``LOSS_NAMES``; unknown option: TypeError listing the loss's options.
    """
    return loss_class(name).from_options(options)
