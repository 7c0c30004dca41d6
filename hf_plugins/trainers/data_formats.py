"""Dataset formats accepted by the GKD-based trainers, converted to what GKD's ChatML collator reads.

Accepted (TRL's dataset-format names):

* conversational language modelling: a ``messages`` column (list of ``{"role", "content"}``; the last
  message is the completion) -> passed through unchanged;
* conversational prompt-completion: ``prompt`` and ``completion`` columns holding message lists ->
  ``messages = prompt + completion``;
* standard prompt-completion: ``prompt`` and ``completion`` strings -> tokenised here into ``input_ids`` and
  ``completion_mask`` (the EOS token is appended to the completion), which the collator reads as-is;
* already tokenised ``input_ids`` (optional ``completion_mask`` / ``attention_mask``) -> unchanged.

Anything else raises a ``ValueError`` naming the expected columns.
"""

from __future__ import annotations

from typing import Any

__all__ = ["EXPECTED_COLUMNS", "dataset_format", "to_chatml_collator_format"]

EXPECTED_COLUMNS = "'messages' (conversational), or 'prompt' and 'completion' (strings or message lists), or 'input_ids'"


def dataset_format(columns: list[str], first_example: dict[str, Any], argument: str = "train_dataset") -> str:
    """Name the format of a dataset from its columns and first row.

    Returns one of ``"messages"``, ``"conversational_prompt_completion"``, ``"prompt_completion"``,
    ``"tokenized"``; raises ``ValueError`` for anything else.
    """
    cols = set(columns)
    if "messages" in cols:
        msgs = first_example["messages"]
        if not isinstance(msgs, list) or not msgs or not all(isinstance(m, dict) and "role" in m for m in msgs):
            raise ValueError(f"{argument}: the 'messages' column must hold lists of {{'role', 'content'}} dicts")
        return "messages"
    if {"prompt", "completion"} <= cols:
        prompt, completion = first_example["prompt"], first_example["completion"]
        if isinstance(prompt, str) and isinstance(completion, str):
            return "prompt_completion"
        if isinstance(prompt, list) and isinstance(completion, list):
            return "conversational_prompt_completion"
        raise ValueError(
            f"{argument}: 'prompt' and 'completion' must both be strings or both be message lists, got "
            f"{type(prompt).__name__} and {type(completion).__name__}"
        )
    if "input_ids" in cols:
        return "tokenized"
    raise ValueError(f"{argument} has columns {sorted(cols)}; expected {EXPECTED_COLUMNS}")


def to_chatml_collator_format(dataset, tokenizer, argument: str = "train_dataset"):
    """Convert a ``datasets.Dataset`` (or a dict of them) to a format ``DataCollatorForChatML`` reads.

    Args:
        dataset: ``datasets.Dataset``, a dict name -> Dataset, or None (returned unchanged).
        tokenizer: the shared tokenizer (needs a chat template for conversational data and an EOS token).
        argument: argument name used in error messages.
    """
    if dataset is None:
        return None
    if isinstance(dataset, dict):
        return {k: to_chatml_collator_format(v, tokenizer, f"{argument}[{k!r}]") for k, v in dataset.items()}
    from datasets import Dataset

    if not isinstance(dataset, Dataset):
        raise TypeError(f"{argument} must be a datasets.Dataset (or a dict of them), got {type(dataset).__name__}")
    if len(dataset) == 0:
        raise ValueError(f"{argument} is empty")
    kind = dataset_format(dataset.column_names, dataset[0], argument)
    if kind in ("messages", "tokenized"):
        return dataset
    drop = ["prompt", "completion"]
    if kind == "conversational_prompt_completion":
        return dataset.map(lambda ex: {"messages": list(ex["prompt"]) + list(ex["completion"])}, remove_columns=drop)
    if tokenizer.eos_token_id is None:
        raise ValueError("processing_class needs an eos_token for prompt/completion string datasets")
    eos = tokenizer.eos_token_id

    def tokenize(ex):
        p = tokenizer(ex["prompt"], add_special_tokens=False)["input_ids"]
        c = tokenizer(ex["completion"], add_special_tokens=False)["input_ids"]
        if not c or c[-1] != eos:
            c = c + [eos]
        if not p:
            raise ValueError(f"{argument}: an example has an empty prompt; generation needs at least one token")
        return {"input_ids": p + c, "completion_mask": [0] * len(p) + [1] * len(c)}

    # the collator still reads the 'prompt' string (unused when completion_mask marks the boundary)
    return dataset.map(tokenize, remove_columns=["completion"])
