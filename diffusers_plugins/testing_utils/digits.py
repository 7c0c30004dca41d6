"""Offline image data and a tiny diffusion model for the demo, notebook and benchmark.

The scikit-learn digits (1797 images, 8x8, ships inside the wheel) upsampled to 16x16 and scaled to
[-1, 1], and a small ``UNet2DModel`` trained on them with the stock ``DDPMScheduler`` objective.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler, UNet2DModel
from tqdm.auto import tqdm


def load_digits_images(image_size: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """``(images [1797, 1, S, S] float32 in [-1, 1], labels [1797] long)`` (bilinear upsampling)."""
    from sklearn.datasets import load_digits

    if not isinstance(image_size, int) or image_size < 8:
        raise ValueError(f"image_size must be an int >= 8, got {image_size!r}")
    bunch = load_digits()
    x = torch.tensor(bunch.images, dtype=torch.float32)[:, None] / 16.0
    if image_size != 8:
        x = F.interpolate(x, size=(image_size, image_size), mode="bilinear", align_corners=False)
    return (x.clamp(0, 1) * 2 - 1).contiguous(), torch.tensor(bunch.target, dtype=torch.long)


def digits_unet(image_size: int = 16, width: int = 16, seed: int = 0) -> UNet2DModel:
    """An untrained three-level ``UNet2DModel`` for ``image_size`` digits (~0.27M parameters at width 16),
    initialised from ``seed`` (the caller's global RNG state is left unchanged)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return UNet2DModel(
            sample_size=image_size,
            in_channels=1,
            out_channels=1,
            layers_per_block=1,
            block_out_channels=(width, 2 * width, 2 * width),
            down_block_types=("DownBlock2D",) * 3,
            up_block_types=("UpBlock2D",) * 3,
            norm_num_groups=8,
        )


def train_digits_unet(
    unet: UNet2DModel,
    images: torch.Tensor,
    scheduler: DDPMScheduler | None = None,
    num_steps: int = 1500,
    batch_size: int = 64,
    learning_rate: float = 2e-3,
    seed: int = 0,
    progress: bool = True,
) -> tuple[UNet2DModel, list[float]]:
    """Train ``unet`` with the epsilon-prediction loss of ``scheduler`` (default ``DDPMScheduler()``).

    ``images``: ``[N, C, H, W]`` in [-1, 1]. Adam with a cosine learning-rate decay. Returns the
    model (in eval mode) and the per-step MSE history. Batches, noise and timesteps come from a
    generator seeded with ``seed``.
    """
    if images.ndim != 4:
        raise ValueError(f"images must be [N, C, H, W], got {tuple(images.shape)}")
    scheduler = scheduler or DDPMScheduler()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(unet.parameters(), lr=learning_rate)
    lr_sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, num_steps)
    history = []
    unet.train()
    for _ in tqdm(range(num_steps), desc="digits unet", disable=not progress):
        rows = torch.randint(0, len(images), (batch_size,), generator=gen)
        x0 = images[rows]
        noise = torch.randn(x0.shape, generator=gen)
        t = torch.randint(0, scheduler.config.num_train_timesteps, (batch_size,), generator=gen)
        loss = F.mse_loss(unet(scheduler.add_noise(x0, noise, t), t).sample, noise)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        lr_sched.step()
        history.append(float(loss.detach()))
    unet.eval()
    return unet, history
