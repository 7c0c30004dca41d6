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
