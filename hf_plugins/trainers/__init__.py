"""TRL trainer drop-ins for AMiD, CSD and every baseline divergence of ``hf_plugins.losses``.

GKD-based (off-/on-policy mix, dataset of ``messages`` or ``prompt``/``completion``): ``KDTrainer`` /
``KDConfig``, ``AMiDTrainer`` / ``AMiDConfig``, ``CSDTrainer`` / ``CSDConfig``.
``trl.DistillationTrainer``-based (prompt-only data, the student generates, chunked loss):
``KDOnPolicyTrainer``, ``AMiDOnPolicyTrainer``, ``CSDOnPolicyTrainer`` and their configs.
"""

from .configs import (
    AMiDConfig,
    AMiDOnPolicyConfig,
    CSDConfig,
    CSDOnPolicyConfig,
    KDConfig,
    KDOnPolicyConfig,
)
from .gkd_trainers import AMiDTrainer, CSDTrainer, KDTrainer
from .on_policy_trainers import AMiDOnPolicyTrainer, CSDOnPolicyTrainer, KDOnPolicyTrainer
from .student_data import ReplayBuffer, StudentDataSchedule

__all__ = [
    "AMiDConfig",
    "AMiDOnPolicyConfig",
    "AMiDOnPolicyTrainer",
    "AMiDTrainer",
    "CSDConfig",
    "CSDOnPolicyConfig",
    "CSDOnPolicyTrainer",
    "CSDTrainer",
    "KDConfig",
    "KDOnPolicyConfig",
    "KDOnPolicyTrainer",
    "KDTrainer",
    "ReplayBuffer",
    "StudentDataSchedule",
]
