"""Losses against a sparse (top-k + tail) teacher: k = V equals the dense loss; k < V equals the loss on the
explicitly built k+1-bucket coarsening (autograd through an independent construction)."""

import pytest
import torch

from hf_plugins.losses import LOSS_NAMES, get, sparse, top_k_teacher

N, V = 6, 11


def _logits(seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, V, generator=g, dtype=torch.float64) * 2, torch.randn(N, V, generator=g, dtype=torch.float64) * 2


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_full_k_equals_dense(name):
    b, a = _logits(0)
    loss = get(name)
    bd, bs = b.clone().requires_grad_(), b.clone().requires_grad_()
    dense = loss(bd, a)
    dense.backward()
    value = sparse(loss, bs, top_k_teacher(a, V))
    value.backward()
    # fp64, O(10) terms of magnitude <= ~10: agreement to 1e-10 is far above rounding
    torch.testing.assert_close(value, dense, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(bs.grad, bd.grad, rtol=1e-9, atol=1e-10)


@pytest.mark.parametrize("name", [n for n in LOSS_NAMES if n != "csd"])
def test_partial_k_is_the_bucket_coarsening(name):
    b, a = _logits(1)
    k = 4
    loss = get(name)
    teacher = top_k_teacher(a, k)
    bs = b.clone().requires_grad_()
    sparse(loss, bs, teacher).backward()
    # independent: coarsen both distributions with explicit sums, dense loss on the k+1 buckets
    bi = b.clone().requires_grad_()
    p, q = torch.softmax(a, -1), torch.softmax(bi, -1)
    kept = torch.zeros(N, V, dtype=torch.bool).scatter_(-1, teacher.ids, True)
    p_b = torch.cat([p.gather(-1, teacher.ids), (p * ~kept).sum(-1, keepdim=True)], -1)
    q_b = torch.cat([q.gather(-1, teacher.ids), (q * ~kept).sum(-1, keepdim=True)], -1)
    ref = loss(q_b.log(), p_b.log())
    ref.backward()
    torch.testing.assert_close(sparse(loss, b, teacher), ref.detach(), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(bs.grad, bi.grad, rtol=1e-8, atol=1e-10)


def test_csd_kept_set_explicit_double_sum():
    b, a = _logits(2)
    k = 5
    teacher = top_k_teacher(a, k)
    bs = b.clone().requires_grad_()
    loss = get("csd", weights=("teacher", "student"))
    sparse(loss, bs, teacher).backward()
    bk = b.gather(-1, teacher.ids).clone().requires_grad_()
    ak = teacher.logprobs
    w1, w2 = torch.softmax(ak, -1), torch.softmax(bk.detach(), -1)
    d = bk - ak
    pair = (d.unsqueeze(-1) - d.unsqueeze(-2)) ** 2  # [N, x, y]
    ref = (0.5 * (w2.unsqueeze(-1) * w1.unsqueeze(-2) * pair).sum((-1, -2))).mean()
    ref.backward()
    grad_ref = torch.zeros_like(b).scatter_(-1, teacher.ids, bk.grad)
    torch.testing.assert_close(sparse(loss, b, teacher), ref.detach(), rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(bs.grad, grad_ref, rtol=1e-8, atol=1e-10)


@pytest.mark.parametrize("name", ["forward_kl", "reverse_kl", "total_variation", "jeffreys", "generalized_jsd"])
def test_f_divergence_coarsening_never_exceeds_dense(name):
    b, a = _logits(3)
    loss = get(name)
    assert float(sparse(loss, b, top_k_teacher(a, 3))) <= float(loss(b, a)) + 1e-12
