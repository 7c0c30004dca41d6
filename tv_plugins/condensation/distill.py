"""The distillation loop and the ``FreD`` / ``DDiF`` shortcuts."""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

from ..data import LabeledTensors, as_labeled_tensors
from ..randomness import seeded
from ..registry import check_int
from . import dc, dm, tm  # noqa: F401  (register the objectives)
from .callbacks import Checkpoint, DistillCallback, DistillState, ProgressBar
from .ddif import DDiFParameterization
from .fred import FreDParameterization
from .objective import OBJECTIVES, MatchingObjective
from .parameterization import PARAMETERIZATIONS, SyntheticParameterization, check_ipc
from .process_group import check_same_settings
from .synthetic import SyntheticDataset

__all__ = ["DDiF", "FreD", "distill"]


def _with_progress(options: dict[str, Any], accepted: Any, progress: bool) -> dict[str, Any]:
    """``options`` plus ``progress`` when the target accepts it and the caller did not set it."""
    return {"progress": progress, **options} if "progress" in accepted else options


def _build_parameterization(parameterization: Any, real: LabeledTensors, ipc: int | None, seed: int,
                            options: dict[str, Any], progress: bool) -> tuple[SyntheticParameterization, dict]:
    """The storage to train and the ``from_real`` options it was built with."""
    if isinstance(parameterization, SyntheticParameterization):
        if options:
            raise ValueError("parameterization_kwargs apply only when the parameterization is built here")
        if ipc is not None and ipc != parameterization.ipc:
            raise ValueError(f"ipc={ipc} differs from the given parameterization's ipc={parameterization.ipc}")
        return parameterization, {}
    if ipc is None:
        raise ValueError("ipc is required when the parameterization is built from the data")
    cls = PARAMETERIZATIONS[parameterization].target if isinstance(parameterization, str) else parameterization
    if not (isinstance(cls, type) and issubclass(cls, SyntheticParameterization)):
        raise TypeError(f"parameterization must be one of {list(PARAMETERIZATIONS)}, a SyntheticParameterization "
                        f"class or instance, got {parameterization!r}")
    accepted = inspect.signature(cls.from_real).parameters
    if cls.kind in PARAMETERIZATIONS and PARAMETERIZATIONS[cls.kind].target is cls:
        PARAMETERIZATIONS[cls.kind].resolve(options)  # TypeError naming the accepted options
    param = cls.from_real(real, ipc, seed=seed, **_with_progress(options, accepted, progress))
    return param, {k: v for k, v in options.items() if k != "progress"}


def _build_objective(objective: str | MatchingObjective, options: dict[str, Any], progress: bool) -> MatchingObjective:
    if isinstance(objective, MatchingObjective):
        if options:
            raise ValueError("objective_kwargs apply only when the objective is given by name")
        return objective
    entry = OBJECTIVES[objective]
    entry.resolve(options)  # TypeError naming the accepted options
    return entry.target(**_with_progress(options, entry.defaults, progress))


def _run(state: DistillState) -> None:
    """The loop: callbacks around every ``objective.step``; a non-finite loss stops it with an error."""
    # objectives written for the earlier step(parameterization, optimizer, real) draw from the seeded global RNG
    extra = (state.generator,) if "generator" in inspect.signature(state.objective.step).parameters else ()
    for callback in state.callbacks:
        callback.on_distill_begin(state)
    while state.iteration < state.iterations and not state.should_stop:
        for callback in state.callbacks:
            callback.on_iteration_begin(state)
        loss = state.objective.step(state.parameterization, state.optimizer, state.real, *extra)
        if not math.isfinite(loss):
            raise RuntimeError(f"the {state.objective.name} loss became {loss} at iteration {state.iteration + 1}; "
                               f"lower lr (now {state.optimizer.param_groups[0]['lr']:g})")
        state.iteration += 1
        state.loss = loss
        state.losses.append(loss)
        for callback in state.callbacks:
            callback.on_iteration_end(state)
    for callback in state.callbacks:
        callback.on_distill_end(state)


