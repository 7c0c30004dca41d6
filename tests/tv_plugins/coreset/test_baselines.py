"""Baseline selectors against independent computations (autograd, explicit vectors, brute-force gains)."""

import numpy as np
import pytest
import torch
from scipy.optimize import nnls

from tv_plugins.coreset import select_coreset
from tv_plugins.coreset.last_layer import per_sample_gradients
from tv_plugins.coreset.methods.embedding import kcenter_order
from tv_plugins.coreset.methods.facility_location import graph_cut_greedy
from tv_plugins.coreset.methods.gradient_matching import omp_select
from tv_plugins.coreset.warmup import count_forgetting_events


def _run(blobs, mlp, method, fraction=0.3, **kw):
    return select_coreset(blobs, method, fraction, model=mlp, warmup_epochs=0, progress=False, **kw)


def _features(mlp, blobs):
    with torch.no_grad():
        z = mlp[:-1](blobs.data).double()
        logits = z @ mlp[-1].weight.double().T + mlp[-1].bias.double()
    return z, logits


def _top_per_class(blobs, scores, fraction=0.3, descending=True):
    out = []
    for c in range(3):
        idx = np.flatnonzero(blobs.targets.numpy() == c)
        k = max(1, int(np.floor(fraction * len(idx) + 0.5)))
        order = np.argsort(-scores[idx] if descending else scores[idx], kind="stable")[:k]
        out.extend(sorted(idx[order]))
    return out


def test_grand_ranks_by_autograd_last_layer_gradient_norm(blobs, mlp):
    norms = []
    for i in range(len(blobs)):
        mlp.zero_grad()
        torch.nn.functional.cross_entropy(mlp(blobs.data[i : i + 1]), blobs.targets[i : i + 1]).backward()
        norms.append(float(torch.cat([mlp[-1].bias.grad, mlp[-1].weight.grad.flatten()]).norm()))
    assert _run(blobs, mlp, "grand").indices.tolist() == _top_per_class(blobs, np.array(norms))


def test_el2n_and_uncertainty_scores(blobs, mlp):
    _, logits = _features(mlp, blobs)
    p = torch.softmax(logits, 1).numpy()
    onehot = np.eye(3)[blobs.targets.numpy()]
    assert _run(blobs, mlp, "el2n").indices.tolist() == _top_per_class(blobs, np.linalg.norm(p - onehot, axis=1))
    assert _run(blobs, mlp, "uncertainty", score="least_confidence").indices.tolist() == _top_per_class(
        blobs, 1 - p.max(1))
    sorted_p = np.sort(p, axis=1)
    assert _run(blobs, mlp, "uncertainty", score="margin").indices.tolist() == _top_per_class(
        blobs, sorted_p[:, -1] - sorted_p[:, -2], descending=False)
    assert _run(blobs, mlp, "uncertainty", score="entropy").indices.tolist() == _top_per_class(
        blobs, -(p * np.log(p)).sum(1))


def test_herding_picks_the_textbook_argmin(blobs, mlp):
    z, _ = _features(mlp, blobs)
    sel = _run(blobs, mlp, "herding", fraction=0.2)
    for c in range(3):
        idx = np.flatnonzero(blobs.targets.numpy() == c)
        phi = z[idx].numpy()
        mu, running, chosen = phi.mean(0), np.zeros(phi.shape[1]), []
        for t in range(max(1, int(np.floor(0.2 * len(idx) + 0.5)))):
            d = np.linalg.norm((t + 1) * mu - running - phi, axis=1)
            d[chosen] = np.inf
            chosen.append(int(np.argmin(d)))
            running += phi[chosen[-1]]
        assert sel.indices[blobs.targets[sel.indices] == c].tolist() == sorted(idx[chosen])


