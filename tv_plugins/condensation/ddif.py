"""DDiF (arXiv 2503.04835): every synthetic instance is a small SIREN field over coordinates, decodable at any
resolution.

Field i maps a coordinate u in [-1, 1]^n to m outputs (SIREN, Sitzmann et al. 2020)::

    h_1 = sin(omega0_init * (W_1 u + b_1)),  h_l = sin(omega0 * (W_l h_{l-1} + b_l)) (l = 2..L),  y = W_{L+1} h_L + b_{L+1}

with ``P = n d + d + (L - 1)(d^2 + d) + d m + m`` floats; all fields are evaluated at once with batched matmuls.
Budget: ``n = floor(ipc * C * prod(spatial) / P)`` fields per class, so ``n * P <= ipc * C * prod(spatial)``; a
budget below one field is an error. Coordinates may be 1-D (audio [C, L]), 2-D (images [C, H, W]) or 3-D (voxels /
video [C, D, H, W]); the field outputs the C channels.
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from ..data import as_labeled_tensors
from ..registry import check_int, check_number
from .parameterization import PARAMETERIZATIONS, SyntheticParameterization, check_ipc

__all__ = ["BatchedSiren", "DDiFParameterization", "coordinate_grid", "siren_parameter_count"]


def siren_parameter_count(dim_in: int, num_layers: int, width: int, dim_out: int) -> int:
    """P = n d + d + (L-1)(d^2 + d) + d m + m floats for one field."""
    return dim_in * width + width + (num_layers - 1) * (width * width + width) + width * dim_out + dim_out


@lru_cache(maxsize=16)  # the decoding grids of a training run; callers never modify them
def coordinate_grid(shape: tuple[int, ...], dtype: torch.dtype = torch.float32, device=None) -> torch.Tensor:
    """All grid points of ``shape`` (row-major) mapped to [-1, 1]: [prod(shape), len(shape)].

    Row ``i*W + j`` of a 2-D grid is ``(2i/(H-1) - 1, 2j/(W-1) - 1)``; every axis is normalised by its own
    ``size - 1`` (the reference divides both by H - 1, the same for square images). Sizes must be >= 2.
    """
    if any(int(s) < 2 for s in shape):
        raise ValueError(f"every axis of a decoding resolution must be >= 2, got {tuple(shape)}")
    axes = [torch.arange(int(s), dtype=torch.float64) * (2.0 / (int(s) - 1)) - 1.0 for s in shape]
    grid = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, len(shape))
    return grid.to(dtype=dtype, device=device)


class BatchedSiren(nn.Module):
    """``num_fields`` independent SIRENs stored as stacked weights ``weight_l [N, out, in]``, ``bias_l [N, out]``.

    ``forward(coords [P, n], indices [S] | None) -> [S, P, m]``. Gradients of field i's output touch only
    field i's slices of the stacked tensors.
    """

    def __init__(self, num_fields: int, dim_in: int, dim_out: int, width: int, num_layers: int,
                 omega0_init: float = 30.0, omega0: float = 10.0, generator: torch.Generator | None = None) -> None:
        super().__init__()
        for name, value in (("num_fields", num_fields), ("dim_in", dim_in), ("dim_out", dim_out),
                            ("width", width), ("num_layers", num_layers)):
            check_int(name, value)
        self.num_fields, self.dim_in, self.dim_out = num_fields, dim_in, dim_out
        self.width, self.num_layers = width, num_layers
        self.omega0_init, self.omega0 = float(omega0_init), float(omega0)
        sizes = [dim_in] + [width] * num_layers + [dim_out]
        self.weights = nn.ParameterList()
        self.biases = nn.ParameterList()
        for layer, (fan_in, fan_out) in enumerate(zip(sizes[:-1], sizes[1:])):
            bound = 1.0 / fan_in if layer == 0 else math.sqrt(6.0 / fan_in) / self.omega0
            w = (torch.rand(num_fields, fan_out, fan_in, generator=generator) * 2 - 1) * bound
            b = (torch.rand(num_fields, fan_out, generator=generator) * 2 - 1) * bound
            self.weights.append(nn.Parameter(w))
            self.biases.append(nn.Parameter(b))

    @property
    def parameters_per_field(self) -> int:
        return siren_parameter_count(self.dim_in, self.num_layers, self.width, self.dim_out)

    def forward(self, coords: torch.Tensor, indices: torch.Tensor | None = None) -> torch.Tensor:
        h = coords
        last = len(self.weights) - 1
        for layer, (w, b) in enumerate(zip(self.weights, self.biases)):
            if indices is not None:
                w, b = w[indices], b[indices]
            # h: [P, in] for the first layer, [S, P, in] afterwards
            h = (torch.einsum("pi,soi->spo", h, w) if layer == 0 else torch.bmm(h, w.transpose(1, 2))) + b[:, None, :]
            if layer < last:
                h = torch.sin((self.omega0_init if layer == 0 else self.omega0) * h)
        return h


@PARAMETERIZATIONS.register("ddif")
class DDiFParameterization(SyntheticParameterization):
    """One independent SIREN per synthetic instance (DDiF, ICLR 2025).

    Args:
        num_classes, channels, spatial, ipc: the set's shape (spatial of length 1, 2 or 3) and nominal budget.
        width: hidden width d.  num_layers: sine layers L.  omega0_init / omega0: first / hidden frequency.
        fields_per_class: n; default ``floor(ipc * C * prod(spatial) / P)``. Must satisfy 1 <= n and n * P <= budget.

    Default optimiser: Adam with lr 1e-4 for DM, DC and TM (the papers use 5e-5 to 1e-4).
    """

    default_lrs = {"dm": 1e-4, "dc": 1e-4, "tm": 1e-4}
    optimizer_class, optimizer_options = torch.optim.Adam, {}

    def __init__(self, num_classes: int, channels: int, spatial: tuple[int, ...], ipc: int, width: int = 10,
                 num_layers: int = 2, omega0_init: float = 30.0, omega0: float = 10.0,
                 fields_per_class: int | None = None, seed: int = 0) -> None:
        check_ipc(ipc)
        spatial = tuple(int(s) for s in spatial)
        if len(spatial) not in (1, 2, 3):
            raise ValueError(f"DDiF coordinates must be 1-, 2- or 3-dimensional; got spatial size {spatial}")
        for name, value in (("width", width), ("num_layers", num_layers)):
            check_int(name, value)
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

    @property
    def parameters_per_field(self) -> int:
        return self.field.parameters_per_field

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
        weight = self.field.weights[0]
        values = self.field(coordinate_grid(shape, dtype=weight.dtype, device=weight.device), indices)  # [S, P, C]
        return values.transpose(1, 2).reshape(values.shape[0], self.channels, *shape)

    @classmethod
    def from_real(cls, dataset_or_tensors, ipc: int, width: int = 10, num_layers: int = 2,
                  omega0_init: float = 30.0, omega0: float = 10.0, fields_per_class: int | None = None,
                  init_steps: int = 5000, init_lr: float = 5e-4, seed: int = 0,
                  progress: bool = False) -> DDiFParameterization:
        """Fit field i to a distinct random real image of its class (full-batch MSE, Adam: DDiF's warm-up). All
        fields are fitted at once: the summed loss gives each field exactly its own MSE gradient and Adam is
        element-wise, so this equals independent fits; ``init_steps=0`` keeps the random SIREN init. Raises
        ValueError for ipc <= 0, a budget below one field, or a class with fewer than n images."""
        check_ipc(ipc)
        check_int("init_steps", init_steps, 0)
        check_number("init_lr", init_lr, positive=True)
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

    def config(self) -> dict[str, Any]:
        return {**super().config(), "width": self.width, "num_layers": self.num_layers,
                "omega0_init": self.omega0_init, "omega0": self.omega0,
                "fields_per_class": self.instances_per_class}
