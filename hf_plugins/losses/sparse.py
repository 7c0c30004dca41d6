"""Losses against a sparse teacher: its top-k log-probabilities plus the log of the remaining tail mass.

A ``SparseTeacher`` holds, per position, ``ids [..., k]`` (the kept vocabulary entries), ``logprobs [..., k]``
(their teacher log-probabilities) and ``tail [...]`` (log of the teacher mass on every other entry; ``-inf``
when k = V). ``sparse(loss, student_logits, teacher, mask)`` computes any registered loss against it without
building a dense teacher tensor; each loss defines how the sparse teacher is used (``Loss.sparse_value_and_grad``):

* every divergence of ``p`` and ``q`` (KL, reverse KL, skew KLs, generalized JSD, TV, Jeffreys, alpha-beta, AMiD)
  is evaluated exactly on the k+1-bucket coarsening: the k kept entries plus one tail bucket, whose student
  probability is the student mass summed over the non-kept entries. Bias: for the f-divergences (KL, reverse
  KL, skew KLs, JSD, TV, Jeffreys) the coarsened value is <= the dense value (data-processing inequality), with
  equality when ``q/p`` is constant on the tail; inside the tail the student is only pushed as a whole (its
  gradient there is proportional to the student's own tail distribution). The alpha-beta divergence and AMiD's
  power-mean assistant do not commute with coarsening, so their error has no fixed sign; it vanishes as the
  tail mass goes to 0.
* CSD is restricted to the kept set with its weights renormalised over it (see ``CSDLoss``).

With k = V (tail ``-inf``) every sparse loss equals its dense loss in value and gradient.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .loss import Loss
from .reduction import check_finite, check_mask, compute_dtype

__all__ = ["SparseTeacher", "sparse", "top_k_teacher"]


@dataclass(frozen=True)
class SparseTeacher:
    """Top-k teacher distribution per position: ``ids`` int ``[..., k]``, ``logprobs`` ``[..., k]``, ``tail`` ``[...]``."""

    ids: Tensor
    logprobs: Tensor
    tail: Tensor

    def __post_init__(self) -> None:
        if self.ids.dtype.is_floating_point or self.ids.dtype == torch.bool:
            raise TypeError(f"ids must be an integer tensor, got {self.ids.dtype}")
        if self.ids.shape != self.logprobs.shape or self.ids.shape[:-1] != self.tail.shape:
            raise ValueError(
                f"ids {tuple(self.ids.shape)} and logprobs {tuple(self.logprobs.shape)} must be [..., k] and tail "
                f"{tuple(self.tail.shape)} must be [...]"
            )


@torch.no_grad()
def top_k_teacher(teacher_logits: Tensor, top_k: int) -> SparseTeacher:
    """The sparse teacher of dense ``teacher_logits [..., V]``: top-k log-probabilities and log tail mass (fp32, fp64 for fp64 input)."""
    vocab = teacher_logits.shape[-1]
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= vocab:
        raise ValueError(f"top_k must be an int in [1, {vocab}], got {top_k!r}")
    logits = teacher_logits.to(compute_dtype(teacher_logits))
    lse = torch.logsumexp(logits, -1, keepdim=True)
    values, ids = logits.topk(top_k, dim=-1)
    rest = logits.scatter(-1, ids, float("-inf"))
    tail = (torch.logsumexp(rest, -1, keepdim=True) - lse).squeeze(-1)
    return SparseTeacher(ids, values - lse, tail)


def bucket_logits(b: Tensor, ids: Tensor) -> tuple[Tensor, Tensor]:
    """Student log-probabilities on the k+1 buckets ``[N, k+1]`` and the student's tail distribution ``[N, V]``.

    The tail distribution (0 on kept entries, 0 everywhere when the tail is empty) maps the tail bucket's
    gradient back onto the vocabulary.
    """
    lse = torch.logsumexp(b, -1, keepdim=True)
    rest = b.scatter(-1, ids, float("-inf"))
    lse_rest = torch.logsumexp(rest, -1, keepdim=True)
    finite = torch.isfinite(lse_rest)
    tail_dist = torch.exp(rest - torch.where(finite, lse_rest, torch.zeros_like(lse_rest)))
    return torch.cat([b.gather(-1, ids) - lse, lse_rest - lse], -1), tail_dist


def bucket_value_and_grad(loss: Loss, b: Tensor, ids: Tensor, lp: Tensor, tail: Tensor) -> tuple[Tensor, Tensor]:
    """``loss`` on the k+1-bucket coarsening: per-token values ``[N]`` and gradient w.r.t. ``b [N, V]``.

    The bucket log-probabilities are normalised, so the gradient w.r.t. the bucket logits ``g`` maps back as
    ``g_i`` on kept entry i and ``g_tail * q_j / Q_tail`` on non-kept entry j.
    """
    z, tail_dist = bucket_logits(b, ids)
    values, g = loss.value_and_grad(z, torch.cat([lp, tail.unsqueeze(-1)], -1))
    grad = tail_dist.mul_(g[:, -1:]).scatter_(-1, ids, g[:, :-1])
    return values, grad


class _SparseLoss(torch.autograd.Function):
    @staticmethod
    def forward(ctx, loss: Loss, b: Tensor, teacher: SparseTeacher, n_valid: int) -> Tensor:
        values, grad = loss.sparse_value_and_grad(b, teacher.ids, teacher.logprobs, teacher.tail)
        ctx.grad = grad.div_(max(n_valid, 1))
        return check_finite(values.sum() / max(n_valid, 1), loss)

    @staticmethod
    def backward(ctx, grad_output: Tensor) -> tuple[None, Tensor, None, None]:
        return None, ctx.grad * grad_output.to(ctx.grad.dtype), None, None


def sparse(loss: Loss, student_logits: Tensor, teacher: SparseTeacher, mask: Tensor | None = None) -> Tensor:
    """Token-level mean of ``loss`` between the student and a sparse teacher (0 when no position is valid).

    Args:
        loss: a configured loss (``hf_plugins.losses.get(name, ...)``).
        student_logits: ``[..., V]``; only the student receives gradient (closed form, one pass).
        teacher: a ``SparseTeacher`` whose leading shape is that of ``student_logits`` (``[...]``) or, with a
            ``mask``, the number of valid positions (``[N_valid]``, in row-major order of the mask).
        mask: bool ``[...]``, True where the position counts.
    """
    if not isinstance(loss, Loss):
        raise TypeError(f"loss must be a hf_plugins.losses.Loss, got {type(loss).__name__}")
    if not isinstance(teacher, SparseTeacher):
        raise TypeError(f"teacher must be a SparseTeacher, got {type(teacher).__name__}")
    vocab = student_logits.shape[-1]
    mask = check_mask(mask, student_logits.shape[:-1], student_logits.device)
    b = student_logits.reshape(-1, vocab) if mask is None else student_logits[mask]
    k = teacher.ids.shape[-1]
    ids, lp, tail = teacher.ids, teacher.logprobs, teacher.tail
    if mask is not None and ids.shape[:-1] == mask.shape:
        ids, lp, tail = ids[mask.to(ids.device)], lp[mask.to(ids.device)], tail[mask.to(ids.device)]
    ids, lp, tail = ids.reshape(-1, k), lp.reshape(-1, k), tail.reshape(-1)
    if ids.shape[0] != b.shape[0]:
        raise ValueError(f"teacher has {ids.shape[0]} positions but the student has {b.shape[0]} valid positions")
    if k > vocab or (ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab)):
        raise ValueError(f"teacher ids must lie in [0, {vocab}) (the student's vocabulary), at most {vocab} per row")
    dtype = compute_dtype(student_logits)
    t = SparseTeacher(ids.to(b.device, torch.long), lp.to(b.device, dtype), tail.to(b.device, dtype))
    b = b.to(dtype)
    if torch.is_grad_enabled() and b.requires_grad:
        return _SparseLoss.apply(loss, b, t, b.shape[0])
    values, _ = loss.sparse_value_and_grad(b, t.ids, t.logprobs, t.tail)
    return check_finite(values.sum() / max(b.shape[0], 1), loss)
