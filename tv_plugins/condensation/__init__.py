"""Dataset condensation for torchvision datasets: Pixel / FreD / DDiF parameterizations over DM / DC / TM."""

from .augmentation import DSA
from .callbacks import (
           Checkpoint,
           DistillCallback,
           DistillState,
           EarlyStopping,
           PeriodicEvaluation,
           ProgressBar,
)
from .dc import GradientMatching, gradient_distance
from .dct import dct2, idct2, ortho_learning_rates
from .ddif import BatchedSiren, DDiFParameterization, siren_parameter_count
from .distill import DDiF, FreD, distill
from .dm import DistributionMatching, distribution_matching_loss
from .evaluation import evaluate_synthetic
from .fred import FreDParameterization
from .objective import OBJECTIVES, MatchingObjective
from .parameterization import PARAMETERIZATIONS, SyntheticParameterization
from .pixel import PixelParameterization
from .synthetic import SyntheticDataset
from .tm import ExpertTrajectories, TrajectoryMatching, train_expert_trajectories

__all__ = ["DSA", "OBJECTIVES", "PARAMETERIZATIONS", "BatchedSiren", "Checkpoint", "DDiF", "DDiFParameterization",
           "DistillCallback", "DistillState", "DistributionMatching", "EarlyStopping", "ExpertTrajectories", "FreD",
           "FreDParameterization", "GradientMatching", "MatchingObjective", "PeriodicEvaluation",
           "PixelParameterization", "ProgressBar", "SyntheticDataset", "SyntheticParameterization",
           "TrajectoryMatching", "dct2", "distill", "distribution_matching_loss", "evaluate_synthetic",
           "gradient_distance", "idct2", "ortho_learning_rates", "siren_parameter_count", "train_expert_trajectories"]
