"""Training the time-dependent discriminator (the recipe of discriminator guidance, Kim et al., ICML
2023, arXiv 2211.17091, which DiffRS reuses): binary cross-entropy on the logit for real (1) vs
base-sampler (0) samples, each diffused to its own noise level; a feature UNet stays frozen. Levels are
drawn uniformly from the ``N + 1`` levels of the sampler DiffRS will wrap, where the discriminator is
evaluated, instead of DG's importance sampling over continuous VP time.
"""

from __future__ import annotations

import math

import torch
from torch.utils.data import DataLoader, Dataset, TensorDataset
from tqdm.auto import tqdm

from diffusers_plugins.level_tables import LevelTables


def _as_dataset(data, name: str) -> Dataset:
    if isinstance(data, torch.Tensor):
        if data.ndim != 4:
            raise ValueError(f"{name} as a tensor must have shape [N, C, H, W], got {tuple(data.shape)}")
        return TensorDataset(data)
    if isinstance(data, Dataset):
        return data
    raise TypeError(f"{name} must be a torch Dataset or a [N, C, H, W] tensor, got {type(data).__name__}")


def _batches(dataset: Dataset, batch_size: int, generator: torch.Generator):
    if len(dataset) < 1:
        raise ValueError("datasets must not be empty")
    size = min(batch_size, len(dataset))
    loader = DataLoader(dataset, batch_size=size, shuffle=True, generator=generator, drop_last=True)
    while True:
        yield from loader


def _split(batch, needs_labels: bool, name: str, needs_text: bool = False):
    x, y = (
        (batch[0], batch[1] if len(batch) > 1 else None)
        if isinstance(batch, (list, tuple))
        else (batch, None)
    )
    if not isinstance(x, torch.Tensor) or x.ndim != 4:
        raise ValueError(f"{name} must yield image tensors [C, H, W] (optionally with a label)")
    if needs_labels and y is None:
        raise ValueError(f"the discriminator is class-conditional: {name} must yield (image, label) pairs")
    if needs_text and (not isinstance(y, torch.Tensor) or y.ndim != 3 or not y.dtype.is_floating_point):
        raise ValueError(
            f"the discriminator is text-conditional: {name} must yield (latent, prompt embeddings [L, D]) "
            "pairs, e.g. DiffRSStableDiffusionPipeline.discriminator_training_data(...)"
        )
    if needs_text:
        return x, y.float()
    return x, (torch.as_tensor(y).long() if needs_labels else None)


def _check_range(x: torch.Tensor, name: str, lo: float, hi: float) -> tuple[float, float]:
    """``(min, max)`` of ``x``; ``ValueError`` if they leave the declared ``[lo, hi]`` or are not finite."""
    x_min, x_max = float(x.min()), float(x.max())
    if not (math.isfinite(x_min) and math.isfinite(x_max) and lo <= x_min and x_max <= hi):
        raise ValueError(
            f"{name} values span [{x_min:g}, {x_max:g}], outside input_range=({lo:g}, {hi:g}); declare the "
            "range the data use, e.g. input_range=(0, 255) for uint8 images or (0, 1) for "
            "DiffRSPipeline(output_type='pt') images"
        )
    return x_min, x_max


def _check_pair(real: torch.Tensor, fake: torch.Tensor, lo: float, hi: float, in_channels: int) -> None:
    """Both sets: images of the discriminator's channels, one resolution, one value convention."""
    for name, x in (("real_dataset", real), ("generated_dataset", fake)):
        if x.shape[1] != in_channels:
            raise ValueError(
                f"{name} images have {x.shape[1]} channels; the discriminator takes {in_channels}"
            )
    if real.shape[1:] != fake.shape[1:]:
        raise ValueError(
            f"real_dataset images have shape {tuple(real.shape[1:])} but generated_dataset images have "
            f"shape {tuple(fake.shape[1:])}: both must have the same channels and resolution"
        )
    (r_lo, r_hi), (f_lo, f_hi) = (
        _check_range(real, "real_dataset", lo, hi),
        _check_range(fake, "generated_dataset", lo, hi),
    )
    mid, quarter = (lo + hi) / 2, (hi - lo) / 4
    # One set confined to one half of the range while the other reaches the far quarter: two conventions.
    if math.isfinite(hi - lo) and (
        (min(r_lo, f_lo) <= lo + quarter and max(r_lo, f_lo) >= mid)
        or (max(r_hi, f_hi) >= hi - quarter and min(r_hi, f_hi) <= mid)
    ):
        raise ValueError(
            f"real_dataset spans [{r_lo:g}, {r_hi:g}] but generated_dataset spans [{f_lo:g}, {f_hi:g}] "
            f"(input_range=({lo:g}, {hi:g})): the two use different value ranges; rescale one, e.g. "
            "DiffRSPipeline(output_type='pt') images lie in [0, 1] and output_type='latent' ones in [-1, 1]"
        )


def _diffused(xr, xf, lo: float, hi: float, sigmas: torch.Tensor, gen: torch.Generator, device):
    """Real and generated batches mapped to [-1, 1], each sample diffused to a random level:
    ``(x0 + sigma * eps [B, C, H, W], sigma [B], target [B] = 1 real / 0 generated)``."""
    x0 = torch.cat([xr, xf]).to(device=device, dtype=torch.float32)
    x0 = (x0 - lo) / (hi - lo) * 2 - 1
    target = torch.cat([torch.ones(len(xr)), torch.zeros(len(xf))]).to(device)
    sigma = sigmas[torch.randint(0, sigmas.numel(), (len(x0),), generator=gen).to(device)]
    noise = torch.randn(x0.shape, generator=gen).to(device)
    return x0 + sigma.view(-1, 1, 1, 1) * noise, sigma, target


