"""Demo and benchmark scaffolding for coresets: standardised digits features, the pilot MLP, and training a
fresh classifier on a (weighted) coreset (the DeepCore/LCMat recipe, scaled down)."""

from __future__ import annotations

import math

import torch
from torch import nn

from ..data import LabeledTensors
from .datasets import DigitsDataset

__all__ = ["digits_mlp", "digits_tensors", "train_classifier"]


def digits_tensors(seed: int = 0, test_fraction: float = 0.33) -> tuple[LabeledTensors, LabeledTensors]:
    """Train/test digits as flat 64-d features standardised with the train statistics."""
    train, test = (DigitsDataset(train=t, test_fraction=test_fraction, seed=seed) for t in (True, False))
    x_train, x_test = (d.data.reshape(len(d), -1).float() / 255.0 for d in (train, test))
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return LabeledTensors((x_train - mean) / std, train.targets, 10), LabeledTensors((x_test - mean) / std, test.targets, 10)


def digits_mlp(seed: int, hidden: int = 64) -> nn.Module:
    """MLP 64 -> hidden (ReLU) -> 10 with He/LeCun normal init from ``seed`` and zero biases."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(hidden, 64, generator=g) * (2 / 64) ** 0.5)
        model[2].weight.copy_(torch.randn(10, hidden, generator=g) * (1 / hidden) ** 0.5)
        model[0].bias.zero_()
        model[2].bias.zero_()
    return model


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
    iteration down to ``min_lr``. ``max_steps`` caps the number of iterations (the schedule then spans
    ``max_steps``). Shuffling uses ``torch.Generator().manual_seed(seed)``."""
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
        for idx in order.split(batch_size):
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
