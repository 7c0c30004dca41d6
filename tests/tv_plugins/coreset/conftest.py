"""Tiny synthetic classification data and models for the coreset tests."""

import pytest
import torch
from torch import nn
from torch.utils.data import Dataset


class Blobs(Dataset):
    """``n_per_class`` Gaussian points per class in ``dim`` dimensions; items ``(x [dim], label)``."""

    def __init__(self, n_per_class=(12, 9, 15), dim=6, seed=0):
        g = torch.Generator().manual_seed(seed)
        centres = 2.0 * torch.randn(len(n_per_class), dim, generator=g)
        xs, ys = [], []
        for c, n in enumerate(n_per_class):
            xs.append(centres[c] + torch.randn(n, dim, generator=g))
            ys.append(torch.full((n,), c))
        perm = torch.randperm(sum(n_per_class), generator=g)
        self.data = torch.cat(xs)[perm]
        self.targets = torch.cat(ys)[perm]

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, i):
        return self.data[i], int(self.targets[i])


def make_mlp(dim=6, hidden=5, classes=3, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, classes))


@pytest.fixture
def blobs():
    return Blobs()


@pytest.fixture
def mlp():
    return make_mlp()
