"""Facility-location selection on per-sample last-layer gradients: LCMat-S, CRAIG (a preset of it) and the
submodular baselines (facility location / graph cut on the gradient cosine).

LCMat-S (Shin et al., AISTATS 2023, arXiv 2303.04449) is greedy k-medoids on the distance
``d(i, j) = ||g_i - g_j||_2 + eps * ||h_i^(K) - h_j^(K)||_1``, with ``g`` the per-sample last-layer CE gradient and
``h^(K)`` the per-sample last-layer Hessian diagonal at the ``K`` coordinates of largest within-group (population)
variance, both in closed form (``last_layer``); ``eps = 0`` is gradient-only k-medoids (the rho = 0 ablation).
Deliberate deviations from the official code:

* g and h are unscaled (the official BackPACK path divides them by the mini-batch size, which inflates the
  last partial batch of every class); with ``C0="auto"`` the result is scale-free.
* features are extracted in eval mode (the official path leaves BatchNorm in train mode).
* distances are computed in float64 from Gram identities (no N x N x K broadcast).
* ``C0="auto"`` (the group's largest distance) keeps facility location equal to greedy k-medoids, the regime of
  the official runs; ``C0=10`` gives the official clipped similarity ``max(0, 10 - d)``.
* ``weights="cluster_size"`` (off by default, as officially) returns the nearest-medoid cluster sizes, the
  weighting the paper's matching bound is stated for.

CRAIG (Mirzasoleiman et al. 2020) with true CE gradients (DeepCore applies CE to softmax outputs), naive greedy
(the lazy one's picks without ties) and cluster sizes as weights (DeepCore's ``1 + #assigned`` counts the pick
twice) is exactly ``lcmat(eps=0, weights="cluster_size")``, registered as that preset.
"""

from __future__ import annotations

import torch

from ...registry import check_choice, check_int, check_number
from ..last_layer import LastLayerOutputs, gradient_distances, gradient_gram
from . import METHODS, Group

__all__ = ["SUBMODULAR_FUNCTIONS", "cluster_sizes", "cosine_similarity", "craig", "curvature_coordinates",
           "facility_location_greedy", "graph_cut_greedy", "lcmat", "lcmat_distances", "medoid_selection",
           "submodular"]

EPS_MODES = ("absolute", "relative")
WEIGHT_OPTIONS = (None, "cluster_size")
SUBMODULAR_FUNCTIONS = ("facility_location", "graph_cut")


def _check_k(n: int, k: int) -> None:
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")


