"""A batch of independent SIREN neural fields (one per synthetic instance), evaluated with batched matmuls.

Field i maps a coordinate u in [-1, 1]^n to m outputs (spec B.1)::

    h_1 = sin(omega0_init * (W_1 u + b_1)),  h_l = sin(omega0 * (W_l h_{l-1} + b_l)) (l = 2..L),  y = W_{L+1} h_L + b_{L+1}

Parameters per field: P = n d + d + (L - 1)(d^2 + d) + d m + m.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["BatchedSiren", "coordinate_grid", "siren_parameter_count"]


def siren_parameter_count(dim_in: int, num_layers: int, width: int, dim_out: int) -> int:
    """P = n d + d + (L-1)(d^2 + d) + d m + m floats for one field."""
    return dim_in * width + width + (num_layers - 1) * (width * width + width) + width * dim_out + dim_out


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
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
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