def distill(dataset, parameterization: str | type[SyntheticParameterization] | SyntheticParameterization = "fred",
            objective: str | MatchingObjective = "dm", ipc: int | None = 10, iterations: int = 1000, seed: int = 0,
            lr: float | None = None, parameterization_kwargs: dict[str, Any] | None = None,
            objective_kwargs: dict[str, Any] | None = None, transform: Callable | None = None,
            progress: bool = True, callbacks: Sequence[DistillCallback] = ()) -> SyntheticDataset:
    """Condense ``dataset`` into a small synthetic set.

    Args:
        dataset: torchvision-style dataset of (image, label) (PIL images, arrays or tensors, one size) or
            ``(images, labels)``.
        parameterization: a name in ``PARAMETERIZATIONS`` ("pixel" | "fred" | "ddif"), a parameterization class
            (built with ``from_real``), or an already initialised instance.
        objective: a name in ``OBJECTIVES`` ("dm" | "dc" | "tm") or a :class:`MatchingObjective`. For "tm" pass
            ``objective_kwargs={"experts": train_expert_trajectories(...)}``, or ``{"expert_kwargs": {...}}`` to
            train the buffer first (default: the paper's 100 x 50-epoch buffer).
        ipc: images-per-class budget (stored floats per class <= ipc * C * H * W).
        iterations: outer distillation iterations.
        seed: seeds the real-image init and a ``torch.Generator`` feeding every random draw of the loop: same seed,
            same synthetic set. The caller's global RNG state is not changed.
        lr: storage learning rate (default: the parameterization's per-objective default).
        parameterization_kwargs: options of ``from_real`` (e.g. ``k`` for FreD, ``width`` for DDiF).
        objective_kwargs: options of the objective's constructor when it is given by name.
        transform: attached to the returned dataset (applied to each decoded image tensor).
        progress: show tqdm bars (adds a :class:`ProgressBar` unless one is given).
        callbacks: :class:`DistillCallback` instances (evaluation, checkpoint/resume, early stop, ...).

    Under a ``torch.distributed`` default process group (``torchrun`` / ``accelerate launch``; every rank calls
    ``distill`` with the same arguments) DM and DC split their classes over the ranks and sum the storage's gradients,
    a TM expert buffer trained here is split by expert, every rank returns the same set, and only rank 0 writes files
    (:mod:`tv_plugins.condensation.process_group`). Without one, everything runs in this process.

    Returns:
        :class:`SyntheticDataset` with ``metadata`` {objective, iterations, seed, learned_lr, losses, evaluations}.

    Raises:
        ValueError: bad arguments or names, unlabeled data, mismatched image sizes, classes with too few images,
            a budget too small for the parameterization, a checkpoint written with other settings.
        TypeError: an unknown option.  RuntimeError: the loss becomes NaN/inf.
    """
    check_int("iterations", iterations, 0)
    if ipc is not None:
        check_ipc(ipc)
    for callback in callbacks:
        if not isinstance(callback, DistillCallback):
            raise TypeError(f"callbacks must be DistillCallback instances, got {type(callback).__name__}")
    real = as_labeled_tensors(dataset)
    check_same_settings({"seed": seed, "iterations": iterations, "ipc": ipc, "lr": lr, "dataset_size": len(real.labels),
                         "objective": objective if isinstance(objective, str) else type(objective).__name__})
    all_callbacks = list(callbacks)
    all_callbacks.sort(key=lambda c: not isinstance(c, Checkpoint))  # restore first, so the others see the resumed state
    # built-in code draws from explicit generators; torch's global RNG is seeded too (and restored on exit) for
    # user parameterizations / objectives that draw from it
    with seeded(seed):
        param, options = _build_parameterization(parameterization, real, ipc, seed,
                                                 dict(parameterization_kwargs or {}), progress)
        obj = _build_objective(objective, dict(objective_kwargs or {}), progress)
        obj.prepare(real, param)
        optimizer = param.make_optimizer(obj.name, lr)
        if progress and not any(isinstance(c, ProgressBar) for c in all_callbacks):
            all_callbacks.append(ProgressBar(f"distill {param.kind}/{obj.name}"))
        state = DistillState(param, optimizer, obj, real, iterations, seed, callbacks=tuple(all_callbacks),
                             generator=torch.Generator().manual_seed(seed), options=options)
        _run(state)
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
        """:func:`distill` with :class:`DDiFParameterization` (one SIREN of ``num_layers`` x ``width`` per instance).

        Each method defaults to its own paper's protocol: with ``objective="dm"`` this shortcut takes DDiF's per-class
        DM steps (``step_per_class=True`` unless ``objective_kwargs`` sets it), while :meth:`FreD.distill` and
        :func:`distill` keep FreD's summed class losses (``step_per_class=False``)."""
        if objective == "dm":
            kwargs["objective_kwargs"] = {"step_per_class": True, **(kwargs.get("objective_kwargs") or {})}
        return distill(dataset, DDiFParameterization, objective, ipc, iterations, seed,
                       parameterization_kwargs={"width": width, "num_layers": num_layers, "init_steps": init_steps,
                                                "init_lr": init_lr}, **kwargs)
