"""TM / MTT: trajectory matching (Cazenavette et al., CVPR 2022) against an expert buffer."""

from __future__ import annotations

import inspect
import json
import math
import os
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors.torch import save_file
from torch.func import functional_call
from tqdm.auto import tqdm

from ..data import LabeledTensors, as_labeled_tensors
from ..networks import ConvNet
from ..persistence import read_json, read_safetensors
from ..randomness import seeded
from ..registry import Entry, check_int
from .augmentation import DSA
from .objective import DEFAULT_DSA, OBJECTIVES, MatchingObjective
from .process_group import gather_owned, owned, writer

__all__ = ["ExpertTrajectories", "TrajectoryMatching", "train_expert_trajectories"]


def _flat_parameters(net: torch.nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


class ExpertTrajectories:
    """Expert buffer: ``trajectories [num_experts, epochs + 1, P]`` (flattened ConvNet parameters after each epoch,
    epoch 0 = initialisation) and the ConvNet configuration ``network`` that produced them."""

    WEIGHTS, CONFIG = "trajectories.safetensors", "config.json"

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

    def save_pretrained(self, path: str | os.PathLike) -> None:
        """``path/trajectories.safetensors`` + ``path/config.json`` (written by rank 0 of a process group)."""
        path = Path(path)
        with writer() as write:  # rank 0 only under a process group; the others wait for it
            if write:
                path.mkdir(parents=True, exist_ok=True)
                save_file({"trajectories": self.trajectories.contiguous()}, str(path / self.WEIGHTS))
                (path / self.CONFIG).write_text(json.dumps({"network": self.network, "lr": self.lr}, indent=2))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike) -> ExpertTrajectories:
        """Read a buffer written by :meth:`save_pretrained` (the trajectories byte for byte)."""
        path, writer = Path(path), "ExpertTrajectories.save_pretrained"
        config = read_json(path / cls.CONFIG, writer, required=("network", "lr"))
        return cls(read_safetensors(path / cls.WEIGHTS, writer, ("trajectories",))["trajectories"], config["network"],
                   config["lr"])

    save = save_pretrained  # the earlier names, kept as aliases
    load = from_pretrained


def _train_expert(real: LabeledTensors, network: dict[str, Any], epochs: int, lr: float, batch_size: int,
                  augment: DSA, seed: int) -> torch.Tensor:
    """One expert's ``[epochs + 1, P]`` parameter snapshots; everything random in it comes from ``seed``."""
    with seeded(seed):
        net = ConvNet(**network)
    generator = torch.Generator().manual_seed(seed)
    optimizer = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.0, weight_decay=0.0)
    snapshots = [_flat_parameters(net)]
    for _ in range(epochs):
        for batch in torch.randperm(len(real.labels), generator=generator).split(batch_size):
            optimizer.zero_grad(set_to_none=True)
            F.cross_entropy(net(augment(real.images[batch], generator=generator)), real.labels[batch]).backward()
            optimizer.step()
        snapshots.append(_flat_parameters(net))
    return torch.stack(snapshots)


def train_expert_trajectories(dataset, num_experts: int = 100, epochs: int = 50, lr: float = 0.01,
                              batch_size: int = 256, depth: int = 3, width: int = 128, norm: str = "instance",
                              dsa: str = DEFAULT_DSA, seed: int = 0, progress: bool = True) -> ExpertTrajectories:
    """Train ``num_experts`` fresh ConvNets on ``dataset`` (``(image, label)`` items or ``(images, labels)``,
    square 2-D images; SGD ``lr``, no momentum or weight decay, DSA on every batch) and record their parameters
    at epochs 0..``epochs``: :class:`ExpertTrajectories` ``[num_experts, epochs + 1, P]``. Expert ``e`` depends only
    on ``seed + 1000003 e`` (initialisation, batch order, augmentation): under a ``torch.distributed`` group expert
    ``e`` is trained by rank ``e % world_size`` and every rank returns the whole buffer, equal bit for bit to the
    one-process one. The caller's global RNG state is not changed."""
    for arg, value in (("num_experts", num_experts), ("epochs", epochs), ("batch_size", batch_size)):
        check_int(arg, value)
    real = as_labeled_tensors(dataset)
    if len(real.spatial) != 2 or real.spatial[0] != real.spatial[1]:
        raise ValueError(f"expert training needs square 2-D images; got spatial size {real.spatial}")
    network = {"in_channels": real.channels, "num_classes": real.num_classes, "image_size": real.spatial[0],
               "depth": depth, "width": width, "norm": norm}
    augment = DSA(dsa)
    bar = tqdm(total=len(owned(num_experts)), desc="expert trajectories", disable=not progress)

    def train(e: int) -> torch.Tensor:
        trajectory = _train_expert(real, network, epochs, lr, batch_size, augment, seed + 1_000_003 * e)
        bar.update()
        return trajectory

    with bar:
        return ExpertTrajectories(gather_owned(num_experts, train), network, lr)


#: the options of ``expert_kwargs`` (TypeError on an unknown one), with their defaults
_EXPERT_OPTIONS = Entry("train_expert_trajectories", train_expert_trajectories, {
    n: p.default for n, p in list(inspect.signature(train_expert_trajectories).parameters.items())[1:]}, {}, "expert_kwargs")


