"""``select_coreset``: validate inputs, warm up a copy of the model, extract last-layer quantities once,
run the registered method per class, and return a :class:`CoresetSelection`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from . import methods as _methods  # noqa: F401  (registers the methods)
from .budgets import check_fraction, group_budget
from .labels import dataset_labels
from .last_layer import extract_last_layer, find_last_layer
from .registry import METHODS, SelectionContext
from .selection import CoresetSelection
from .warmup import count_forgetting_events, warm_up

__all__ = ["default_model", "select_coreset"]


def default_model(sample: torch.Tensor, num_classes: int, seed: int = 0) -> nn.Module:
    """The selection model used when none is given: a ConvNet (depth <= 3, width 64, instance norm) for
    ``[C, H, H]`` images, an MLP (one hidden layer of 128) for flat ``[D]`` inputs."""
    from ..networks import ConvNet

    torch.manual_seed(seed)
    if sample.ndim == 3 and sample.shape[1] == sample.shape[2]:
        depth = max(1, min(3, int(math.log2(sample.shape[1])) - 1))
        return ConvNet(int(sample.shape[0]), num_classes, int(sample.shape[1]), depth=depth, width=64)
    if sample.ndim == 1:
        return nn.Sequential(nn.Linear(sample.shape[0], 128), nn.ReLU(), nn.Linear(128, num_classes))
    raise ValueError(f"no default model for inputs of shape {tuple(sample.shape)}; pass model=")


def _check_int(name: str, value: Any, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def select_coreset(
    dataset: Dataset,
    method: str = "lcmat",
    fraction: float = 0.01,
    model: nn.Module | None = None,
    warmup_epochs: int = 10,
    balance: bool = True,
    seed: int = 0,
    device: torch.device | str | None = None,
    batch_size: int = 128,
    *,
    last_layer: nn.Module | str | None = None,
    warmup_lr: float = 0.1,
    selection_transform: Callable | None = None,
    progress: bool = True,
    **method_options: Any,
) -> CoresetSelection:
    """Select a (class-balanced) coreset of ``dataset``.

    Args:
        dataset: map-style dataset of ``(image tensor [C, H, W] or features [D], int label)``; labels are
            read from ``.targets``/``.labels`` when present.
        method: a name in ``METHODS`` (``lcmat``, ``uniform``, ``herding``, ``kcenter_greedy``,
            ``forgetting``, ``grand``, ``el2n``, ``uncertainty``, ``craig``, ``gradmatch``, ``glister``,
            ``submodular``).
        fraction: share of each class to keep, in (0, 1]; per-class budget ``max(1, round_half_up(f N_c))``.
        model: selection network ending in an ``nn.Linear`` classifier (``last_layer`` names another one).
            ``None``: :func:`default_model`. It is never modified: the warm-up trains a copy.
        warmup_epochs: epochs of warm-up training of the copy on the full dataset (0 = use ``model`` as is).
        balance: select per class (True) or from the whole dataset at once (False).
        seed: seeds the default model, the warm-up order and the randomised methods.
        device: where the forward passes run (default: the model's device). Under an initialised
            ``torch.distributed`` group the feature pass is split across ranks (every rank gets the same
            selection); the warm-up is not split (each rank runs the same seeded warm-up).
        batch_size: mini-batch size of the warm-up and the feature pass.
        last_layer: the final ``nn.Linear`` (module or dotted name); default: the last ``nn.Linear``.
        warmup_lr: SGD learning rate of the warm-up (Nesterov momentum 0.9, weight decay 5e-4).
        selection_transform: if given, a shallow copy of ``dataset`` with this ``transform`` is used for
            warm-up and selection (keep training augmentation out of selection).
        progress: show tqdm bars.
        **method_options: options of the chosen method (e.g. ``eps``, ``K``, ``weights`` for ``lcmat``).

    Returns:
        :class:`CoresetSelection` (indices class-major, ascending within class).

    Raises:
        ValueError / TypeError: unknown method or option, fraction outside (0, 1], empty dataset, labels
        outside ``[0, num_classes)``, a model without a final linear layer, bad integer arguments.
    """
    if method not in METHODS:
        raise ValueError(f"method must be one of {sorted(METHODS)}, got {method!r}")
    spec = METHODS[method]
    spec.check_options(method_options)
    fraction = check_fraction(fraction)
    warmup_epochs = _check_int("warmup_epochs", warmup_epochs, 0)
    batch_size = _check_int("batch_size", batch_size, 1)
    seed = _check_int("seed", seed, 0)
    if not isinstance(balance, bool):
        raise TypeError(f"balance must be a bool, got {balance!r}")
    if spec.needs_forgetting and warmup_epochs < 2:
        raise ValueError(f"method 'forgetting' counts events over the warm-up and needs warmup_epochs >= 2, got {warmup_epochs}")
    if model is not None and not isinstance(model, nn.Module):
        raise TypeError(f"model must be a torch.nn.Module or None, got {type(model).__name__}")
    if selection_transform is not None:
        dataset = copy.copy(dataset)
        dataset.transform = selection_transform
    labels = dataset_labels(dataset)
    if len(labels) == 0:
        raise ValueError("dataset is empty: nothing to select from")
    if int(labels.min()) < 0:
        raise ValueError(f"labels must be >= 0, found {int(labels.min())}")

    outputs = forgetting = None
    if spec.needs_model:
        if model is None:
            model = default_model(torch.as_tensor(dataset[0][0]), int(labels.max()) + 1, seed).to(device or "cpu")
        head = find_last_layer(model, last_layer)
        num_classes = head.out_features
        if int(labels.max()) >= num_classes:
            raise ValueError(
                f"labels must be in [0, {num_classes}) (the classifier's out_features), found {int(labels.max())}"
            )
        head_name = next(name for name, module in model.named_modules() if module is head)
        if warmup_epochs > 0:
            warm = warm_up(model, dataset, labels, epochs=warmup_epochs, lr=warmup_lr, batch_size=batch_size,
                           seed=seed, device=device, progress=progress)
            forgetting = count_forgetting_events(warm.correct) if spec.needs_forgetting else None
            model = warm.model
        outputs = extract_last_layer(model, dataset, labels, last_layer=head_name or None, batch_size=batch_size,
                                     device=device, progress=progress)
        if not torch.isfinite(outputs.logits).all():
            raise FloatingPointError("the selection model produced non-finite logits; lower warmup_lr")

    if balance:
        classes = torch.unique(labels)
        groups = [(int(c), torch.nonzero(labels == c).flatten(), 0) for c in classes]
    else:
        groups = [(None, torch.arange(len(labels)), 0)]
    groups = [(c, idx, group_budget(fraction, len(idx))) for c, idx, _ in groups]
    ctx = SelectionContext(labels, groups, seed, outputs, forgetting, progress)
    indices, weights = spec.fn(ctx, **method_options)
    indices = indices.to(torch.long)
    weights = torch.ones(len(indices), dtype=torch.float32) if weights is None else weights.to(torch.float32)

    budget_total = sum(k for _, _, k in groups)
    if len(indices) != budget_total or len(torch.unique(indices)) != len(indices) or len(weights) != len(indices):
        raise RuntimeError(f"method {method!r} returned an invalid selection (size {len(indices)}, budget {budget_total})")
    order = torch.argsort(labels[indices] * len(labels) + indices)  # class-major, ascending within class
    indices, weights = indices[order], weights[order]
    counts = {int(c): int((labels[indices] == c).sum()) for c in torch.unique(labels)}
    options = {
        "fraction": fraction, "warmup_epochs": warmup_epochs, "balance": balance, "seed": seed,
        "batch_size": batch_size, "warmup_lr": warmup_lr, **method_options,
    }
    return CoresetSelection(indices, weights, counts, method, options)
