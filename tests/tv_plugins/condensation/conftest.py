"""Condensation tests run tiny networks: one intra-op thread is far faster than two on a loaded 2-core machine."""

import pytest
import torch


@pytest.fixture(autouse=True, scope="module")
def _single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