def facility_location_greedy(similarity: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Naive greedy maximisation of ``F(S) = sum_i max(0, max_{j in S} s(i, j))``.

    Args:
        similarity: ``[n, n]``, ``s(i, j)`` = how well candidate ``j`` represents sample ``i``.
        k: number of picks, ``1 <= k <= n``.
    Returns:
        ``(picks [k] in greedy order, gains [k])``; the gain of ``j`` is ``sum_i max(0, s(i, j) - cur_i)``
        with ``cur`` starting at 0; ties go to the lowest index (as the reference's ``NaiveGreedy``).
    """
    n = similarity.shape[0]
    _check_k(n, k)
    current = torch.zeros(n, dtype=similarity.dtype)
    available = torch.ones(n, dtype=torch.bool)
    picks, gains = [], []
    for _ in range(k):
        gain = (similarity - current[:, None]).clamp_min_(0.0).sum(0)
        gain[~available] = -torch.inf
        j = int(torch.argmax(gain))
        picks.append(j)
        gains.append(float(gain[j]))
        available[j] = False
        current = torch.maximum(current, similarity[:, j])
    return torch.tensor(picks, dtype=torch.long), torch.tensor(gains, dtype=torch.float64)


def graph_cut_greedy(similarity: torch.Tensor, k: int, lam: float = 1.0) -> torch.Tensor:
    """Greedy maximisation of the graph cut ``f(S) = sum_{i in V, j in S} s(i, j) - lam * sum_{i, j in S} s(i, j)``.

    Marginal gain of ``j``: ``sum_i s(i, j) - lam * (2 sum_{l in S} s(l, j) + s(j, j))``; ties go to the
    lowest index. Returns picks ``[k]`` in greedy order.
    """
    n = similarity.shape[0]
    _check_k(n, k)
    base = similarity.sum(0) - lam * similarity.diagonal()
    selected_sum = torch.zeros(n, dtype=similarity.dtype)
    available = torch.ones(n, dtype=torch.bool)
    picks = []
    for _ in range(k):
        gain = base - 2.0 * lam * selected_sum
        gain[~available] = -torch.inf
        j = int(torch.argmax(gain))
        picks.append(j)
        available[j] = False
        selected_sum += similarity[j]
    return torch.tensor(picks, dtype=torch.long)


def cluster_sizes(distances: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """Number of samples whose nearest pick (under ``distances [n, n]``) is each pick; picks represent
    themselves. Returns float64 ``[len(picks)]`` summing to ``n``, every entry >= 1."""
    assignment = distances[:, picks].argmin(1)
    assignment[picks] = torch.arange(len(picks))
    return torch.bincount(assignment, minlength=len(picks)).double()


def curvature_coordinates(outputs: LastLayerOutputs, K: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The ``K`` Hessian-diagonal coordinates of largest population variance over the samples of ``outputs``.

    Returns ``(flat, h)``: ``flat`` LongTensor ``[K']`` of coordinates in the bias-first/row-major layout
    (``K' = min(K, P)``, by decreasing variance, ties to the lower coordinate), and ``h`` ``[N, K']`` float64
    the per-sample Hessian-diagonal values at those coordinates.
    """
    q, zt = outputs.curvatures, outputs.augmented_features
    n = len(q)
    mean = q.T @ zt**2 / n  # [C, D+1]
    second = (q**2).T @ zt**4 / n
    variance = (second - mean**2).clamp_min(0.0)
    num_classes, width = variance.shape
    # bias-first/row-major order of the flat parameter vector: column 0 (bias) of every class comes first
    layout = torch.cat([variance[:, 0], variance[:, 1:].flatten()])
    order = torch.sort(layout, descending=True, stable=True).indices[: min(K, layout.numel())]
    is_bias = order < num_classes
    rows = torch.where(is_bias, order, (order - num_classes) // (width - 1) if width > 1 else order)
    cols = torch.where(is_bias, torch.zeros_like(order), (order - num_classes) % max(width - 1, 1) + 1)
    return order, q[:, rows] * zt[:, cols] ** 2


def _pair_median(distances: torch.Tensor) -> float:
    """Median (numpy convention: mean of the two middle values) of the off-diagonal pairs ``i < j``."""
    n = len(distances)
    if n < 2:
        return 0.0
    rows, cols = torch.triu_indices(n, n, offset=1)
    values = distances[rows, cols]
    m = len(values)
    return float((values.kthvalue((m + 1) // 2).values + values.kthvalue(m // 2 + 1).values) / 2)


def lcmat_distances(outputs: LastLayerOutputs, eps: float = 0.01, K: int = 100, eps_mode: str = "absolute",
                    kappa: float = 0.6) -> tuple[torch.Tensor, float]:
    """The LCMat distance matrix ``[N, N]`` float64 of one group and the curvature weight actually used.

    ``eps_mode="absolute"``: weight = ``eps`` (official semantics, scale-dependent).
    ``eps_mode="relative"``: weight = ``kappa * median(d_g) / median(d_h)`` over the off-diagonal pairs
    (scale-free); 0 when the Hessian term is identically zero.
    """
    d_grad = gradient_distances(outputs)
    weight = eps if eps_mode == "absolute" else kappa
    if weight == 0:
        return d_grad, 0.0
    _, h = curvature_coordinates(outputs, K)
    d_hess = torch.cdist(h, h, p=1)  # [n, n]; never the n x n x K broadcast of the reference
    if eps_mode == "relative":
        med_h = _pair_median(d_hess)
        weight = kappa * _pair_median(d_grad) / med_h if med_h > 0 else 0.0
    return d_grad + weight * d_hess, float(weight)


def medoid_selection(distances: torch.Tensor, k: int, C0: float | str = "auto") -> torch.Tensor:
    """Greedy facility location on ``s = C0 - d`` (``C0="auto"``: the largest distance, i.e. k-medoids)."""
    c0 = float(distances.max()) if C0 == "auto" else float(C0)
    return facility_location_greedy(c0 - distances, k)[0]


def _check_lcmat(eps: float, K: int, eps_mode: str, kappa: float, C0: float | str, weights: str | None) -> None:
    check_choice("eps_mode", eps_mode, EPS_MODES)
    check_choice("weights", weights, WEIGHT_OPTIONS)
    check_number("eps", eps, minimum=0)
    check_number("kappa", kappa, minimum=0)
    check_int("K", K)
    if C0 != "auto":
        check_number("C0 (or 'auto')", C0)


@METHODS.register("lcmat", check=_check_lcmat)
def lcmat(group: Group, k: int, generator: torch.Generator, eps: float = 0.01, K: int = 100,
          eps_mode: str = "absolute", kappa: float = 0.6, C0: float | str = "auto",
          weights: str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """LCMat-S selection. Options: ``eps`` (curvature weight, 0 = gradient-only), ``K`` (Hessian
    coordinates), ``eps_mode`` ("absolute" | "relative" with ``kappa``), ``C0`` ("auto" | float),
    ``weights`` (None | "cluster_size")."""
    distances, _ = lcmat_distances(group.outputs, eps, K, eps_mode, kappa)
    picks = medoid_selection(distances, k, C0)
    return picks, (cluster_sizes(distances, picks) if weights == "cluster_size" else None)


@METHODS.register("craig")
def craig(group: Group, k: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """CRAIG: ``lcmat(eps=0, weights="cluster_size")`` (see the module docstring)."""
    return lcmat(group, k, generator, eps=0.0, weights="cluster_size")


def cosine_similarity(gram: torch.Tensor) -> torch.Tensor:
    """``0.5 + 0.5 cos`` from a Gram matrix ``[n, n]``; zero-norm vectors get cosine 0."""
    norms = gram.diagonal().clamp_min(0.0).sqrt()
    denom = torch.outer(norms, norms)
    cos = torch.where(denom > 0, gram / denom.clamp_min(1e-300), torch.zeros_like(gram))
    return 0.5 + 0.5 * cos.clamp(-1.0, 1.0)


@METHODS.register("submodular", check=lambda function, lam: check_choice("function", function, SUBMODULAR_FUNCTIONS))
def submodular(group: Group, k: int, generator: torch.Generator, function: str = "facility_location",
               lam: float = 1.0) -> tuple[torch.Tensor, None]:
    """DeepCore's "FL" / "GC" baselines on ``s(i, j) = 0.5 + 0.5 cos(g_i, g_j)`` of per-sample last-layer
    gradients (true CE gradients): ``function="facility_location"`` maximises ``sum_i max_{j in S} s(i, j)``,
    ``"graph_cut"`` maximises ``sum_{i in V, j in S} s(i, j) - lam sum_{i, j in S} s(i, j)``."""
    similarity = cosine_similarity(gradient_gram(group.outputs))
    if function == "facility_location":
        return facility_location_greedy(similarity, k)[0], None
    return graph_cut_greedy(similarity, k, float(lam)), None
