"""An instruction-style split of the pydoc corpus for distillation demos and benchmarks.

Each topic document is cut into consecutive word windows. An example's prompt is the topic heading plus
``prompt_words`` words of text; its completion is the next ``completion_words`` words. Train examples come
from the corpus' training topics, held-out examples from its validation topics (no topic is shared).
"""

from __future__ import annotations

import re

__all__ = ["pydoc_instruction_split"]


def _examples(doc: str, prompt_words: int, completion_words: int, per_topic: int) -> list[dict]:
    lines = doc.strip().splitlines()
    heading = lines[0].strip() if lines else ""
    body = " ".join(line.strip() for line in lines[1:] if line.strip() and not re.fullmatch(r"[*=\-~^]+", line.strip()))
    words = body.split()
    out, step = [], prompt_words + completion_words
    for start in range(0, len(words) - step + 1, step):
        prompt_text = " ".join(words[start : start + prompt_words])
        completion = " ".join(words[start + prompt_words : start + step])
        prompt = [{"role": "user", "content": f"Continue the Python documentation on {heading}: {prompt_text}"}]
        out.append({"messages": prompt + [{"role": "assistant", "content": completion}], "reference": completion})
        if len(out) >= per_topic:
            break
    return out


def pydoc_instruction_split(
    prompt_words: int = 16,
    completion_words: int = 24,
    per_topic: int = 1000,
    validation_fraction: float = 0.1,
    seed: int = 0,
) -> dict[str, list[dict]]:
    """Build ``{"train": [...], "validation": [...]}`` of ``{"messages", "reference"}`` examples.

    Args:
        prompt_words: words of document text in the prompt (after the topic heading).
        completion_words: words in the completion (the reference continuation).
        per_topic: at most this many examples per topic.
        validation_fraction, seed: passed to ``load_pydoc_corpus`` (topic-level split).

    ``messages`` is a one-turn conversation (user prompt, assistant completion) in TRL's conversational
    format; ``reference`` is the completion text, used for ROUGE-L.
    """
    for name, v in (("prompt_words", prompt_words), ("completion_words", completion_words), ("per_topic", per_topic)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be a positive int, got {v!r}")
    from .corpus import load_pydoc_corpus

    split = load_pydoc_corpus(validation_fraction=validation_fraction, seed=seed)
    return {
        "train": [e for d in split.train for e in _examples(d, prompt_words, completion_words, per_topic)],
        "validation": [e for d in split.validation for e in _examples(d, prompt_words, completion_words, per_topic)],
    }
