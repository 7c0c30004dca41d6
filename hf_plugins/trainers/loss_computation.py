"""The loss step shared by every trainer here: aligned logits (or chunked heads) -> divergence + logs.

Conventions (those of the AMiD and CSD reference training loops): the logits at position t predict token t+1, so the student/teacher logits are
``[:, :-1]`` and the labels/mask ``[:, 1:]``; the mask is ``labels != -100`` (prompt and padding excluded, the
final EOS included). Both heads are cut to the tokenizer's ``V_tok`` rows before any softmax. The teacher runs
in eval mode under ``no_grad`` on the identical ``input_ids``/``attention_mask``. The divergence is the
token-level mean over the micro-batch's valid positions (the ``hf_plugins.losses`` reduction).

Logged per batch (through the trainer's ``_metrics``, so they reach the normal Trainer logs):
``distill_loss`` (the value of the loss itself, never a gradient surrogate), ``teacher_student_kl``
(``KL(p_teacher || q_student)``, nats/token), ``student_entropy`` (nats/token) and ``nll`` (student
cross-entropy of the labels, nats/token; also the DistiLLM validation signal).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..losses import HeadTransform, Loss, chunked
from .batch_metrics import kl_entropy_sums, kl_entropy_sums_chunked, token_nll

__all__ = ["LossTerms", "chunked_terms", "full_logit_terms"]


@dataclass
class LossTerms:
    """Per-micro-batch results. ``distill`` and ``nll`` are token means (nats); sums are float32 0-dim tensors."""

    distill: torch.Tensor
    nll: torch.Tensor | None
    kl_sum: torch.Tensor
    entropy_sum: torch.Tensor
    n_valid: torch.Tensor


def full_logit_terms(
    loss: Loss,
    student_logits: torch.Tensor,
    teacher_logits: torch.Tensor,
    labels: torch.Tensor,
    vocab_size: int,
    need_nll: bool,
) -> LossTerms:
    """Loss terms from full logits.

    Args:
        loss: the configured divergence, ``loss(student [..., V], teacher [..., V], mask) -> 0-dim``.
        student_logits, teacher_logits: unshifted ``[B, T, V_s]`` / ``[B, T, V_t]`` model outputs.
        labels: ``[B, T]`` with -100 on prompt and padding (unshifted, as the collator returns them).
        vocab_size: ``V_tok``; heads are cut to this many rows.
        need_nll: also return the student's token NLL of the labels (with gradient).
    """
    s = student_logits[:, :-1, :vocab_size]
    t = teacher_logits[:, :-1, :vocab_size]
    shifted = labels[:, 1:]
    mask = shifted != -100
    distill = loss(s, t, mask)
    nll = token_nll(s, shifted, mask) if need_nll else None
    kl, ent, n = kl_entropy_sums(s.detach(), t.detach(), mask)
    return LossTerms(distill, nll, kl, ent, n)


def _chunked_nll(hidden, weight, bias, labels, chunk_size, transform: HeadTransform) -> torch.Tensor:
    total = hidden.new_zeros((), dtype=torch.float32)
    n = hidden.shape[0]
    for i in range(0, n, chunk_size):
        logits = transform(F.linear(hidden[i : i + chunk_size], weight, bias).float())
        total = total + F.cross_entropy(logits, labels[i : i + chunk_size], reduction="sum")
    return total / max(n, 1)


def chunked_terms(
    loss: Loss,
    student_hidden: torch.Tensor,
    student_head: torch.nn.Module,
    teacher_hidden: torch.Tensor,
    teacher_head: torch.nn.Module,
    labels: torch.Tensor,
    vocab_size: int,
    chunk_size: int,
    need_nll: bool,
    transforms: tuple[HeadTransform, HeadTransform] = (HeadTransform(), HeadTransform()),
) -> LossTerms:
    """Loss terms from final hidden states, never building the ``[B, T, V]`` logits.

    Args:
        student_hidden, teacher_hidden: ``[B, T', H_s]`` / ``[B, T', H_t]`` hidden states already aligned with
            ``labels`` (position t predicts ``labels[:, t]``).
        student_head, teacher_head: the ``nn.Linear`` output heads (rows beyond ``vocab_size`` are dropped).
        labels: ``[B, T']`` shifted labels, -100 where excluded.
        chunk_size: tokens per chunk handed to ``hf_plugins.losses.chunked``.
        transforms: the student's and teacher's ``head_transform`` (applied to every head output here).
    """
    mask = labels != -100
    ws, wt = student_head.weight[:vocab_size], teacher_head.weight[:vocab_size]
    bs = student_head.bias[:vocab_size] if getattr(student_head, "bias", None) is not None else None
    bt = teacher_head.bias[:vocab_size] if getattr(teacher_head, "bias", None) is not None else None
    wt = wt.to(teacher_hidden.dtype)
    distill = chunked(
        loss, student_hidden, ws, teacher_hidden, wt, mask, chunk_size, student_head_bias=bs, teacher_head_bias=bt,
        student_head_transform=transforms[0], teacher_head_transform=transforms[1],
    )
    nll = _chunked_nll(student_hidden[mask], ws, bs, labels[mask], chunk_size, transforms[0]) if need_nll else None
    kl, ent, n = kl_entropy_sums_chunked(
        student_hidden.detach(), ws.detach(), teacher_hidden, wt, mask, chunk_size, bs, bt, transforms
    )
    return LossTerms(distill, nll, kl, ent, n)
