"""Configurations of the distillation trainers: TRL configs extended with the loss and its options.

``KDConfig`` / ``AMiDConfig`` / ``CSDConfig`` subclass ``trl.experimental.gkd.GKDConfig`` (off-/on-policy
mixing with ``lmbda``, ``seq_kd``); the ``*OnPolicyConfig`` classes subclass the stable
``trl.DistillationConfig`` (prompt-only data, the student always generates).

Every config answers ``distillation_loss()``: the configured ``hf_plugins.losses.Loss`` its trainer computes.
The AMiD and CSD fields (``amid_alpha``, ``csd_weights``, ...) are generated from the options that
``AMiDLoss`` / ``CSDLoss`` declare (same defaults, checks and help), so each option is declared once. All
fields are validated in ``__post_init__``, before any model is built.
"""

from __future__ import annotations

import typing
from dataclasses import dataclass, field, fields, make_dataclass
from typing import Any

from trl import DistillationConfig
from trl.experimental.gkd import GKDConfig

from ..losses import AMiDLoss, CSDLoss, Loss, get

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


def _check_number(name: str, value: Any, low: float | None = None, high: float | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be in [{low}, {high}], got {value!r}")


def _validate_student_data(cfg) -> None:
    if cfg.student_data not in STUDENT_DATA_SCHEDULES:
        raise ValueError(f"student_data must be one of {STUDENT_DATA_SCHEDULES}, got {cfg.student_data!r}")
    if isinstance(cfg.replay_capacity, bool) or not isinstance(cfg.replay_capacity, int) or cfg.replay_capacity < 1:
        raise ValueError(f"replay_capacity must be a positive int, got {cfg.replay_capacity!r}")
    _check_number("distillm_init_threshold", cfg.distillm_init_threshold, 0.0, 1.0)
    _check_number("distillm_threshold_step", cfg.distillm_threshold_step, 0.0, 1.0)
    _check_number("distillm_loss_eps", cfg.distillm_loss_eps, 0.0, None)


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
class _LossFields:
    """The loss by name and options, ``sft_weight`` and ``loss_chunk_size``: shared by every config here."""

    loss: str = field(default="forward_kl", metadata={"help": "Loss name in hf_plugins.losses."})
    loss_options: dict[str, Any] | str | None = field(default=None, metadata={"help": "Options of the loss."})
    sft_weight: float = field(default=0.0, metadata=_HELP_SFT)
    loss_chunk_size: int | None = field(default=None, metadata=_HELP_CHUNK)

    def distillation_loss(self) -> Loss:
        """The configured loss: ``hf_plugins.losses.get(loss, **loss_options)``."""
        if not isinstance(self.loss, str):
            raise TypeError(f"loss must be a loss name (str), got {type(self.loss).__name__}")
        options = self.loss_options or {}
        if not isinstance(options, dict):
            raise TypeError(f"loss_options must be a dict of keyword options, got {type(options).__name__}")
        return get(self.loss, **options)

    def loss_spec(self) -> tuple[str, dict]:
        """Name and options of the distillation loss, as ``hf_plugins.losses.get`` takes them."""
        loss = self.distillation_loss()
        return loss.name, loss.options

    def _validate_loss_fields(self) -> None:
        _check_number("sft_weight", self.sft_weight, 0.0, None)
        chunk = self.loss_chunk_size
        if chunk is not None and (isinstance(chunk, bool) or not isinstance(chunk, int) or chunk < 1):
            raise ValueError(f"loss_chunk_size must be None (full logits) or a positive int, got {chunk!r}")
        self.distillation_loss()  # raises on a bad option, before any work starts


def _option_fields(loss_cls: type[Loss], names: dict[str, str]) -> type:
    """A dataclass mixin holding the options of ``loss_cls`` as the config fields ``names[option]``.

    Defaults, types and help come from the loss's declaration; ``loss`` is fixed to the loss's name, and
    ``distillation_loss()`` builds the loss from the fields (errors name the config field).
    """
    hints = typing.get_type_hints(loss_cls)
    # a non-scalar option (CSD's weight pair) is typed str for the command line; the loss's check parses it
    specs = [
        (names[f.name], hints[f.name] if hints[f.name] in (int, float, str) else str,
         field(default=f.default, metadata={"help": f.metadata["help"]}))
        for f in fields(loss_cls)
    ]
    specs.append(("loss", str, field(default=loss_cls.name, metadata={"help": f"Fixed to {loss_cls.name!r}."})))

    def distillation_loss(self) -> Loss:
        if self.loss != loss_cls.name or self.loss_options:
            raise ValueError(
                f"{type(self).__name__} fixes loss={loss_cls.name!r}; set the fields {', '.join(names.values())} "
                "instead of loss/loss_options"
            )
        return loss_cls.from_options({option: getattr(self, name) for option, name in names.items()}, names)

    namespace = {"distillation_loss": distillation_loss, "__module__": __name__}
    return make_dataclass(f"{loss_cls.__name__}Fields", specs, namespace=namespace)


AMiDFields = _option_fields(
    AMiDLoss,
    {"alpha": "amid_alpha", "lam": "amid_lambda", "divergence": "amid_divergence", "order": "amid_order",
     "ab_alpha": "ab_alpha", "ab_beta": "ab_beta"},
)
CSDFields = _option_fields(
    CSDLoss, {"weights": "csd_weights", "temperature": "csd_temperature", "mix_alpha": "csd_mix_alpha"}
)


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
class KDConfig(GKDConfig, _StudentDataFields, _LossFields):
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

    def __post_init__(self):
        super().__post_init__()
        _validate_student_data(self)
        self._validate_loss_fields()


@dataclass
class AMiDConfig(AMiDFields, KDConfig):
    """``GKDConfig`` for AMiD (alpha-mixture assistant distribution), arXiv 2510.15982.

    Args (beyond ``GKDConfig``): ``amid_alpha``, ``amid_lambda``, ``amid_divergence``, ``amid_order``,
    ``ab_alpha``, ``ab_beta``: the options ``alpha`` (-1 arithmetic, 1 geometric mixture), ``lam`` (teacher
    weight, the paper's best 0.1), ``divergence`` ("ab", the paper's setting, or "kl"), ``order`` ("pr",
    "qr", "rp", "rq") and the AB exponents of ``hf_plugins.losses.AMiDLoss``, with its defaults and checks;
    ``sft_weight``, ``loss_chunk_size``, ``student_data``...: as in ``KDConfig``.
    """


@dataclass
class CSDConfig(CSDFields, KDConfig):
    """``GKDConfig`` for CSD (concrete score distillation), arXiv 2509.25837.

    Args (beyond ``GKDConfig``): ``csd_weights`` (the pair (w1, w2) of "student", "teacher", "uniform",
    "mixture" or their letters, e.g. ("S", "S") or "TS"), ``csd_temperature`` (tau of the student weights; the
    paper's best ablation point is 1.5) and ``csd_mix_alpha`` (teacher share of the mixture weights): the
    options of ``hf_plugins.losses.CSDLoss``, with its defaults and checks; ``sft_weight``,
    ``loss_chunk_size``, ``student_data``...: as in ``KDConfig``.
    """


@dataclass
class KDOnPolicyConfig(DistillationConfig, _LossFields):
    """``trl.DistillationConfig`` with a loss from ``hf_plugins.losses`` (chunked path, on-policy data).

    ``temperature`` is the sampling temperature only; the divergence uses raw logits (the loss options carry any
    loss temperature, e.g. ``csd_temperature``). ``beta`` is unused. ``loss_chunk_size`` defaults to 1024 tokens.
    """

    _VALID_DICT_FIELDS = DistillationConfig._VALID_DICT_FIELDS + ["loss_options"]

    sft_weight: float = field(default=0.0, metadata={"help": "Must be 0: generated completions have no reference."})
    loss_chunk_size: int | None = field(default=1024, metadata=_HELP_CHUNK)

    def __post_init__(self):
        super().__post_init__()
        if self.sft_weight != 0:
            raise ValueError("sft_weight must be 0 for on-policy trainers: the completions are student samples")
        if self.loss_chunk_size is None:
            raise ValueError("loss_chunk_size must be a positive int for the on-policy (chunked) trainers")
        self._validate_loss_fields()


@dataclass
class AMiDOnPolicyConfig(AMiDFields, KDOnPolicyConfig):
    """``trl.DistillationConfig`` for AMiD; fields as in ``AMiDConfig``."""


@dataclass
class CSDOnPolicyConfig(CSDFields, KDOnPolicyConfig):
    """``trl.DistillationConfig`` for CSD; fields as in ``CSDConfig``."""
