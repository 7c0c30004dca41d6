import itertools
import math

import pytest
import torch
from torch import nn

from tv_plugins.condensation import DDiFParameterization, siren_parameter_count
from tv_plugins.condensation.ddif import BatchedSiren, coordinate_grid


def _reference_siren(dim_in, num_layers, width, dim_out):
    layers = [nn.Linear(dim_in, width)] + [nn.Linear(width, width) for _ in range(num_layers - 1)]
    return nn.Sequential(*layers, nn.Linear(width, dim_out))


@pytest.mark.parametrize("spec,expected", [((2, 2, 6, 3), 81), ((2, 2, 20, 3), 543), ((2, 3, 20, 3), 963),
                                           ((2, 3, 40, 3), 3523), ((3, 3, 20, 1), 941), ((3, 6, 40, 3), 8483)])
def test_parameter_counts_from_the_spec(spec, expected):
    n, layers, d, m = spec
    assert siren_parameter_count(n, layers, d, m) == expected
    assert sum(p.numel() for p in _reference_siren(n, layers, d, m).parameters()) == expected
    field = BatchedSiren(3, n, m, d, layers)
    assert sum(p.numel() for p in field.parameters()) == 3 * expected


def test_cifar_and_imagenet_fields_per_class():
    assert DDiFParameterization(10, 3, (32, 32), 1, width=6, num_layers=2).instances_per_class == 37
    assert DDiFParameterization(10, 3, (32, 32), 10, width=6, num_layers=2).instances_per_class == 379
    assert DDiFParameterization(10, 3, (32, 32), 50, width=20, num_layers=2).instances_per_class == 282


@pytest.mark.parametrize("ipc,size,channels,width,layers", list(itertools.product([1, 2, 10], [8, 16], [1, 3],
                                                                                  [2, 4, 9], [1, 2, 3])))
def test_budget_never_exceeded_or_error(ipc, size, channels, width, layers):
    budget = ipc * channels * size * size
    per_field = siren_parameter_count(2, layers, width, channels)
    if per_field > budget:
        with pytest.raises(ValueError, match="budget too small"):
            DDiFParameterization(2, channels, (size, size), ipc, width=width, num_layers=layers)
        return
    param = DDiFParameterization(2, channels, (size, size), ipc, width=width, num_layers=layers)
    assert param.instances_per_class == budget // per_field >= 1
    assert param.num_stored_floats == 2 * param.instances_per_class * per_field <= 2 * budget


def test_coordinate_grid_layout():
    h, w = 5, 7
    grid = coordinate_grid((h, w))
    assert grid.shape == (h * w, 2)
    assert grid[0].tolist() == [-1.0, -1.0] and grid[-1].tolist() == [1.0, 1.0]
    for i, j in [(0, 3), (2, 5), (4, 0)]:
        assert torch.allclose(grid[i * w + j], torch.tensor([2 * i / (h - 1) - 1, 2 * j / (w - 1) - 1]))


def test_decode_layout_matches_field_outputs():
    param = DDiFParameterization(2, 3, (6, 6), 4, width=4, num_layers=2)
    out = param.field(coordinate_grid((6, 6)))  # [N, HW, C]
    images = param.decode()[0]
    assert images.shape == (param.num_instances, 3, 6, 6)
    i, j, ch = 2, 5, 1
    assert torch.equal(images[:, ch, i, j], out[:, i * 6 + j, ch])  # decode is this very call, reshaped: bitwise


def test_decode_at_2h_minus_1_contains_the_training_decode_at_even_pixels():
    param = DDiFParameterization(2, 1, (8, 8), 2, width=5, num_layers=2)
    low = param.decode()[0]
    high = param.decode(resolution=15)[0]
    assert high.shape == (param.num_instances, 1, 15, 15)
    assert torch.allclose(high[:, :, ::2, ::2], low, atol=1e-6, rtol=0)
    # the coordinates are bit-identical; outputs differ only by float32 matmul blocking, so float64 agrees to 1e-12
    assert torch.equal(coordinate_grid((15, 15)).view(15, 15, 2)[::2, ::2].reshape(-1, 2), coordinate_grid((8, 8)))
    param = param.double()
    assert torch.allclose(param.decode(resolution=15)[0][:, :, ::2, ::2], param.decode()[0], atol=1e-12, rtol=0)
    assert param.decode(resolution=(11, 13))[0].shape == (param.num_instances, 1, 11, 13)


