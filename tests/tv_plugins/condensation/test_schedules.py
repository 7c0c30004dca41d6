"""DC's (outer, inner) loop table and DDiF's per-class DM steps."""

import sys

import pytest
import torch

from tv_plugins import DigitsDataset
from tv_plugins.condensation import DDiF, distill
from tv_plugins.condensation.class_step import step_class
from tv_plugins.condensation.dc import default_loops
from tv_plugins.condensation.pixel import PixelParameterization

# read off get_loops in sdh0818/FreD DC/utils.py and aailab-kaist/DDiF DC/utils.py (ipc 5: DDiF 3D_Voxel/utils.py)
OFFICIAL = [(1, 1, 1), (2, 1, 1), (5, 1, 1), (10, 10, 50), (11, 10, 50), (20, 20, 25), (30, 30, 20),
            (40, 40, 15), (50, 50, 10), (51, 50, 10)]


@pytest.mark.parametrize("ipc,outer,inner", OFFICIAL)
def test_default_loops_is_the_official_table(ipc, outer, inner):
    assert default_loops(ipc) == (outer, inner)


@pytest.mark.parametrize("ipc,expected", [(3, (10, 50)), (9, (10, 50)), (12, (50, 10)), (100, (50, 10))])
def test_default_loops_fallback_outside_the_table(ipc, expected):
    assert default_loops(ipc) == expected


def test_default_loops_rejects_bad_ipc():
    with pytest.raises(ValueError, match="ipc"):
        default_loops(0)


@pytest.mark.parametrize("optimizer_class,options", [(torch.optim.Adam, {}), (torch.optim.SGD, {"momentum": 0.5})])
def test_step_class_equals_one_optimizer_per_class(optimizer_class, options):
    """Per-class steps on one stacked tensor == independent optimisers on each class's own tensor."""
    torch.manual_seed(0)
    param = PixelParameterization(num_classes=3, channels=1, spatial=(2, 2), ipc=2)
    with torch.no_grad():
        param.images.normal_()
    separate = [param.images.detach()[param.class_instances(c)].clone().requires_grad_(True) for c in range(3)]
    separate_opt = [optimizer_class([t], lr=0.1, **options) for t in separate]
    stacked_opt = optimizer_class(param.parameters(), lr=0.1, **options)
    targets = torch.randn(3, 3, 2, 1, 2, 2)  # [iteration, class, instance, ...]
    for it in range(3):
        for c in range(3):
            rows = param.class_instances(c)
            stacked_opt.zero_grad(set_to_none=True)
            (param.images[rows] - targets[it, c]).pow(2).sum().backward()
            step_class(param, stacked_opt, c)
            separate_opt[c].zero_grad(set_to_none=True)
            (separate[c] - targets[it, c]).pow(2).sum().backward()
            separate_opt[c].step()
            # the same elementwise operations on the same values in one process: bitwise
            for d in range(3):
                assert torch.equal(param.images.detach()[param.class_instances(d)], separate[d].detach())


def test_plain_adam_step_moves_other_classes_but_step_class_does_not():
    param = PixelParameterization(num_classes=2, channels=1, spatial=(1, 1), ipc=1)
    opt = torch.optim.Adam(param.parameters(), lr=0.1)
    for c in (0, 1):
        opt.zero_grad(set_to_none=True)
        param.images[c].sum().backward()
        opt.step()
    before = param.images.detach().clone()
    opt.zero_grad(set_to_none=True)
    param.images[0].sum().backward()
    step_class(param, opt, 0)
    assert torch.equal(param.images.detach()[1], before[1]) and not torch.equal(param.images.detach()[0], before[0])


def test_ddif_shortcut_defaults_to_per_class_dm(monkeypatch):
    module = sys.modules[DDiF.__module__]
    seen = []
    monkeypatch.setattr(module, "distill", lambda *args, **kwargs: seen.append(kwargs.get("objective_kwargs")))
    DDiF.distill(None, objective="dm")
    DDiF.distill(None, objective="dm", objective_kwargs={"width": 4})
    DDiF.distill(None, objective="dm", objective_kwargs={"step_per_class": False})
    DDiF.distill(None, objective="dc")
    assert seen == [{"step_per_class": True}, {"step_per_class": True, "width": 4}, {"step_per_class": False}, None]


def test_per_class_dm_equals_summed_dm_once_other_classes_stay_put():
    """A class's DM loss depends on its own storage only and Adam is elementwise, so per-class steps with per-class
    state reproduce the summed-loss step (the per-class stepping without it moved the other classes' fields)."""
    train = DigitsDataset(train=True, image_size=8)
    common = dict(ipc=1, iterations=3, progress=False, seed=1,
                  parameterization_kwargs={"width": 3, "num_layers": 1, "init_steps": 2})
    small = {"depth": 1, "width": 4, "batch_real": 4}
    per_class = distill(train, "ddif", "dm", objective_kwargs={**small, "step_per_class": True}, **common)
    summed = distill(train, "ddif", "dm", objective_kwargs=small, **common)
    # the same elementwise updates from gradients of the same per-class terms: equal up to fp32 summation order
    torch.testing.assert_close(per_class.to_tensors()[0], summed.to_tensors()[0])
