"""The method registry: every selection method is a function ``fn(ctx, **options) -> (indices, weights)``
registered under a name, and receives a :class:`SelectionContext` describing the groups to select from."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from .last_layer import LastLayerOutputs

__all__ = ["METHODS", "MethodSpec", "SelectionContext", "register"]


@dataclass
class SelectionContext:
    """What a method needs, already validated.

    Attributes:
        labels: ``LongTensor [N]`` of the whole dataset.
        groups: ``[(class or None, indices LongTensor [N_g] ascending, budget k_g)]``; one group per class
            when ``balance=True``, else a single group holding every index (class ``None``).
        seed: the selection seed (for methods with randomness).
        outputs: last-layer features/logits of all N samples at the selection model (None for model-free methods).
        forgetting: forgetting-event counts ``LongTensor [N]`` from the warm-up (only for methods that ask for it).
        progress: whether methods may show progress bars.
    """

    labels: torch.Tensor
    groups: list[tuple[int | None, torch.Tensor, int]]
    seed: int
    outputs: LastLayerOutputs | None = None
    forgetting: torch.Tensor | None = None
    progress: bool = False

    def generator(self, salt: int = 0) -> torch.Generator:
        """A fresh ``torch.Generator`` seeded from ``seed`` (and ``salt``, e.g. the group number)."""
        return torch.Generator().manual_seed(self.seed * 1_000_003 + salt)


MethodFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


@dataclass(frozen=True)
class MethodSpec:
    """A registered method: ``needs_model`` (it reads last-layer outputs), ``needs_forgetting`` (it reads the
    warm-up's forgetting events). ``fn(ctx, **options)`` returns ``(indices [n], weights [n] or None)``."""

    name: str
    fn: MethodFn
    needs_model: bool
    needs_forgetting: bool

    @property
    def option_names(self) -> list[str]:
        params = list(inspect.signature(self.fn).parameters.values())[1:]
        return [p.name for p in params]

    def check_options(self, options: dict[str, Any]) -> None:
        unknown = sorted(set(options) - set(self.option_names))
        if unknown:
            raise TypeError(
                f"method {self.name!r} got unknown option(s) {unknown}; accepted options: {self.option_names}"
            )


METHODS: dict[str, MethodSpec] = {}


def register(name: str, *, needs_model: bool = True, needs_forgetting: bool = False) -> Callable[[MethodFn], MethodFn]:
    """Decorator adding a method to :data:`METHODS` under ``name``."""

    def decorator(fn: MethodFn) -> MethodFn:
        if name in METHODS:
            raise ValueError(f"a coreset method named {name!r} is already registered")
        METHODS[name] = MethodSpec(name, fn, needs_model, needs_forgetting)
        return fn

    return decorator
