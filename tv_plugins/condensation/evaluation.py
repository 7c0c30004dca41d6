"""The papers' evaluation protocol: train fresh networks on the synthetic set, test on real data."""

from __future__ import annotations

import copy
from collections.abc import Callable
from functools import partial

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..accuracy import evaluate_accuracy
from ..data import as_labeled_tensors
from ..networks import ConvNet
from ..randomness import seeded
from ..registry import check_int, check_number
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


def _train_and_test(factory: Callable[[], nn.Module], images: torch.Tensor, labels: torch.Tensor, test,
                    schedule: list[float], batch_size: int, momentum: float, weight_decay: float, augment: DSA,
                    seed: int, bar) -> float:
    """One evaluation run: a network initialised under ``seed``, batch order and DSA drawn from
    ``Generator(seed)``; returns its test accuracy (%)."""
    generator = torch.Generator().manual_seed(seed)
    with seeded(seed):  # the network's initialisation (and any dropout) draw from torch's global RNG
        net = factory()
        net.train()
        current_lr, optimizer = None, None
        for ep_lr in schedule:
            if ep_lr != current_lr:  # a new optimiser at the drop, like the reference
                current_lr = ep_lr
                optimizer = torch.optim.SGD(net.parameters(), lr=current_lr, momentum=momentum,
                                            weight_decay=weight_decay)
            for batch in torch.randperm(len(labels), generator=generator).split(batch_size):
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(net(augment(images[batch], generator=generator)), labels[batch]).backward()
                optimizer.step()
            bar.update(1)
    return evaluate_accuracy(net, test.images, test.labels, batch_size=1024)


def evaluate_synthetic(synthetic, test_dataset, model: nn.Module | Callable[[], nn.Module] | None = None,
                       runs: int = 5, epochs: int = 300, lr: float | None = None, batch_size: int = 256,
                       momentum: float = 0.9, weight_decay: float = 5e-4, dsa: str = DEFAULT_DSA, seed: int = 0,
                       progress: bool = True) -> dict:
    """Train ``runs`` freshly initialised networks on the synthetic set and report real test accuracy (%).

    The DC/DM/MTT, FreD and DDiF evaluation: SGD(lr, momentum 0.9, weight decay 5e-4), batch 256, ``epochs + 1``
    epochs, lr x 0.1 once after epoch ``epochs // 2 + 1`` (a new optimiser, as in the reference), per-sample DSA on
    every batch, one test pass at the end. The papers train 1000 epochs with DSA (300 without).

    Args:
        synthetic: a :class:`SyntheticDataset`, a parameterization, ``(images, labels)`` or an (image, label) dataset.
        test_dataset: real (image, label) dataset or ``(images, labels)`` tensors, same preprocessing as training.
        model: None (``ConvNet`` default, ConvNet-3 width 128 instance norm), a zero-argument factory, or a module
            whose architecture is copied and re-initialised for every run.
        lr: default 0.01, or the set's ``metadata["learned_lr"]`` when TM learned one.
        seed: run r uses seed ``seed + r`` (network initialisation, batch order, DSA); the caller's global RNG
            state is not changed.

    Returns:
        ``{"mean": float, "std": float (population), "runs": [accuracy % per run]}``.
    """
    for name, value, minimum in (("runs", runs, 1), ("epochs", epochs, 0)):
        check_int(name, value, minimum)
    images, labels, metadata = _synthetic_tensors(synthetic)
    test = as_labeled_tensors(test_dataset, "test_dataset")
    if tuple(test.images.shape[1:]) != tuple(images.shape[1:]):
        raise ValueError(f"test images have shape {tuple(test.images.shape[1:])} but synthetic images "
                         f"{tuple(images.shape[1:])}")
    lr = check_number("lr", float(metadata.get("learned_lr") or 0.01) if lr is None else lr, positive=True)
    num_classes = max(test.num_classes, int(labels.max()) + 1)
    if model is not None and not callable(model):  # an nn.Module is callable too
        raise TypeError(f"model must be None, an nn.Module or a factory callable, got {type(model).__name__}")
    factory = partial(ConvNet, images.shape[1], num_classes, images.shape[-1]) if model is None else \
        partial(_reset, model) if isinstance(model, nn.Module) else model
    augment = DSA(dsa)
    schedule = evaluation_learning_rates(lr, epochs)
    bar = tqdm(total=runs * (epochs + 1), desc="evaluate", disable=not progress, leave=False)
    accuracies = [_train_and_test(factory, images, labels, test, schedule, batch_size, momentum, weight_decay, augment,
                                  seed + run, bar) for run in range(runs)]
    bar.close()
    return {"mean": float(np.mean(accuracies)), "std": float(np.std(accuracies)), "runs": accuracies}
