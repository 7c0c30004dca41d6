"""Turn a torchvision-style dataset of ``(image, label)`` (or a pair of tensors) into labelled tensors."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

__all__ = ["LabeledTensors", "as_labeled_tensors"]


@dataclass
class LabeledTensors:
    """Real data as tensors: ``images [N, C, *spatial]`` float32, ``labels [N]`` int64 in ``0..num_classes-1``."""

    images: torch.Tensor
    labels: torch.Tensor
    num_classes: int

    @property
    def channels(self) -> int:
        return int(self.images.shape[1])

    @property
    def spatial(self) -> tuple[int, ...]:
        return tuple(int(s) for s in self.images.shape[2:])

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


def _to_tensor(image) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image.float()
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover - torchvision always brings Pillow
        Image = None
    if Image is not None and isinstance(image, Image.Image):
        from torchvision.transforms.functional import to_tensor

        return to_tensor(image)
    import numpy as np

    if isinstance(image, np.ndarray):
        return torch.from_numpy(image).float()
    raise TypeError(f"dataset images must be tensors, PIL images or numpy arrays, got {type(image).__name__}")


def as_labeled_tensors(data, name: str = "dataset", num_classes: int | None = None) -> LabeledTensors:
    """Collect ``data`` into :class:`LabeledTensors`.

    Args:
        data: a ``torch.utils.data.Dataset`` (or any sequence) whose items are ``(image, label)`` with the image a
            tensor [C, *spatial], a PIL image (converted with ``to_tensor``, values in [0, 1]) or an array; or a
            pair ``(images [N, C, *spatial], labels [N])``; or an existing :class:`LabeledTensors`.
        name: argument name used in error messages.
        num_classes: number of classes K; default ``len(data.classes)`` when present, else ``max(label) + 1``.

    Raises:
        ValueError: empty data, unlabeled items, images of different shapes, labels outside ``0..K-1``.
        TypeError: items of an unsupported type.
    """
    if isinstance(data, LabeledTensors):
        return data
    if isinstance(data, (tuple, list)) and len(data) == 2 and isinstance(data[0], torch.Tensor) \
            and isinstance(data[1], torch.Tensor) and data[0].ndim >= 3:
        images, labels = data[0].float(), data[1]
        if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(f"{name}: labels must have shape [N] = [{images.shape[0]}], got {tuple(labels.shape)}")
        if labels.dtype.is_floating_point:
            raise ValueError(f"{name}: labels must be integer class indices, got dtype {labels.dtype}")
        labels = labels.long()
    else:
        if not isinstance(data, Dataset) and not hasattr(data, "__getitem__"):
            raise TypeError(f"{name} must be a torch Dataset of (image, label) or a pair of tensors, "
                            f"got {type(data).__name__}")
        if len(data) == 0:
            raise ValueError(f"{name} is empty")
        image_list, label_list = [], []
        first_shape = None
        for i in range(len(data)):
            item = data[i]
            if not isinstance(item, (tuple, list)) or len(item) < 2 or item[1] is None:
                raise ValueError(f"{name} must yield labelled items (image, label); item {i} is unlabeled "
                                 f"({type(item).__name__})")
            image = _to_tensor(item[0])
            label = item[1]
            if isinstance(label, torch.Tensor):
                if label.numel() != 1:
                    raise ValueError(f"{name}: item {i} has a non-scalar label of shape {tuple(label.shape)}")
                label = label.item()
            if isinstance(label, float) or not isinstance(label, int):
                try:
                    import numpy as np

                    if isinstance(label, np.integer):
                        label = int(label)
                except ImportError:  # pragma: no cover
                    pass
            if not isinstance(label, int) or isinstance(label, bool):
                raise ValueError(f"{name}: item {i} has label {label!r}; labels must be integer class indices")
            if first_shape is None:
                first_shape = tuple(image.shape)
            elif tuple(image.shape) != first_shape:
                raise ValueError(f"{name}: mismatched image sizes: item 0 has shape {first_shape} but item {i} "
                                 f"has {tuple(image.shape)}; resize them to one size (e.g. transforms.Resize)")
            image_list.append(image)
            label_list.append(label)
        images = torch.stack(image_list)
        labels = torch.tensor(label_list, dtype=torch.long)
        if num_classes is None and hasattr(data, "classes"):
            num_classes = len(data.classes)
    if images.shape[0] == 0:
        raise ValueError(f"{name} is empty")
    if images.ndim < 3:
        raise ValueError(f"{name}: images must be [N, C, *spatial], got shape {tuple(images.shape)}")
    if not torch.isfinite(images).all():
        raise ValueError(f"{name}: images contain NaN or inf")
    if num_classes is None:
        num_classes = int(labels.max()) + 1
    if int(labels.min()) < 0 or int(labels.max()) >= num_classes:
        raise ValueError(f"{name}: labels must lie in 0..{num_classes - 1}, got range "
                         f"{int(labels.min())}..{int(labels.max())}")
    return LabeledTensors(images.contiguous(), labels, int(num_classes))
