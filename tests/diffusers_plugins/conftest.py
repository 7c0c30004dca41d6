"""Tiny diffusers models shared by the diffusers_plugins tests."""

import pytest
import torch
from diffusers import UNet2DModel

TINY_UNET = dict(
    sample_size=8,
    in_channels=1,
    out_channels=1,
    layers_per_block=1,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
)


# Results that ran through different CPU kernels (another batch size or num_slots, reloaded weights at
# another alignment, another process or machine) agree up to rounding: each UNet call may round by a few
# ulp (<= 8 measured on AVX-512, AVX2, SSE4.1 kernels), carried through the trajectory and amplified by
# DDIM's x0 = (x - sqrt(1 - abar) eps) / sqrt(abar): sum over levels of 1/sqrt(abar) ~ 36 at N = 5, so
# 36 * 8 * 2**-23 ~ 3.4e-5 of the state scale, 1e-4 with margin (measured <= 2.7e-5).
KERNEL_ROUNDING = 1e-4


def assert_equal_up_to_kernel_rounding(a, b) -> None:
    """``max |a - b| <= KERNEL_ROUNDING * max(1, max |b|)`` for tensors or arrays of final states."""
    a, b = torch.as_tensor(a).double(), torch.as_tensor(b).double()
    diff, scale = float((a - b).abs().max()), max(1.0, float(b.abs().max()))
    assert diff <= KERNEL_ROUNDING * scale, (
        f"max |a - b| = {diff:.3g} above {KERNEL_ROUNDING:g} * {scale:.3g}"
    )


def make_unet(seed: int = 0, **overrides) -> UNet2DModel:
    torch.manual_seed(seed)
    return UNet2DModel(**{**TINY_UNET, **overrides}).eval()


@pytest.fixture(scope="module")
def unet():
    return make_unet()


@pytest.fixture(scope="module")
def cond_unet():
    return make_unet(1, num_class_embeds=3)


@pytest.fixture(autouse=True)
def _one_torch_thread():
    """These models are tiny: one intra-op thread avoids OpenMP spin contention on shared 2-core machines."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
