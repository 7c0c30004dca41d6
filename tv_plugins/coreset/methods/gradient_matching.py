"""Selection that matches the group's last-layer gradient: GradMatch (OMP weights) and GLISTER-ONLINE.
Both use the true CE gradient (DeepCore applies CE to softmax outputs)."""

from __future__ import annotations

import numpy as np
import torch

from ...registry import check_number
from ..last_layer import gradient_gram
from . import METHODS, Group

__all__ = ["glister", "glister_order", "gradmatch", "omp_select"]


def _ridge_nnls(gram_ss: np.ndarray, target_s: np.ndarray, lam: float) -> np.ndarray:
    """``argmin_{w>=0} w^T (K_SS + lam I) w - 2 w^T c`` via a Cholesky factor and scipy's NNLS."""
    from scipy.optimize import nnls  # scipy comes with the `tv` extra (scikit-learn)

    chol = np.linalg.cholesky(gram_ss + lam * np.eye(len(gram_ss)))
    w, _ = nnls(chol.T, np.linalg.solve(chol, target_s), maxiter=50 * len(gram_ss) + 100)
    return w


def omp_select(gram: torch.Tensor, k: int, lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative OMP on a Gram matrix ``[n, n]`` against the target ``b = sum_i g_i``: each step adds
    ``argmax_{j not in S} <g_j, b - G_S^T w>`` and refits ``w = argmin_{w >= 0} ||G_S^T w - b||^2 + lam ||w||^2``.
    Returns ``(picks [k] in greedy order, weights [k] float64 >= 0)``."""
    K = gram.numpy()
    correlation_with_target = K.sum(1)  # <g_j, b>
    available = np.ones(len(K), dtype=bool)
    picks: list[int] = []
    w = np.zeros(0)
    for _ in range(k):
        residual_corr = correlation_with_target - (K[:, picks] @ w if picks else 0.0)
        j = int(np.argmax(np.where(available, residual_corr, -np.inf)))
        picks.append(j)
        available[j] = False
        w = _ridge_nnls(K[np.ix_(picks, picks)], correlation_with_target[picks], lam)
    return torch.tensor(picks, dtype=torch.long), torch.from_numpy(w)


@METHODS.register("gradmatch", check=lambda lam: check_number("lam", lam, positive=True))
def gradmatch(group: Group, k: int, generator: torch.Generator, lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """GradMatch (Killamsetty et al. 2021): :func:`omp_select` on the Gram matrix ``(r_i·r_j)(1 + z_i·z_j)`` of
    per-sample gradients (no ``N x P`` matrix); the OMP coefficients are the training weights. Option ``lam``:
    ridge strength (> 0; DeepCore's 1.0).

    Deviation: the selection always has exactly the budgeted ``k`` samples (DeepCore drops samples whose final
    weight is 0; here they stay, with weight 0, so per-class budgets hold).
    """
    return omp_select(gradient_gram(group.outputs), k, float(lam))


def glister_order(features: torch.Tensor, labels: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor, k: int,
                  lr: float) -> torch.Tensor:
    """Greedy GLISTER picks ``[k]`` for a group: ``features [n, D]``, ``labels [n]``, head ``weight [C, D]``,
    ``bias [C]`` (float64); ``lr`` = step size of the virtual update."""
    weight, bias = weight.clone(), bias.clone()
    available = torch.ones(len(features), dtype=torch.bool)
    picks = []
    for _ in range(k):
        r = torch.softmax(features @ weight.T + bias, dim=1)  # candidates and validation are the group
        r[torch.arange(len(r)), labels] -= 1.0
        val_w, val_b = r.T @ features / len(r), r.mean(0)  # mean validation gradient (W part, bias part)
        gain = (r * (features @ val_w.T + val_b)).sum(1)  # <g_j, grad L_val>
        gain[~available] = -torch.inf
        j = int(torch.argmax(gain))
        picks.append(j)
        available[j] = False
        weight -= lr * torch.outer(r[j], features[j])
        bias -= lr * r[j]
    return torch.tensor(picks, dtype=torch.long)


@METHODS.register("glister", check=lambda lr: check_number("lr", lr, positive=True))
def glister(group: Group, k: int, generator: torch.Generator, lr: float = 0.1) -> tuple[torch.Tensor, None]:
    """GLISTER-ONLINE (Killamsetty et al. 2021) on the last layer: greedily pick the sample whose one-step SGD
    update most decreases the validation loss (first-order gain ``<g_j(psi_t), grad L_val(psi_t)>``), then
    apply that virtual step ``psi_{t+1} = psi_t - lr * g_j`` to the head and recompute the validation gradient
    exactly (closed form on the last layer). The validation set is the group itself (DeepCore's default without
    a validation split). Option ``lr``: step size of the virtual update (> 0).

    Deviation: DeepCore never applies the update (a typo, ``upadate_state``), which makes it a one-shot ranking
    by alignment with the class-mean gradient; here the greedy state is updated.
    """
    out = group.outputs
    return glister_order(out.features, out.labels, out.weight, out.bias, k, float(lr)), None
