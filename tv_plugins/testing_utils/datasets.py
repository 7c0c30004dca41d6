"""Offline image datasets in torchvision's conventions: sklearn digits and Debian's Fashion-MNIST."""

from __future__ import annotations

import gzip
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.datasets import FashionMNIST, VisionDataset

__all__ = ["DEBIAN_FASHION_MNIST_DIR", "DigitsDataset", "load_fashion_mnist"]

DEBIAN_FASHION_MNIST_DIR = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
_DIGITS_SIZES = (8, 16, 28, 32)


class DigitsDataset(VisionDataset):
    """sklearn's 1797 handwritten digits as a torchvision ``VisionDataset`` (MNIST conventions).

    Items are ``(PIL.Image mode "L", int label)`` like ``torchvision.datasets.MNIST``, so the usual
    transforms (``ToTensor``, ``Normalize``, ``Resize``, ...) apply. ``data`` holds the uint8 images
    ``[N, H, W]`` (values 0..255) and ``targets`` the labels ``[N]``.

    Args:
        root: unused location (the data ships inside scikit-learn); kept for torchvision's signature.
        train: the training part (True) or the held-out test part (False).
        image_size: side in pixels: 8 (native) or 16/28/32 (bilinear upsampling of the 8x8 images).
        transform, target_transform: applied to the image / the label on access.
        test_fraction: share of each class held out for the test part, in (0, 1).
        seed: seed of the stratified split (same seed, same split).
    """

    classes = [str(d) for d in range(10)]

    def __init__(
        self,
        root: str | os.PathLike | None = None,
        train: bool = True,
        image_size: int = 8,
        transform: Callable | None = None,
        target_transform: Callable | None = None,
        test_fraction: float = 0.2,
        seed: int = 0,
    ) -> None:
        if image_size not in _DIGITS_SIZES:
            raise ValueError(f"image_size must be one of {_DIGITS_SIZES}, got {image_size!r}")
        if not isinstance(test_fraction, (int, float)) or not 0.0 < test_fraction < 1.0:
            raise ValueError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
        super().__init__(root if root is not None else "", transform=transform, target_transform=target_transform)
        from sklearn.datasets import load_digits

        digits = load_digits()
        images = torch.from_numpy(digits.images.astype(np.float32) * (255.0 / 16.0))
        labels = torch.from_numpy(digits.target.astype(np.int64))
        rng = np.random.default_rng(seed)
        test_idx = []
        for c in range(10):
            idx = np.flatnonzero(digits.target == c)
            n_test = max(1, round(test_fraction * len(idx)))
            test_idx.append(rng.permutation(idx)[:n_test])
        test_mask = np.zeros(len(labels), dtype=bool)
        test_mask[np.concatenate(test_idx)] = True
        keep = torch.from_numpy(~test_mask if train else test_mask)
        images, labels = images[keep], labels[keep]
        if image_size != 8:
            images = F.interpolate(images[:, None], size=(image_size, image_size), mode="bilinear", align_corners=False)[:, 0]
        self.data = images.round().clamp(0, 255).to(torch.uint8)
        self.targets = labels
        self.train = train
        self.image_size = image_size

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[Any, Any]:
        image = Image.fromarray(self.data[index].numpy(), mode="L")
        target = int(self.targets[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def extra_repr(self) -> str:
        return f"Split: {'Train' if self.train else 'Test'}\nImage size: {self.image_size}"


def load_fashion_mnist(
    root: str | os.PathLike | None = None,
    train: bool = True,
    transform: Callable | None = None,
    target_transform: Callable | None = None,
    source_dir: str | os.PathLike = DEBIAN_FASHION_MNIST_DIR,
) -> FashionMNIST:
    """Fashion-MNIST from the Debian package ``dataset-fashion-mnist``, as ``torchvision.datasets.FashionMNIST``.

    The package installs the gzipped IDX files under ``source_dir``; they are decompressed once into
    ``root/FashionMNIST/raw/`` (torchvision's layout), after which torchvision loads them with
    ``download=False``.

    Args:
        root: torchvision root; default ``$DISTILL_PLUGINS_CACHE/datasets`` (``~/.cache/distill-plugins``).
        train, transform, target_transform: as in ``torchvision.datasets.FashionMNIST``.
        source_dir: where the Debian package put the ``*-ubyte.gz`` files.

    Raises:
        FileNotFoundError: the files are in neither place; the message says how to install them.
    """
    if root is None:
        root = Path(os.environ.get("DISTILL_PLUGINS_CACHE", Path.home() / ".cache" / "distill-plugins")) / "datasets"
    raw = Path(root) / "FashionMNIST" / "raw"
    missing = [name for name in _FASHION_FILES if not (raw / name).exists()]
    if missing:
        source = Path(source_dir)
        absent = [name for name in missing if not (source / f"{name}.gz").exists() and not (source / name).exists()]
        if absent:
            raise FileNotFoundError(
                f"Fashion-MNIST files {absent} were found neither in {raw} nor in {source}. Install the Debian "
                "package (`apt-get update && apt-get install dataset-fashion-mnist`), or pass source_dir= "
                "pointing at the *-ubyte.gz files."
            )
        raw.mkdir(parents=True, exist_ok=True)
        for name in missing:
            tmp = raw / f"{name}.partial"
            if (source / name).exists():
                shutil.copyfile(source / name, tmp)
            else:
                with gzip.open(source / f"{name}.gz", "rb") as fin, open(tmp, "wb") as fout:
                    shutil.copyfileobj(fin, fout)
            tmp.replace(raw / name)
    return FashionMNIST(str(root), train=train, transform=transform, target_transform=target_transform, download=False)
