"""Reading the labels of a map-style dataset without decoding its images when possible."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset, Subset

__all__ = ["dataset_labels"]


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """``LongTensor [N]`` of labels: from ``.targets`` (MNIST/CIFAR/ImageFolder style), ``.labels`` (SVHN),
    through ``torch.utils.data.Subset`` views, or, as a fallback, item ``[1]`` of every sample.

    Raises:
        TypeError: the dataset has no length or its labels are not integers.
        ValueError: the number of labels differs from ``len(dataset)``.
    """
    if not hasattr(dataset, "__len__") or not hasattr(dataset, "__getitem__"):
        raise TypeError(f"dataset must be a map-style dataset with __len__ and __getitem__, got {type(dataset).__name__}")
    if isinstance(dataset, Subset):
        labels = dataset_labels(dataset.dataset)[torch.as_tensor(list(dataset.indices), dtype=torch.long)]
    else:
        raw = getattr(dataset, "targets", None)
        if raw is None:
            raw = getattr(dataset, "labels", None)
        if raw is None:
            raw = [dataset[i][1] for i in range(len(dataset))]
        labels = torch.as_tensor(raw) if not isinstance(raw, torch.Tensor) else raw
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        if not (labels.is_floating_point() and torch.equal(labels, labels.round())):
            raise TypeError(f"labels must be integers, got dtype {labels.dtype}")
    labels = labels.reshape(-1).to(torch.long)
    if len(labels) != len(dataset):
        raise ValueError(f"found {len(labels)} labels for a dataset of length {len(dataset)}")
    return labels
