"""Teacher/student vocabulary checks and alignment to the shared tokenizer vocabulary.

Models often pad their LM head beyond the tokenizer (e.g. to a multiple of 64 or 128). Those rows are no
token, so both heads are sliced to the first ``len(tokenizer)`` rows before any softmax (spec E.3). A real
mismatch (a head smaller than the tokenizer, or teacher and student trained with different tokenizers) is
an error at construction.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

__all__ = [
    "check_distillation_arguments",
    "check_teacher_tokenizer",
    "check_vocabularies",
    "head_rows",
    "parent_vocab_check_aligned",
]


def head_rows(model) -> int:
    """Number of rows of a causal LM's output head (its logit width V)."""
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if head is not None and getattr(head, "weight", None) is not None:
        return int(head.weight.shape[0])
    return int(model.config.get_text_config().vocab_size)


def _same_tokenizer(tokenizer, path: str) -> bool | None:
    """Whether the tokenizer saved under ``path`` equals ``tokenizer`` (None when there is none to compare)."""
    if not os.path.isdir(path) or not any(
        os.path.exists(os.path.join(path, f)) for f in ("tokenizer.json", "tokenizer_config.json", "vocab.json")
    ):
        return None
    from transformers import AutoTokenizer

    other = AutoTokenizer.from_pretrained(path)
    return other.get_vocab() == tokenizer.get_vocab()


def check_vocabularies(student, teacher, tokenizer, teacher_path: str | None = None) -> int:
    """Validate that teacher and student share the tokenizer's vocabulary; return its size ``V_tok``.

    Args:
        student, teacher: causal LMs (instantiated).
        tokenizer: the processing class shared by both.
        teacher_path: the teacher's local directory when it was given as a path (its tokenizer, if saved there,
            must equal ``tokenizer``).

    Raises:
        ValueError: naming the sizes, when a head has fewer rows than the tokenizer has tokens, or when the
            teacher's saved tokenizer differs from the student's.
    """
    v_tok = len(tokenizer)
    v_s, v_t = head_rows(student), head_rows(teacher)
    if v_s < v_tok or v_t < v_tok:
        raise ValueError(
            f"vocabulary mismatch: the tokenizer has {v_tok} tokens but the student head has {v_s} rows and the "
            f"teacher head has {v_t} rows; both heads need at least {v_tok} rows. Teacher and student must share "
            "the tokenizer (use trl.experimental.gold for cross-tokenizer distillation)."
        )
    if teacher_path is not None:
        check_teacher_tokenizer(tokenizer, teacher_path)
    return v_tok


def check_teacher_tokenizer(tokenizer, teacher_path: str) -> None:
    """Raise ``ValueError`` when a tokenizer saved beside the teacher at ``teacher_path`` differs from ``tokenizer``."""
    if _same_tokenizer(tokenizer, teacher_path) is False:
        from transformers import AutoTokenizer

        other = len(AutoTokenizer.from_pretrained(teacher_path))
        raise ValueError(
            f"the teacher at {teacher_path!r} was saved with a different tokenizer ({other} tokens) than "
            f"processing_class ({len(tokenizer)} tokens); teacher and student must share one tokenizer "
            "(use trl.experimental.gold for cross-tokenizer distillation)."
        )


def check_distillation_arguments(config_class: type, args, processing_class, teacher_model) -> None:
    """Constructor checks shared by every trainer here, run before the parent trainer does any work."""
    if not isinstance(args, config_class):
        raise TypeError(f"args must be a {config_class.__name__}, got {type(args).__name__}")
    if processing_class is None:
        raise ValueError("processing_class (the tokenizer shared by teacher and student) is required")
    if teacher_model is None:
        raise ValueError("teacher_model is required (a model or a path)")


@contextmanager
def parent_vocab_check_aligned(
    student, teacher, tokenizer, check_model: Callable[[object, str], None] | None = None
) -> Iterator[None]:
    """Check the real vocabularies, then let the parent trainer's ``config.vocab_size`` equality check pass.

    TRL's trainers refuse any difference in ``vocab_size``; padded LM heads (sliced to ``len(tokenizer)``
    before the loss) are legitimate, so inside this block the teacher's config reports the student's size.
    It is restored on exit. A teacher given as a path only has its saved tokenizer compared here.
    ``check_model(model, role)`` runs on both instantiated models first (e.g. to reject unsupported heads).
    """
    if isinstance(teacher, str):
        check_teacher_tokenizer(tokenizer, teacher)
    if isinstance(teacher, str) or student is None or isinstance(student, str):
        yield
        return
    check_vocabularies(student, teacher, tokenizer)
    if check_model is not None:
        check_model(student, "student")
        check_model(teacher, "teacher")
    s_cfg, t_cfg = student.config.get_text_config(), teacher.config.get_text_config()
    original = t_cfg.vocab_size
    t_cfg.vocab_size = s_cfg.vocab_size
    try:
        yield
    finally:
        t_cfg.vocab_size = original
