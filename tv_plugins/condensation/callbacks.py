"""Distillation callbacks (hook names as in transformers' ``TrainerCallback``): evaluation, checkpoint/resume,
early stopping and a progress bar."""

from __future__ import annotations

import copy
import math
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..data import LabeledTensors
from ..persistence import check_settings, describe, digest
from ..registry import check_choice, check_int
from .objective import MatchingObjective
from .parameterization import SyntheticParameterization
from .process_group import writer

__all__ = ["Checkpoint", "DistillCallback", "DistillState", "EarlyStopping", "PeriodicEvaluation", "ProgressBar"]


@dataclass
class DistillState:
    """What callbacks see. ``iteration`` counts completed iterations; set ``should_stop`` to end the loop;
    ``generator`` feeds the loop's random draws; ``options``: the parameterization's build options."""

    parameterization: SyntheticParameterization
    optimizer: torch.optim.Optimizer
    objective: MatchingObjective
    real: LabeledTensors
    iterations: int
    seed: int
    iteration: int = 0
    loss: float = math.nan
    losses: list[float] = field(default_factory=list)
    evaluations: list[dict[str, Any]] = field(default_factory=list)
    should_stop: bool = False
    callbacks: tuple = ()
    generator: torch.Generator = field(default_factory=torch.Generator)
    options: dict[str, Any] = field(default_factory=dict)

    def evaluate_now(self, metrics: dict[str, Any]) -> None:
        """Record ``metrics`` (with the current iteration) and call every callback's ``on_evaluate``."""
        record = {"iteration": self.iteration, **metrics}
        self.evaluations.append(record)
        for callback in self.callbacks:
            callback.on_evaluate(self, record)


class DistillCallback:
    """Base class: override any hook. Hooks receive the :class:`DistillState`."""

    def on_distill_begin(self, state: DistillState) -> None: ...
    def on_iteration_begin(self, state: DistillState) -> None: ...
    def on_iteration_end(self, state: DistillState) -> None: ...
    def on_evaluate(self, state: DistillState, metrics: dict[str, Any]) -> None: ...
    def on_distill_end(self, state: DistillState) -> None: ...


class PeriodicEvaluation(DistillCallback):
    """Every ``every`` iterations (and after the last) run :func:`evaluate_synthetic` on the current set.

    Args:
        test_dataset: real test data. every: period in iterations. restore_best: at the end, put back the storage
            with the best mean accuracy (the papers report the best evaluation point).
        **evaluate_kwargs: passed to :func:`evaluate_synthetic` (model, runs, epochs, lr, ...).
    """

    def __init__(self, test_dataset, every: int = 500, restore_best: bool = False, **evaluate_kwargs) -> None:
        self.test_dataset, self.every, self.restore_best = test_dataset, check_int("every", every), bool(restore_best)
        self.evaluate_kwargs = {"progress": False, **evaluate_kwargs}
        self._best: tuple[float, dict] | None = None

    def _run(self, state: DistillState) -> None:
        from ..data import as_labeled_tensors
        from .evaluation import evaluate_synthetic
        from .synthetic import SyntheticDataset

        self.test_dataset = as_labeled_tensors(self.test_dataset, "test_dataset")  # convert once, reuse
        learned = state.objective.learned_lr
        synthetic = SyntheticDataset(state.parameterization, metadata={"learned_lr": learned})
        metrics = evaluate_synthetic(synthetic, self.test_dataset, **self.evaluate_kwargs)
        if self.restore_best and (self._best is None or metrics["mean"] > self._best[0]):
            self._best = (metrics["mean"], copy.deepcopy(state.parameterization.state_dict()))
        state.evaluate_now(metrics)

    def on_iteration_end(self, state: DistillState) -> None:
        if state.iteration % self.every == 0 or state.iteration == state.iterations:
            self._run(state)

    def on_distill_end(self, state: DistillState) -> None:
        if not state.evaluations or state.evaluations[-1]["iteration"] != state.iteration:
            self._run(state)
        if self.restore_best and self._best is not None:
            state.parameterization.load_state_dict(self._best[1])


#: version of the checkpoint layout and of the settings it is compared by
CHECKPOINT_FORMAT = 2


def run_settings(state: DistillState) -> dict[str, Any]:
    """Every setting that changes a distillation's result, as :class:`Checkpoint` compares them (tensors as
    :func:`~tv_plugins.persistence.describe` summarises them): the parameterization (kind, shape, options, initial
    storage), the objective and its options, the optimiser, the dataset (size, shape, classes, labels, pixels),
    ipc, seed and the checkpoint format."""
    param, real = state.parameterization, state.real
    return {
        "format_version": CHECKPOINT_FORMAT,
        "parameterization": param.kind,
        **{f"parameterization.{k}": v for k, v in describe({**param.config(), **state.options}).items()},
        "parameterization.initial_storage": describe(param.state_dict()),
        "objective": state.objective.name,
        **{f"objective.{k}": v for k, v in state.objective.settings().items()},
        **{f"optimizer.{k}": v for k, v in describe(state.optimizer).items()},
        "dataset.size": len(real.labels), "dataset.image_shape": list(real.images.shape[1:]),
        "dataset.num_classes": real.num_classes, "dataset.labels": digest(real.labels),
        "dataset.pixels": describe(real.images),
        "ipc": param.ipc, "seed": state.seed,
    }


