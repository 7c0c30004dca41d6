"""A seeded block of the global RNG that leaves the caller's RNG state as it was."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

__all__ = ["seeded_global_rng"]


@contextmanager
def seeded_global_rng(seed: int, device: torch.device | str = "cpu") -> Iterator[None]:
    """Inside the block the CPU generator (and ``device``'s, if it is a GPU) starts from ``seed``.

    For host APIs that draw from the global RNG (``nn.Module`` initialisation, ``model.generate``); the
    caller's RNG state is restored on exit.
    """
    device = torch.device(device)
    cuda = [device.index if device.index is not None else torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=cuda):
        torch.default_generator.manual_seed(seed)
        for index in cuda:
            with torch.cuda.device(index):
                torch.cuda.manual_seed(seed)
        yield
