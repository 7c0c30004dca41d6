"""The offline text corpus: CPython's ``pydoc_data.topics`` (79 topics of English technical prose).

Every CPython installation ships it, so tokenizer training, language-model tests and the
distillation demo work without any download.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["CorpusSplit", "load_pydoc_corpus"]


@dataclass(frozen=True)
class CorpusSplit:
    """Documents of the pydoc corpus split into train and validation sets.

    ``train`` and ``validation`` are lists of document texts; ``train_topics`` and
    ``validation_topics`` the matching topic keys (same order).
    """

    train: list[str]
    validation: list[str]
    train_topics: list[str]
    validation_topics: list[str]


def load_pydoc_corpus(validation_fraction: float = 0.1, seed: int = 0) -> CorpusSplit:
    """Split the ``pydoc_data.topics`` documents into train/validation by a seeded shuffle.

    Args:
        validation_fraction: share of documents held out, in (0, 1). At least one document
            goes to each side.
        seed: seed of the shuffle; the same seed always gives the same split.
    """
    if not isinstance(validation_fraction, (int, float)) or not 0.0 < validation_fraction < 1.0:
        raise ValueError(f"validation_fraction must be in (0, 1), got {validation_fraction!r}")
    from pydoc_data.topics import topics

    keys = sorted(topics)
    random.Random(seed).shuffle(keys)
    n_val = min(len(keys) - 1, max(1, round(validation_fraction * len(keys))))
    val_keys, train_keys = keys[:n_val], keys[n_val:]
    return CorpusSplit(
        train=[topics[k] for k in train_keys],
        validation=[topics[k] for k in val_keys],
        train_topics=train_keys,
        validation_topics=val_keys,
    )
