"""DC: gradient matching (Zhao, Mopuri & Bilen, ICLR 2021), with DSA (spec C.2)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from .objective import DEFAULT_DSA, MatchingObjective

__all__ = ["GradientMatching", "default_loops", "gradient_distance"]


def gradient_distance(real_grads: Sequence[torch.Tensor], synthetic_grads: Sequence[torch.Tensor]) -> torch.Tensor:
    """Layer-wise sum over output rows of ``1 - cos(g_real_row, g_syn_row)`` (cosine with +1e-6 in the denominator).

    Weights are flattened to [out, rest]; 1-D parameters (biases, norm affine) contribute exactly 0.
    """
    if len(real_grads) != len(synthetic_grads):
        raise ValueError("real_grads and synthetic_grads must list the same parameters")
    total = synthetic_grads[0].new_zeros(())
    for gr, gs in zip(real_grads, synthetic_grads):
        if gr.shape != gs.shape:
            raise ValueError(f"gradient shapes differ: {tuple(gr.shape)} vs {tuple(gs.shape)}")
        if gr.ndim <= 1:
            continue
        gr, gs = gr.reshape(gr.shape[0], -1), gs.reshape(gs.shape[0], -1)
        cosine = (gr * gs).sum(-1) / (gr.norm(dim=-1) * gs.norm(dim=-1) + 1e-6)
        total = total + (1.0 - cosine).sum()
    return total


def default_loops(ipc: int) -> tuple[int, int]:
    """(outer_loop, inner_loop) of DC: (1, 1) for ipc 1, (10, 50) for ipc <= 10, (50, 10) above."""
    if ipc <= 1:
        return 1, 1
    return (10, 50) if ipc <= 10 else (50, 10)


class GradientMatching(MatchingObjective):
    """Per iteration: a fresh ConvNet; ``outer_loop`` times match per-class real/synthetic gradients (one optimiser
    step on the synthetic storage), then train the net ``inner_loop`` epochs on the detached synthetic set (SGD
    lr ``inner_lr``, batch 256, DSA), except after the last outer step.

    Args:
        outer_loop, inner_loop: default from the nominal ipc (:func:`default_loops`).
        inner_lr: SGD learning rate of the network updates (0.01).
        Other arguments: see :class:`MatchingObjective`.
    """

    name = "dc"

    def __init__(self, depth: int = 3, width: int = 128, norm: str = "instance", dsa: str = DEFAULT_DSA,
                 batch_real: int = 256, outer_loop: int | None = None, inner_loop: int | None = None,
                 inner_lr: float = 0.01) -> None:
        super().__init__(depth, width, norm, dsa, batch_real)
        for arg, value in (("outer_loop", outer_loop), ("inner_loop", inner_loop)):
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"{arg} must be None or a positive int, got {value!r}")
        self.outer_loop, self.inner_loop, self.inner_lr = outer_loop, inner_loop, inner_lr

    def step(self, parameterization, optimizer, real) -> float:
        outer_default, inner_default = default_loops(parameterization.ipc)
        outer = self.outer_loop or outer_default
        inner = self.inner_loop or inner_default
        net = self.network(real)
        params = list(net.parameters())
        net_optimizer = torch.optim.SGD(params, lr=self.inner_lr)
        total = 0.0
        for outer_step in range(outer):
            loss = 0.0
            for c in range(real.num_classes):
                seed = self.aug_seed()
                target_real = torch.full((self.batch_real,), c, dtype=torch.long)
                x_real = self.augment(real.sample_class(c, self.batch_real), seed)
                g_real = torch.autograd.grad(F.cross_entropy(net(x_real), target_real[: len(x_real)]), params)
                g_real = [g.detach() for g in g_real]
                x_syn = self.augment(parameterization.decode_indices(parameterization.class_instances(c)), seed)
                target_syn = torch.full((len(x_syn),), c, dtype=torch.long)
                g_syn = torch.autograd.grad(F.cross_entropy(net(x_syn), target_syn), params, create_graph=True)
                loss = loss + gradient_distance(g_real, g_syn)
            optimizer.zero_grad(set_to_none=True)
            loss.backward(inputs=list(p for p in parameterization.parameters()))
            optimizer.step()
            total += float(loss.detach())
            if outer_step == outer - 1:
                break
            with torch.no_grad():
                images, labels = parameterization.decode()
            for _ in range(inner):
                order = torch.randperm(len(labels))
                for start in range(0, len(labels), 256):
                    batch = order[start:start + 256]
                    net_optimizer.zero_grad(set_to_none=True)
                    F.cross_entropy(net(self.augment(images[batch])), labels[batch]).backward()
                    net_optimizer.step()
        return total / outer