def _checked_settings(num_steps, batch_size, learning_rate, input_range) -> tuple[float, float, tuple]:
    """``(low, high, bounds)`` of ``train_discriminator``'s data after checking its settings: ``input_range``
    (``(-1, 1)`` in the model's units when ``None``) and the bounds values must lie in (infinite when ``None``)."""
    for name, value in (("num_steps", num_steps), ("batch_size", batch_size)):
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if not learning_rate > 0:
        raise ValueError(f"learning_rate must be > 0, got {learning_rate!r}")
    lo, hi = (-1.0, 1.0) if input_range is None else (float(v) for v in input_range)
    if not hi > lo:
        raise ValueError(f"input_range must be (low, high) with high > low, got {input_range!r}")
    return lo, hi, ((-math.inf, math.inf) if input_range is None else (lo, hi))


def train_discriminator(
    discriminator,
    real_dataset,
    generated_dataset,
    scheduler,
    num_inference_steps: int = 50,
    num_steps: int = 500,
    batch_size: int = 64,
    learning_rate: float = 3e-4,
    weight_decay: float = 1e-7,
    input_range: tuple[float, float] | None = (-1.0, 1.0),
    seed: int = 0,
    progress: bool = True,
    show_progress: bool | None = None,
):
    """Train ``discriminator`` to tell diffused real samples from diffused base-sampler samples.

    Args:
        discriminator: a :class:`~diffusers_plugins.TimeDependentDiscriminator` (trained in place).
        real_dataset, generated_dataset: torch datasets yielding ``image [C, H, W]`` or
            ``(image, label)`` (labels needed for class-conditional discriminators), or
            ``(latent, prompt embeddings [L, D])`` for text-conditional ones (see
            ``DiffRSStableDiffusionPipeline.discriminator_training_data``), or tensors ``[N, C, H, W]``. ``generated_dataset`` holds outputs of the base sampler being corrected.
        scheduler: the sampler's scheduler; its levels at ``num_inference_steps`` are the noise levels.
        num_inference_steps: the step count DiffRS will sample with.
        num_steps: optimiser steps; each sees ``batch_size`` real and ``batch_size`` generated samples.
        learning_rate, weight_decay: Adam settings (DG: 3e-4, 1e-7).
        input_range: the value range ``(low, high)`` of both datasets, mapped linearly to the model's
            [-1, 1]: ``(-1, 1)`` for pipeline ``output_type="latent"`` samples, ``(0, 1)`` for
            ``output_type="pt"`` ones, ``(0, 255)`` for uint8 images. Checked before training: values
            outside it, the two sets using different ranges (e.g. [-1, 1] real vs [0, 1] generated),
            differing resolutions or channels raise ``ValueError``. ``None``: unbounded data already in
            the model's units (e.g. latents, low-dimensional toy data), only checked to be finite.
        seed: seeds shuffling, noise levels and noise (same seed -> same model and history); the
            global RNG is not used.
        progress: show a tqdm bar (``show_progress``: its earlier name).

    Returns:
        ``(discriminator, history)`` where ``history`` is the list of per-step BCE losses (nats).
    """
    lo, hi, bounds = _checked_settings(num_steps, batch_size, learning_rate, input_range)
    progress = progress if show_progress is None else show_progress
    real = _as_dataset(real_dataset, "real_dataset")
    fake = _as_dataset(generated_dataset, "generated_dataset")
    device = next(discriminator.parameters()).device
    sigmas = LevelTables(scheduler, num_inference_steps, "cpu").sigma.to(device)
    needs_labels = bool(getattr(discriminator, "is_class_conditional", False))
    needs_text = bool(getattr(discriminator, "is_text_conditional", False))
    gen = torch.Generator().manual_seed(seed)
    real_iter = _batches(real, batch_size, torch.Generator().manual_seed(seed + 1))
    fake_iter = _batches(fake, batch_size, torch.Generator().manual_seed(seed + 2))
    params = [p for p in discriminator.parameters() if p.requires_grad]
    optimizer = torch.optim.Adam(params, lr=learning_rate, weight_decay=weight_decay)
    loss_fn = torch.nn.BCEWithLogitsLoss()
    history: list[float] = []
    discriminator.train()
    for step in tqdm(range(num_steps), desc="discriminator", disable=not progress):
        xr, yr = _split(next(real_iter), needs_labels, "real_dataset", needs_text)
        xf, yf = _split(next(fake_iter), needs_labels, "generated_dataset", needs_text)
        if step == 0:  # whole tensors, or the first batch of each dataset, before any update
            whole = [
                d if isinstance(d, torch.Tensor) else b
                for d, b in ((real_dataset, xr), (generated_dataset, xf))
            ]
            _check_pair(*whole, *bounds, discriminator.config.in_channels)
        _check_range(xr, "real_dataset", *bounds)
        _check_range(xf, "generated_dataset", *bounds)
        x_t, sigma, target = _diffused(xr, xf, lo, hi, sigmas, gen, device)
        cond = torch.cat([yr, yf]).to(device) if needs_labels or needs_text else None
        labels, text = (None, cond) if needs_text else (cond, None)
        loss = loss_fn(discriminator(x_t, sigma, class_labels=labels, encoder_hidden_states=text), target)
        if not torch.isfinite(loss):
            raise RuntimeError("discriminator training diverged (non-finite loss); lower learning_rate")
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        history.append(float(loss.detach()))
    discriminator.eval()
    return discriminator, history
