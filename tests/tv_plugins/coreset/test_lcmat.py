"""LCMat selection against an independent numpy re-implementation (explicit g, h, distances, greedy)."""

import numpy as np
import pytest
import torch

from tv_plugins.coreset import select_coreset
from tv_plugins.coreset.last_layer import extract_last_layer, hessian_diagonal, per_sample_gradients
from tv_plugins.coreset.methods.facility_location import (
    facility_location_greedy,
    lcmat_distances,
    medoid_selection,
)


def _explicit_quantities(model, dataset):
    with torch.no_grad():
        z = model[:-1](dataset.data).double()
        logits = z @ model[-1].weight.double().T + model[-1].bias.double()
    return per_sample_gradients(z, logits, dataset.targets).numpy(), hessian_diagonal(z, logits).numpy()


def _reference_lcmat(G, H, labels, fraction, eps, K, C0=None, weights=False, groups=None, kappa=None):
    """numpy: per class (or per given ``groups`` of indices), explicit L2/L1 distances, top-K variance
    coordinates, naive greedy FL; ``kappa``: the relative weight ``kappa * median(d_g) / median(d_h)``."""
    out_idx, out_w = [], []
    groups = [np.flatnonzero(labels == c) for c in np.unique(labels)] if groups is None else groups
    for idx in groups:
        k = max(1, int(np.floor(fraction * len(idx) + 0.5)))
        g, h = G[idx], H[idx]
        top = np.argsort(-np.var(h, axis=0), kind="stable")[:K]
        dg = np.sqrt(((g[:, None, :] - g[None, :, :]) ** 2).sum(-1))
        dh = np.abs(h[:, None, top] - h[None, :, top]).sum(-1)
        off = ~np.eye(len(idx), dtype=bool)
        d = dg + (eps if kappa is None else kappa * np.median(dg[off]) / np.median(dh[off])) * dh
        sim = (d.max() if C0 is None else C0) - d
        cur, chosen = np.zeros(len(idx)), []
        for _ in range(k):
            gains = np.maximum(sim - cur[:, None], 0).sum(0)
            gains[chosen] = -np.inf
            j = int(np.argmax(gains))
            chosen.append(j)
            cur = np.maximum(cur, sim[:, j])
        order = np.sort(chosen)
        out_idx.extend(idx[order])
        if weights:
            assign = np.argmin(d[:, chosen], axis=1)
            assign[chosen] = np.arange(len(chosen))
            sizes = np.bincount(assign, minlength=len(chosen))
            out_w.extend(sizes[chosen.index(j)] for j in order)
    return np.array(out_idx), np.array(out_w, dtype=float)


def _select(blobs, mlp, **kw):
    kw.setdefault("fraction", 0.3)
    return select_coreset(blobs, "lcmat", model=mlp, warmup_epochs=0, progress=False, **kw)


@pytest.mark.parametrize("eps,K", [(0.0, 100), (0.05, 4), (0.5, 100), (3.0, 7)])
def test_lcmat_matches_explicit_reference(blobs, mlp, eps, K):
    G, H = _explicit_quantities(mlp, blobs)
    ref, _ = _reference_lcmat(G, H, blobs.targets.numpy(), 0.3, eps, K)
    sel = _select(blobs, mlp, eps=eps, K=K)
    assert sel.indices.tolist() == ref.tolist()


def test_cluster_size_weights_match_reference_and_sum_to_class_sizes(blobs, mlp):
    G, H = _explicit_quantities(mlp, blobs)
    ref, ref_w = _reference_lcmat(G, H, blobs.targets.numpy(), 0.3, 0.1, 10, weights=True)
    sel = _select(blobs, mlp, eps=0.1, K=10, weights="cluster_size")
    assert sel.indices.tolist() == ref.tolist()
    np.testing.assert_array_equal(sel.weights.numpy(), ref_w)  # cluster sizes are counts
    for c, n in zip(*torch.unique(blobs.targets, return_counts=True)):
        mask = blobs.targets[sel.indices] == c
        assert float(sel.weights[mask].sum()) == float(n)
    assert (sel.weights >= 1).all()


def test_eps_zero_is_gradient_only_for_any_K(blobs, mlp):
    base = _select(blobs, mlp, eps=0.0, K=1)
    for K in (2, 50, 10_000):
        assert torch.equal(_select(blobs, mlp, eps=0.0, K=K).indices, base.indices)
    assert torch.equal(_select(blobs, mlp, eps_mode="relative", kappa=0.0).indices, base.indices)

def test_craig_is_the_gradient_only_cluster_weighted_lcmat_preset(blobs, mlp):
    craig = select_coreset(blobs, "craig", 0.3, mlp, warmup_epochs=0, progress=False)
    preset = _select(blobs, mlp, eps=0.0, weights="cluster_size")
    G, H = _explicit_quantities(mlp, blobs)
    ref, ref_w = _reference_lcmat(G, H, blobs.targets.numpy(), 0.3, 0.0, 100, weights=True)
    assert craig.indices.tolist() == preset.indices.tolist() == ref.tolist()
    # cluster sizes are counts: exact integers in float32
    assert craig.weights.tolist() == preset.weights.tolist() == ref_w.tolist()


