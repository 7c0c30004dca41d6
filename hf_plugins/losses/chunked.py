"""Memory-lean losses straight from hidden states: logits are projected chunk by chunk, never in full.

``chunked(name, ...)`` equals ``get(name, **options)(h_s @ W_s.T + b_s, h_t @ W_t.T + b_t, mask)`` in value
and in gradient (with respect to the student's hidden states, head weight and head bias), without ever
holding either model's ``[N, V]`` logits. Each chunk of positions is projected, its per-token values and
the closed-form gradient ``d loss / d logits`` are computed under no_grad, and that gradient is pushed
through the projection at once (``grad_h = G W``, ``grad_W += G^T h``, ``grad_bias += sum G``); the chunk's
logits are then freed. Backward only scales the stored gradients, so nothing is recomputed. A model's own
head transform (``HeadTransform``: soft-capping or a logit scale) is applied to each chunk's logits and its
derivative chained into ``G``, so the loss equals the one on ``model(...).logits``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .head_transform import HeadTransform
from .loss import Loss
from .reduction import check_finite, check_mask
from .registry import get

__all__ = ["CHUNK_ELEMENTS", "chunked", "default_chunk_size"]

# automatic chunk size: about this many logits per [chunk, V] tensor (32 MB in fp32), so the per-chunk
# temporaries stay small and are recycled by the allocator instead of being mapped afresh each time
CHUNK_ELEMENTS = 1 << 23


def default_chunk_size(vocab: int) -> int:
    """Positions per chunk for vocabulary size ``vocab``: ``2^23 / V`` rounded down to a multiple of 8, in [8, 1024]."""
    return max(8, min(1024, (CHUNK_ELEMENTS // max(vocab, 1)) // 8 * 8))


def _check_head(prefix: str, hidden: object, weight: object, bias: object) -> None:
    for name, x in ((f"{prefix}_hidden", hidden), (f"{prefix}_head_weight", weight)):
        if not isinstance(x, Tensor) or not x.is_floating_point():
            raise TypeError(f"{name} must be a floating-point torch.Tensor, got {type(x).__name__}")
    if hidden.dim() < 1 or weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(
            f"{prefix}_head_weight must have shape [V, H] with H = {prefix}_hidden.shape[-1]; "
            f"got {tuple(weight.shape)} and hidden {tuple(hidden.shape)}"
        )
    if bias is not None:
        if not isinstance(bias, Tensor) or not bias.is_floating_point():
            raise TypeError(f"{prefix}_head_bias must be a floating-point torch.Tensor or None")
        if bias.shape != weight.shape[:1]:
            raise ValueError(
                f"{prefix}_head_bias must have shape [V] = {tuple(weight.shape[:1])}, got {tuple(bias.shape)}"
            )


def _project(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    return hidden @ weight.t() if bias is None else torch.addmm(bias, hidden, weight.t())


def _chunk_loop(
    kernel: Loss,
    chunk_size: int,
    tensors: tuple[Tensor, Tensor, Tensor | None, Tensor, Tensor, Tensor | None],
    dtype: torch.dtype,
    wants: tuple[bool, bool, bool],
    transforms: tuple[HeadTransform, HeadTransform] = (HeadTransform(), HeadTransform()),
) -> tuple[Tensor, Tensor | None, Tensor | None, Tensor | None]:
    """Sum of per-token values over all rows and (as requested) its gradients w.r.t. h_s, W_s, bias_s."""
    h_s, w_s, bias_s, h_t, w_t, bias_t = tensors
    f_s, f_t = transforms
    w_s, w_t = w_s.detach().to(dtype), w_t.detach().to(dtype)
    bias_s = None if bias_s is None else bias_s.detach().to(dtype)
    bias_t = None if bias_t is None else bias_t.detach().to(dtype)
    n = h_s.shape[0]
    total = torch.zeros((), dtype=dtype, device=h_s.device)
    grad_h = torch.empty((n, w_s.shape[1]), dtype=dtype, device=h_s.device) if wants[0] else None
    grad_w = torch.zeros_like(w_s) if wants[1] else None
    grad_bias = torch.zeros(w_s.shape[0], dtype=dtype, device=h_s.device) if wants[2] else None
    need_grad = any(wants)
    with torch.no_grad():
        for start in range(0, n, chunk_size):
            rows = slice(start, min(start + chunk_size, n))
            hs = h_s[rows].detach().to(dtype)
            zs = f_s(_project(hs, w_s, bias_s))
            zt = f_t(_project(h_t[rows].detach().to(dtype), w_t, bias_t))
            if not need_grad:
                total += kernel.value(zs, zt).sum()
                continue
            values, g = kernel.value_and_grad(zs, zt)
            g = f_s.chain(g, zs)
            del zs, zt
            total += values.sum()
            if grad_h is not None:
                torch.mm(g, w_s, out=grad_h[rows])
            if grad_w is not None:
                grad_w.addmm_(g.t(), hs)
            if grad_bias is not None:
                grad_bias += g.sum(0)
    return total, grad_h, grad_w, grad_bias


class _ChunkedLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, kernel, chunk_size, dtype, transforms, h_s, w_s, bias_s, h_t, w_t, bias_t):
        wants = (ctx.needs_input_grad[4], ctx.needs_input_grad[5], ctx.needs_input_grad[6])
        total, grad_h, grad_w, grad_bias = _chunk_loop(
            kernel, chunk_size, (h_s, w_s, bias_s, h_t, w_t, bias_t), dtype, wants, transforms
        )
        scale = 1.0 / max(h_s.shape[0], 1)
        ctx.grads = [
            None if g is None else (g * scale).to(x.dtype)
            for g, x in ((grad_h, h_s), (grad_w, w_s), (grad_bias, bias_s))
        ]
        return check_finite(total * scale, kernel)

    @staticmethod
    def backward(ctx, grad_output):
        grads = [None if g is None else g * grad_output.to(g.dtype) for g in ctx.grads]
        return (None, None, None, None, *grads, None, None, None)


def chunked(
    name: str | Loss,
    student_hidden: Tensor,
    student_head_weight: Tensor,
    teacher_hidden: Tensor,
    teacher_head_weight: Tensor,
    mask: Tensor | None = None,
    chunk_size: int | None = None,
    student_head_bias: Tensor | None = None,
    teacher_head_bias: Tensor | None = None,
    student_head_transform: HeadTransform | None = None,
    teacher_head_transform: HeadTransform | None = None,
    **options: object,
) -> Tensor:
    """Loss ``name`` (any of ``LOSS_NAMES``, with its ``options``) computed from hidden states chunk by chunk.

    Args:
        name: loss name, e.g. "amid", "csd", "generalized_jsd"; or a configured ``Loss`` (then no ``options``).
        student_hidden: ``[..., H_s]`` final hidden states of the student (before its LM head).
        student_head_weight: ``[V, H_s]`` student LM-head weight (logits = hidden @ weight.T + bias).
        teacher_hidden: ``[..., H_t]`` teacher hidden states (same leading shape; constants).
        teacher_head_weight: ``[V, H_t]`` teacher LM-head weight (constant).
        mask: bool ``[...]``, True where the position counts; None = every position.
        chunk_size: positions projected at a time (None: ``default_chunk_size(V)``, about 2^23 logits per
            chunk); peak extra memory is a few ``[chunk_size, V]`` tensors.
        student_head_bias, teacher_head_bias: optional ``[V]`` head biases.
        student_head_transform, teacher_head_transform: the models' own transform of the head output
            (``head_transform(model)``: Gemma's soft-capping, Cohere's / Granite's logit scale); None = identity.
        **options: the loss's options (validated before any work).

    Returns:
        0-dim tensor (fp32, or fp64 if any input is fp64): the token-level mean over valid positions, equal
        to the full-logit loss; gradients flow to ``student_hidden``, ``student_head_weight`` and
        ``student_head_bias``.
    """
    if isinstance(name, Loss) and options:
        raise TypeError(f"options {sorted(options)} given with a configured {name!r}; set them on the Loss instead")
    kernel = name if isinstance(name, Loss) else get(name, **options)
    if chunk_size is not None and (
        isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1
    ):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    _check_head("student", student_hidden, student_head_weight, student_head_bias)
    _check_head("teacher", teacher_hidden, teacher_head_weight, teacher_head_bias)
    if student_head_weight.shape[0] != teacher_head_weight.shape[0]:
        raise ValueError(
            f"student and teacher heads must share the vocabulary size V, got {student_head_weight.shape[0]} "
            f"and {teacher_head_weight.shape[0]}; slice both heads to the common vocabulary first"
        )
    if student_hidden.shape[:-1] != teacher_hidden.shape[:-1]:
        raise ValueError(
            f"student_hidden {tuple(student_hidden.shape)} and teacher_hidden {tuple(teacher_hidden.shape)} "
            "must have the same leading (position) shape"
        )
    transforms = []
    for role, f in (("student", student_head_transform), ("teacher", teacher_head_transform)):
        if f is not None and not isinstance(f, HeadTransform):
            raise TypeError(f"{role}_head_transform must be a HeadTransform or None, got {type(f).__name__}")
        transforms.append(HeadTransform() if f is None else f)
    transforms = tuple(transforms)
    mask = check_mask(mask, student_hidden.shape[:-1], student_hidden.device)
    if chunk_size is None:
        chunk_size = default_chunk_size(student_head_weight.shape[0])
    if mask is None:
        h_s = student_hidden.reshape(-1, student_hidden.shape[-1])
        h_t = teacher_hidden.reshape(-1, teacher_hidden.shape[-1])
    else:
        h_s, h_t = student_hidden[mask], teacher_hidden[mask]
    inputs = (student_hidden, student_head_weight, teacher_hidden, teacher_head_weight)
    dtype = torch.float64 if any(x.dtype == torch.float64 for x in inputs) else torch.float32
    t_bias = None if teacher_head_bias is None else teacher_head_bias.detach()
    if not torch.is_grad_enabled():
        tensors = (h_s, student_head_weight, student_head_bias, h_t, teacher_head_weight, t_bias)
        total = _chunk_loop(kernel, chunk_size, tensors, dtype, (False, False, False), transforms)[0]
        return check_finite(total / max(h_s.shape[0], 1), kernel)
    return _ChunkedLoss.apply(
        kernel, chunk_size, dtype, transforms, h_s, student_head_weight, student_head_bias, h_t.detach(),
        teacher_head_weight.detach(), t_bias,
    )
