"""A byte-level BPE tokenizer trained offline on the pydoc corpus, as a ``PreTrainedTokenizerFast``.

Hub checkpoints cannot be downloaded on our machines; this tokenizer (with pad/eos tokens and a
ChatML chat template) lets TRL's chat collators, generation and ``from_pretrained`` run for real.
The trained tokenizer is cached on disk with ``save_pretrained`` and reloaded with
``from_pretrained``, the same path a hub tokenizer takes.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["CHATML_TEMPLATE", "SPECIAL_TOKENS", "cache_dir", "train_bpe_tokenizer"]

SPECIAL_TOKENS = ("<|endoftext|>", "<pad>", "<|im_start|>", "<|im_end|>")

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


def cache_dir() -> Path:
    """Root of distill-plugins' on-disk cache: ``$DISTILL_PLUGINS_CACHE`` or ``~/.cache/distill-plugins``."""
    return Path(os.environ.get("DISTILL_PLUGINS_CACHE", Path.home() / ".cache" / "distill-plugins"))


def train_bpe_tokenizer(
    vocab_size: int = 1024,
    *,
    texts: list[str] | None = None,
    cache: str | os.PathLike | None = None,
    use_cache: bool = True,
):
    """Train (or load from cache) a byte-level BPE tokenizer on the pydoc training documents.

    Args:
        vocab_size: size of the final vocabulary, special tokens included; at least 300
            (256 byte symbols + specials + some merges).
        texts: training texts; default: the training split of :func:`load_pydoc_corpus`.
        cache: directory holding the saved tokenizer; default
            ``cache_dir()/tokenizers/bpe-<vocab_size>`` (only used when ``texts`` is None).
        use_cache: load a previously saved tokenizer when present, and save a new one.

    Returns:
        ``transformers.PreTrainedTokenizerFast`` with ``eos_token="<|im_end|>"``,
        ``pad_token="<pad>"``, ``bos_token=None`` and a ChatML ``chat_template``.
    """
    if not isinstance(vocab_size, int) or vocab_size < 300:
        raise ValueError(f"vocab_size must be an int >= 300, got {vocab_size!r}")
    from transformers import PreTrainedTokenizerFast

    if cache is None and texts is None:
        cache = cache_dir() / "tokenizers" / f"bpe-{vocab_size}"
    if use_cache and cache is not None and (Path(cache) / "tokenizer.json").exists():
        return PreTrainedTokenizerFast.from_pretrained(str(cache))

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    if texts is None:
        from .corpus import load_pydoc_corpus

        texts = load_pydoc_corpus().train
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<pad>",
        unk_token=None,
        bos_token=None,
        additional_special_tokens=["<|im_start|>", "<|endoftext|>"],
    )
    tokenizer.chat_template = CHATML_TEMPLATE
    if use_cache and cache is not None:
        Path(cache).mkdir(parents=True, exist_ok=True)
        tokenizer.save_pretrained(str(cache))
        return PreTrainedTokenizerFast.from_pretrained(str(cache))
    return tokenizer
