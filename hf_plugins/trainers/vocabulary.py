"""Teacher/student vocabulary checks and alignment to the shared tokenizer vocabulary.

Models often pad their LM head beyond the tokenizer (e.g. to a multiple of 64 or 128). Those rows are no
token, so both heads are sliced to the first ``len(tokenizer)`` rows before any softmax. A real
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
    "check_models",
    "head_rows",
    "trl_vocab_size_check_relaxed",
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


def check_models(student, teacher, tokenizer, check_model: Callable[[object, str], None] | None = None) -> None:
    """The vocabulary checks (and ``check_model(model, role)``) on the models as passed, before the parent runs.

    A teacher given as a path only has its saved tokenizer compared here (its head is checked once loaded).
    """
    if isinstance(teacher, str):
        check_teacher_tokenizer(tokenizer, teacher)
        return
    if student is None or isinstance(student, str):
        return
    check_vocabularies(student, teacher, tokenizer)
    if check_model is not None:
        check_model(student, "student")
        check_model(teacher, "teacher")


@contextmanager
def trl_vocab_size_check_relaxed(student, teacher) -> Iterator[None]:
    """Let the TRL constructor accept LM heads padded to different sizes beyond the shared tokenizer.

    ``GKDTrainer.__init__`` and ``DistillationTrainer.__init__`` raise unless student and teacher configs report
    the same ``vocab_size``. Real checkpoints pad their heads differently (rows that are no token, sliced away
    before every loss here; ``check_models`` has compared the real vocabularies already), so inside this block
    the teacher's config reports the student's ``vocab_size``; the original is restored on exit.
    """
    if isinstance(teacher, str) or student is None or isinstance(student, str):
        yield
        return
    t_cfg = teacher.config.get_text_config()
    original = t_cfg.vocab_size
    t_cfg.vocab_size = student.config.get_text_config().vocab_size
    try:
        yield
    finally:
        t_cfg.vocab_size = original
