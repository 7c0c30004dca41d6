"""Seeding without touching the caller's RNG: randomness flows through explicit ``torch.Generator`` objects;
host-library code that draws from torch's global RNG (``nn.Module`` initialisation) runs under :func:`seeded`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["draw_seed", "seeded", "spawn"]


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run the block with torch's global CPU RNG seeded by ``seed``; the caller's RNG state is restored after."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def draw_seed(generator: torch.Generator | None = None) -> int:
    """A seed in ``[0, 2**62)`` drawn from ``generator`` (default: torch's global generator)."""
    return int(torch.randint(2**62, (1,), generator=generator))


def spawn(generator: torch.Generator | None, count: int) -> list[torch.Generator]:
    """``count`` independent generators seeded from ``generator`` (e.g. one per class, drawn before any is used)."""
    return [torch.Generator().manual_seed(draw_seed(generator)) for _ in range(count)]