def test_C0_invariance_and_first_pick_is_the_medoid(blobs, mlp):
    G, H = _explicit_quantities(mlp, blobs)
    auto = _select(blobs, mlp, eps=0.1, K=5)
    assert torch.equal(_select(blobs, mlp, eps=0.1, K=5, C0=1e6).indices, auto.indices)
    one = _select(blobs, mlp, eps=0.1, K=5, fraction=0.01)  # one per class
    labels = blobs.targets.numpy()
    for c, picked in zip(range(3), one.indices.tolist()):
        idx = np.flatnonzero(labels == c)
        g, h = G[idx], H[idx]
        top = np.argsort(-np.var(h, axis=0), kind="stable")[:5]
        d = np.sqrt(((g[:, None] - g[None]) ** 2).sum(-1)) + 0.1 * np.abs(h[:, None, top] - h[None, :, top]).sum(-1)
        assert picked == idx[np.argmin(d.sum(0))]


def test_clipped_C0_changes_the_objective_like_the_reference(blobs, mlp):
    G, H = _explicit_quantities(mlp, blobs)
    ref, _ = _reference_lcmat(G, H, blobs.targets.numpy(), 0.3, 0.1, 5, C0=0.3)
    assert _select(blobs, mlp, eps=0.1, K=5, C0=0.3).indices.tolist() == ref.tolist()


def test_distance_scale_does_not_change_auto_C0_selection():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(25, 3, generator=g, dtype=torch.float64)
    d = torch.cdist(x, x)
    base = medoid_selection(d, 6)
    for a in (1e-3, 7.0, 1e4):
        assert torch.equal(medoid_selection(a * d, 6), base)


def test_relative_eps_is_kappa_times_median_ratio(blobs, mlp):
    G, H = _explicit_quantities(mlp, blobs)
    idx = np.flatnonzero(blobs.targets.numpy() == 0)
    g, h = G[idx], H[idx]
    top = np.argsort(-np.var(h, axis=0), kind="stable")[:8]
    dg = np.sqrt(((g[:, None] - g[None]) ** 2).sum(-1))
    dh = np.abs(h[:, None, top] - h[None, :, top]).sum(-1)
    off = ~np.eye(len(idx), dtype=bool)
    expected = 0.6 * np.median(dg[off]) / np.median(dh[off])
    out = extract_last_layer(mlp, blobs, blobs.targets, progress=False).subset(torch.from_numpy(idx))
    distances, used = lcmat_distances(out, K=8, eps_mode="relative", kappa=0.6)
    assert used == pytest.approx(expected, rel=1e-6)  # float32 forward pass vs float64 logits here
    np.testing.assert_allclose(distances.numpy(), dg + expected * dh, rtol=1e-5, atol=1e-7)
    # the whole selection: every class with its own relative weight
    ref, _ = _reference_lcmat(G, H, blobs.targets.numpy(), 0.3, None, 8, kappa=0.6)
    assert _select(blobs, mlp, eps_mode="relative", kappa=0.6, K=8).indices.tolist() == ref.tolist()
    assert ref.tolist() != _reference_lcmat(G, H, blobs.targets.numpy(), 0.3, 0.0, 8)[0].tolist()  # not eps = 0


def test_unbalanced_selection_is_one_global_facility_location(blobs, mlp):
    G, H = _explicit_quantities(mlp, blobs)
    labels = blobs.targets.numpy()
    ref, _ = _reference_lcmat(G, H, labels, 0.3, 0.05, 6, groups=[np.arange(len(labels))])
    sel = _select(blobs, mlp, eps=0.05, K=6, balance=False)
    assert sorted(sel.indices.tolist()) == sorted(ref.tolist()) and len(ref) == round(0.3 * len(labels))
    assert sel.per_class_counts == {c: int((labels[ref] == c).sum()) for c in range(3)}
    assert sel.per_class_counts != _select(blobs, mlp, eps=0.05, K=6).per_class_counts  # not the per-class budgets


def test_huge_eps_is_facility_location_on_the_hessian_distance_alone(blobs, mlp):
    G, H = _explicit_quantities(mlp, blobs)
    ref, _ = _reference_lcmat(np.zeros_like(G), H, blobs.targets.numpy(), 0.3, 1.0, 8)
    assert _select(blobs, mlp, eps=1e9, K=8).indices.tolist() == ref.tolist()


def test_within_class_permutation_equivariance(blobs, mlp):
    # fraction 0.2 avoids exact facility-location ties (two mutually nearest points have equal gains)
    sel = _select(blobs, mlp, eps=0.05, K=6, fraction=0.2)
    perm = torch.randperm(len(blobs), generator=torch.Generator().manual_seed(1))
    blobs_p = type(blobs).__new__(type(blobs))
    blobs_p.data, blobs_p.targets = blobs.data[perm], blobs.targets[perm]
    sel_p = _select(blobs_p, mlp, eps=0.05, K=6, fraction=0.2)
    assert sorted(perm[sel_p.indices].tolist()) == sorted(sel.indices.tolist())


def test_greedy_facility_location_gains_are_non_increasing_and_objective_grows():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(20, 3, generator=g, dtype=torch.float64)
    sim = torch.cdist(x, x).max() - torch.cdist(x, x)
    picks, gains = facility_location_greedy(sim, 8)
    assert (gains[1:] <= gains[:-1] + 1e-12).all()
    objective = [float(sim[:, picks[: t + 1]].max(1).values.sum()) for t in range(8)]
    assert all(b >= a for a, b in zip(objective, objective[1:]))
    np.testing.assert_allclose(np.cumsum(gains.numpy()), objective, rtol=1e-12)