def test_kcenter_greedy_is_farthest_first():
    x = torch.randn(30, 4, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    picks = kcenter_order(x, 6, first=3).tolist()
    chosen = [3]
    for _ in range(5):
        d = np.min(np.linalg.norm(x.numpy()[:, None] - x.numpy()[chosen][None], axis=2), axis=1)
        chosen.append(int(np.argmax(d)))
    assert picks == chosen


def test_forgetting_events_count_correct_to_wrong_transitions():
    correct = torch.tensor([[1, 0, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1], [0, 0, 1, 1]], dtype=torch.bool)
    # sample 0: 1->0, 0->1, 1->0: 2 events; 1: never learnt -> E = 4; 2: 1,1,0,1: 1 event; 3: 0,1,1,1: 0
    assert count_forgetting_events(correct).tolist() == [2, 4, 1, 0]


def test_gradmatch_omp_matches_explicit_nnls_on_gradient_vectors(blobs, mlp):
    z, logits = _features(mlp, blobs)
    idx = torch.nonzero(blobs.targets == 2).flatten()
    G = per_sample_gradients(z[idx], logits[idx], blobs.targets[idx]).numpy()
    target, lam, k = G.sum(0), 1.0, 5
    chosen, w = [], np.zeros(0)
    for _ in range(k):
        residual = target - (G[chosen].T @ w if chosen else 0.0)
        corr = G @ residual
        corr[chosen] = -np.inf
        chosen.append(int(np.argmax(corr)))
        A = np.vstack([G[chosen].T, np.sqrt(lam) * np.eye(len(chosen))])
        w, _ = nnls(A, np.concatenate([target, np.zeros(len(chosen))]))
    picks, weights = omp_select(torch.from_numpy(G @ G.T), k, lam)
    assert picks.tolist() == chosen
    np.testing.assert_allclose(weights.numpy(), w, rtol=1e-6, atol=1e-9)


def test_glister_greedy_applies_the_virtual_update(blobs, mlp):
    z, logits = _features(mlp, blobs)
    W, b = mlp[-1].weight.detach().double(), mlp[-1].bias.detach().double()
    idx = np.flatnonzero(blobs.targets.numpy() == 0)
    lr, chosen = 0.5, []
    for _ in range(3):
        lg = z[idx] @ W.T + b
        G = per_sample_gradients(z[idx], lg, blobs.targets[idx]).numpy()
        gain = G @ G.mean(0)
        gain[chosen] = -np.inf
        chosen.append(int(np.argmax(gain)))
        step = torch.from_numpy(G[chosen[-1]])
        b, W = b - lr * step[:3], W - lr * step[3:].reshape(3, -1)
    sel = _run(blobs, mlp, "glister", fraction=3 / 12, lr=lr)
    assert sel.indices[blobs.targets[sel.indices] == 0].tolist() == sorted(idx[chosen])


def _graph_cut_value(sim, S, lam):
    return sim[:, S].sum() - lam * sim[np.ix_(S, S)].sum()


@pytest.mark.parametrize("lam", [0.3, 1.0])
def test_graph_cut_greedy_maximises_explicit_marginal_gains(lam):
    x = torch.randn(15, 3, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    sim = (0.5 + 0.5 * torch.nn.functional.cosine_similarity(x[:, None], x[None], dim=2)).numpy()
    chosen = []
    for _ in range(5):
        gains = [(_graph_cut_value(sim, chosen + [j], lam) - _graph_cut_value(sim, chosen, lam)) if j not in chosen
                 else -np.inf for j in range(15)]
        chosen.append(int(np.argmax(gains)))
    assert graph_cut_greedy(torch.from_numpy(sim), 5, lam).tolist() == chosen


def test_submodular_facility_location_uses_gradient_cosine(blobs, mlp):
    z, logits = _features(mlp, blobs)
    sel = _run(blobs, mlp, "submodular", fraction=0.2)
    for c in range(3):
        idx = np.flatnonzero(blobs.targets.numpy() == c)
        G = per_sample_gradients(z[idx], logits[idx], blobs.targets[idx]).numpy()
        Gn = G / np.linalg.norm(G, axis=1, keepdims=True)
        sim = 0.5 + 0.5 * Gn @ Gn.T
        cur, chosen = np.zeros(len(idx)), []
        for _ in range(max(1, int(np.floor(0.2 * len(idx) + 0.5)))):
            gains = np.maximum(sim - cur[:, None], 0).sum(0)
            gains[chosen] = -np.inf
            chosen.append(int(np.argmax(gains)))
            cur = np.maximum(cur, sim[:, chosen[-1]])
        assert sel.indices[blobs.targets[sel.indices] == c].tolist() == sorted(idx[chosen])


def test_craig_weights_are_nearest_medoid_cluster_sizes(blobs, mlp):
    z, logits = _features(mlp, blobs)
    sel = _run(blobs, mlp, "craig")
    for c in range(3):
        idx = np.flatnonzero(blobs.targets.numpy() == c)
        G = per_sample_gradients(z[idx], logits[idx], blobs.targets[idx]).numpy()
        chosen = sel.indices[blobs.targets[sel.indices] == c].numpy()
        pos = [int(np.flatnonzero(idx == j)[0]) for j in chosen]
        d = np.linalg.norm(G[:, None] - G[pos][None], axis=2)
        assign = d.argmin(1)
        assign[pos] = np.arange(len(pos))
        np.testing.assert_array_equal(sel.weights[blobs.targets[sel.indices] == c].numpy(),
                                      np.bincount(assign, minlength=len(pos)))
