"""One adapter from torchvision-style datasets to tensors, shared by coreset selection and condensation.

Items are ``(image, label, ...)``; an image may be a tensor (used as it is), a numpy array or a PIL image
(converted as ``torchvision.transforms.ToTensor`` does: float32 ``[C, H, W]`` in [0, 1]). Batches come from a
``DataLoader`` whose collate function converts the items and refuses non-finite images, naming the item.
"""

from __future__ import annotations

import operator
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset, Subset
from torchvision.transforms.functional import to_tensor

__all__ = ["LabeledTensors", "as_image_tensor", "as_labeled_tensors", "dataset_labels", "image_batches"]


def as_image_tensor(image: Any) -> torch.Tensor:
    """A dataset item's image as a tensor: tensors unchanged, arrays via ``torch.from_numpy``, PIL images as
    ``ToTensor`` converts them. Raises ``TypeError`` for anything else."""
    if isinstance(image, torch.Tensor):
        return image
    if isinstance(image, np.ndarray):
        return torch.from_numpy(image)
    if isinstance(image, Image.Image):
        return to_tensor(image)
    raise TypeError(f"dataset images must be tensors, PIL images or numpy arrays, got {type(image).__name__}; "
                    "add a transform that returns one (e.g. torchvision.transforms.ToTensor())")


def _label(label: Any, position: int, name: str) -> int:
    """An int, numpy integer or one-element integer tensor as an int; anything else is a ``ValueError``."""
    try:
        if not isinstance(label, (bool, torch.BoolTensor)):
            return operator.index(label)
    except TypeError:
        pass
    raise ValueError(f"{name}: item {position} has label {label!r}; labels must be integer class indices")


class _Numbered(Dataset):
    """Items ``(position, item)`` of ``dataset``, so the collate function can name the item it rejects."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, position: int) -> tuple[int, Any]:
        return position, self.dataset[position]


def _collate(batch: list[tuple[int, Any]], name: str, labelled: bool):
    positions, images, labels = [], [], []
    for position, item in batch:
        if not isinstance(item, (tuple, list)) or len(item) < 2 or item[1] is None:
            raise ValueError(f"{name} must yield labelled items (image, label); item {position} is unlabeled "
                             f"({type(item).__name__})")
        image = as_image_tensor(item[0])
        if images and image.shape != images[0].shape:
            raise ValueError(f"{name}: mismatched image sizes: item {positions[0]} has shape {tuple(images[0].shape)} "
                             f"but item {position} has {tuple(image.shape)}; resize them to one size "
                             "(e.g. transforms.Resize)")
        if image.is_floating_point() and not torch.isfinite(image).all():
            raise ValueError(f"{name}: item {position} has non-finite pixel values (NaN or inf); repair or drop it")
        positions.append(position)
        images.append(image)
        labels.append(_label(item[1], position, name) if labelled else 0)
    return torch.tensor(positions), torch.stack(images), torch.tensor(labels, dtype=torch.long)


def image_batches(dataset: Dataset, batches: Iterable[Sequence[int]] | None = None, batch_size: int = 256, *,
                  name: str = "dataset", labelled: bool = False) -> DataLoader:
    """A ``DataLoader`` yielding ``(positions [B], images [B, ...], labels [B])``: ``batches`` lists the positions
    of each batch (default: consecutive batches of ``batch_size``); item labels are read and checked only with
    ``labelled=True`` (zeros otherwise). Iterating raises ``ValueError`` for an unlabeled item, images of different
    shapes in a batch or a non-finite image, ``TypeError`` for an image that is no tensor, array or PIL image."""
    if batches is None:
        batches = [range(s, min(len(dataset), s + batch_size)) for s in range(0, len(dataset), batch_size)]
    return DataLoader(_Numbered(dataset), batch_sampler=batches,
                      collate_fn=partial(_collate, name=name, labelled=labelled))


def dataset_labels(dataset: Dataset) -> torch.Tensor:
    """``LongTensor [N]`` of labels without decoding images where possible: from ``.targets`` (MNIST/CIFAR/
    ImageFolder style), ``.labels`` (SVHN), through ``Subset`` views, or else item ``[1]`` of every sample.

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