class Checkpoint(DistillCallback):
    """Save the running distillation to ``directory/checkpoint.pt`` every ``every`` iterations; with ``resume=True``
    a run with the same settings continues from the saved iteration and ends bit-identical to an uninterrupted run
    (storage, optimiser, objective state and RNG states are restored). Resuming under any other
    :func:`run_settings` (e.g. DDiF ``width``, an objective option, the data, the seed) is a ``ValueError`` naming
    each difference; ``iterations`` may grow (500 saved iterations resume into a run of 1000).
    """

    FILE = "checkpoint.pt"

    def __init__(self, directory: str | os.PathLike, every: int = 100, resume: bool = True) -> None:
        self.directory, self.every, self.resume = Path(directory), check_int("every", every), bool(resume)
        self.settings: dict[str, Any] | None = None

    @property
    def path(self) -> Path:
        return self.directory / self.FILE

    def save(self, state: DistillState) -> None:
        """Write the checkpoint (rank 0 of a process group; the other ranks wait until it is written)."""
        with writer() as write:
            if write:
                self._write(state)

    def _write(self, state: DistillState) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload = {
            "settings": self.settings, "iteration": state.iteration, "losses": list(state.losses),
            "parameterization": state.parameterization.state_dict(), "optimizer": state.optimizer.state_dict(),
            "objective": state.objective.state_dict(), "generator": state.generator.get_state(),
            "rng": torch.get_rng_state(),  # distill's seeded global RNG, for user code that draws from it
        }
        tmp = self.path.with_suffix(".partial")
        torch.save(payload, tmp)
        tmp.replace(self.path)

    def _load(self) -> dict[str, Any]:
        try:
            payload = torch.load(self.path, weights_only=True)
        except (RuntimeError, EOFError, OSError, ValueError, pickle.UnpicklingError) as err:
            raise ValueError(f"{self.path} is incomplete or corrupt ({err}); it is written by "
                             "tv_plugins.condensation.Checkpoint: delete it to start afresh") from err
        if not isinstance(payload, dict) or "settings" not in payload:
            raise ValueError(f"{self.path} was written by an older tv_plugins (no settings fingerprint) or is not a "
                             "distillation checkpoint; delete it to start afresh")
        return payload

    def on_distill_begin(self, state: DistillState) -> None:
        self.settings = run_settings(state)
        if not (self.resume and self.path.exists()):
            return
        payload = self._load()
        check_settings(payload["settings"], self.settings, self.path, "distillation checkpoint")
        state.parameterization.load_state_dict(payload["parameterization"])
        state.optimizer.load_state_dict(payload["optimizer"])
        state.objective.load_state_dict(payload["objective"])
        state.generator.set_state(payload["generator"])
        torch.set_rng_state(payload["rng"])
        state.iteration, state.losses = int(payload["iteration"]), list(payload["losses"])

    def on_iteration_end(self, state: DistillState) -> None:
        if state.iteration % self.every == 0 or state.iteration == state.iterations:
            self.save(state)


class EarlyStopping(DistillCallback):
    """Stop when the monitored value has not improved by ``min_delta`` for ``patience`` checks.

    ``monitor="accuracy"`` watches evaluations (needs :class:`PeriodicEvaluation`); ``monitor="loss"`` watches
    the matching loss after each iteration.
    """

    def __init__(self, patience: int = 5, min_delta: float = 0.0, monitor: str = "accuracy") -> None:
        check_choice("monitor", monitor, ("accuracy", "loss"))
        self.patience, self.min_delta, self.monitor = check_int("patience", patience), float(min_delta), monitor
        self.best, self.bad = None, 0

    def _update(self, state: DistillState, value: float) -> None:
        better = self.best is None or (value > self.best + self.min_delta if self.monitor == "accuracy"
                                       else value < self.best - self.min_delta)
        if better:
            self.best, self.bad = value, 0
        else:
            self.bad += 1
            if self.bad >= self.patience:
                state.should_stop = True

    def on_iteration_end(self, state: DistillState) -> None:
        if self.monitor == "loss":
            self._update(state, state.loss)

    def on_evaluate(self, state: DistillState, metrics: dict[str, Any]) -> None:
        if self.monitor == "accuracy":
            self._update(state, metrics["mean"])


class ProgressBar(DistillCallback):
    """A tqdm bar over iterations showing the loss and the last evaluation."""

    def __init__(self, desc: str = "distill") -> None:
        self.desc, self.bar = desc, None

    def on_distill_begin(self, state: DistillState) -> None:
        self.bar = tqdm(total=state.iterations, initial=state.iteration, desc=self.desc)

    def on_iteration_end(self, state: DistillState) -> None:
        self.bar.update(1)
        self.bar.set_postfix(loss=f"{state.loss:.4g}")

    def on_evaluate(self, state: DistillState, metrics: dict[str, Any]) -> None:
        if self.bar is not None:
            self.bar.write(f"iteration {state.iteration}: test accuracy {metrics['mean']:.2f} +- {metrics['std']:.2f}")

    def on_distill_end(self, state: DistillState) -> None:
        if self.bar is not None:
            self.bar.close()
