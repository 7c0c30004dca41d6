"""Optimiser steps that touch one class's storage only, as if every class had its own optimiser."""

from __future__ import annotations

import torch

from .parameterization import SyntheticParameterization

__all__ = ["step_class"]

_CLASS_STEPS = "class_steps"  # per-class step counts, kept in the optimiser state (so checkpoints carry them)


def _rows_outside(parameterization: SyntheticParameterization, c: int) -> torch.Tensor:
    keep = torch.ones(parameterization.num_instances, dtype=torch.bool)
    keep[parameterization.class_instances(c)] = False
    return keep


def step_class(parameterization: SyntheticParameterization, optimizer: torch.optim.Optimizer, c: int) -> None:
    """``optimizer.step()`` restricted to class ``c``'s instances: the other classes' rows of every parameter and of
    every per-element optimiser state (momentum, Adam moments) are left exactly as they were, and a scalar step
    count (Adam's bias correction) is kept per class. The result equals one optimiser per class over that class's
    storage alone (DDiF's DM code keeps one SIREN module per instance, and its Adam skips the parameters that got no
    gradient, so the other classes' fields do not move).

    Every parameter's dim 0 must index the instances (true of the pixel, FreD and DDiF storages).
    """
    others = _rows_outside(parameterization, c)
    saved = []
    for group in optimizer.param_groups:
        for p in group["params"]:
            if p.ndim == 0 or p.shape[0] != parameterization.num_instances:
                raise ValueError(f"per-class steps need every parameter's dim 0 to index the "
                                 f"{parameterization.num_instances} instances; got shape {tuple(p.shape)}")
            state = optimizer.state[p]
            rows = {k: v[others].clone() for k, v in state.items() if torch.is_tensor(v) and v.shape == p.shape}
            counts = state.get(_CLASS_STEPS)
            if counts is not None and "step" in state:
                state["step"] = counts[c].clone().to(state["step"])
            saved.append((p, rows, p.detach()[others].clone()))
    optimizer.step()
    with torch.no_grad():
        for p, rows, values in saved:
            state = optimizer.state[p]
            p[others] = values
            for k, v in state.items():
                if torch.is_tensor(v) and v.shape == p.shape:
                    v[others] = rows[k] if k in rows else 0  # a state created by this step starts at zero elsewhere
            if "step" in state:
                counts = state.setdefault(_CLASS_STEPS, torch.zeros(parameterization.num_classes))
                counts[c] = float(state["step"])
