"""Offline fixtures and demos: sklearn digits and Debian's Fashion-MNIST as torchvision datasets, the coreset
training helpers of the demo / notebooks / benchmarks, and ``python -m tv_plugins demo``. Not part of the plugin
API itself (``tv_plugins.DigitsDataset`` etc. are re-exported at the top level for convenience)."""

from .datasets import DEBIAN_FASHION_MNIST_DIR, DigitsDataset, load_fashion_mnist
from .training import digits_mlp, digits_tensors, train_classifier

__all__ = ["DEBIAN_FASHION_MNIST_DIR", "DigitsDataset", "digits_mlp", "digits_tensors", "load_fashion_mnist",
           "train_classifier"]
