"""The distillation loop and the ``FreD`` / ``DDiF`` shortcuts."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data import as_labeled_tensors
from .callbacks import Checkpoint, DistillCallback, DistillState, ProgressBar
from .dc import GradientMatching
from .ddif import DDiFParameterization
from .dm import DistributionMatching
from .fred import FreDParameterization
from .objective import MatchingObjective
from .parameterization import OBJECTIVE_NAMES, SyntheticParameterization, check_ipc, parameterization_class
from .synthetic import SyntheticDataset
from .tm import TrajectoryMatching, train_expert_trajectories

__all__ = ["DDiF", "FreD", "distill"]


def _make_objective(objective, real, kwargs: dict[str, Any], progress: bool) -> MatchingObjective:
    if isinstance(objective, MatchingObjective):
        if kwargs:
            raise ValueError("objective_kwargs apply only when objective is given by name")
        return objective
    if objective not in OBJECTIVE_NAMES:
        raise ValueError(f"objective must be one of {OBJECTIVE_NAMES} or a MatchingObjective, got {objective!r}")
    if objective == "dm":
        return DistributionMatching(**kwargs)
    if objective == "dc":
        return GradientMatching(**kwargs)
    kwargs = dict(kwargs)
    experts = kwargs.pop("experts", None)
    if experts is None:  # the paper's buffer (100 experts x 50 epochs) unless expert_kwargs says otherwise
        experts = train_expert_trajectories(real, progress=progress, **kwargs.pop("expert_kwargs", {}))
    return TrajectoryMatching(experts, **kwargs)


def distill(dataset, parameterization: str | type[SyntheticParameterization] | SyntheticParameterization = "fred",
            objective: str | MatchingObjective = "dm", ipc: int | None = 10, iterations: int = 1000, seed: int = 0,
            lr: float | None = None, parameterization_kwargs: dict[str, Any] | None = None,
            objective_kwargs: dict[str, Any] | None = None, transform: Callable | None = None,
            progress: bool = True, callbacks: Sequence[DistillCallback] = ()) -> SyntheticDataset:
    """Condense ``dataset`` into a small synthetic set.

    Args:
        dataset: torchvision-style dataset of (image, label) (PIL images or tensors, one size) or ``(images, labels)``.
        parameterization: "pixel" | "fred" | "ddif", a parameterization class (built with ``from_real``), or an
            already initialised instance.
        objective: "dm" | "dc" | "tm" or a :class:`MatchingObjective`. For "tm" pass
            ``objective_kwargs={"experts": train_expert_trajectories(...)}`` (otherwise the paper's 100 x 50-epoch
            buffer is trained first, or pass ``{"expert_kwargs": {...}}``).
        ipc: images-per-class budget (stored floats per class <= ipc * C * H * W).
        iterations: outer distillation iterations.
        seed: seeds the real-image init and every random draw of the loop: same seed, same synthetic set.
        lr: storage learning rate (default: the parameterization's per-objective default).
        parameterization_kwargs: passed to ``from_real`` (e.g. ``k`` for FreD, ``width`` for DDiF).
        objective_kwargs: passed to the objective's constructor when given by name.
        transform: attached to the returned dataset (applied to each decoded image tensor).
        progress: show tqdm bars (adds a :class:`ProgressBar` unless one is given).
        callbacks: :class:`DistillCallback` instances (evaluation, checkpoint/resume, early stop, ...).

    Returns:
        :class:`SyntheticDataset` with ``metadata`` {objective, iterations, seed, learned_lr}.

    Raises:
        ValueError: bad arguments, unlabeled data, mismatched image sizes, classes with too few images,
        a budget too small for the parameterization; RuntimeError if the loss becomes NaN/inf.
    """
    if isinstance(iterations, bool) or not isinstance(iterations, int) or iterations < 0:
        raise ValueError(f"iterations must be a non-negative int, got {iterations!r}")
    if ipc is not None:
        check_ipc(ipc)
    for callback in callbacks:
        if not isinstance(callback, DistillCallback):
            raise TypeError(f"callbacks must be DistillCallback instances, got {type(callback).__name__}")
    parameterization_kwargs = dict(parameterization_kwargs or {})
    real = as_labeled_tensors(dataset)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        if isinstance(parameterization, SyntheticParameterization):
            if parameterization_kwargs:
                raise ValueError("parameterization_kwargs apply only when the parameterization is built here")
            if ipc is not None and ipc != parameterization.ipc:
                raise ValueError(f"ipc={ipc} differs from the given parameterization's ipc={parameterization.ipc}")
            param = parameterization
        else:
            if ipc is None:
                raise ValueError("ipc is required when the parameterization is built from the data")
            cls = parameterization_class(parameterization) if isinstance(parameterization, str) else parameterization
            if not (isinstance(cls, type) and issubclass(cls, SyntheticParameterization)):
                raise TypeError("parameterization must be 'pixel' | 'fred' | 'ddif', a SyntheticParameterization "
                                f"class or instance, got {parameterization!r}")
            if cls is DDiFParameterization:
                parameterization_kwargs.setdefault("progress", progress)
            param = cls.from_real(real, ipc, seed=seed, **parameterization_kwargs)
        obj = _make_objective(objective, real, dict(objective_kwargs or {}), progress)
        obj.prepare(real, param)
        optimizer = param.make_optimizer(obj.name, lr)
        all_callbacks = list(callbacks)
        if progress and not any(isinstance(c, ProgressBar) for c in all_callbacks):
            all_callbacks.append(ProgressBar(f"distill {param.kind}/{obj.name}"))
        # checkpoints restore first, so the other callbacks start from the resumed state
        all_callbacks.sort(key=lambda c: not isinstance(c, Checkpoint))
        state = DistillState(param, optimizer, obj, real, iterations, seed, callbacks=tuple(all_callbacks))
        for callback in all_callbacks:
            callback.on_distill_begin(state)
        while state.iteration < iterations and not state.should_stop:
            for callback in all_callbacks:
                callback.on_iteration_begin(state)
            loss = obj.step(param, optimizer, real)
            if not math.isfinite(loss):
                raise RuntimeError(f"the {obj.name} loss became {loss} at iteration {state.iteration + 1}; "
                                   f"lower lr (now {optimizer.param_groups[0]['lr']:g})")
            state.iteration += 1
            state.loss = loss
            state.losses.append(loss)
            for callback in all_callbacks:
                callback.on_iteration_end(state)
        for callback in all_callbacks:
            callback.on_distill_end(state)
    metadata = {"objective": obj.name, "iterations": state.iteration, "seed": seed, "learned_lr": obj.learned_lr,
                "losses": state.losses, "evaluations": state.evaluations}
    return SyntheticDataset(param, transform=transform, metadata=metadata)


class FreD:
    """Shortcut: ``FreD.distill(dataset, ipc=10, objective="dm", iterations=..., seed=0, k=None, ...)``."""

    @staticmethod
    def distill(dataset, ipc: int = 10, objective: str | MatchingObjective = "dm", iterations: int = 1000,
                seed: int = 0, k: int | None = None, convention: str = "reference", mask_source: str = "init",
                **kwargs) -> SyntheticDataset:
        """:func:`distill` with :class:`FreDParameterization` (``k`` coefficients per channel, default H*W // 4)."""
        return distill(dataset, FreDParameterization, objective, ipc, iterations, seed,
                       parameterization_kwargs={"k": k, "convention": convention, "mask_source": mask_source},
                       **kwargs)


class DDiF:
    """Shortcut: ``DDiF.distill(dataset, ipc=10, objective="dm", iterations=..., seed=0, width=10, ...)``."""

    @staticmethod
    def distill(dataset, ipc: int = 10, objective: str | MatchingObjective = "dm", iterations: int = 1000,
                seed: int = 0, width: int = 10, num_layers: int = 2, init_steps: int = 5000, init_lr: float = 5e-4,
                **kwargs) -> SyntheticDataset:
        """:func:`distill` with :class:`DDiFParameterization` (one SIREN of ``num_layers`` x ``width`` per instance)."""
        return distill(dataset, DDiFParameterization, objective, ipc, iterations, seed,
                       parameterization_kwargs={"width": width, "num_layers": num_layers, "init_steps": init_steps,
                                                "init_lr": init_lr}, **kwargs)
