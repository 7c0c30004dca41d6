"""tv_plugins: dataset reduction for torchvision datasets (LCMat coresets, FreD/DDiF condensation)."""

from importlib.metadata import version as _distribution_version

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
from .datasets import DEBIAN_FASHION_MNIST_DIR, DigitsDataset, load_fashion_mnist
from .networks import ConvNet

__version__ = _distribution_version("distill-plugins")

__all__ = ["CoresetSampler", "CoresetSelection", "LCMatSubset", "WeightedSubset", "select_coreset",
           "ConvNet", "DEBIAN_FASHION_MNIST_DIR", "DigitsDataset", "load_fashion_mnist",
           "DDiF", "DDiFParameterization", "DistributionMatching", "FreD", "FreDParameterization", "GradientMatching",
           "PixelParameterization", "SyntheticDataset", "TrajectoryMatching", "distill", "evaluate_synthetic",
           "train_expert_trajectories"]
