"""Input checks, valid-position gathering and the token-level mean shared by every full-logit loss."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch
from torch import Tensor

if TYPE_CHECKING:
    from .loss import Loss

__all__ = ["apply_kernel", "check_finite", "check_mask", "compute_dtype", "gather_rows"]

_FLOATS = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def compute_dtype(*tensors: Tensor) -> torch.dtype:
    """fp64 if any input is fp64, else fp32 (half precision is always upcast)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _check_float(name: str, x: object) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dtype not in _FLOATS:
        raise TypeError(
            f"{name} must have a float dtype (float16, bfloat16, float32, float64), got {x.dtype}"
        )
    if x.dim() < 1:
        raise ValueError(f"{name} must have shape [..., V], got a 0-dim tensor")
    return x


def check_mask(mask: Tensor | None, leading_shape: torch.Size, device: torch.device) -> Tensor | None:
    """Validate a bool position mask of shape ``leading_shape`` (True = the position counts)."""
    if mask is None:
        return None
    if not isinstance(mask, Tensor) or mask.dtype != torch.bool:
        raise TypeError(
            f"mask must be a bool tensor of shape {tuple(leading_shape)} (e.g. labels != -100), "
            f"got {getattr(mask, 'dtype', type(mask).__name__)}"
        )
    if mask.shape != leading_shape:
        raise ValueError(
            f"mask must have shape {tuple(leading_shape)} (the logits without V), got {tuple(mask.shape)}"
        )
    return mask.to(device)


def gather_rows(
    student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None
) -> tuple[Tensor, Tensor, int]:
    """Check the pair of logits and return the valid rows ``b, a: [N_valid, V]`` (compute dtype) and N_valid.

    The teacher rows are detached: the teacher is a constant.
    """
    b = _check_float("student_logits", student_logits)
    a = _check_float("teacher_logits", teacher_logits)
    if b.shape[-1] != a.shape[-1]:
        raise ValueError(
            f"student_logits and teacher_logits must share the vocabulary (last) dimension, "
            f"got {b.shape[-1]} and {a.shape[-1]}; slice both to the common vocabulary first"
        )
    if b.shape != a.shape:
        raise ValueError(
            f"student_logits {tuple(b.shape)} and teacher_logits {tuple(a.shape)} must have the same shape"
        )
    mask = check_mask(mask, b.shape[:-1], b.device)
    dtype = compute_dtype(b, a)
    vocab = b.shape[-1]
    if mask is None:
        b, a = b.reshape(-1, vocab), a.reshape(-1, vocab)
    else:
        b, a = b[mask], a[mask]
    return b.to(dtype), a.detach().to(dtype), b.shape[0]


def check_finite(value: Tensor, kernel: Loss) -> Tensor:
    """``value`` (0-dim) if finite, else a ValueError: a loss never returns NaN or inf."""
    if not bool(torch.isfinite(value)):
        raise ValueError(
            f"{kernel!r} is {value.item()} on these logits: finite logits can still overflow "
            f"{str(value.dtype).removeprefix('torch.')} (e.g. an AB divergence with a negative exponent is unbounded "
            "where one model's probability underflows to 0; logit differences beyond ~1e19 overflow squared); pass "
            "float64 logits or mask those positions"
        )
    return value


class _KernelLoss(torch.autograd.Function):
    """Token-level mean of a kernel whose gradient is computed in closed form during the forward pass.

    Saves only ``d loss / d b`` (``[N, V]``) instead of an autograd graph of ``[N, V]`` intermediates.
    First-order gradients only (no double backward).
    """

    @staticmethod
    def forward(ctx, kernel: Loss, b: Tensor, a: Tensor, n_valid: int) -> Tensor:
        values, grad = kernel.value_and_grad(b, a)
        ctx.grad = grad.div_(max(n_valid, 1))
        return check_finite(values.sum() / max(n_valid, 1), kernel)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[None, Tensor, None, None]:
        return None, ctx.grad * grad_output.to(ctx.grad.dtype), None, None


def apply_kernel(
    kernel: Loss, student_logits: Tensor, teacher_logits: Tensor, mask: Tensor | None
) -> Tensor:
    """Token-level mean of ``kernel`` over the valid positions of the whole batch (0 when none is valid).

    With gradients enabled the per-token gradient comes from the kernel's closed form (one pass, no graph).
    A non-finite result is a ValueError (``check_finite``).
    """
    b, a, n_valid = gather_rows(student_logits, teacher_logits, mask)
    if torch.is_grad_enabled() and b.requires_grad:
        return _KernelLoss.apply(kernel, b, a, n_valid)
    return check_finite(kernel.value(b, a).sum() / max(n_valid, 1), kernel)
