import copy

import pytest
import torch
import torch.nn.functional as F

from tv_plugins import ConvNet
from tv_plugins.condensation import (
    DSA,
    ExpertTrajectories,
    PixelParameterization,
    TrajectoryMatching,
    distribution_matching_loss,
    gradient_distance,
    train_expert_trajectories,
)


def _explicit_distance(gr, gs):
    total = 0.0
    for a, b in zip(gr, gs):
        if a.ndim == 1:
            continue
        a, b = a.reshape(a.shape[0], -1), b.reshape(b.shape[0], -1)
        for r in range(a.shape[0]):
            dot = sum(float(a[r, j]) * float(b[r, j]) for j in range(a.shape[1]))
            na = sum(float(v) ** 2 for v in a[r]) ** 0.5
            nb = sum(float(v) ** 2 for v in b[r]) ** 0.5
            total += 1 - dot / (na * nb + 1e-6)
    return total


def test_gradient_distance_against_explicit_sum_and_its_invariances():
    gr = [torch.randn(3, 2, 2, 2), torch.randn(3), torch.randn(4, 5)]
    gs = [torch.randn(3, 2, 2, 2), torch.randn(3), torch.randn(4, 5)]
    assert gradient_distance(gr, gs).item() == pytest.approx(_explicit_distance(gr, gs), rel=1e-5)
    assert gradient_distance(gr, gr).abs().item() < 1e-5
    scaled = [g * torch.rand(g.shape[0]).add(0.5).view(-1, *([1] * (g.ndim - 1))) for g in gs]
    assert gradient_distance(gr, scaled).item() == pytest.approx(gradient_distance(gr, gs).item(), rel=1e-5)
    changed_bias = [gs[0], torch.randn(3) * 100, gs[2]]
    # biases are skipped, so both calls run the same ops on the same weight tensors: bitwise
    assert gradient_distance(gr, changed_bias).item() == gradient_distance(gr, gs).item()


def test_dm_loss_is_zero_with_zero_gradient_for_identical_batches():
    torch.manual_seed(0)
    net = ConvNet(1, 3, 8, depth=2, width=8)
    real = torch.randn(5, 1, 8, 8)
    synthetic = real.clone().requires_grad_(True)
    loss = distribution_matching_loss(net, real, synthetic, DSA(), seed=7)
    loss.backward()
    assert loss.item() == 0.0  # identical inputs through identical ops: the difference is exactly zero
    assert synthetic.grad.abs().max() == 0.0
    # otherwise it is the linear-kernel MMD of the augmented embeddings: every image augmented on its own with the
    # shared seed (siamese: one draw for the batch), embedded one at a time, the kernel sums taken in float64
    other = torch.randn(2, 1, 8, 8)
    aug = DSA()
    for seed in range(6):  # covers several DSA groups
        phi_r = torch.stack([net.embed(aug(x[None], seed))[0] for x in real]).double()
        phi_s = torch.stack([net.embed(aug(x[None], seed))[0] for x in other]).double()
        mmd = (phi_r @ phi_r.T).mean() - 2 * (phi_r @ phi_s.T).mean() + (phi_s @ phi_s.T).mean()
        # fp32 embeddings of magnitude ~1 summed over 8 * 8 features: ~1e-6 relative, 1e-5 leaves a margin
        assert distribution_matching_loss(net, real, other, aug, seed).item() == pytest.approx(mmd.item(), rel=1e-5)


@pytest.fixture(scope="module")
def tiny_experts():
    g = torch.Generator().manual_seed(0)
    images, labels = torch.randn(40, 1, 8, 8, generator=g), torch.arange(4).repeat(10)
    experts = train_expert_trajectories((images, labels), num_experts=2, epochs=4, width=8, depth=2, batch_size=16,
                                        seed=0, progress=False)
    return images, labels, experts


