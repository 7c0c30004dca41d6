"""2-D DCT-II as matrices, in FreD's reference (unnormalised, SciPy ``norm=None``) or orthonormal convention.

1-D reference transform of a length-N signal (``scipy.fft.dct(type=2, norm=None)``)::

    X_k = 2 * sum_n x_n cos(pi k (2n + 1) / (2N))

The orthonormal transform (``norm="ortho"``) is X^o_k = X_k / s_k with s_0 = 2 sqrt(N), s_k = sqrt(2N) (k >= 1),
so in 2-D ``X^u[k, l] = s_k s_l X^o[k, l]``.

Learning-rate conversion: plain SGD on reference coefficients with rate ``lr_reference`` moves the
image exactly like SGD on orthonormal coefficients with the per-coefficient rate
``lr_reference / (s_k^2 s_l^2)``, i.e. ``lr_reference / (4 H W)`` for k, l >= 1, half that on the first row and
column and a quarter at (0, 0). :func:`ortho_learning_rates` returns that [H, W] map; a single orthonormal
learning rate that matches the bulk of the spectrum is ``lr_reference / (4 H W)``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import torch

from ..registry import check_choice

__all__ = ["DCT_CONVENTIONS", "dct2", "dct_matrix", "dct_scales", "idct2", "ortho_learning_rates"]

DCT_CONVENTIONS = ("reference", "ortho")


def _check_convention(convention: str) -> None:
    check_choice("convention", convention, DCT_CONVENTIONS)


def dct_matrix(n: int, convention: str = "reference", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The [n, n] matrix D with ``X = D @ x`` the 1-D DCT-II of a length-n signal ``x``."""
    _check_convention(convention)
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"n must be a positive int, got {n!r}")
    k = torch.arange(n, dtype=torch.float64)[:, None]
    i = torch.arange(n, dtype=torch.float64)[None, :]
    matrix = 2.0 * torch.cos(math.pi * k * (2 * i + 1) / (2 * n))
    if convention == "ortho":
        matrix = matrix / dct_scales(n)[:, None]
    return matrix.to(dtype)


def dct_scales(n: int) -> torch.Tensor:
    """s [n] (float64): reference coefficient = s_k * orthonormal coefficient; s_0 = 2 sqrt(n), else sqrt(2n)."""
    scales = torch.full((n,), math.sqrt(2.0 * n), dtype=torch.float64)
    scales[0] = 2.0 * math.sqrt(n)
    return scales


@lru_cache(maxsize=32)
def _matrix64(n: int, convention: str, inverse: bool) -> torch.Tensor:
    matrix = dct_matrix(n, convention)
    return torch.linalg.inv(matrix) if inverse else matrix


def _matrices(h: int, w: int, convention: str, dtype: torch.dtype, device, inverse: bool):
    dh, dw = _matrix64(h, convention, inverse), _matrix64(w, convention, inverse)
    return dh.to(device=device, dtype=dtype), dw.to(device=device, dtype=dtype)


def dct2(x: torch.Tensor, convention: str = "reference") -> torch.Tensor:
    """2-D DCT-II over the last two axes of ``x [..., H, W]`` (differentiable); same shape and dtype."""
    _check_convention(convention)
    dh, dw = _matrices(x.shape[-2], x.shape[-1], convention, x.dtype, x.device, inverse=False)
    return dh @ x @ dw.T


def idct2(coefficients: torch.Tensor, convention: str = "reference") -> torch.Tensor:
    """Exact inverse of :func:`dct2` over the last two axes of ``coefficients [..., H, W]`` (differentiable)."""
    _check_convention(convention)
    ah, aw = _matrices(coefficients.shape[-2], coefficients.shape[-1], convention, coefficients.dtype,
                       coefficients.device, inverse=True)
    return ah @ coefficients @ aw.T


def ortho_learning_rates(lr_reference: float, height: int, width: int) -> torch.Tensor:
    """Per-coefficient orthonormal SGD rates [H, W] equivalent to SGD with ``lr_reference`` on reference coefficients."""
    return lr_reference / (dct_scales(height)[:, None] ** 2 * dct_scales(width)[None, :] ** 2)
