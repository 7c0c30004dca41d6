"""Fixtures shared by the trainer tests: the tiny tokenizer and a small chat dataset."""

import pytest
from datasets import Dataset

from hf_plugins import train_bpe_tokenizer


@pytest.fixture(scope="module")
def tok():
    return train_bpe_tokenizer(300)


@pytest.fixture(scope="session")
def conversations():
    """Eight one-turn chats (user, assistant) of varying completion length."""
    return [
        [
            {"role": "user", "content": f"Explain item {i} of the list."},
            {"role": "assistant", "content": "It is " + "a long answer " * (i % 3 + 1) + f"about {i}."},
        ]
        for i in range(8)
    ]


@pytest.fixture(scope="module")
def chat_ds(conversations):
    return Dataset.from_list([{"messages": m} for m in conversations])
