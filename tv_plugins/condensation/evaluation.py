"""The papers' evaluation protocol: train fresh networks on the synthetic set, test on real data (spec D)."""

from __future__ import annotations

import copy
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..accuracy import evaluate_accuracy
from ..data import as_labeled_tensors
from ..networks import ConvNet
from .augmentation import DSA
from .objective import DEFAULT_DSA
from .parameterization import SyntheticParameterization
from .synthetic import SyntheticDataset

__all__ = ["evaluate_synthetic", "evaluation_learning_rates"]


def evaluation_learning_rates(lr: float, epochs: int) -> list[float]:
    """Learning rate of each of the ``epochs + 1`` training epochs: ``lr``, multiplied by 0.1 once after epoch
    ``epochs // 2 + 1`` (0-based), as in the reference ``evaluate_synset``."""
    drop_after = epochs // 2 + 1
    return [lr if ep <= drop_after else lr * 0.1 for ep in range(epochs + 1)]


def _reset(module: nn.Module) -> nn.Module:
    fresh = copy.deepcopy(module)
    for sub in fresh.modules():
        if hasattr(sub, "reset_parameters"):
            sub.reset_parameters()
    return fresh


def _synthetic_tensors(synthetic) -> tuple[torch.Tensor, torch.Tensor, dict]:
    if isinstance(synthetic, SyntheticDataset):
        images, labels = synthetic.to_tensors()
        return images, labels, synthetic.metadata
    if isinstance(synthetic, SyntheticParameterization):
        with torch.no_grad():
            images, labels = synthetic.decode()
        return images.detach(), labels, {}
    data = as_labeled_tensors(synthetic, "synthetic")
    return data.images, data.labels, {}


def evaluate_synthetic(synthetic, test_dataset, model: nn.Module | Callable[[], nn.Module] | None = None,
                       runs: int = 5, epochs: int = 300, lr: float | None = None, batch_size: int = 256,
                       momentum: float = 0.9, weight_decay: float = 5e-4, dsa: str = DEFAULT_DSA, seed: int = 0,
                       progress: bool = True) -> dict:
    """Train ``runs`` freshly initialised networks on the synthetic set and report real test accuracy (%).

    Protocol (spec D): SGD(lr, momentum 0.9, weight decay 5e-4), batch 256, ``epochs + 1`` epochs, lr x 0.1 once
    after epoch ``epochs // 2 + 1`` (a new optimiser, as in the reference), per-sample DSA on every batch, one
    test pass at the end. The papers train 1000 epochs with DSA (300 without); pass ``epochs`` accordingly.

    Args:
        synthetic: a :class:`SyntheticDataset`, a parameterization, ``(images, labels)`` or an (image, label) dataset.
        test_dataset: real (image, label) dataset or ``(images, labels)`` tensors, same preprocessing as training.
        model: None (``ConvNet`` default, ConvNet-3 width 128 instance norm), a zero-argument factory, or a module
            whose architecture is copied and re-initialised for every run.
        lr: default 0.01, or the set's ``metadata["learned_lr"]`` when TM learned one.
        seed: run r uses seed ``seed + r``.

    Returns:
        ``{"mean": float, "std": float (population), "runs": [accuracy % per run]}``.
    """
    if isinstance(runs, bool) or not isinstance(runs, int) or runs < 1:
        raise ValueError(f"runs must be a positive int, got {runs!r}")
    if isinstance(epochs, bool) or not isinstance(epochs, int) or epochs < 0:
        raise ValueError(f"epochs must be a non-negative int, got {epochs!r}")
    images, labels, metadata = _synthetic_tensors(synthetic)
    test = as_labeled_tensors(test_dataset, "test_dataset")
    if tuple(test.images.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"test images have shape {tuple(test.images.shape[1:])} but synthetic images "
                         f"{tuple(images.shape[1:])}")
    if lr is None:
        lr = float(metadata.get("learned_lr") or 0.01)
    if not lr > 0:
        raise ValueError(f"lr must be positive, got {lr!r}")
    num_classes = max(test.num_classes, int(labels.max()) + 1)
    if model is None:
        def factory():
            return ConvNet(images.shape[1], num_classes, images.shape[-1])
    elif isinstance(model, nn.Module):
        def factory():
            return _reset(model)
    elif callable(model):
        factory = model
    else:
        raise TypeError(f"model must be None, an nn.Module or a factory callable, got {type(model).__name__}")
    augment = DSA(dsa)
    schedule = evaluation_learning_rates(lr, epochs)
    accuracies = []
    with torch.random.fork_rng(devices=[]):
        bar = tqdm(total=runs * (epochs + 1), desc="evaluate", disable=not progress, leave=False)
        for run in range(runs):
            torch.manual_seed(seed + run)
            net = factory()
            net.train()
            current_lr, optimizer = None, None
            for ep in range(epochs + 1):
                if schedule[ep] != current_lr:  # a new optimiser at the drop, like the reference
                    current_lr = schedule[ep]
                    optimizer = torch.optim.SGD(net.parameters(), lr=current_lr, momentum=momentum,
                                                weight_decay=weight_decay)
                order = torch.randperm(len(labels))
                for start in range(0, len(labels), batch_size):
                    batch = order[start:start + batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(net(augment(images[batch])), labels[batch]).backward()
                    optimizer.step()
                bar.update(1)
            accuracies.append(evaluate_accuracy(net, test.images, test.labels, batch_size=1024))
        bar.close()
    return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)), "runs": accuracies}
