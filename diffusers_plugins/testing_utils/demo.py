"""End-to-end DiffRS demo on 16x16 digits: ``python -m diffusers_plugins demo [--quick]``.

Trains (or loads from the output directory) a small UNet2DModel, samples the base DDIM sampler,
trains a ``from_unet`` discriminator on real vs generated digits, calibrates, then samples base vs
DiffRS from the same seeds and prints a table (UNet calls, discriminator calls, Frechet distance in the
features of a digits classifier, precision) and saves an image grid and per-level acceptance plot.
Every cached model sits in a directory named by a fingerprint of all settings that produced it, so a
changed setting trains anew instead of reusing a stale model.
"""

from __future__ import annotations

import hashlib
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
from diffusers_plugins.testing_utils.digits_metrics import (
    DigitsClassifier,
    digits_quality,
    train_digits_classifier,
)

NUM_STAGES = 5


@dataclass
class DemoConfig:
    """Sizes of the demo (defaults: a few minutes on 2 CPU cores; models cached in ``output_dir``)."""

    output_dir: str = "runs/diffusers_plugins"
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
    progress: bool = True

    @classmethod
    def quick(cls, **overrides) -> DemoConfig:
        """Every stage at reduced size (about a minute on 2 CPU cores from scratch)."""
        sizes = dict(unet_steps=300, num_generated=128, discriminator_steps=100, calibration_samples=64)
        return cls(**{**sizes, "num_samples": 64, "classifier_steps": 150, **overrides})


def _stage(log, number: int, title: str) -> None:
    log(f"== [{number}/{NUM_STAGES}] {title}")


def _cache_dir(cfg: DemoConfig, name: str, fields: tuple[str, ...]) -> Path:
    """``output_dir/<name>-<fingerprint of the named settings>``, with the settings in ``settings.json``."""
    settings = {f: getattr(cfg, f) for f in fields}
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]
    path = Path(cfg.output_dir) / f"{name}-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "settings.json").write_text(json.dumps(settings, indent=2, sort_keys=True))
    return path


UNET_FIELDS = ("unet_width", "unet_steps", "seed")
PIPELINE_FIELDS = (
    *UNET_FIELDS,
    "num_inference_steps",
    "num_generated",
    "discriminator_steps",
    "calibration_samples",
)


