"""Warm-up ("early training") of a copy of the selection model on the full dataset, recording the
per-sample correctness of every presentation (for forgetting events, Toneva et al. 2019)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data import image_batches

__all__ = ["WarmupResult", "count_forgetting_events", "warm_up"]


@dataclass
class WarmupResult:
    """``model``: the trained copy; ``correct``: ``BoolTensor [epochs, N]``, whether sample i was classified
    correctly when it was presented in epoch e (before that step's update)."""

    model: nn.Module
    correct: torch.Tensor


def count_forgetting_events(correct: torch.Tensor) -> torch.Tensor:
    """Forgetting events per sample from ``correct [E, N]``: transitions correct -> wrong between consecutive
    presentations. Samples never classified correctly get ``E`` (more than any learnt sample can have:
    Toneva et al. treat them as forgotten infinitely often). Returns ``LongTensor [N]``."""
    correct = correct.bool()
    events = (correct[:-1] & ~correct[1:]).sum(0)
    never_learnt = ~correct.any(0)
    return torch.where(never_learnt, torch.full_like(events, correct.shape[0]), events)


def warm_up(model: nn.Module, dataset: Dataset, labels: torch.Tensor, *, epochs: int, lr: float = 0.1,
            momentum: float = 0.9, weight_decay: float = 5e-4, batch_size: int = 128, seed: int = 0,
            device: torch.device | str | None = None, progress: bool = True) -> WarmupResult:
    """Train a deep copy of ``model`` (``model`` is not modified) for ``epochs`` epochs on all of ``dataset``
    (SGD, Nesterov momentum, constant lr, CE mean: the reference's warm-up recipe), batches from a ``DataLoader``
    in the order drawn from ``torch.Generator().manual_seed(seed)``: same seed, same warm model."""
    warm = copy.deepcopy(model)
    if device is None:
        param = next(warm.parameters(), None)
        device = param.device if param is not None else torch.device("cpu")
    warm.to(device).train()
    n = len(dataset)
    correct = torch.zeros(epochs, n, dtype=torch.bool)
    if epochs == 0:
        return WarmupResult(warm, correct)
    optimizer = torch.optim.SGD(warm.parameters(), lr=lr, momentum=momentum, nesterov=momentum > 0,
                                weight_decay=weight_decay)
    generator = torch.Generator().manual_seed(seed)
    bar = tqdm(total=epochs * ((n + batch_size - 1) // batch_size), desc="warm-up", disable=not progress, leave=False)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=generator)
        for idx, x, _ in image_batches(dataset, [b.tolist() for b in order.split(batch_size)]):
            y = labels[idx].to(device)
            out = warm(x.to(device))
            logits = out if isinstance(out, torch.Tensor) else out["logits"]
            loss = nn.functional.cross_entropy(logits, y)
            correct[epoch, idx] = (logits.argmax(1) == y).cpu()
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            bar.update(1)
    bar.close()
    warm.eval()
    return WarmupResult(warm, correct)
