"""tv_plugins: dataset reduction for torchvision datasets (LCMat coresets, FreD/DDiF condensation)."""

from .coreset import CoresetSampler, CoresetSelection, LCMatSubset, WeightedSubset, select_coreset
from .datasets import DEBIAN_FASHION_MNIST_DIR, DigitsDataset, load_fashion_mnist
from .networks import ConvNet

__all__ = ["CoresetSampler", "CoresetSelection", "LCMatSubset", "WeightedSubset", "select_coreset",
           "ConvNet", "DEBIAN_FASHION_MNIST_DIR", "DigitsDataset", "load_fashion_mnist"]
