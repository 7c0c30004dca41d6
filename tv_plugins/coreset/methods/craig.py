"""CRAIG (Mirzasoleiman et al. 2020), per group: greedy facility location with similarity
``max_ij d - d(i, j)`` where ``d`` is the Euclidean distance of per-sample last-layer gradients, and
weights = the sizes of the nearest-medoid clusters (each pick counts itself).

Deviations: true CE gradients (DeepCore applies CE to softmax outputs, spec Q9); naive instead of lazy
greedy (same result without ties); cluster sizes instead of DeepCore's ``1 + #assigned`` (which counts the
pick twice). With these choices CRAIG equals ``lcmat`` with ``eps=0, weights="cluster_size"``.
"""

from __future__ import annotations

import torch

from ..greedy import cluster_sizes, facility_location_greedy
from ..last_layer import gradient_distances
from ..registry import SelectionContext, register

__all__ = ["craig"]


@register("craig")
def craig(ctx: SelectionContext) -> tuple[torch.Tensor, torch.Tensor]:
    chosen, weights = [], []
    for _, indices, k in ctx.groups:
        distances = gradient_distances(ctx.outputs.subset(indices))
        picks, _ = facility_location_greedy(distances.max() - distances, k)
        chosen.append(indices[picks])
        weights.append(cluster_sizes(distances, picks))
    return torch.cat(chosen), torch.cat(weights)
