"""Tiny networks run far faster on one intra-op thread than on two contending ones on a loaded 2-core machine;
test modules that train many of them ask for ``single_thread`` (the condensation tests all do)."""

import pytest
import torch


@pytest.fixture(scope="module")
def single_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
