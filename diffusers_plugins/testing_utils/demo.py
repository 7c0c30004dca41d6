"""End-to-end DiffRS demo on 16x16 digits: ``python -m diffusers_plugins demo``.

Trains (or loads from ``runs/``) a small UNet2DModel, samples the base DDIM sampler, trains a
``from_unet`` discriminator on real vs generated digits, calibrates, then samples base vs DiffRS
from the same seeds and prints a table (UNet calls, discriminator calls, Frechet distance in the
features of a digits classifier, precision) and saves an image grid and per-level acceptance plot.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from diffusers import DDIMScheduler, DDPMScheduler, UNet2DModel

from diffusers_plugins.discriminator import TimeDependentDiscriminator
from diffusers_plugins.discriminator_training import train_discriminator
from diffusers_plugins.pipeline import DiffRSPipeline
from diffusers_plugins.testing_utils.digits import digits_unet, load_digits_images, train_digits_unet
from diffusers_plugins.testing_utils.digits_metrics import digits_quality, train_digits_classifier


@dataclass
class DemoConfig:
    """Sizes of the demo (defaults: a few minutes on 2 CPU cores; artefacts cached in ``output_dir``)."""

    output_dir: str = "runs/diffrs_demo"
    unet_steps: int = 1500
    unet_width: int = 16
    num_inference_steps: int = 20
    num_generated: int = 512
    discriminator_steps: int = 400
    calibration_samples: int = 256
    num_samples: int = 256
    classifier_steps: int = 600
    rejection_percentile: float = 0.75
    nfe_budget_factor: int = 3
    seed: int = 0
    show_progress: bool = True


def prepare_models(cfg: DemoConfig, log=print):
    """Train or load the UNet, base samples, discriminator and calibrated pipeline; return
    ``(pipe, images, labels)``. Everything is cached under ``cfg.output_dir`` keyed by the settings."""
    out = Path(cfg.output_dir)
    key = f"w{cfg.unet_width}_s{cfg.unet_steps}_seed{cfg.seed}"
    images, labels = load_digits_images(16)
    unet_dir = out / f"unet_{key}"
    if (unet_dir / "config.json").exists():
        unet = UNet2DModel.from_pretrained(unet_dir).eval()
        log(f"loaded UNet from {unet_dir}")
    else:
        t0 = time.time()
        unet, _ = train_digits_unet(
            digits_unet(16, cfg.unet_width, cfg.seed),
            images,
            num_steps=cfg.unet_steps,
            seed=cfg.seed,
            show_progress=cfg.show_progress,
        )
        unet.save_pretrained(unet_dir)
        log(f"trained UNet in {time.time() - t0:.0f}s -> {unet_dir}")
    N = cfg.num_inference_steps
    pipe_key = f"{key}_N{N}_g{cfg.num_generated}_d{cfg.discriminator_steps}_c{cfg.calibration_samples}"
    pipe_dir = out / f"pipeline_{pipe_key}"
    if (pipe_dir / "model_index.json").exists():
        pipe = DiffRSPipeline.from_pretrained(pipe_dir)
        pipe.set_progress_bar_config(disable=not cfg.show_progress)
        log(f"loaded calibrated pipeline from {pipe_dir}")
        return pipe, images, labels
    base = DiffRSPipeline(unet, DDIMScheduler())
    base.set_progress_bar_config(disable=not cfg.show_progress, desc="base samples")
    generated = base(
        cfg.num_generated, N, torch.Generator().manual_seed(cfg.seed + 1), output_type="latent"
    ).images
    torch.manual_seed(cfg.seed)
    disc = TimeDependentDiscriminator.from_unet(unet, DDPMScheduler(), head_channels=32, layers_per_block=1)
    disc, hist = train_discriminator(
        disc,
        images,
        generated.clamp(-1, 1),
        DDIMScheduler(),
        num_inference_steps=N,
        num_steps=cfg.discriminator_steps,
        batch_size=64,
        learning_rate=1e-3,
        seed=cfg.seed,
        show_progress=cfg.show_progress,
    )
    log(f"discriminator BCE: first 20 steps {sum(hist[:20]) / 20:.3f} -> last 20 {sum(hist[-20:]) / 20:.3f}")
    pipe = DiffRSPipeline(unet, DDIMScheduler(), disc)
    pipe.set_progress_bar_config(disable=not cfg.show_progress)
    pipe.calibrate(cfg.calibration_samples, N, generator=torch.Generator().manual_seed(cfg.seed + 2))
    pipe.save_pretrained(pipe_dir)
    log(f"calibrated pipeline saved to {pipe_dir}")
    return pipe, images, labels


def classifier_for(cfg: DemoConfig, images, labels):
    path = Path(cfg.output_dir) / f"classifier_s{cfg.classifier_steps}.pt"
    if path.exists():
        from diffusers_plugins.testing_utils.digits_metrics import DigitsClassifier

        clf = DigitsClassifier()
        clf.load_state_dict(torch.load(path))
        return clf.eval()
    clf = train_digits_classifier(images, labels, cfg.classifier_steps, cfg.seed, cfg.show_progress)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(clf.state_dict(), path)
    return clf


def compare(pipe: DiffRSPipeline, cfg: DemoConfig, seed: int):
    """Base sampler and DiffRS from the same generator; returns ``{name: (output, seconds)}``."""
    N = cfg.num_inference_steps
    results = {}
    for name, kwargs in (
        ("base", None),
        (
            f"DiffRS gamma={cfg.rejection_percentile}",
            dict(rejection_percentile=cfg.rejection_percentile, max_nfe_per_sample=cfg.nfe_budget_factor * N),
        ),
    ):
        disc = pipe.discriminator
        if kwargs is None:
            pipe.discriminator = None
        t0 = time.time()
        try:
            res = pipe(
                cfg.num_samples,
                N,
                torch.Generator().manual_seed(seed),
                output_type="latent",
                **(kwargs or {}),
            )
        finally:
            pipe.discriminator = disc
        results[name] = (res, time.time() - t0)
    return results


def run_demo(cfg: DemoConfig | None = None, log=print) -> dict:
    """Run the demo; returns the table rows and writes ``diffrs_demo.{json,png}`` in ``cfg.output_dir``."""
    cfg = cfg or DemoConfig()
    pipe, images, labels = prepare_models(cfg, log)
    clf = classifier_for(cfg, images, labels)
    results = compare(pipe, cfg, cfg.seed + 100)
    rows = []
    for name, (res, secs) in results.items():
        q = digits_quality(clf, res.images.clamp(-1, 1), images)
        rows.append(
            dict(
                method=name,
                nfe_per_sample=res.total_nfe / cfg.num_samples,
                disc_evals_per_sample=float(res.discriminator_evals.mean()),
                rejections_per_sample=float(res.rejections.mean()),
                frechet=q["frechet"],
                precision=q["precision"],
                seconds=secs,
            )
        )
    header = f"{'method':<22}{'NFE/sample':>11}{'disc/sample':>12}{'rej/sample':>11}{'Frechet':>9}{'precision':>10}"
    log(header)
    for r in rows:
        log(
            f"{r['method']:<22}{r['nfe_per_sample']:>11.1f}{r['disc_evals_per_sample']:>12.1f}"
            f"{r['rejections_per_sample']:>11.2f}{r['frechet']:>9.3f}{r['precision']:>10.3f}"
        )
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    diffrs = list(results.values())[1][0]
    summary = {
        "config": asdict(cfg),
        "rows": rows,
        "acceptance_per_level": diffrs.acceptance_per_level.tolist(),
    }
    (out / "diffrs_demo.json").write_text(json.dumps(summary, indent=2))
    save_figure(results, out / "diffrs_demo.png")
    log(f"saved {out / 'diffrs_demo.png'} and {out / 'diffrs_demo.json'}")
    return summary


def image_grid(images: torch.Tensor, ncols: int = 8) -> np.ndarray:
    """``[B, 1, H, W]`` images in [-1, 1] -> one ``[rows * (H + 1), ncols * (W + 1)]`` array in [0, 1]."""
    x = ((images.clamp(-1, 1) + 1) / 2)[:, 0].numpy()
    b, h, w = x.shape
    rows = -(-b // ncols)
    grid = np.ones((rows * (h + 1), ncols * (w + 1)))
    for i in range(b):
        r, c = divmod(i, ncols)
        grid[r * (h + 1) : r * (h + 1) + h, c * (w + 1) : c * (w + 1) + w] = x[i]
    return grid


def save_figure(results: dict, path: Path, num_images: int = 32) -> None:
    """Image grids of each method side by side plus DiffRS's per-level acceptance rate."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results) + 1, figsize=(4 * (len(results) + 1), 4))
    for ax, (name, (res, _)) in zip(axes, results.items()):
        ax.imshow(image_grid(res.images[:num_images]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name}\nNFE/sample {res.total_nfe / len(res.nfe):.1f}")
        ax.axis("off")
    last = list(results.values())[-1][0]
    axes[-1].bar(range(len(last.acceptance_per_level)), last.acceptance_per_level)
    axes[-1].set_xlabel("level (0 = start noise)")
    axes[-1].set_ylabel("acceptance rate")
    axes[-1].set_title("DiffRS acceptance per level")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
