"""tv_plugins: dataset reduction for torchvision datasets (LCMat coresets, FreD/DDiF condensation)."""

import warnings
from importlib.metadata import version as _distribution_version

with warnings.catch_warnings():  # in Jupyter without ipywidgets tqdm.auto warns once and falls back to text bars
    warnings.filterwarnings("ignore", message="IProgress not found")
    import tqdm.auto  # noqa: F401

from .condensation import (
    DDiF,
    DDiFParameterization,
    DistributionMatching,
    FreD,
    FreDParameterization,
    GradientMatching,
    PixelParameterization,
    SyntheticDataset,
    TrajectoryMatching,
    distill,
    evaluate_synthetic,
    train_expert_trajectories,
)
from .coreset import CoresetSampler, CoresetSelection, LCMatSubset, WeightedSubset, select_coreset
from .networks import ConvNet
from .testing_utils.datasets import DEBIAN_FASHION_MNIST_DIR, DigitsDataset, load_fashion_mnist

__version__ = _distribution_version("distill-plugins")

__all__ = ["CoresetSampler", "CoresetSelection", "LCMatSubset", "WeightedSubset", "select_coreset",
           "ConvNet", "DEBIAN_FASHION_MNIST_DIR", "DigitsDataset", "load_fashion_mnist",
           "DDiF", "DDiFParameterization", "DistributionMatching", "FreD", "FreDParameterization", "GradientMatching",
           "PixelParameterization", "SyntheticDataset", "TrajectoryMatching", "distill", "evaluate_synthetic",
           "train_expert_trajectories"]
