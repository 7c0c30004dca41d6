"""hf_plugins.losses: AMiD, CSD and the baseline distillation divergences.

Every loss has the signature ``fn(student_logits, teacher_logits, mask=None, **options) -> 0-dim tensor``:
logits ``[..., V]`` of any float dtype (computed in fp32, or fp64 for fp64 input), a bool ``mask`` ``[...]``
(True = the position counts) and one token-level mean over the valid positions of the whole batch. Only the
student receives gradient. Each loss is also a frozen dataclass (``AMiDLoss``, ``CSDLoss``, ...) that declares
its options; ``get(name, **options)`` returns one configured instance, and ``chunked(name, ...)`` computes any
of them from hidden states and LM heads without materializing the ``[N, V]`` logits;
``sparse(loss, student_logits, SparseTeacher)`` computes any of them against a top-k teacher (``top_k_teacher``).
"""

from .amid import AMiDLoss, amid
from .chunked import chunked, default_chunk_size
from .csd import CSDLoss, csd
from .divergences import (
    ABDivergenceLoss,
    ForwardKLLoss,
    GeneralizedJSDLoss,
    JeffreysLoss,
    ReverseKLLoss,
    SkewForwardKLLoss,
    SkewReverseKLLoss,
    TotalVariationLoss,
    ab_divergence,
    forward_kl,
    generalized_jsd,
    jeffreys,
    reverse_kl,
    skew_forward_kl,
    skew_reverse_kl,
    total_variation,
)
from .head_transform import HeadTransform, head_transform
from .loss import Loss, register
from .registry import LOSS_NAMES, get, loss_class, loss_options
from .sparse import SparseTeacher, sparse, top_k_teacher

__all__ = [
    "ABDivergenceLoss",
    "AMiDLoss",
    "CSDLoss",
    "ForwardKLLoss",
    "GeneralizedJSDLoss",
    "HeadTransform",
    "JeffreysLoss",
    "LOSS_NAMES",
    "Loss",
    "ReverseKLLoss",
    "SparseTeacher",
    "SkewForwardKLLoss",
    "SkewReverseKLLoss",
    "TotalVariationLoss",
    "ab_divergence",
    "amid",
    "chunked",
    "csd",
    "default_chunk_size",
    "forward_kl",
    "generalized_jsd",
    "get",
    "head_transform",
    "jeffreys",
    "loss_class",
    "loss_options",
    "register",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "sparse",
    "top_k_teacher",
    "total_variation",
]
