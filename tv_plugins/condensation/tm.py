"""TM / MTT: trajectory matching (Cazenavette et al., CVPR 2022) against an expert buffer (spec C.4)."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch.func import functional_call
from tqdm.auto import tqdm

from ..data import as_labeled_tensors
from ..networks import ConvNet
from .objective import DEFAULT_DSA, MatchingObjective

__all__ = ["ExpertTrajectories", "TrajectoryMatching", "train_expert_trajectories"]


def _flat_parameters(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


class ExpertTrajectories:
    """Expert buffer: ``trajectories [num_experts, epochs + 1, P]`` (flattened ConvNet parameters after each epoch,
    epoch 0 = initialisation) and the ConvNet configuration ``network`` that produced them."""

    def __init__(self, trajectories: torch.Tensor, network: dict[str, Any], lr: float) -> None:
        if trajectories.ndim != 3 or trajectories.shape[0] < 1 or trajectories.shape[1] < 2:
            raise ValueError(f"trajectories must be [num_experts >= 1, epochs + 1 >= 2, P], got {tuple(trajectories.shape)}")
        self.trajectories, self.network, self.lr = trajectories, dict(network), float(lr)

    @property
    def num_experts(self) -> int:
        return int(self.trajectories.shape[0])

    @property
    def epochs(self) -> int:
        return int(self.trajectories.shape[1]) - 1

    def build_network(self) -> ConvNet:
        return ConvNet(**self.network)

    def save(self, path: str | os.PathLike) -> None:
        """``path/trajectories.safetensors`` + ``path/config.json``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        save_file({"trajectories": self.trajectories.contiguous()}, str(path / "trajectories.safetensors"))
        (path / "config.json").write_text(json.dumps({"network": self.network, "lr": self.lr}, indent=2))

    @classmethod
    def load(cls, path: str | os.PathLike) -> ExpertTrajectories:
        path = Path(path)
        config = json.loads((path / "config.json").read_text())
        return cls(load_file(str(path / "trajectories.safetensors"))["trajectories"], config["network"], config["lr"])


