"""GLISTER-ONLINE (Killamsetty et al. 2021), per group, on the last layer: greedily pick the sample whose
one-step SGD update most decreases the validation loss (first-order Taylor gain
``<g_j(psi_t), grad L_val(psi_t)>``), then *apply* that virtual step ``psi_{t+1} = psi_t - lr * g_j`` to the
head and recompute the validation gradient exactly (closed form, no Taylor approximation needed for the
last layer). The validation set is the group itself (DeepCore's default when no validation split exists).

Deviation: DeepCore never applies the update because of a typo (``upadate_state``, spec C), which makes it
a one-shot ranking by alignment with the class-mean gradient; here the greedy state is updated.
"""

from __future__ import annotations

import torch

from ..registry import SelectionContext, register

__all__ = ["glister", "glister_order"]


def _residuals(z: torch.Tensor, y: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    r = torch.softmax(z @ weight.T + bias, dim=1)
    r[torch.arange(len(r)), y] -= 1.0
    return r


def glister_order(
    features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int, lr: float
) -> torch.Tensor:
    """Greedy GLISTER picks ``[k]`` for a group: ``features [n, D]``, ``labels [n]``, head ``weight [C, D]``,
    ``bias [C]`` (float64); ``lr`` = step size of the virtual update."""
    weight, bias = weight.clone(), bias.clone()
    available = torch.ones(len(features), dtype=torch.bool)
    picks = []
    for _ in range(k):
        r = _residuals(features, labels, weight, bias)  # [n, C], candidates and validation are the group
        val_w, val_b = r.T @ features / len(r), r.mean(0)  # mean validation gradient (W part, bias part)
        gain = (r * (features @ val_w.T + val_b)).sum(1)  # <g_j, grad L_val>
        gain[~available] = -torch.inf
        j = int(torch.argmax(gain))
        picks.append(j)
        available[j] = False
        weight -= lr * torch.outer(r[j], features[j])
        bias -= lr * r[j]
    return torch.tensor(picks, dtype=torch.long)


@register("glister")
def glister(ctx: SelectionContext, lr: float = 0.1) -> tuple[torch.Tensor, None]:
    """Option ``lr``: step size of the virtual SGD update (> 0)."""
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a number > 0, got {lr!r}")
    out = ctx.outputs
    picks = [indices[glister_order(out.features[indices], out.labels[indices], out.weight, out.bias, k, float(lr))]
             for _, indices, k in ctx.groups]
    return torch.cat(picks), None