@OBJECTIVES.register("tm")
class TrajectoryMatching(MatchingObjective):
    """MTT loss ``||theta_N - theta*||^2 / ||theta_0 - theta*||^2`` after ``syn_steps`` student SGD steps.

    Per iteration: a random expert, a start epoch ``t0`` uniform in ``0..max_start_epoch-1``, target epoch
    ``t0 + expert_epochs``; the student starts at the expert's ``t0`` parameters and takes ``syn_steps`` steps of
    learnable size ``syn_lr`` (initially ``lr_teacher``) on synthetic minibatches of ``batch_syn`` (None = all;
    cycling through random permutations) with per-sample DSA. Gradients flow through every step into the storage
    and ``syn_lr`` (SGD ``lr_lr``, momentum 0.5, clipped to >= 0.001). ``experts``: a buffer from
    :func:`train_expert_trajectories` (its ConvNet is used), or None: :meth:`prepare` trains one on the real data
    with ``expert_kwargs`` (default: the paper's 100 experts x 50 epochs), showing ``progress``.
    """

    def __init__(self, experts: ExpertTrajectories | None = None, syn_steps: int = 50, expert_epochs: int = 2,
                 max_start_epoch: int = 5, lr_lr: float = 1e-5, lr_teacher: float | None = None,
                 batch_syn: int | None = None, dsa: str = DEFAULT_DSA, expert_kwargs: dict[str, Any] | None = None,
                 progress: bool = True) -> None:
        if experts is not None and not isinstance(experts, ExpertTrajectories):
            raise TypeError(f"experts must be ExpertTrajectories (see train_expert_trajectories), got {type(experts).__name__}")
        if experts is not None and expert_kwargs:
            raise ValueError("pass either experts (a trained buffer) or expert_kwargs (to train one), not both")
        self.expert_kwargs = _EXPERT_OPTIONS.resolve(expert_kwargs or {})
        net = experts.network if experts is not None else self.expert_kwargs
        super().__init__(net["depth"], net["width"], net["norm"], dsa, batch_real=1)
        for arg, value, low in (("syn_steps", syn_steps, 0), ("expert_epochs", expert_epochs, 1),
                                ("max_start_epoch", max_start_epoch, 1)):
            check_int(arg, value, low)
        epochs = experts.epochs if experts is not None else self.expert_kwargs["epochs"]
        if max_start_epoch - 1 + expert_epochs > epochs:
            raise ValueError(f"max_start_epoch - 1 + expert_epochs = {max_start_epoch - 1 + expert_epochs} exceeds the "
                             f"{epochs} recorded expert epochs")
        self.syn_steps, self.expert_epochs, self.max_start_epoch = syn_steps, expert_epochs, max_start_epoch
        self.lr_lr, self.batch_syn, self.progress = lr_lr, check_int("batch_syn", batch_syn, optional=True), progress
        lr_teacher = (experts.lr if experts is not None else self.expert_kwargs["lr"]) if lr_teacher is None else lr_teacher
        self.syn_lr = torch.tensor(float(lr_teacher), requires_grad=True)
        self.lr_optimizer = torch.optim.SGD([self.syn_lr], lr=lr_lr, momentum=0.5)
        self.experts = None
        if experts is not None:
            self._use(experts)

    def _use(self, experts: ExpertTrajectories) -> None:
        self.experts = experts
        self._net = experts.build_network()
        self._shapes = {name: p.shape for name, p in self._net.named_parameters()}

    def prepare(self, real, parameterization) -> None:
        super().prepare(real, parameterization)
        if self.experts is None:
            self._use(train_expert_trajectories(real, **{**self.expert_kwargs, "progress": self.progress}))
        expected = {"in_channels": real.channels, "num_classes": real.num_classes, "image_size": real.spatial[0]}
        mismatch = {k: (v, self.experts.network[k]) for k, v in expected.items() if self.experts.network[k] != v}
        if mismatch:
            raise ValueError(f"expert network does not fit the dataset: (dataset, experts) = {mismatch}")

    def _unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        pieces = flat.split([math.prod(shape) for shape in self._shapes.values()])
        return {name: piece.view(shape) for (name, shape), piece in zip(self._shapes.items(), pieces)}

    def matching_loss(self, images: torch.Tensor, labels: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
        """Normalised parameter distance after ``syn_steps`` differentiable student steps (scalar)."""
        theta = start.clone().requires_grad_(True)
        order = torch.empty(0, dtype=torch.long)
        batch = len(labels) if self.batch_syn is None else min(self.batch_syn, len(labels))
        for _ in range(self.syn_steps):
            if len(order) < batch:
                order = torch.cat([order, torch.randperm(len(labels), generator=generator)])
            idx, order = order[:batch], order[batch:]
            logits = functional_call(self._net, self._unflatten(theta), (self.augment(images[idx], generator=generator),))
            grad = torch.autograd.grad(F.cross_entropy(logits, labels[idx]), theta, create_graph=True)[0]
            theta = theta - self.syn_lr * grad
        return (theta - target).pow(2).sum() / (start - target).pow(2).sum()

    def sample_segment(self, generator: torch.Generator | None = None) -> tuple[int, int, int]:
        """(expert index, start epoch t0 in 0..max_start_epoch-1, target epoch t0 + expert_epochs)."""
        expert = int(torch.randint(self.experts.num_experts, (1,), generator=generator))
        t0 = int(torch.randint(self.max_start_epoch, (1,), generator=generator))
        return expert, t0, t0 + self.expert_epochs

    def step(self, parameterization, optimizer, real, generator=None) -> float:
        index, t0, t1 = self.sample_segment(generator)
        expert = self.experts.trajectories[index]
        images, labels = parameterization.decode()
        loss = self.matching_loss(images, labels, expert[t0], expert[t1], generator)
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
        return float(self.syn_lr.detach())

    def state_dict(self) -> dict[str, Any]:
        return {"syn_lr": self.syn_lr.detach().clone(), "lr_optimizer": self.lr_optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        with torch.no_grad():
            self.syn_lr.copy_(state["syn_lr"])
        self.lr_optimizer.load_state_dict(state["lr_optimizer"])
