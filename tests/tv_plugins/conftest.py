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


class Points(torch.utils.data.Dataset):
    """30 points in 5 dimensions, 3 classes (point i has class i % 3); ``nan_at``: that point gets a NaN."""

    def __init__(self, nan_at=None):
        self.data, self.targets = torch.randn(30, 5, generator=torch.Generator().manual_seed(1)), torch.arange(30) % 3
        if nan_at is not None:
            self.data[nan_at, 2] = float("nan")

    def __len__(self):
        return 30

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])


@pytest.fixture
def points():
    """The :class:`Points` dataset class (``points()``, ``points(nan_at=7)``)."""
    return Points


@pytest.fixture
def tiny_images():
    """``(images [40, 1, 8, 8], labels [40])``: uniform noise, 4 classes of 10 (image i has class i % 4)."""
    return torch.rand(40, 1, 8, 8, generator=torch.Generator().manual_seed(0)), torch.arange(4).repeat(10)