def train_expert_trajectories(dataset, num_experts: int = 100, epochs: int = 50, lr: float = 0.01,
                              batch_size: int = 256, depth: int = 3, width: int = 128, norm: str = "instance",
                              dsa: str = DEFAULT_DSA, seed: int = 0, progress: bool = True) -> ExpertTrajectories:
    """Train ``num_experts`` fresh ConvNets on the real data (SGD ``lr``, no momentum or weight decay, DSA on every
    batch) and record their parameters at epochs 0..``epochs``.

    Args:
        dataset: (image, label) dataset or ``(images, labels)`` tensors, square 2-D images.
    Returns:
        :class:`ExpertTrajectories` with ``trajectories [num_experts, epochs + 1, P]``.
    """
    from .augmentation import DSA

    for arg, value in (("num_experts", num_experts), ("epochs", epochs), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{arg} must be a positive int, got {value!r}")
    real = as_labeled_tensors(dataset)
    if len(real.spatial) != 2 or real.spatial[0] != real.spatial[1]:
        raise ValueError(f"expert training needs square 2-D images; got spatial size {real.spatial}")
    network = {"in_channels": real.channels, "num_classes": real.num_classes, "image_size": real.spatial[0],
               "depth": depth, "width": width, "norm": norm}
    augment = DSA(dsa)
    trajectories = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        bar = tqdm(total=num_experts * epochs, desc="expert trajectories", disable=not progress)
        for _ in range(num_experts):
            net = ConvNet(**network)
            optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
            snapshots = [_flat_parameters(net)]
            for _ in range(epochs):
                order = torch.randperm(len(real.labels))
                for start in range(0, len(order), batch_size):
                    batch = order[start:start + batch_size]
                    optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(net(augment(real.images[batch])), real.labels[batch]).backward()
                    optimizer.step()
                snapshots.append(_flat_parameters(net))
                bar.update(1)
            trajectories.append(torch.stack(snapshots))
        bar.close()
    return ExpertTrajectories(torch.stack(trajectories), network, lr)


class TrajectoryMatching(MatchingObjective):
    """MTT loss ``||theta_N - theta*||^2 / ||theta_0 - theta*||^2`` after ``syn_steps`` student SGD steps.

    Per iteration: a random expert, a start epoch ``t0`` uniform in ``0..max_start_epoch-1``, target epoch
    ``t0 + expert_epochs``; the student starts at the expert's ``t0`` parameters and takes ``syn_steps`` steps of
    learnable size ``syn_lr`` (initialised to ``lr_teacher``) on synthetic minibatches of ``batch_syn`` (None = the
    whole set; minibatches cycle through random permutations) with per-sample DSA. Gradients flow through every
    step into the synthetic storage and ``syn_lr``; ``syn_lr`` uses SGD(``lr_lr``, momentum 0.5) and is clipped
    to >= 0.001.

    Args:
        experts: the buffer from :func:`train_expert_trajectories` (its ConvNet configuration is used).
    """

    name = "tm"

    def __init__(self, experts: ExpertTrajectories, syn_steps: int = 50, expert_epochs: int = 2,
                 max_start_epoch: int = 5, lr_lr: float = 1e-5, lr_teacher: float | None = None,
                 batch_syn: int | None = None, dsa: str = DEFAULT_DSA) -> None:
        if not isinstance(experts, ExpertTrajectories):
            raise TypeError(f"experts must be ExpertTrajectories (see train_expert_trajectories), got {type(experts).__name__}")
        net = experts.network
        super().__init__(net["depth"], net["width"], net["norm"], dsa, batch_real=1)
        for arg, value, low in (("syn_steps", syn_steps, 0), ("expert_epochs", expert_epochs, 1),
                                ("max_start_epoch", max_start_epoch, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{arg} must be an int >= {low}, got {value!r}")
        if max_start_epoch - 1 + expert_epochs > experts.epochs:
            raise ValueError(f"max_start_epoch - 1 + expert_epochs = {max_start_epoch - 1 + expert_epochs} exceeds the "
                             f"{experts.epochs} recorded expert epochs")
        if batch_syn is not None and (isinstance(batch_syn, bool) or not isinstance(batch_syn, int) or batch_syn < 1):
            raise ValueError(f"batch_syn must be None or a positive int, got {batch_syn!r}")
        self.experts, self.syn_steps, self.expert_epochs = experts, syn_steps, expert_epochs
        self.max_start_epoch, self.lr_lr, self.batch_syn = max_start_epoch, lr_lr, batch_syn
        lr_teacher = experts.lr if lr_teacher is None else lr_teacher
        self.syn_lr = torch.tensor(float(lr_teacher), requires_grad=True)
        self.lr_optimizer = torch.optim.SGD([self.syn_lr], lr=lr_lr, momentum=0.5)
        self._net = experts.build_network()
        self._names = [name for name, _ in self._net.named_parameters()]
        self._shapes = [p.shape for _, p in self._net.named_parameters()]

    def prepare(self, real, parameterization) -> None:
        super().prepare(real, parameterization)
        expected = {"in_channels": real.channels, "num_classes": real.num_classes, "image_size": real.spatial[0]}
        mismatch = {k: (v, self.experts.network[k]) for k, v in expected.items() if self.experts.network[k] != v}
        if mismatch:
            raise ValueError(f"expert network does not fit the dataset: (dataset, experts) = {mismatch}")

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        out, offset = {}, 0
        for name, shape in zip(self._names, self._shapes):
            size = math.prod(shape)
            out[name] = flat[offset:offset + size].view(shape)
            offset += size
        return out

    def matching_loss(self, images: torch.Tensor, labels: torch.Tensor, start: torch.Tensor,
                      target: torch.Tensor) -> torch.Tensor:
        """Normalised parameter distance after ``syn_steps`` differentiable student steps (scalar)."""
        theta = start.clone().requires_grad_(True)
        order = torch.empty(0, dtype=torch.long)
        batch = len(labels) if self.batch_syn is None else min(self.batch_syn, len(labels))
        for _ in range(self.syn_steps):
            if len(order) < batch:
                order = torch.cat([order, torch.randperm(len(labels))])
            idx, order = order[:batch], order[batch:]
            logits = functional_call(self._net, self._unflatten(theta), (self.augment(images[idx]),))
            grad = torch.autograd.grad(F.cross_entropy(logits, labels[idx]), theta, create_graph=True)[0]
            theta = theta - self.syn_lr * grad
        return (theta - target).pow(2).sum() / (start - target).pow(2).sum()

    def sample_segment(self) -> tuple[int, int, int]:
        """(expert index, start epoch t0 in 0..max_start_epoch-1, target epoch t0 + expert_epochs)."""
        expert = int(torch.randint(self.experts.num_experts, (1,)))
        t0 = int(torch.randint(self.max_start_epoch, (1,)))
        return expert, t0, t0 + self.expert_epochs

    def step(self, parameterization, optimizer, real) -> float:
        index, t0, t1 = self.sample_segment()
        expert = self.experts.trajectories[index]
        images, labels = parameterization.decode()
        loss = self.matching_loss(images, labels, expert[t0], expert[t1])
        optimizer.zero_grad(set_to_none=True)
        self.lr_optimizer.zero_grad(set_to_none=True)
        if loss.requires_grad:
            loss.backward()
        optimizer.step()
        self.lr_optimizer.step()
        with torch.no_grad():
            self.syn_lr.clamp_(min=0.001)
        return float(loss.detach())

    @property
    def learned_lr(self) -> float:
        return float(self.syn_lr)

    def state_dict(self) -> dict[str, Any]:
        return {"syn_lr": self.syn_lr.detach().clone(), "lr_optimizer": self.lr_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"])
        self.lr_optimizer.load_state_dict(state["lr_optimizer"])
