"""hf_plugins.losses: AMiD, CSD and the baseline distillation divergences.

Every loss has the signature ``fn(student_logits, teacher_logits, mask=None, **options) -> 0-dim tensor``:
logits ``[..., V]`` of any float dtype (computed in fp32, or fp64 for fp64 input), a bool ``mask`` ``[...]``
(True = the position counts) and one token-level mean over the valid positions of the whole batch. Only the
student receives gradient. ``get(name, **options)`` returns a configured loss, and ``chunked(name, ...)``
computes any of them from hidden states and LM heads without materializing the ``[N, V]`` logits.
"""

from .amid import amid
from .chunked import chunked, default_chunk_size
from .csd import csd
from .divergences import (
    ab_divergence,
    forward_kl,
    generalized_jsd,
    jeffreys,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from .registry import LOSS_NAMES, Loss, get, loss_options

__all__ = [
    "LOSS_NAMES",
    "Loss",
    "ab_divergence",
    "amid",
    "chunked",
    "csd",
    "default_chunk_size",
    "forward_kl",
    "generalized_jsd",
    "get",
    "jeffreys",
    "loss_options",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "total_variation",
]