def test_expert_buffer_layout_and_start_epoch(tiny_experts, tmp_path):
    images, labels, experts = tiny_experts
    net = experts.build_network()
    p = sum(x.numel() for x in net.parameters())
    assert experts.trajectories.shape == (2, 5, p)
    # epoch 0 is a fresh ConvNet drawn with the seed; the first expert's start is reproducible
    with torch.random.fork_rng():
        torch.manual_seed(0)
        fresh = ConvNet(**experts.network)
    # the same RNG draws give the same initial parameters (no arithmetic involved)
    assert torch.equal(experts.trajectories[0, 0], torch.cat([q.detach().flatten() for q in fresh.parameters()]))
    assert not torch.equal(experts.trajectories[0, 0], experts.trajectories[0, 1])
    experts.save(tmp_path / "buf")
    again = ExpertTrajectories.load(tmp_path / "buf")
    # the stored tensor itself: safetensors writes and reads the bytes
    assert torch.equal(again.trajectories, experts.trajectories) and again.network == experts.network
    with pytest.raises(ValueError, match="exceeds"):
        TrajectoryMatching(experts, max_start_epoch=4, expert_epochs=2)
    tm = TrajectoryMatching(experts, max_start_epoch=3, expert_epochs=2)
    segments = {tm.sample_segment() for _ in range(200)}
    assert {t0 for _, t0, _ in segments} == {0, 1, 2}
    assert {e for e, _, _ in segments} == {0, 1}
    assert all(t1 == t0 + 2 for _, t0, t1 in segments)


def test_tm_loss_is_exactly_one_without_student_steps_or_with_zero_lr(tiny_experts):
    images, labels, experts = tiny_experts
    param = PixelParameterization.from_real((images, labels), ipc=2)
    start, target = experts.trajectories[0, 0], experts.trajectories[0, 2]
    syn, lab = param.decode()
    # no step (or a zero step) leaves theta = start: numerator and denominator are the same ops on the same tensors
    assert TrajectoryMatching(experts, syn_steps=0, max_start_epoch=2).matching_loss(syn, lab, start, target).item() == 1.0
    tm = TrajectoryMatching(experts, syn_steps=3, max_start_epoch=2)
    with torch.no_grad():
        tm.syn_lr.zero_()
    assert tm.matching_loss(syn, lab, start, target).item() == 1.0


def test_tm_loss_matches_an_explicit_unrolled_sgd(tiny_experts):
    images, labels, experts = tiny_experts
    param = PixelParameterization.from_real((images, labels), ipc=2)
    syn, lab = param.decode()
    tm = TrajectoryMatching(experts, syn_steps=2, dsa="", lr_teacher=0.05, max_start_epoch=2)
    start, target = experts.trajectories[1, 1], experts.trajectories[1, 3]
    loss = tm.matching_loss(syn, lab, start, target)
    net = experts.build_network()
    torch.nn.utils.vector_to_parameters(start.clone(), net.parameters())
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    for _ in range(2):  # batch_syn=None: the whole set each step
        opt.zero_grad()
        F.cross_entropy(net(syn.detach()), lab).backward()
        opt.step()
    end = torch.nn.utils.parameters_to_vector(net.parameters()).detach()
    expected = (end - target).pow(2).sum() / (start - target).pow(2).sum()
    assert loss.item() == pytest.approx(expected.item(), rel=1e-4)
    # the loss is differentiable w.r.t. the synthetic images and the learned step size
    grads = torch.autograd.grad(loss, [param.images, tm.syn_lr])
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_tm_step_keeps_syn_lr_above_floor(tiny_experts):
    images, labels, experts = tiny_experts
    param = PixelParameterization.from_real((images, labels), ipc=1)
    tm = TrajectoryMatching(experts, syn_steps=2, max_start_epoch=2, lr_lr=1e-12, lr_teacher=0.0005)
    before = copy.deepcopy(param.images.detach())
    optimizer = param.make_optimizer("tm", lr=1.0)
    loss = tm.step(param, optimizer, None)
    assert 0 < loss and tm.syn_lr.item() == pytest.approx(0.001)  # clipped up from 0.0005
    tm.step(param, optimizer, None)
    assert tm.syn_lr.item() >= 0.001
    assert not torch.equal(before, param.images.detach())
