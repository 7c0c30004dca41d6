"""Per-batch monitoring quantities logged by the trainers: teacher-student forward KL and student entropy.

All values are computed in float32 under ``no_grad`` and returned as sums over the valid positions plus
the count, so callers can reduce across processes before dividing. Units: nats per token.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..losses import HeadTransform

__all__ = ["kl_entropy_sums", "kl_entropy_sums_chunked", "token_nll"]


@torch.no_grad()
def kl_entropy_sums(
    student_logits: torch.Tensor, teacher_logits: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Sums of ``KL(p_teacher || q_student)`` and ``H(q_student)`` over valid positions.

    Args:
        student_logits, teacher_logits: ``[..., V]`` logits over the same vocabulary.
        mask: bool ``[...]``, True where the position counts.

    Returns:
        ``(kl_sum, entropy_sum, n_valid)`` as 0-dim float32 tensors (n_valid as a float count).
    """
    s = student_logits[mask].float()
    t = teacher_logits[mask].float()
    lq, lp = F.log_softmax(s, -1), F.log_softmax(t, -1)
    kl = (lp.exp() * (lp - lq)).sum(-1)
    ent = -(lq.exp() * lq).sum(-1)
    return kl.sum(), ent.sum(), torch.tensor(float(s.shape[0]), device=s.device)


@torch.no_grad()
def kl_entropy_sums_chunked(
    student_hidden: torch.Tensor,
    student_head_weight: torch.Tensor,
    teacher_hidden: torch.Tensor,
    teacher_head_weight: torch.Tensor,
    mask: torch.Tensor,
    chunk_size: int,
    student_head_bias: torch.Tensor | None = None,
    teacher_head_bias: torch.Tensor | None = None,
    transforms: tuple[HeadTransform, HeadTransform] = (HeadTransform(), HeadTransform()),
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """As ``kl_entropy_sums`` from hidden states ``[..., H]`` and heads ``[V, H]``, ``chunk_size`` tokens at a time
    (each head output passed through its model's ``transforms`` entry, student first)."""
    hs, ht = student_hidden[mask], teacher_hidden[mask]
    kl_sum = torch.zeros((), device=hs.device)
    ent_sum = torch.zeros((), device=hs.device)
    for i in range(0, hs.shape[0], chunk_size):
        s = transforms[0](F.linear(hs[i : i + chunk_size], student_head_weight, student_head_bias))
        t = transforms[1](F.linear(ht[i : i + chunk_size], teacher_head_weight, teacher_head_bias))
        ones = torch.ones(s.shape[0], dtype=torch.bool, device=s.device)
        k, e, _ = kl_entropy_sums(s, t, ones)
        kl_sum, ent_sum = kl_sum + k, ent_sum + e
    return kl_sum, ent_sum, torch.tensor(float(hs.shape[0]), device=hs.device)


def token_nll(student_logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean token cross-entropy (nats) of ``labels`` under the student over valid positions (0 when none).

    Args:
        student_logits: ``[..., V]``; labels: int ``[...]`` (already shifted); mask: bool ``[...]``.
    """
    logits = student_logits[mask].float()
    if logits.shape[0] == 0:
        return student_logits.sum() * 0.0
    return F.cross_entropy(logits, labels[mask])