def test_init_bounds():
    field = BatchedSiren(4, 2, 3, 16, 3, omega0_init=30.0, omega0=10.0, generator=torch.Generator().manual_seed(0))
    assert field.weights[0].abs().max() <= 1 / 2 and field.biases[0].abs().max() <= 1 / 2
    for w, b in zip(list(field.weights)[1:], list(field.biases)[1:]):
        bound = math.sqrt(6 / w.shape[-1]) / 10.0
        assert w.abs().max() <= bound and b.abs().max() <= bound
        assert w.abs().max() > 0.8 * bound  # really uses the range


def test_siren_forward_matches_explicit_formula():
    field = BatchedSiren(2, 2, 1, 3, 2, omega0_init=30.0, omega0=10.0)
    coords = coordinate_grid((3, 3))
    w, b = field.weights, field.biases
    for i in range(2):
        h = torch.sin(30.0 * (coords @ w[0][i].T + b[0][i]))
        h = torch.sin(10.0 * (h @ w[1][i].T + b[1][i]))
        y = h @ w[2][i].T + b[2][i]
        assert torch.allclose(field(coords)[i], y, atol=1e-6)


def test_warm_up_fit_reduces_mse_and_fields_are_independent():
    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 8, 8, generator=g)
    labels = torch.tensor([0, 0, 0, 1, 1, 1])
    param = DDiFParameterization.from_real((images, labels), ipc=1, width=3, num_layers=2, init_steps=0)
    assert param.instances_per_class == 2
    targets = torch.cat([images[:2], images[3:5]])
    history = param.fit(targets, steps=300, lr=1e-2)
    assert history[-1] <= 0.5 * history[0]
    # the gradient through instance 1 touches only field 1
    param.zero_grad()
    param.decode_indices(torch.tensor([1])).sum().backward()
    for p in param.parameters():
        touched = p.grad.flatten(1).abs().sum(1) > 0
        assert touched.tolist() == [False, True, False, False]


def test_one_and_three_dimensional_coordinates():
    audio = torch.sin(torch.linspace(0, 6, 32)).repeat(4, 1, 1)  # [N, C=1, L]
    param = DDiFParameterization.from_real((audio, torch.tensor([0, 0, 1, 1])), ipc=1, width=3, num_layers=2,
                                           init_steps=50, init_lr=1e-2)
    assert param.decode()[0].shape == (param.num_instances, 1, 32)
    assert param.decode(resolution=63)[0].shape == (param.num_instances, 1, 63)
    voxels = torch.rand(4, 1, 4, 5, 6)
    param3 = DDiFParameterization.from_real((voxels, torch.tensor([0, 0, 1, 1])), ipc=1, width=5, num_layers=2,
                                            init_steps=0)
    out = param3.decode()[0]
    assert out.shape == (param3.num_instances, 1, 4, 5, 6)
    grid = coordinate_grid((4, 5, 6))
    assert grid[1 * 30 + 2 * 6 + 3].tolist() == pytest.approx([2 / 3 - 1, 2 * 2 / 4 - 1, 2 * 3 / 5 - 1])
    assert torch.equal(out[:, 0, 1, 2, 3], param3.field(grid)[:, 1 * 30 + 2 * 6 + 3, 0])  # the same call: bitwise


def test_invalid_arguments_raise():
    images, labels = torch.rand(4, 1, 8, 8), torch.tensor([0, 0, 1, 1])
    with pytest.raises(ValueError, match="budget too small"):
        DDiFParameterization.from_real((images, labels), ipc=1, width=10, num_layers=2, init_steps=0)
    with pytest.raises(ValueError, match="ipc"):
        DDiFParameterization.from_real((images, labels), ipc=0, init_steps=0)
    with pytest.raises(ValueError, match="fields_per_class"):
        DDiFParameterization(2, 1, (8, 8), 1, width=2, num_layers=1, fields_per_class=100)
    with pytest.raises(ValueError, match="class 0 has 2"):
        DDiFParameterization.from_real((images, labels), ipc=1, width=2, num_layers=1, init_steps=0)  # 6 fields
    with pytest.raises(ValueError, match=">= 2"):
        DDiFParameterization(2, 1, (8, 8), 1, width=2, num_layers=1).decode(resolution=1)
