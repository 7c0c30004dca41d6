"""DDiF: every synthetic instance is a small SIREN field over coordinates, decodable at any resolution.

Budget (spec B.4): ``n = floor(ipc * C * prod(spatial) / P)`` fields per class with P the floats of one field,
so ``n * P <= ipc * C * prod(spatial)``; a budget below one field is an error. Coordinates may be 1-D (audio
[C, L]), 2-D (images [C, H, W]) or 3-D (voxels / video [C, D, H, W]); the field outputs the C channels.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import as_labeled_tensors
from .parameterization import SyntheticParameterization, check_ipc
from .siren import BatchedSiren, coordinate_grid, siren_parameter_count

__all__ = ["DDiFParameterization"]


class DDiFParameterization(SyntheticParameterization):
    """One independent SIREN per synthetic instance (DDiF, ICLR 2025).

    Args:
        num_classes, channels, spatial, ipc: the set's shape (spatial of length 1, 2 or 3) and nominal budget.
        width: hidden width d.  num_layers: sine layers L.  omega0_init / omega0: first / hidden frequency.
        fields_per_class: n; default ``floor(ipc * C * prod(spatial) / P)``. Must satisfy 1 <= n and n * P <= budget.

    Default optimiser: Adam with lr 1e-4 for DM, DC and TM (the papers use 5e-5 to 1e-4).
    """

    kind = "ddif"
    default_lrs = {"dm": 1e-4, "dc": 1e-4, "tm": 1e-4}

    def __init__(self, num_classes: int, channels: int, spatial: tuple[int, ...], ipc: int, width: int = 10,
                 num_layers: int = 2, omega0_init: float = 30.0, omega0: float = 10.0,
                 fields_per_class: int | None = None, seed: int = 0) -> None:
        check_ipc(ipc)
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) not in (1, 2, 3):
            raise ValueError(f"DDiF coordinates must be 1-, 2- or 3-dimensional; got spatial size {spatial}")
        for name, value in (("width", width), ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        per_field = siren_parameter_count(len(spatial), num_layers, width, channels)
        budget = ipc * channels * math.prod(spatial)
        if fields_per_class is None:
            fields_per_class = budget // per_field
            if fields_per_class < 1:
                raise ValueError(f"budget too small for one field: ipc*C*prod(spatial) = {budget} floats per class "
                                 f"but one field (width={width}, num_layers={num_layers}) has {per_field}; "
                                 "lower width/num_layers or raise ipc")
        if isinstance(fields_per_class, bool) or not isinstance(fields_per_class, int) or fields_per_class < 1 \
                or fields_per_class * per_field > budget:
            raise ValueError(f"fields_per_class must be an int in 1..{budget // per_field} (budget {budget} floats, "
                             f"{per_field} per field), got {fields_per_class!r}")
        super().__init__(num_classes, channels, spatial, ipc, instances_per_class=fields_per_class)
        self.width, self.num_layers = width, num_layers
        self.omega0_init, self.omega0 = float(omega0_init), float(omega0)
        self.field = BatchedSiren(self.num_instances, len(spatial), channels, width, num_layers, omega0_init, omega0,
                                  generator=torch.Generator().manual_seed(seed))
        self._grids: dict[tuple[int, ...], torch.Tensor] = {}

    @property
    def parameters_per_field(self) -> int:
        return self.field.parameters_per_field

    def _grid(self, shape: tuple[int, ...], device) -> torch.Tensor:
        key = tuple(shape)
        grid = self._grids.get(key)
        if grid is None or grid.device != device or grid.dtype != self.field.weights[0].dtype:
            grid = coordinate_grid(key, dtype=self.field.weights[0].dtype, device=device)
            self._grids[key] = grid
        return grid

    def _resolution(self, resolution) -> tuple[int, ...]:
        if resolution is None:
            return self.spatial
        shape = (resolution,) * len(self.spatial) if isinstance(resolution, int) else tuple(resolution)
        if len(shape) != len(self.spatial) or any(isinstance(s, bool) or not isinstance(s, int) for s in shape):
            raise ValueError(f"resolution must be an int or a tuple of {len(self.spatial)} ints, got {resolution!r}")
        return shape

    def decode_indices(self, indices, resolution=None) -> torch.Tensor:
        """Images [S, C, *resolution]: each field evaluated on the [-1, 1] grid of ``resolution`` (default: spatial)."""
        shape = self._resolution(resolution)
        values = self.field(self._grid(shape, self.field.weights[0].device), indices)  # [S, P, C]
        return values.transpose(1, 2).reshape(values.shape[0], self.channels, *shape)

    @classmethod
    def from_real(cls, dataset_or_tensors, ipc: int, width: int = 10, num_layers: int = 2,
                  omega0_init: float = 30.0, omega0: float = 10.0, fields_per_class: int | None = None,
                  init_steps: int = 5000, init_lr: float = 5e-4, seed: int = 0,
                  progress: bool = False) -> DDiFParameterization:
        """Fit field i to a distinct random real image of its class (full-batch MSE, Adam, spec B.5).

        All fields are fitted at once: the summed loss gives each field exactly its own MSE gradient and Adam is
        element-wise, so this equals independent fits. ``init_steps=0`` keeps the random SIREN init.

        Raises ValueError for ipc <= 0, a budget below one field, or a class with fewer than n images.
        """
        check_ipc(ipc)
        if isinstance(init_steps, bool) or not isinstance(init_steps, int) or init_steps < 0:
            raise ValueError(f"init_steps must be a non-negative int, got {init_steps!r}")
        if not isinstance(init_lr, (int, float)) or not init_lr > 0:
            raise ValueError(f"init_lr must be a positive float, got {init_lr!r}")
        real = as_labeled_tensors(dataset_or_tensors)
        param = cls(real.num_classes, real.channels, real.spatial, ipc, width=width, num_layers=num_layers,
                    omega0_init=omega0_init, omega0=omega0, fields_per_class=fields_per_class, seed=seed)
        n = param.instances_per_class
        real.require_per_class(n, f"DDiF with ipc={ipc} ({n} fields per class)")
        generator = torch.Generator().manual_seed(seed)
        targets = torch.cat([real.sample_class(c, n, generator) for c in range(real.num_classes)])
        param.fit(targets, steps=init_steps, lr=init_lr, progress=progress)
        return param

    def fit(self, targets: torch.Tensor, steps: int, lr: float = 5e-4, progress: bool = False) -> list[float]:
        """Regress every field onto ``targets [N, C, *spatial]`` with Adam; returns the mean MSE before each step."""
        if tuple(targets.shape) != (self.num_instances, self.channels, *self.spatial):
            raise ValueError(f"targets must have shape {(self.num_instances, self.channels, *self.spatial)}, "
                             f"got {tuple(targets.shape)}")
        optimizer = torch.optim.Adam(self.parameters(), lr=lr)
        history = []
        for _ in tqdm(range(steps), desc="DDiF warm-up", disable=not progress, leave=False):
            per_field = (self.decode_indices(None) - targets).pow(2).flatten(1).mean(1)
            optimizer.zero_grad(set_to_none=True)
            per_field.sum().backward()
            optimizer.step()
            history.append(float(per_field.detach().mean()))
        return history

    def make_optimizer(self, objective: str = "dm", lr: float | None = None) -> torch.optim.Optimizer:
        lr = self.default_lr(objective) if lr is None else lr
        if not isinstance(lr, (int, float)) or not lr > 0 or not math.isfinite(lr):
            raise ValueError(f"lr must be a positive finite float, got {lr!r}")
        return torch.optim.Adam(self.parameters(), lr=lr)

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "num_layers": self.num_layers,
                "omega0_init": self.omega0_init, "omega0": self.omega0,
                "fields_per_class": self.instances_per_class}
