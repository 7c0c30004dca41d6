"""Configurations of the distillation trainers: TRL configs extended with the loss options.

``KDConfig`` / ``AMiDConfig`` / ``CSDConfig`` subclass ``trl.experimental.gkd.GKDConfig`` (off-/on-policy
mixing with ``lmbda``, ``seq_kd``); the ``*OnPolicyConfig`` classes subclass the stable
``trl.DistillationConfig`` (prompt-only data, the student always generates).

Every config answers ``loss_spec() -> (name, options)``: the name and keyword options handed to
``hf_plugins.losses.get`` / ``hf_plugins.losses.chunked``. Options are validated in ``__post_init__``,
before any model is built, by constructing the loss once.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from trl import DistillationConfig
from trl.experimental.gkd import GKDConfig

__all__ = [
    "AMiDConfig",
    "AMiDOnPolicyConfig",
    "CSDConfig",
    "CSDOnPolicyConfig",
    "KDConfig",
    "KDOnPolicyConfig",
    "STUDENT_DATA_SCHEDULES",
]

STUDENT_DATA_SCHEDULES = ("gkd", "imitkd", "distillm")
AMID_DIVERGENCES = ("ab", "kl")
AMID_ORDERS = ("pr", "qr", "rp", "rq")
CSD_WEIGHT_NAMES = {"S": "student", "T": "teacher", "U": "uniform", "M": "mixture"}


def _losses():
    return importlib.import_module("hf_plugins.losses")


def _check_number(name: str, value: Any, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


def _validate_common(cfg) -> None:
    """Checks shared by every config here: ``sft_weight`` and ``loss_chunk_size``."""
    _check_number("sft_weight", cfg.sft_weight, 0.0, None)
    if cfg.loss_chunk_size is not None and (
        isinstance(cfg.loss_chunk_size, bool) or not isinstance(cfg.loss_chunk_size, int) or cfg.loss_chunk_size < 1
    ):
        raise ValueError(f"loss_chunk_size must be None (full logits) or a positive int, got {cfg.loss_chunk_size!r}")
    name, options = cfg.loss_spec()
    _losses().get(name, **options)  # raises on a bad option, before any work starts


def _validate_student_data(cfg) -> None:
    if cfg.student_data not in STUDENT_DATA_SCHEDULES:
        raise ValueError(f"student_data must be one of {STUDENT_DATA_SCHEDULES}, got {cfg.student_data!r}")
    if isinstance(cfg.replay_capacity, bool) or not isinstance(cfg.replay_capacity, int) or cfg.replay_capacity < 1:
        raise ValueError(f"replay_capacity must be a positive int, got {cfg.replay_capacity!r}")
    _check_number("distillm_init_threshold", cfg.distillm_init_threshold, 0.0, 1.0)
    _check_number("distillm_threshold_step", cfg.distillm_threshold_step, 0.0, 1.0)
    _check_number("distillm_loss_eps", cfg.distillm_loss_eps, 0.0, None)


def _amid_spec(cfg) -> tuple[str, dict]:
    if cfg.amid_divergence not in AMID_DIVERGENCES:
        raise ValueError(f"amid_divergence must be one of {AMID_DIVERGENCES}, got {cfg.amid_divergence!r}")
    if cfg.amid_order not in AMID_ORDERS:
        raise ValueError(f"amid_order must be one of {AMID_ORDERS}, got {cfg.amid_order!r}")
    _check_number("amid_alpha", cfg.amid_alpha)
    _check_number("amid_lambda", cfg.amid_lambda, 0.0, 1.0)
    _check_number("ab_alpha", cfg.ab_alpha)
    _check_number("ab_beta", cfg.ab_beta)
    return "amid", {
        "alpha": float(cfg.amid_alpha),
        "lam": float(cfg.amid_lambda),
        "divergence": cfg.amid_divergence,
        "order": cfg.amid_order,
        "ab_alpha": float(cfg.ab_alpha),
        "ab_beta": float(cfg.ab_beta),
    }


def _csd_spec(cfg) -> tuple[str, dict]:
    weights = cfg.csd_weights
    if isinstance(weights, str) and len(weights.replace(",", "").replace(" ", "")) == 2:
        weights = tuple(weights.replace(",", "").replace(" ", "").upper())
    full = set(CSD_WEIGHT_NAMES.values())
    if (
        isinstance(weights, str)
        or not isinstance(weights, (tuple, list))
        or len(weights) != 2
        or any(w not in CSD_WEIGHT_NAMES and w not in full for w in weights)
    ):
        raise ValueError(
            "csd_weights must be a pair (w1, w2) of 'S'/'student', 'T'/'teacher', 'U'/'uniform', 'M'/'mixture', "
            f"e.g. ('S', 'S') or 'TS'; got {cfg.csd_weights!r}"
        )
    weights = tuple(CSD_WEIGHT_NAMES.get(w, w) for w in weights)
    _check_number("csd_temperature", cfg.csd_temperature, 0.0, None)
    if cfg.csd_temperature <= 0:
        raise ValueError(f"csd_temperature must be > 0, got {cfg.csd_temperature!r}")
    _check_number("csd_mix_alpha", cfg.csd_mix_alpha, 0.0, 1.0)
    return "csd", {
        "weights": weights,
        "temperature": float(cfg.csd_temperature),
        "mix_alpha": float(cfg.csd_mix_alpha),
    }


def _kd_spec(cfg) -> tuple[str, dict]:
    if not isinstance(cfg.loss, str):
        raise TypeError(f"loss must be a loss name (str), got {type(cfg.loss).__name__}")
    options = cfg.loss_options or {}
    if not isinstance(options, dict):
        raise TypeError(f"loss_options must be a dict of keyword options, got {type(options).__name__}")
    return cfg.loss, dict(options)


_HELP_SFT = {"help": "Weight of an added token cross-entropy on the dataset completion (0 = pure distillation)."}
_HELP_CHUNK = {
    "help": "None: build the full (B, T, V) logits. An int: project hidden states to logits in chunks of this many "
    "tokens through hf_plugins.losses.chunked, never materialising the full logits."
}
_HELP_SCHEDULE = {
    "help": "Where the training sequences come from: 'gkd' (GKD's lmbda mix, inherited), 'imitkd' (always "
    "student-generated, trained through a replay buffer) or 'distillm' (DistiLLM's adaptive off-policy schedule: "
    "a validation-loss triggered threshold and a replay buffer)."
}


@dataclass
class _StudentDataFields:
    student_data: str = field(default="gkd", metadata=_HELP_SCHEDULE)
    replay_capacity: int = field(default=1000, metadata={"help": "Replay-buffer capacity in sequences."})
    distillm_init_threshold: float = field(default=0.0, metadata={"help": "Initial DistiLLM threshold."})
    distillm_threshold_step: float = field(default=0.1, metadata={"help": "Threshold increment when triggered."})
    distillm_loss_eps: float = field(
        default=0.1, metadata={"help": "Rise of the validation NLL (nats/token) that raises the threshold."}
    )


@dataclass
class KDConfig(GKDConfig, _StudentDataFields):
    """``GKDConfig`` plus a divergence from ``hf_plugins.losses`` chosen by name.

    Args (beyond ``GKDConfig``):
        loss: a name accepted by ``hf_plugins.losses.get`` (``forward_kl``, ``reverse_kl``, ``skew_forward_kl``,
            ``skew_reverse_kl``, ``generalized_jsd``, ``total_variation``, ``ab_divergence``, ``jeffreys``,
            ``amid``, ``csd``).
        loss_options: keyword options of that loss (dict, or a JSON string on the command line).
        sft_weight: weight of an added cross-entropy on the dataset completion (default 0).
        loss_chunk_size: None for full logits, or the chunk size of the memory-lean path.
        student_data, replay_capacity, distillm_*: the student-generated data schedule (see ``student_data``).

    GKD's ``temperature`` stays the *sampling* temperature; GKD's ``beta`` is unused (the loss is ``loss``).
    """

    _VALID_DICT_FIELDS = GKDConfig._VALID_DICT_FIELDS + ["loss_options"]

    loss: str = field(default="forward_kl", metadata={"help": "Loss name in hf_plugins.losses."})
    loss_options: dict[str, Any] | str | None = field(default=None, metadata={"help": "Options of the loss."})
    sft_weight: float = field(default=0.0, metadata=_HELP_SFT)
    loss_chunk_size: int | None = field(default=None, metadata=_HELP_CHUNK)

    def loss_spec(self) -> tuple[str, dict]:
        """Name and options of the distillation loss, as ``hf_plugins.losses.get`` takes them."""
        return _kd_spec(self)

    def __post_init__(self):
        super().__post_init__()
        _validate_student_data(self)
        _validate_common(self)


@dataclass
class AMiDConfig(KDConfig):
    """``GKDConfig`` for AMiD (alpha-mixture assistant distribution), arXiv 2510.15982.

    Args (beyond ``GKDConfig``):
        amid_alpha: alpha of the alpha-mixture (Amari convention: -1 arithmetic, 1 geometric).
        amid_lambda: teacher weight lambda in [0, 1] inside the mixture (paper's best: 0.1).
        amid_divergence: "ab" (alpha-beta divergence, paper setting) or "kl".
        amid_order: argument order "pr" (D(p||r), default), "qr", "rp" or "rq".
        ab_alpha, ab_beta: exponents of the alpha-beta divergence (reference values 0.2, 0.7).
        sft_weight, loss_chunk_size, student_data...: as in ``KDConfig``.
    """

    loss: str = field(default="amid", metadata={"help": "Fixed to 'amid'."})
    amid_alpha: float = field(default=0.5, metadata={"help": "alpha of the alpha-mixture assistant."})
    amid_lambda: float = field(default=0.1, metadata={"help": "Teacher weight lambda in [0, 1]."})
    amid_divergence: str = field(default="ab", metadata={"help": "'ab' or 'kl'."})
    amid_order: str = field(default="pr", metadata={"help": "'pr', 'qr', 'rp' or 'rq'."})
    ab_alpha: float = field(default=0.2, metadata={"help": "alpha exponent of the AB divergence."})
    ab_beta: float = field(default=0.7, metadata={"help": "beta exponent of the AB divergence."})

    def loss_spec(self) -> tuple[str, dict]:
        return _amid_spec(self)

    def __post_init__(self):
        if self.loss != "amid" or self.loss_options:
            raise ValueError("AMiDConfig fixes loss='amid'; set the amid_* fields instead of loss/loss_options")
        super().__post_init__()


@dataclass
class CSDConfig(KDConfig):
    """``GKDConfig`` for CSD (concrete score distillation), arXiv 2509.25837.

    Args (beyond ``GKDConfig``):
        csd_weights: the weighting pair (w1, w2) from S (student softmax(b/tau)), T (teacher), U (uniform),
            M (mixture ``csd_mix_alpha * p + (1 - csd_mix_alpha) * q``); default ("S", "S").
        csd_temperature: tau of the student weights (1.0; the paper's best ablation point is 1.5).
        csd_mix_alpha: teacher share of the M weights (default 0.15, the summarisation config).
        sft_weight, loss_chunk_size, student_data...: as in ``KDConfig``.
    """

    loss: str = field(default="csd", metadata={"help": "Fixed to 'csd'."})
    csd_weights: Any = field(default=("S", "S"), metadata={"help": "Weighting pair, e.g. ('S','S') or 'TS'."})
    csd_temperature: float = field(default=1.0, metadata={"help": "Temperature tau of the student weights."})
    csd_mix_alpha: float = field(default=0.15, metadata={"help": "Teacher share alpha of the M weights."})

    def loss_spec(self) -> tuple[str, dict]:
        return _csd_spec(self)

    def __post_init__(self):
        if self.loss != "csd" or self.loss_options:
            raise ValueError("CSDConfig fixes loss='csd'; set the csd_* fields instead of loss/loss_options")
        super().__post_init__()


@dataclass
class KDOnPolicyConfig(DistillationConfig):
    """``trl.DistillationConfig`` with a loss from ``hf_plugins.losses`` (chunked path, on-policy data).

    ``temperature`` is the sampling temperature only; the divergence uses raw logits (the loss options carry any
    loss temperature, e.g. ``csd_temperature``). ``beta`` is unused. ``loss_chunk_size`` defaults to 1024 tokens.
    """

    _VALID_DICT_FIELDS = DistillationConfig._VALID_DICT_FIELDS + ["loss_options"]

    loss: str = field(default="forward_kl", metadata={"help": "Loss name in hf_plugins.losses."})
    loss_options: dict[str, Any] | str | None = field(default=None, metadata={"help": "Options of the loss."})
    sft_weight: float = field(default=0.0, metadata={"help": "Must be 0: generated completions have no reference."})
    loss_chunk_size: int | None = field(default=1024, metadata=_HELP_CHUNK)

    def loss_spec(self) -> tuple[str, dict]:
        return _kd_spec(self)

    def __post_init__(self):
        super().__post_init__()
        if self.sft_weight != 0:
            raise ValueError("sft_weight must be 0 for on-policy trainers: the completions are student samples")
        if self.loss_chunk_size is None:
            raise ValueError("loss_chunk_size must be a positive int for the on-policy (chunked) trainers")
        _validate_common(self)


@dataclass
class AMiDOnPolicyConfig(KDOnPolicyConfig):
    """``trl.DistillationConfig`` for AMiD; fields as in ``AMiDConfig``."""

    loss: str = field(default="amid", metadata={"help": "Fixed to 'amid'."})
    amid_alpha: float = 0.5
    amid_lambda: float = 0.1
    amid_divergence: str = "ab"
    amid_order: str = "pr"
    ab_alpha: float = 0.2
    ab_beta: float = 0.7

    def loss_spec(self) -> tuple[str, dict]:
        return _amid_spec(self)


@dataclass
class CSDOnPolicyConfig(KDOnPolicyConfig):
    """``trl.DistillationConfig`` for CSD; fields as in ``CSDConfig``."""

    loss: str = field(default="csd", metadata={"help": "Fixed to 'csd'."})
    csd_weights: Any = ("S", "S")
    csd_temperature: float = 1.0
    csd_mix_alpha: float = 0.15

    def loss_spec(self) -> tuple[str, dict]:
        return _csd_spec(self)
