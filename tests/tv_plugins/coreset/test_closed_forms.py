"""Closed-form last-layer gradients, Hessian diagonals and distances against autograd / explicit sums."""

import numpy as np
import torch
from torch.autograd.functional import hessian

from tv_plugins.coreset.last_layer import (
    LastLayerOutputs,
    gradient_distances,
    gradient_gram,
    hessian_diagonal,
    per_sample_gradients,
)
from tv_plugins.coreset.methods.facility_location import curvature_coordinates


def _random_head(n=5, d=4, c=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    W = torch.randn(c, d, generator=g, dtype=torch.float64)
    b = torch.randn(c, generator=g, dtype=torch.float64)
    z = torch.randn(n, d, generator=g, dtype=torch.float64)
    y = torch.randint(c, (n,), generator=g)
    return W, b, z, y


def _loss_of_flat(psi, z_i, y_i, c, d):
    b, W = psi[:c], psi[c:].reshape(c, d)  # bias first, then W row-major
    return torch.nn.functional.cross_entropy((z_i @ W.T + b)[None], y_i[None])


def test_gradient_and_hessian_diagonal_equal_autograd():
    W, b, z, y = _random_head()
    c, d = W.shape
    psi = torch.cat([b, W.flatten()])
    logits = z @ W.T + b
    grads, hdiag = per_sample_gradients(z, logits, y), hessian_diagonal(z, logits)
    for i in range(len(z)):
        p = psi.clone().requires_grad_(True)
        (g_auto,) = torch.autograd.grad(_loss_of_flat(p, z[i], y[i], c, d), p)
        h_auto = hessian(lambda q, i=i: _loss_of_flat(q, z[i], y[i], c, d), psi).diagonal()
        torch.testing.assert_close(grads[i], g_auto, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(hdiag[i], h_auto, rtol=1e-10, atol=1e-12)


def test_gram_identity_and_pairwise_distances_match_explicit_vectors():
    W, b, z, y = _random_head(n=7)
    logits = z @ W.T + b
    out = LastLayerOutputs(z, logits, y, W, b)
    G = per_sample_gradients(z, logits, y)
    torch.testing.assert_close(gradient_gram(out), G @ G.T)
    explicit = torch.stack([(G[i] - G).norm(dim=1) for i in range(len(G))])
    torch.testing.assert_close(gradient_distances(out), explicit, atol=1e-7, rtol=1e-7)


def test_curvature_coordinates_are_the_top_variance_columns_of_h():
    W, b, z, y = _random_head(n=9, d=4, c=3, seed=3)
    logits = z @ W.T + b
    out = LastLayerOutputs(z, logits, y, W, b)
    H = hessian_diagonal(z, logits).numpy()
    variance = np.var(H, axis=0)  # population variance, as the reference's np.var
    flat, h = curvature_coordinates(out, K=5)
    assert sorted(flat.tolist()) == sorted(np.argsort(-variance)[:5].tolist())
    np.testing.assert_allclose(h.numpy(), H[:, flat.numpy()], rtol=1e-12)
    # K >= P uses every coordinate
    flat_all, h_all = curvature_coordinates(out, K=10_000)
    assert sorted(flat_all.tolist()) == list(range(H.shape[1]))
    np.testing.assert_allclose(h_all.numpy(), H[:, flat_all.numpy()], rtol=1e-12)
