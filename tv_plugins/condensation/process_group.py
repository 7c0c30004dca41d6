"""Condensation on several processes: the work split and the collectives the objectives use.

Whenever ``torch.distributed``'s default process group is initialised (``torchrun`` / ``accelerate launch``
scripts), class ``c`` of a DM / DC step is computed by rank ``c % world_size`` and the synthetic storage's gradients
are summed across ranks before every optimiser step, so every rank takes the same step; expert ``e`` of a
trajectory buffer is trained by rank ``e % world_size`` and the buffer is gathered on every rank. Every rank draws
the same random numbers (the same seeded generators, per-class streams spawned before any class is used), so the
split changes only which process evaluates a term, not the term. Without a process group (or with one process)
every function here is the identity and the objectives run exactly as on one process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager

import torch
import torch.distributed as dist

__all__ = ["check_same_settings", "gather_owned", "owned", "rank_and_world", "sum_gradients", "sum_value", "writer"]


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when none is initialised."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def owned(count: int) -> range:
    """The items ``i in range(count)`` this rank computes: ``i % world_size == rank``."""
    rank, world = rank_and_world()
    return range(rank, count, world)


def sum_gradients(parameters: Iterable[torch.Tensor]) -> None:
    """All-reduce (sum) the ``.grad`` of each trainable tensor in place; a missing gradient counts as zero (a rank
    whose classes do not reach a tensor still joins the collective)."""
    if rank_and_world()[1] == 1:
        return
    for p in parameters:
        if not p.requires_grad:
            continue
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)


def sum_value(value: float | torch.Tensor) -> float:
    """The sum over ranks of a per-rank scalar (a loss summed over this rank's classes), in float64."""
    value = float(value.detach()) if isinstance(value, torch.Tensor) else float(value)
    if rank_and_world()[1] == 1:
        return value
    total = torch.tensor([value], dtype=torch.float64)
    dist.all_reduce(total)
    return float(total)


def gather_owned(count: int, compute: Callable[[int], torch.Tensor]) -> torch.Tensor:
    """``torch.stack([compute(i) for i in range(count)])`` with item ``i`` computed on rank ``i % world_size`` and the
    result gathered on every rank (each item depends only on ``i``, so the stack equals the one-process one bit for
    bit). The items must share one shape and dtype."""
    rank, world = rank_and_world()
    if world == 1:
        return torch.stack([compute(i) for i in range(count)])
    mine = [compute(i) for i in owned(count)]
    shape, dtype = _broadcast_template(mine)
    rows = -(-count // world)  # items per rank, padded
    local = torch.zeros(rows, *shape, dtype=dtype)
    if mine:
        local[: len(mine)] = torch.stack(mine)
    pieces = [torch.empty_like(local) for _ in range(world)]
    dist.all_gather(pieces, local)
    return torch.stack([pieces[i % world][i // world] for i in range(count)])


def _broadcast_template(mine: list[torch.Tensor]) -> tuple[tuple[int, ...], torch.dtype]:
    """The item shape and dtype, taken from rank 0 (which always owns item 0)."""
    box = [(tuple(mine[0].shape), mine[0].dtype) if mine else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def check_same_settings(settings: dict) -> None:
    """Raise ValueError on every rank when the ranks were started with different ``settings`` (e.g. another seed:
    their random draws, hence their shares of the work, would not fit together)."""
    if rank_and_world()[1] == 1:
        return
    everyone: list = [None] * dist.get_world_size()
    dist.all_gather_object(everyone, settings)
    differing = sorted({k for other in everyone for k in set(settings) | set(other) if other.get(k) != settings.get(k)})
    if differing:
        raise ValueError(f"the processes of the torch.distributed group were given different {differing}: "
                         f"{[{k: other.get(k) for k in differing} for other in everyone]}")


@contextmanager
def writer() -> Iterator[bool]:
    """``with writer() as write: if write: <save files>``: True only on rank 0; every rank waits at a barrier when
    the block ends, so no rank reads a file before it is written."""
    rank, world = rank_and_world()
    try:
        yield rank == 0
    finally:
        if world > 1:
            dist.barrier()
