"""``SyntheticDataset``: a distilled set as an ordinary ``torch.utils.data.Dataset`` that decodes on access."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file
from torch.utils.data import Dataset

from ..persistence import read_json, read_safetensors
from .parameterization import PARAMETERIZATIONS, SyntheticParameterization
from .process_group import writer

__all__ = ["SyntheticDataset"]

_WEIGHTS, _CONFIG = "synthetic.safetensors", "synthetic.json"


class SyntheticDataset(Dataset):
    """Items ``(image [C, *spatial] float32 tensor, int label)`` decoded from ``parameterization``.

    The whole set is decoded once (without gradients) on first access and cached; call :meth:`refresh` after
    changing the storage. ``transform`` / ``target_transform`` are applied to each decoded tensor / label.

    Args:
        parameterization: the trained storage (Pixel / FreD / DDiF).
        transform, target_transform: torchvision-style callables.
        resolution: decoding resolution (DDiF only; default: the training resolution).
        metadata: JSON-serialisable extras kept with the set (e.g. ``learned_lr`` from TM).
    """

    def __init__(self, parameterization: SyntheticParameterization, transform: Callable | None = None,
                 target_transform: Callable | None = None, resolution: int | tuple[int, ...] | None = None,
                 metadata: dict[str, Any] | None = None) -> None:
        if not isinstance(parameterization, SyntheticParameterization):
            raise TypeError(f"parameterization must be a SyntheticParameterization, got {type(parameterization).__name__}")
        self.parameterization, self.transform, self.target_transform = parameterization, transform, target_transform
        self.resolution, self.metadata = resolution, dict(metadata or {})
        self._cache: tuple[torch.Tensor, torch.Tensor] | None = None

    def refresh(self) -> None:
        self._cache = None

    def to_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Decoded ``(images [N, C, *spatial], labels [N])`` without transforms (detached)."""
        if self._cache is None:
            with torch.no_grad():
                images, labels = self.parameterization.decode(self.resolution)
            self._cache = (images.detach().clone(), labels.clone())
        return self._cache

    @property
    def num_stored_floats(self) -> int:
        return self.parameterization.num_stored_floats

    @property
    def num_classes(self) -> int:
        return self.parameterization.num_classes

    @property
    def classes(self) -> list[str]:
        return [str(c) for c in range(self.num_classes)]

    def __len__(self) -> int:
        return self.parameterization.num_instances

    def __getitem__(self, index: int):
        images, labels = self.to_tensors()
        image, label = images[index], int(labels[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            label = self.target_transform(label)
        return image, label

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """Write ``path/synthetic.safetensors`` (the storage) and ``path/synthetic.json`` (kind, config, metadata).
        Transforms are not saved. Under a ``torch.distributed`` group rank 0 writes and the others wait."""
        path = Path(path)
        with writer() as write:  # rank 0 only under a process group; the others wait for it
            if write:
                path.mkdir(parents=True, exist_ok=True)
                state = {k: v.detach().contiguous() for k, v in self.parameterization.state_dict().items()}
                save_file(state, str(path / _WEIGHTS))
                config = {"format_version": 1, "kind": self.parameterization.kind,
                          "config": self.parameterization.config(), "resolution": self.resolution,
                          "metadata": self.metadata}
                (path / _CONFIG).write_text(json.dumps(config, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, transform: Callable | None = None,
                        target_transform: Callable | None = None) -> SyntheticDataset:
        """Rebuild a set written by :meth:`save_pretrained`: the storage is restored byte for byte.

        Raises:
            FileNotFoundError: a file is missing.  ValueError: a file is truncated or corrupt, or the storage
            does not fit the saved configuration (the message names the file and what wrote it).
        """
        path, writer = Path(path), "SyntheticDataset.save_pretrained"
        saved = read_json(path / _CONFIG, writer, required=("kind", "config"))
        state = read_safetensors(path / _WEIGHTS, writer)
        param = PARAMETERIZATIONS[saved["kind"]].target(**saved["config"])
        try:
            param.load_state_dict(state)
        except RuntimeError as err:  # missing / unexpected / mis-shaped tensors
            raise ValueError(f"{path / _WEIGHTS} does not fit {path / _CONFIG} ({err}); both are written by "
                             f"{writer}: save the set again") from err
        resolution = saved.get("resolution")
        return cls(param, transform, target_transform, tuple(resolution) if isinstance(resolution, list) else resolution,
                   saved.get("metadata"))

    save = save_pretrained  # the earlier names, kept as aliases
    load = from_pretrained

    def __repr__(self) -> str:
        return (f"SyntheticDataset({self.parameterization.kind}, {len(self)} instances, "
                f"{self.num_stored_floats} stored floats)")
