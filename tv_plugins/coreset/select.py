"""``select_coreset``: validate, warm up a copy of the model, extract last-layer quantities once, run the
registered method on every group (one per class) with its budget, and return a :class:`CoresetSelection`."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset
from tqdm.auto import tqdm

from ..data import as_image_tensor, dataset_labels
from ..randomness import seeded
from ..registry import Entry, check_int
from .last_layer import LastLayerOutputs, extract_last_layer, find_last_layer
from .methods import METHODS, Group
from .subset import CoresetSelection
from .warmup import count_forgetting_events, warm_up

__all__ = ["check_fraction", "default_model", "group_budget", "per_class_budgets", "select_coreset"]


def check_fraction(fraction: float) -> float:
    """Return ``fraction`` as a float if it lies in (0, 1]; raise otherwise (nothing is clamped)."""
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)) or not math.isfinite(fraction):
        raise TypeError(f"fraction must be a real number in (0, 1], got {fraction!r}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction!r}")
    return float(fraction)


def group_budget(fraction: float, size: int) -> int:
    """``max(1, floor(fraction * size + 0.5))`` for a non-empty group of ``size`` samples.

    Deviation from the reference code: Python's banker's ``round`` and its ``ValueError`` on a zero budget are
    replaced by round-half-up with at least one sample per present class.
    """
    if size < 1:
        raise ValueError(f"a selection group must be non-empty, got size {size}")
    return max(1, min(size, math.floor(fraction * size + 0.5)))


def per_class_budgets(labels: torch.Tensor, fraction: float) -> dict[int, int]:
    """``{class: k_c}`` for every class present in ``labels`` (``LongTensor [N]``)."""
    fraction = check_fraction(fraction)
    classes, counts = torch.unique(labels, return_counts=True)
    return {int(c): group_budget(fraction, int(n)) for c, n in zip(classes.tolist(), counts.tolist())}


def default_model(sample: torch.Tensor, num_classes: int, seed: int = 0) -> nn.Module:
    """The selection model used when none is given, initialised under ``seed`` (the caller's RNG is untouched):
    a ConvNet (depth <= 3, width 64, instance norm) for ``[C, H, H]`` images, an MLP (one hidden layer of 128)
    for flat ``[D]`` inputs."""
    from ..networks import ConvNet

    with seeded(seed):
        if sample.ndim == 3 and sample.shape[1] == sample.shape[2]:
            depth = max(1, min(3, int(math.log2(sample.shape[1])) - 1))
            return ConvNet(int(sample.shape[0]), num_classes, int(sample.shape[1]), depth=depth, width=64)
        if sample.ndim == 1:
            return nn.Sequential(nn.Linear(sample.shape[0], 128), nn.ReLU(), nn.Linear(128, num_classes))
    raise ValueError(f"no default model for inputs of shape {tuple(sample.shape)}; pass model=")


def _model_outputs(entry: Entry, dataset: Dataset, labels: torch.Tensor, model: nn.Module | None, seed: int,
                   device, batch_size: int, last_layer, warmup_epochs: int, warmup_lr: float,
                   progress: bool) -> tuple[LastLayerOutputs, torch.Tensor | None]:
    """Warm up a copy of the model (or the default model) and read the last layer of every sample."""
    if model is None:
        model = default_model(as_image_tensor(dataset[0][0]), int(labels.max()) + 1, seed).to(device or "cpu")
    head = find_last_layer(model, last_layer)
    if int(labels.max()) >= head.out_features:
        raise ValueError(f"labels must be in [0, {head.out_features}) (the classifier's out_features), "
                         f"found {int(labels.max())}")
    head_name = next(name for name, module in model.named_modules() if module is head)
    forgetting = None
    if warmup_epochs > 0:
        warm = warm_up(model, dataset, labels, epochs=warmup_epochs, lr=warmup_lr, batch_size=batch_size,
                       seed=seed, device=device, progress=progress)
        forgetting = count_forgetting_events(warm.correct) if entry.attributes["needs_forgetting"] else None
        model = warm.model
    outputs = extract_last_layer(model, dataset, labels, last_layer=head_name or None, batch_size=batch_size,
                                 device=device, progress=progress)
    return outputs, forgetting


def _select_groups(entry: Entry, options: dict[str, Any], labels: torch.Tensor, fraction: float, balance: bool,
                   seed: int, outputs: LastLayerOutputs | None, forgetting: torch.Tensor | None,
                   progress: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Run the method on every group with its budget; group ``g`` draws from ``Generator(seed * 1000003 + g)``.
    Returns ``(indices, weights)`` class-major, ascending within class."""
    classes = torch.unique(labels)
    groups = [(int(c), torch.nonzero(labels == c).flatten()) for c in classes] if balance else \
        [(None, torch.arange(len(labels)))]
    chosen, chosen_weights = [], []
    for g, (label, idx) in enumerate(tqdm(groups, desc=entry.name, disable=not progress, leave=False)):
        k = group_budget(fraction, len(idx))
        group = Group(idx, label, None if outputs is None else outputs.subset(idx),
                      None if forgetting is None else forgetting[idx])
        picks, weights = entry.target(group, k, torch.Generator().manual_seed(seed * 1_000_003 + g), **options)
        if len(picks) != k or len(torch.unique(picks)) != k or int(picks.min()) < 0 or int(picks.max()) >= len(idx) \
                or (weights is not None and len(weights) != k):
            raise RuntimeError(f"method {entry.name!r} returned an invalid selection for a group of {len(idx)} "
                               f"(size {len(picks)}, budget {k})")
        chosen.append(idx[picks.long()])
        chosen_weights.append(torch.ones(k) if weights is None else weights.to(torch.float32))
    indices, weights = torch.cat(chosen), torch.cat(chosen_weights)
    order = torch.argsort(labels[indices] * len(labels) + indices)  # class-major, ascending within class
    return indices[order], weights[order]


def select_coreset(dataset: Dataset, method: str = "lcmat", fraction: float = 0.01, model: nn.Module | None = None,
                   warmup_epochs: int = 10, balance: bool = True, seed: int = 0, device: torch.device | str | None = None,
                   batch_size: int = 128, *, last_layer: nn.Module | str | None = None, warmup_lr: float = 0.1,
                   selection_transform: Callable | None = None, progress: bool = True,
                   **method_options: Any) -> CoresetSelection:
    """Select a (class-balanced) coreset of ``dataset``.

    Args:
        dataset: map-style dataset of ``(image, int label)``; images are tensors ``[C, H, W]`` / features ``[D]``,
            arrays, or PIL images (converted as ``ToTensor`` does); labels are read from ``.targets``/``.labels``
            when present.
        method: a name in ``METHODS`` (``lcmat``, ``craig``, ``gradmatch``, ``uniform``, ... ``list(METHODS)``).
        fraction: share of each class to keep, in (0, 1]; per-class budget ``max(1, round_half_up(f N_c))``.
        model: selection network ending in an ``nn.Linear`` classifier (``last_layer`` names another one).
            ``None``: :func:`default_model`. It is never modified: the warm-up trains a copy.
        warmup_epochs: epochs of warm-up training of the copy on the full dataset (0 = use ``model`` as is).
        balance: select per class (True) or from the whole dataset at once (False).
        seed: seeds the default model, the warm-up and the randomised methods (the caller's RNG is untouched).
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
        ValueError: unknown method, a bad option value, fraction outside (0, 1], empty dataset, labels outside
            ``[0, num_classes)``, a non-finite image, a model without a final linear layer, bad integer arguments.
        TypeError: an unknown option.  FloatingPointError: the model's features or logits are not finite.
    """
    entry = METHODS[method]
    options = entry.resolve(method_options)
    fraction = check_fraction(fraction)
    warmup_epochs, batch_size = check_int("warmup_epochs", warmup_epochs, 0), check_int("batch_size", batch_size)
    seed = check_int("seed", seed, 0)
    if not isinstance(balance, bool):
        raise TypeError(f"balance must be a bool, got {balance!r}")
    if entry.attributes["needs_forgetting"] and warmup_epochs < 2:
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
    if entry.attributes["needs_model"]:
        with seeded(seed):  # random transforms or dropout draw from torch's global RNG; the caller's is restored
            outputs, forgetting = _model_outputs(entry, dataset, labels, model, seed, device, batch_size, last_layer,
                                                 warmup_epochs, warmup_lr, progress)
    indices, weights = _select_groups(entry, options, labels, fraction, balance, seed, outputs, forgetting, progress)
    counts = {int(c): int((labels[indices] == c).sum()) for c in torch.unique(labels)}
    settings = {"fraction": fraction, "warmup_epochs": warmup_epochs, "balance": balance, "seed": seed,
                "batch_size": batch_size, "warmup_lr": warmup_lr, **method_options}
    return CoresetSelection(indices, weights, counts, method, settings)
