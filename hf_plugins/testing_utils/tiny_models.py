"""Tiny causal language models built from configs: stand-ins for hub checkpoints in tests and demos.

Teacher and student share one vocabulary (the tokenizer's); the teacher is wider and deeper.
Both are ordinary ``transformers`` models, so ``save_pretrained`` / ``AutoModelForCausalLM.
from_pretrained`` work on them exactly as on a downloaded checkpoint.
"""

from __future__ import annotations

__all__ = ["TINY_SIZES", "tiny_causal_lm"]

# name -> (hidden_size, intermediate_size, num_hidden_layers, num_attention_heads, num_key_value_heads)
TINY_SIZES = {
    "student": (32, 64, 2, 4, 2),
    "teacher": (64, 128, 3, 4, 2),
    "student-base": (96, 256, 2, 4, 2),
    "teacher-base": (192, 512, 4, 6, 2),
}


def tiny_causal_lm(
    vocab_size: int | object,
    size: str = "student",
    *,
    arch: str = "qwen2",
    max_position_embeddings: int = 512,
    seed: int = 0,
    pad_token_id: int | None = None,
    eos_token_id: int | None = None,
):
    """Build a randomly initialised tiny causal LM.

    Args:
        vocab_size: vocabulary size, or a tokenizer (its ``len()`` and pad/eos ids are used).
        size: one of ``TINY_SIZES`` ("student" < "teacher"; the "-base" pair is larger, for demos).
        arch: "qwen2" (``Qwen2Config``) or "gpt2" (``GPT2Config``).
        max_position_embeddings: longest sequence the model accepts.
        seed: seed of the weight initialisation (same seed, same weights); the caller's global RNG state is
            left unchanged.

    Returns:
        A fp32 ``transformers`` ``PreTrainedModel`` with an LM head of ``vocab_size`` rows.
    """
    from transformers import AutoModelForCausalLM, GPT2Config, Qwen2Config

    from .rng import seeded_global_rng

    if not isinstance(vocab_size, int):
        tokenizer = vocab_size
        vocab_size = len(tokenizer)
        pad_token_id = tokenizer.pad_token_id if pad_token_id is None else pad_token_id
        eos_token_id = tokenizer.eos_token_id if eos_token_id is None else eos_token_id
    if vocab_size < 2:
        raise ValueError(f"vocab_size must be >= 2, got {vocab_size}")
    if size not in TINY_SIZES:
        raise ValueError(f"size must be one of {sorted(TINY_SIZES)}, got {size!r}")
    hidden, inter, layers, heads, kv_heads = TINY_SIZES[size]
    common = {"vocab_size": vocab_size, "pad_token_id": pad_token_id, "eos_token_id": eos_token_id}
    if arch == "qwen2":
        config = Qwen2Config(
            hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers, num_attention_heads=heads,
            num_key_value_heads=kv_heads, max_position_embeddings=max_position_embeddings, tie_word_embeddings=False,
            **common,
        )
    elif arch == "gpt2":
        config = GPT2Config(
            n_embd=hidden, n_layer=layers, n_head=heads, n_positions=max_position_embeddings, bos_token_id=eos_token_id,
            **common,
        )
    else:
        raise ValueError(f"arch must be 'qwen2' or 'gpt2', got {arch!r}")
    with seeded_global_rng(seed):
        return AutoModelForCausalLM.from_config(config)
