import pytest
import torch

from tv_plugins.condensation import DSA


def test_same_seed_same_transform_and_one_draw_for_the_whole_batch():
    aug = DSA()
    x = torch.randn(6, 3, 8, 8)
    for seed in range(12):  # covers every group
        a = aug(x, seed)
        assert torch.equal(a, aug(x, seed))  # same input, seed and kernels in one process: bitwise
        # siamese: augmenting two halves separately with the same seed equals augmenting the stack
        assert torch.allclose(torch.cat([aug(x[:3], seed), aug(x[3:], seed)]), a, atol=1e-6)


def test_flip_crop_and_cutout_against_explicit_operations():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).view(2, 1, 8, 8)
    flip = DSA("flip")
    outs = {tuple(flip(x, s).flatten().tolist()) for s in range(20)}
    assert outs == {tuple(x.flatten().tolist()), tuple(x.flip(-1).flatten().tolist())}
    crop = DSA("crop")
    for seed in range(10):
        y = crop(x, seed)
        # an integer translation with zero fill: find (dy, dx) in [-1, 1] (round(0.125 * 8) = 1) that explains y
        matches = []
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                shifted = torch.zeros_like(x)
                src = x[:, :, max(0, -dy):8 - max(0, dy), max(0, -dx):8 - max(0, dx)]
                shifted[:, :, max(0, dy):8 - max(0, -dy), max(0, dx):8 - max(0, -dx)] = src
                matches.append(torch.equal(shifted, y))  # nearest sampling copies pixel values: exact
        assert sum(matches) == 1
    cutout = DSA("cutout")
    y = cutout(torch.ones(3, 2, 8, 8))
    zeros = (y == 0).flatten(2).sum(-1)
    assert ((zeros > 0) & (zeros <= 16)).all()  # a (possibly clipped) 4x4 square, same across channels
    assert torch.equal(zeros[:, 0], zeros[:, 1])


def test_color_matches_explicit_formula_and_gradients_flow():
    x = torch.rand(1, 3, 4, 4, requires_grad=True)
    seed = 5
    g = torch.Generator().manual_seed(seed)
    torch.randint(1, (1,), generator=g)  # the group choice (only one group)
    b, s, c = (torch.rand(1, generator=g) for _ in range(3))
    y = x + (b - 0.5)
    m = y.mean(1, keepdim=True)
    y = (y - m) * (2 * s) + m
    m = y.mean((1, 2, 3), keepdim=True)
    y = (y - m) * (c + 0.5) + m
    out = DSA("color")(x, seed)
    assert torch.allclose(out, y, atol=1e-6)
    for group in ("crop", "cutout", "flip", "scale", "rotate"):
        x.grad = None
        DSA(group)(x, 1).sum().backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()


def test_identity_and_bad_strategy():
    x = torch.randn(2, 1, 4, 4)
    assert torch.equal(DSA("")(x, 0), x)  # the identity returns its input
    with pytest.raises(ValueError, match="unknown DSA group"):
        DSA("color_blur")
    with pytest.raises(ValueError, match="B, C, H, W"):
        DSA()(torch.randn(4, 4), 0)