def prepare_models(cfg: DemoConfig, log=print):
    """Train or load the UNet, base samples, discriminator and calibrated pipeline; return
    ``(pipe, images, labels)``. Stages 1-3 of the demo."""
    images, labels = load_digits_images(16)
    _stage(log, 1, "digits UNet2DModel")
    unet_dir = _cache_dir(cfg, "unet", UNET_FIELDS)
    if (unet_dir / "config.json").exists():
        unet = UNet2DModel.from_pretrained(unet_dir).eval()
        log(f"loaded from {unet_dir}")
    else:
        t0 = time.time()
        net = digits_unet(16, cfg.unet_width, cfg.seed)
        unet, _ = train_digits_unet(
            net, images, num_steps=cfg.unet_steps, seed=cfg.seed, progress=cfg.progress
        )
        unet.save_pretrained(unet_dir)
        log(f"trained {cfg.unet_steps} steps in {time.time() - t0:.0f}s -> {unet_dir}")
    N = cfg.num_inference_steps
    pipe_dir = _cache_dir(cfg, "pipeline", PIPELINE_FIELDS)
    if (pipe_dir / "model_index.json").exists():
        _stage(log, 2, "base samples and discriminator (cached)")
        pipe = DiffRSPipeline.from_pretrained(pipe_dir)
        pipe.set_progress_bar_config(disable=not cfg.progress)
        _stage(log, 3, f"calibration (cached): loaded {pipe_dir}")
        return pipe, images, labels
    _stage(log, 2, f"{cfg.num_generated} base DDIM-{N} samples, then the from_unet discriminator")
    base = DiffRSPipeline(unet, DDIMScheduler())
    base.set_progress_bar_config(disable=not cfg.progress, desc="base samples")
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    generated = base(cfg.num_generated, N, gen, output_type="latent").images.clamp(-1, 1)
    disc = TimeDependentDiscriminator.from_unet(
        unet, DDPMScheduler(), head_channels=32, layers_per_block=1, seed=cfg.seed
    )
    disc, hist = train_discriminator(
        disc,
        images,
        generated,
        DDIMScheduler(),
        num_inference_steps=N,
        num_steps=cfg.discriminator_steps,
        batch_size=64,
        learning_rate=1e-3,
        seed=cfg.seed,
        progress=cfg.progress,
    )
    k = max(1, len(hist) // 20)
    log(f"discriminator BCE: first {k} steps {np.mean(hist[:k]):.3f} -> last {k} {np.mean(hist[-k:]):.3f}")
    _stage(log, 3, f"calibration on {cfg.calibration_samples} base trajectories")
    pipe = DiffRSPipeline(unet, DDIMScheduler(), disc)
    pipe.set_progress_bar_config(disable=not cfg.progress)
    pipe.calibrate(cfg.calibration_samples, N, generator=torch.Generator().manual_seed(cfg.seed + 2))
    pipe.save_pretrained(pipe_dir)
    log(f"calibrated pipeline saved to {pipe_dir}")
    return pipe, images, labels


def classifier_for(cfg: DemoConfig, images, labels) -> DigitsClassifier:
    """The digits classifier whose features define the metrics (trained once per settings)."""
    path = _cache_dir(cfg, "classifier", ("classifier_steps", "seed")) / "classifier.pt"
    if path.exists():
        clf = DigitsClassifier()
        clf.load_state_dict(torch.load(path))
        return clf.eval()
    clf = train_digits_classifier(images, labels, cfg.classifier_steps, cfg.seed, cfg.progress)
    torch.save(clf.state_dict(), path)
    return clf


def compare(pipe: DiffRSPipeline, cfg: DemoConfig, seed: int):
    """Base sampler and DiffRS from the same generator; returns ``{name: (output, seconds)}``."""
    N = cfg.num_inference_steps
    base = DiffRSPipeline(pipe.unet, pipe.scheduler)  # discriminator=None: the plain DDIM sampler
    base.set_progress_bar_config(disable=not cfg.progress)
    runs = {
        "base": (base, {}),
        f"DiffRS gamma={cfg.rejection_percentile}": (
            pipe,
            dict(rejection_percentile=cfg.rejection_percentile, max_nfe_per_sample=cfg.nfe_budget_factor * N),
        ),
    }
    results = {}
    for name, (p, kwargs) in runs.items():
        t0 = time.time()
        res = p(cfg.num_samples, N, torch.Generator().manual_seed(seed), output_type="latent", **kwargs)
        results[name] = (res, time.time() - t0)
    return results


def run_demo(cfg: DemoConfig | None = None, log=print) -> dict:
    """Run the demo; returns the table rows and writes ``diffrs_demo.{json,png}`` in ``cfg.output_dir``."""
    cfg = cfg or DemoConfig()
    pipe, images, labels = prepare_models(cfg, log)
    _stage(log, 4, "digits classifier for the metrics")
    clf = classifier_for(cfg, images, labels)
    _stage(log, 5, f"{cfg.num_samples} samples: base vs DiffRS from the same seeds")
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
    log(
        f"{'method':<22}{'NFE/sample':>11}{'disc/sample':>12}{'rej/sample':>11}{'Frechet':>9}{'precision':>10}"
    )
    for r in rows:
        log(
            f"{r['method']:<22}{r['nfe_per_sample']:>11.1f}{r['disc_evals_per_sample']:>12.1f}"
            f"{r['rejections_per_sample']:>11.2f}{r['frechet']:>9.3f}{r['precision']:>10.3f}"
        )
    out = Path(cfg.output_dir)
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


def main(argv: list[str] | None = None) -> None:
    """``python -m diffusers_plugins demo [--output-dir DIR] [--seed N] [--quick]``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m diffusers_plugins")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser(
        "demo",
        help="train/load a digits UNet and discriminator, compare base vs DiffRS",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    demo.add_argument("--output-dir", default=DemoConfig.output_dir, help="models, table and plot")
    demo.add_argument("--seed", type=int, default=DemoConfig.seed, help="seed of every stage")
    demo.add_argument("--quick", action="store_true", help="every stage at reduced size (about a minute)")
    args = parser.parse_args(argv)
    make = DemoConfig.quick if args.quick else DemoConfig
    run_demo(make(output_dir=args.output_dir, seed=args.seed))
