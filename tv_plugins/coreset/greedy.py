"""Greedy maximisers shared by the selection methods (dense similarity matrices of one group)."""

from __future__ import annotations

import torch

__all__ = ["cluster_sizes", "facility_location_greedy", "graph_cut_greedy", "kcenter_greedy"]


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
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
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
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
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


def kcenter_greedy(points: torch.Tensor, k: int, first: int) -> torch.Tensor:
    """Farthest-first traversal (Sener & Savarese's k-center greedy) on ``points [n, d]`` from ``first``.
    Returns picks ``[k]`` in greedy order."""
    n = points.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    picks = [first]
    nearest = torch.cdist(points, points[first : first + 1]).squeeze(1)
    nearest[first] = -1.0
    for _ in range(k - 1):
        j = int(torch.argmax(nearest))
        picks.append(j)
        nearest = torch.minimum(nearest, torch.cdist(points, points[j : j + 1]).squeeze(1))
        nearest[torch.tensor(picks)] = -1.0
    return torch.tensor(picks, dtype=torch.long)


def cluster_sizes(distances: torch.Tensor, picks: torch.Tensor) -> torch.Tensor:
    """Number of samples whose nearest pick (under ``distances [n, n]``) is each pick; picks represent
    themselves. Returns float64 ``[len(picks)]`` summing to ``n``, every entry >= 1."""
    assignment = distances[:, picks].argmin(1)
    assignment[picks] = torch.arange(len(picks))
    return torch.bincount(assignment, minlength=len(picks)).double()