@dataclass(eq=False)
class LabeledTensors(Dataset):
    """Data held as tensors, itself a ``Dataset`` of ``(images[i], int label)``: ``images [N, ...]`` (float32
    ``[N, C, *spatial]`` for condensation), ``labels [N]`` int64 in ``0..num_classes-1``."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    targets = property(lambda self: self.labels, doc="``labels`` under torchvision's name")

    channels = property(lambda self: int(self.images.shape[1]), doc="C")
    spatial = property(lambda self: tuple(int(s) for s in self.images.shape[2:]), doc="the image size, e.g. (H, W)")

    def class_indices(self, c: int) -> torch.Tensor:
        """Indices [n_c] of the items of class ``c``."""
        return torch.nonzero(self.labels == c).flatten()

    def require_per_class(self, count: int, what: str) -> None:
        """Raise ValueError naming the class when some class has fewer than ``count`` items."""
        counts = torch.bincount(self.labels, minlength=self.num_classes)
        short = [(c, int(counts[c])) for c in range(self.num_classes) if counts[c] < count]
        if short:
            c, have = short[0]
            raise ValueError(f"class {c} has {have} real images but {what} needs {count} per class "
                             f"({len(short)} class(es) short); lower ipc or use more data")

    def sample_class(self, c: int, count: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """``count`` distinct random images [count, C, *spatial] of class ``c`` (all of them if fewer)."""
        idx = self.class_indices(c)
        perm = torch.randperm(len(idx), generator=generator)[:count]
        return self.images[idx[perm]]


def as_labeled_tensors(data: Any, name: str = "dataset", num_classes: int | None = None) -> LabeledTensors:
    """Collect ``data`` into float32 :class:`LabeledTensors`.

    Args:
        data: a dataset (or any sequence) of ``(image, label)`` items (see the module docstring for the image
            types), a pair ``(images [N, C, *spatial], labels [N])``, or a :class:`LabeledTensors`.
        name: argument name used in error messages.
        num_classes: number of classes K; default ``len(data.classes)`` when present, else ``max(label) + 1``.

    Raises:
        ValueError: empty data, unlabeled items, images of different shapes, non-finite images, labels
            outside ``0..K-1``.  TypeError: items of an unsupported type.
    """
    if isinstance(data, LabeledTensors):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and all(isinstance(t, torch.Tensor) for t in data) \
            and data[0].ndim >= 3:
        images, labels = data
        if labels.ndim != 1 or labels.shape[0] != images.shape[0] or labels.dtype.is_floating_point:
            raise ValueError(f"{name}: labels must be integer class indices of shape [N] = [{images.shape[0]}], "
                             f"got {labels.dtype} {tuple(labels.shape)}")
        if not torch.isfinite(images).all():
            raise ValueError(f"{name}: images contain NaN or inf")
    else:
        if not hasattr(data, "__getitem__") or not hasattr(data, "__len__"):
            raise TypeError(f"{name} must be a torch Dataset of (image, label) or a pair of tensors, "
                            f"got {type(data).__name__}")
        if len(data) == 0:
            raise ValueError(f"{name} is empty")
        ((_, images, labels),) = image_batches(data, batch_size=len(data), name=name, labelled=True)  # one batch
        if num_classes is None and hasattr(data, "classes"):
            num_classes = len(data.classes)
    images, labels = images.float(), labels.long()
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if images.ndim < 3:
        raise ValueError(f"{name}: images must be [N, C, *spatial], got shape {tuple(images.shape)}")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"{name}: labels must lie in 0..{num_classes - 1}, got range "
                         f"{int(labels.min())}..{int(labels.max())}")
    return LabeledTensors(images.contiguous(), labels, int(num_classes))
