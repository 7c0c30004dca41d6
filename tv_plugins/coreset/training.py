"""Training a fresh classifier on a (weighted) coreset and measuring its test accuracy: the evaluation
protocol of the demo, the notebook and ``benchmarks/coreset.py`` (DeepCore/LCMat recipe, scaled down)."""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.utils.data import Dataset

from ..accuracy import evaluate_accuracy

__all__ = ["TensorDataset", "evaluate_accuracy", "train_classifier"]


class TensorDataset(Dataset):
    """In-memory ``(inputs [N, ...], labels [N])`` with ``.targets``, items ``(x, int label)``."""

    def __init__(self, inputs: torch.Tensor, targets: torch.Tensor) -> None:
        if len(inputs) != len(targets):
            raise ValueError(f"inputs ({len(inputs)}) and targets ({len(targets)}) differ in length")
        self.data, self.targets = inputs, targets.long()

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        return self.data[i], int(self.targets[i])


def train_classifier(
    model: nn.Module,
    inputs: torch.Tensor,
    labels: torch.Tensor,
    weights: torch.Tensor | None = None,
    *,
    epochs: int = 200,
    max_steps: int | None = None,
    batch_size: int = 32,
    lr: float = 0.1,
    momentum: float = 0.9,
    weight_decay: float = 5e-4,
    min_lr: float = 1e-4,
    seed: int = 0,
) -> nn.Module:
    """Train ``model`` in place on ``(inputs [n, ...], labels [n])`` with loss ``sum(w l) / sum(w)`` per batch
    (plain mean when ``weights`` is None); SGD with Nesterov momentum and a cosine schedule stepped per
    iteration down to ``min_lr`` (the LCMat/DeepCore recipe). ``max_steps`` caps the number of iterations
    (the schedule then spans ``max_steps``). Shuffling uses ``torch.Generator().manual_seed(seed)``."""
    n = len(labels)
    steps_per_epoch = math.ceil(n / batch_size)
    total = epochs * steps_per_epoch if max_steps is None else min(max_steps, epochs * steps_per_epoch)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum, nesterov=True, weight_decay=weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total), eta_min=min_lr)
    generator = torch.Generator().manual_seed(seed)
    w_all = torch.ones(n) if weights is None else weights.float()
    model.train()
    step = 0
    while step < total:
        order = torch.randperm(n, generator=generator)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            per_sample = nn.functional.cross_entropy(model(inputs[idx]), labels[idx], reduction="none")
            w = w_all[idx]
            loss = (w * per_sample).sum() / w.sum().clamp_min(1e-12)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            schedule.step()
            step += 1
            if step >= total:
                break
    return model.eval()
