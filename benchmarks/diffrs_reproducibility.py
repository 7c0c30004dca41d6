"""How far DiffRS images move with ``num_slots``: ``python benchmarks/diffrs_reproducibility.py [--digits]``.

For each scheduler, seed and ``num_slots`` in {1, 3} the same call is compared with ``num_slots`` = batch
size: accept/reject decisions, NFE, restarts and per-level test counts must be identical; the images'
max |difference| is reported absolute and relative to the largest |state|. Models: an untrained
``digits_unet(8, width=8)`` with a random ``from_unet`` discriminator (5 steps, head scaled so that many
tests reject) and, with ``--digits``, the demo's trained 16 px digits UNet with its trained discriminator
(20 steps; trained on first use and cached in ``--output-dir``, about 5 minutes on 2 cores).
Writes ``benchmarks/results/diffrs_reproducibility.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import numpy as np
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

import diffusers_plugins
from diffusers_plugins import DiffRSPipeline, TimeDependentDiscriminator
from diffusers_plugins.testing_utils import digits_unet
from diffusers_plugins.testing_utils.demo import DemoConfig, prepare_models

SCHEDULERS = {
    "DDIM": DDIMScheduler,
    "DDPM": DDPMScheduler,
    "EDMEuler": EDMEulerScheduler,
    "Heun": HeunDiscreteScheduler,
    "Euler": EulerDiscreteScheduler,
}
DECISIONS = ("nfe", "trajectory_nfe", "rejections", "restarts", "discriminator_evals", "tests_per_level")


def measure(model: str, unet, disc, calibration, steps: int, batch: int, seeds: int) -> list[dict]:
    rows = []
    for name, scheduler in SCHEDULERS.items():
        pipe = DiffRSPipeline(unet, scheduler(), disc, calibration=calibration)
        pipe.set_progress_bar_config(disable=True)
        if name != "DDIM" or calibration is None:
            pipe.calibrate(64, steps, generator=torch.Generator().manual_seed(1))
        cap = 4 * pipe.scheduler.order * steps
        for seed in range(seeds):
            runs = {
                k: pipe(
                    batch,
                    steps,
                    torch.Generator().manual_seed(100 + seed),
                    rejection_percentile=0.9,
                    output_type="latent",
                    num_slots=k,
                    max_nfe_per_sample=cap,
                )
                for k in (1, 3, batch)
            }
            ref = runs[batch]
            scale = float(ref.images.abs().max())
            for k in (1, 3):
                diff = float((runs[k].images - ref.images).abs().max())
                same = all(np.array_equal(getattr(runs[k], f), getattr(ref, f)) for f in DECISIONS)
                rows.append(
                    dict(
                        model=model,
                        scheduler=name,
                        seed=seed,
                        num_slots=k,
                        max_abs_diff=diff,
                        max_abs_state=scale,
                        relative=diff / max(1.0, scale),
                        decisions_equal=same,
                        rejections=int(ref.rejections.sum()),
                    )
                )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--digits", action="store_true", help="also the demo's trained digits models")
    parser.add_argument("--output-dir", default="runs/diffusers_plugins", help="demo model cache")
    parser.add_argument("--seeds", type=int, default=4)
    parser.add_argument("--json", default="benchmarks/results/diffrs_reproducibility.json")
    args = parser.parse_args()
    torch.set_num_threads(1)
    unet = digits_unet(8, width=8, seed=0).eval()
    disc = TimeDependentDiscriminator.from_unet(unet, DDPMScheduler(), seed=3)
    with torch.no_grad():
        disc.head.weight.mul_(8.0)
    rows = measure("untrained digits_unet(8, width=8), 5 steps", unet, disc, None, 5, 6, args.seeds)
    if args.digits:
        pipe, _, _ = prepare_models(
            DemoConfig(output_dir=args.output_dir, progress=False), log=lambda *a: None
        )
        rows += measure(
            "trained demo UNet, 20 steps", pipe.unet, pipe.discriminator, pipe.calibration, 20, 16, 3
        )
    settings = dict(seeds=args.seeds, num_slots=[1, 3], rejection_percentile=0.9, torch_threads=1)
    machine = dict(
        platform=platform.platform(),
        processor=platform.processor(),
        torch=torch.__version__,
        cpu_capability=torch.backends.cpu.get_cpu_capability(),
        package=diffusers_plugins.__name__,
    )
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps(dict(settings=settings, machine=machine, rows=rows), indent=2))
    lines = [
        "| model | scheduler | max abs diff | max abs state | relative | decisions equal | rejections |",
        "|---|---|---|---|---|---|---|",
    ]
    for model, scheduler in dict.fromkeys((r["model"], r["scheduler"]) for r in rows):
        sub = [r for r in rows if (r["model"], r["scheduler"]) == (model, scheduler)]
        lines.append(
            f"| {model} | {scheduler} | {max(r['max_abs_diff'] for r in sub):.2g} | "
            f"{max(r['max_abs_state'] for r in sub):.3g} | {max(r['relative'] for r in sub):.2g} | "
            f"{all(r['decisions_equal'] for r in sub)} | {sum(r['rejections'] for r in sub) // 2} |"
        )
    Path(args.json).with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
