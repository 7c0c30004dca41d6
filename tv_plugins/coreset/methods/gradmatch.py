"""GradMatch (Killamsetty et al. 2021), per group: orthogonal matching pursuit that approximates the
group's summed last-layer gradient ``b = sum_i g_i`` by a non-negative, ridge-regularised combination of
selected per-sample gradients; the final coefficients are the training weights.

Each step adds ``argmax_{j not in S} <g_j, b - G_S^T w>`` and refits
``w = argmin_{w >= 0} ||G_S^T w - b||^2 + lam ||w||^2`` (NNLS). Everything runs on the Gram matrix
``<g_i, g_j> = (r_i·r_j)(1 + z_i·z_j)``, so no ``N x P`` gradient matrix is formed.

Deviations: true CE gradients (DeepCore uses CE on softmax outputs, spec Q9); the selection always has
exactly the budgeted ``k`` samples (DeepCore drops samples whose final weight is 0; here they stay, with
weight 0, so per-class budgets hold).
"""

from __future__ import annotations

import numpy as np
import torch

from ..last_layer import gradient_gram
from ..registry import SelectionContext, register

__all__ = ["gradmatch", "omp_select"]


def _ridge_nnls(gram_ss: np.ndarray, target_s: np.ndarray, lam: float) -> np.ndarray:
    """``argmin_{w>=0} w^T (K_SS + lam I) w - 2 w^T c`` via a Cholesky factor and scipy's NNLS."""
    from scipy.optimize import nnls  # scipy comes with the `tv` extra (scikit-learn)

    m = gram_ss + lam * np.eye(len(gram_ss))
    chol = np.linalg.cholesky(m)
    rhs = np.linalg.solve(chol, target_s)
    w, _ = nnls(chol.T, rhs, maxiter=50 * len(gram_ss) + 100)
    return w


def omp_select(gram: torch.Tensor, k: int, lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Non-negative OMP on a Gram matrix ``[n, n]`` against the target ``sum_i g_i``.
    Returns ``(picks [k] in greedy order, weights [k] float64 >= 0)``."""
    K = gram.numpy()
    correlation_with_target = K.sum(1)  # <g_j, b>
    available = np.ones(len(K), dtype=bool)
    picks: list[int] = []
    w = np.zeros(0)
    for _ in range(k):
        residual_corr = correlation_with_target - (K[:, picks] @ w if picks else 0.0)
        residual_corr = np.where(available, residual_corr, -np.inf)
        j = int(np.argmax(residual_corr))
        picks.append(j)
        available[j] = False
        w = _ridge_nnls(K[np.ix_(picks, picks)], correlation_with_target[picks], lam)
    return torch.tensor(picks, dtype=torch.long), torch.from_numpy(w)


@register("gradmatch")
def gradmatch(ctx: SelectionContext, lam: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """Option ``lam``: ridge strength (> 0; DeepCore's 1.0)."""
    if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0:
        raise ValueError(f"lam must be a number > 0, got {lam!r}")
    chosen, weights = [], []
    for _, indices, k in ctx.groups:
        picks, w = omp_select(gradient_gram(ctx.outputs.subset(indices)), k, float(lam))
        chosen.append(indices[picks])
        weights.append(w)
    return torch.cat(chosen), torch.cat(weights)
