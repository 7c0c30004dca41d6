"""DiffRS validation benchmark: `python benchmarks/diffrs.py --json benchmarks/results/diffrs.json`.

1. Toy with a known answer (spec F.1-F.3): 2-D mixture of 8 Gaussians (radius 4, std 0.25, uniform
   weights). The "model" is the exact denoiser of a deliberately wrong mixture (weights 0.2 / 0.05,
   std 0.40) wrapped as a diffusers ModelMixin and sampled with the stock EDMEulerScheduler
   (18 steps = 18 NFE). Discriminators: the oracle log-ratio log q_sigma - log m_sigma and a trained
   TimeDependentDiscriminator. Metrics over seeds: mode-weight TV, MMD^2, mean log q_0, NFE/sample.
   Controls: the base sampler with more steps (NFE-matched) and final-sample-only rejection.
2. Images: the digits UNet2DModel of the demo (16 px, DDIM 20 steps) with a `from_unet`
   discriminator; Frechet distance in the features of a digits classifier trained on real data and
   classifier precision, base vs DiffRS (and a 40-step base control), over seeds.
Also writes benchmarks/results/diffrs.md and diffrs_samples.png / diffrs_acceptance.png.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from diffusers import ConfigMixin, EDMEulerScheduler, ModelMixin
from diffusers.configuration_utils import register_to_config
from diffusers.models.unets.unet_2d import UNet2DOutput

import diffusers_plugins
from diffusers_plugins import DiffRSPipeline, TimeDependentDiscriminator, train_discriminator
from diffusers_plugins.rejection_sampler import acceptance_test

RADIUS, S_TRUE, S_MODEL = 4.0, 0.25, 0.40
MEANS = torch.tensor(
    [[RADIUS * math.cos(2 * math.pi * k / 8), RADIUS * math.sin(2 * math.pi * k / 8)] for k in range(8)]
)
W_TRUE = torch.full((8,), 1 / 8)
W_MODEL = torch.tensor([0.2, 0.05] * 4)
N_TOY = 18


def mixture_log_density(
    x: torch.Tensor, weights: torch.Tensor, std: float, sigma: torch.Tensor
) -> torch.Tensor:
    """log sum_k w_k N(x; mu_k, (std^2 + sigma^2) I) for x [B, 2] and sigma [B] (float64)."""
    var = (std**2 + sigma.double() ** 2)[:, None]
    d2 = ((x.double()[:, None, :] - MEANS.double()[None]) ** 2).sum(-1)
    return torch.logsumexp(
        weights.double().log()[None] - d2 / (2 * var) - torch.log(2 * math.pi * var), dim=1
    )


class MixtureDenoiser(ModelMixin, ConfigMixin):
    """The exact EDM-preconditioned denoiser of the (wrong) model mixture, as a diffusers model.

    ``forward(sample [B,2,1,1] = c_in x, timestep [B] = ln(sigma) / 4)`` returns ``F`` with
    ``D(x) = c_skip x + c_out F`` (EDMEulerScheduler, epsilon-style EDM preconditioning).
    """

    @register_to_config
    def __init__(
        self, in_channels: int = 2, sample_size: int = 1, sigma_data: float = 0.5, std: float = S_MODEL
    ):
        super().__init__()
        self.register_buffer("weights", W_MODEL.clone())
        self.class_embedding = None

    def forward(self, sample, timestep, class_labels=None):
        sigma = torch.exp(4 * timestep.double()).view(-1, 1)
        sd = self.config.sigma_data
        x = sample.double().flatten(1) * (sigma**2 + sd**2).sqrt()
        var = self.config.std**2 + sigma**2
        d2 = ((x[:, None, :] - MEANS.double()[None]) ** 2).sum(-1)
        resp = torch.softmax(self.weights.double().log()[None] - d2 / (2 * var), dim=1)
        mu = MEANS.double()[None]
        den = (resp[..., None] * (mu + (self.config.std**2 / var)[..., None] * (x[:, None] - mu))).sum(1)
        c_skip = sd**2 / (sigma**2 + sd**2)
        c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
        out = ((den - c_skip * x) / c_out).to(sample.dtype).view_as(sample)
        return UNet2DOutput(sample=out)


class OracleLogRatio(ModelMixin, ConfigMixin):
    """log q_sigma(x) - log m_sigma(x): true vs model mixture, both diffused to sigma."""

    @register_to_config
    def __init__(self):
        super().__init__()
        self.register_buffer("means", MEANS.clone())

    def forward(self, sample, sigma, class_labels=None, encoder_hidden_states=None):
        x = sample.flatten(1)
        return (
            mixture_log_density(x, W_TRUE, S_TRUE, sigma) - mixture_log_density(x, W_MODEL, S_MODEL, sigma)
        ).float()


def true_samples(n: int, gen: torch.Generator) -> torch.Tensor:
    k = torch.randint(0, 8, (n,), generator=gen)
    return MEANS[k] + S_TRUE * torch.randn(n, 2, generator=gen)


def toy_metrics(x: torch.Tensor, ref: torch.Tensor) -> dict:
    angle = torch.atan2(x[:, 1], x[:, 0])
    mode = torch.round(angle / (2 * math.pi / 8)).long() % 8
    freq = torch.bincount(mode, minlength=8).double() / len(x)
    tv = 0.5 * (freq - 1 / 8).abs().sum().item()
    a, b = x[:2000].double(), ref[:2000].double()
    mmd = 0.0
    for bw in (0.1, 0.3, 1.0):
        kaa, kbb, kab = (
            torch.exp(-(torch.cdist(p, q) ** 2) / (2 * bw**2)).mean() for p, q in ((a, a), (b, b), (a, b))
        )
        mmd += (kaa + kbb - 2 * kab).item()
    logq = mixture_log_density(x, W_TRUE, S_TRUE, torch.zeros(len(x))).mean().item()
    return {"tv": tv, "mmd2": mmd, "mean_log_q0": logq}


def toy_pipeline(discriminator=None) -> DiffRSPipeline:
    pipe = DiffRSPipeline(MixtureDenoiser(), EDMEulerScheduler(), discriminator)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def run_toy(seeds, n: int, disc_steps: int, log) -> dict:
    rows = {}

    def add(name, seed, metrics):
        rows.setdefault(name, {})[seed] = metrics

    for seed in seeds:
        gen = torch.Generator().manual_seed(1000 + seed)
        ref = true_samples(4000, gen)
        base_pipe = toy_pipeline()
        t0 = time.time()
        base = base_pipe(n, N_TOY, torch.Generator().manual_seed(seed), output_type="latent")
        add(
            "base (18 steps)",
            seed,
            {
                **toy_metrics(base.images.flatten(1), ref),
                "nfe": base.total_nfe / n,
                "disc_evals": 0.0,
                "restarts": 0,
                "seconds": time.time() - t0,
            },
        )
        for steps in (36, 54):
            out = base_pipe(n, steps, torch.Generator().manual_seed(seed), output_type="latent")
            add(
                f"base ({steps} steps, NFE control)",
                seed,
                {
                    **toy_metrics(out.images.flatten(1), ref),
                    "nfe": out.total_nfe / n,
                    "disc_evals": 0.0,
                    "restarts": 0,
                },
            )
        # trained discriminator: real q_0 samples vs base-sampler outputs (a separate seed's batch)
        fake = base_pipe(20000, N_TOY, torch.Generator().manual_seed(500 + seed), output_type="latent").images
        real = true_samples(20000, gen)[:, :, None, None]
        torch.manual_seed(seed)
        trained = TimeDependentDiscriminator(
            in_channels=2, block_out_channels=(64, 64), norm_num_groups=8, time_embed_dim=64
        )
        t0 = time.time()
        trained, hist = train_discriminator(
            trained,
            real,
            fake.float(),
            EDMEulerScheduler(),
            num_inference_steps=N_TOY,
            num_steps=disc_steps,
            batch_size=256,
            learning_rate=1e-3,
            input_range=None,  # 2-D points, not images: no bounded value range
            seed=seed,
            progress=False,
        )
        log(
            f"toy seed {seed}: discriminator {disc_steps} steps in {time.time() - t0:.0f}s, "
            f"BCE {np.mean(hist[:50]):.3f} -> {np.mean(hist[-50:]):.3f}"
        )
        for dname, disc in (("oracle", OracleLogRatio()), ("trained", trained.eval())):
            pipe = toy_pipeline(disc)
            pipe.calibrate(1000, N_TOY, generator=torch.Generator().manual_seed(2000 + seed))
            for gamma in (0.5, 0.75, 0.9):
                t0 = time.time()
                out = pipe(
                    n,
                    N_TOY,
                    torch.Generator().manual_seed(seed),
                    rejection_percentile=gamma,
                    max_nfe_per_sample=3 * N_TOY,
                    output_type="latent",
                )
                add(
                    f"DiffRS {dname} gamma={gamma}",
                    seed,
                    {
                        **toy_metrics(out.images.flatten(1), ref),
                        "nfe": out.total_nfe / n,
                        "disc_evals": float(out.discriminator_evals.mean()),
                        "restarts": int(out.restarts.sum()),
                        "seconds": time.time() - t0,
                        "acceptance_per_level": out.acceptance_per_level.tolist(),
                    },
                )
            for gamma in (0.75, 0.9):  # final-sample-only rejection with the same gamma-quantile M_N
                log_m, _ = pipe.thresholds(N_TOY, gamma)
                kept, spent, rounds = [], 0, 0
                while sum(len(k) for k in kept) < n and rounds < 50:
                    out = base_pipe(
                        n,
                        N_TOY,
                        torch.Generator().manual_seed(10_000 * (seed + 1) + rounds),
                        output_type="latent",
                    )
                    x = out.images
                    ell = disc(x, torch.zeros(len(x))).detach()
                    u = torch.rand(len(x), generator=torch.Generator().manual_seed(77 + rounds))
                    kept.append(x[acceptance_test(ell, log_m[-1].float(), u)])
                    spent += out.total_nfe
                    rounds += 1
                x = torch.cat(kept)[:n]
                add(
                    f"final-only rejection {dname} gamma={gamma}",
                    seed,
                    {
                        **toy_metrics(x.flatten(1), ref),
                        "nfe": spent / max(1, sum(len(k) for k in kept)),
                        "disc_evals": 1.0,
                        "restarts": 0,
                    },
                )
        log(f"toy seed {seed} done")
    return rows


def summarise(rows: dict) -> dict:
    out = {}
    for name, per_seed in rows.items():
        keys = [k for k, v in next(iter(per_seed.values())).items() if isinstance(v, (int, float))]
        out[name] = {
            k: {
                "mean": float(np.mean([m[k] for m in per_seed.values()])),
                "std": float(np.std([m[k] for m in per_seed.values()])),
            }
            for k in keys
        }
        out[name]["seeds"] = list(per_seed)
    return out


def run_images(seeds, n: int, log) -> tuple[dict, dict]:
    from diffusers_plugins.testing_utils.demo import DemoConfig, classifier_for, prepare_models
    from diffusers_plugins.testing_utils.digits_metrics import digits_quality

    cfg = DemoConfig(progress=False)
    pipe, images, labels = prepare_models(cfg, log)
    pipe.set_progress_bar_config(disable=True)
    clf = classifier_for(cfg, images, labels)
    with torch.no_grad():
        acc = (clf(images).argmax(-1) == labels).float().mean().item()
    N = cfg.num_inference_steps
    rows, examples = {}, {}
    disc = pipe.discriminator
    for seed in seeds:
        for name, steps, kwargs in (
            ("base DDIM 20", N, None),
            ("base DDIM 40 (NFE control)", 2 * N, None),
            ("DiffRS gamma=0.5", N, dict(rejection_percentile=0.5)),
            ("DiffRS gamma=0.75", N, dict(rejection_percentile=0.75)),
        ):
            pipe.discriminator = disc if kwargs else None
            t0 = time.time()
            out = pipe(
                n,
                steps,
                torch.Generator().manual_seed(seed),
                output_type="latent",
                **({**kwargs, "max_nfe_per_sample": 3 * N} if kwargs else {}),
            )
            secs = time.time() - t0
            q = digits_quality(clf, out.images.clamp(-1, 1), images)
            rows.setdefault(name, {})[seed] = {
                **q,
                "nfe": out.total_nfe / n,
                "disc_evals": float(out.discriminator_evals.mean()),
                "restarts": int(out.restarts.sum()),
                "seconds": secs,
            }
            if seed == seeds[0]:
                examples[name] = out
            log(
                f"images seed {seed} {name}: FD {q['frechet']:.3f} precision {q['precision']:.3f} "
                f"NFE {out.total_nfe / n:.1f} ({secs:.0f}s)"
            )
    pipe.discriminator = disc
    return rows, {"examples": examples, "classifier_accuracy_on_real": acc}


def peak_memory_mb(mode: str) -> dict:
    """Peak RSS (MiB) of one fresh subprocess sampling 512 digits with `mode` in {base, diffrs}:
    the process peak after sampling and its increase over the peak before sampling."""
    code = (
        "import resource, torch, sys; from diffusers_plugins.testing_utils.demo import DemoConfig, prepare_models\n"
        "pipe, _, _ = prepare_models(DemoConfig(progress=False), log=lambda *a: None)\n"
        "pipe.set_progress_bar_config(disable=True)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        f"mode = {mode!r}\n"
        "if mode == 'base': pipe.discriminator = None\n"
        "pipe(512, 20, torch.Generator().manual_seed(0), output_type='latent', max_nfe_per_sample=None)\n"
        "after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "print(after / 1024, (after - before) / 1024)\n"
    )
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    peak, delta = (float(v) for v in res.stdout.strip().splitlines()[-1].split())
    return {"peak_rss_mib": peak, "increase_during_sampling_mib": delta}


def write_markdown(result: dict, path: Path) -> None:
    def table(summary, cols):
        lines = ["| method | " + " | ".join(c for c, _ in cols) + " |", "|---|" + "---|" * len(cols)]
        for name, m in summary.items():
            cells = [f"{m[k]['mean']:{fmt}} ± {m[k]['std']:{fmt}}" for k, fmt in cols_keys(cols)]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return "\n".join(lines)

    def cols_keys(cols):
        return [(k, fmt) for _, (k, fmt) in cols]

    toy_cols = [
        ("TV (mode weights)", ("tv", ".3f")),
        ("MMD²", ("mmd2", ".4f")),
        ("mean log q0", ("mean_log_q0", ".2f")),
        ("NFE/sample", ("nfe", ".1f")),
        ("disc evals/sample", ("disc_evals", ".1f")),
    ]
    img_cols = [
        ("Fréchet distance", ("frechet", ".3f")),
        ("precision", ("precision", ".3f")),
        ("NFE/sample", ("nfe", ".1f")),
        ("disc evals/sample", ("disc_evals", ".1f")),
    ]
    md = ["# DiffRS benchmark", "", f"Settings: {json.dumps(result['settings'])}", ""]
    if "toy" in result:
        md += [
            "## Toy: 8-mode mixture, exact wrong denoiser (mean ± std over seeds)",
            "",
            table(result["toy"], toy_cols),
            "",
        ]
        md += [f"Target (trained DiffRS cuts TV by >= 40% vs base at <= 2x NFE): {result['toy_target']}", ""]
    if "images" in result:
        md += [
            "## Digits 16 px, DDIM 20 steps, from_unet discriminator (mean ± std over seeds)",
            "",
            table(result["images"], img_cols),
            "",
        ]
        per_seed = result.get("images_per_seed", {})
        base_seeds = per_seed.get("base DDIM 20", {})
        for name, seeds in per_seed.items():
            if "DiffRS" in name:
                diffs = [
                    f"{seeds[k]['frechet'] - base_seeds[k]['frechet']:+.3f}" for k in seeds if k in base_seeds
                ]
                md += [f"Per-seed Fréchet change vs base, {name}: {', '.join(diffs)}", ""]
        md += [
            f"Classifier accuracy on real digits: {result['classifier_accuracy_on_real']:.3f}",
            "",
            f"Target (DiffRS lowers the distance at <= 3x NFE): {result['images_target']}",
            "",
        ]
    if "peak_memory_mib" in result:
        md += [
            f"Peak RSS while sampling 512 digits (fresh subprocess each, MiB): {result['peak_memory_mib']}",
            "",
        ]
    path.write_text("\n".join(md))


def save_figures(examples: dict, toy_acceptance, out_dir: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from diffusers_plugins.testing_utils.demo import image_grid

    names = list(examples)
    fig, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.6))
    for ax, name in zip(axes, names):
        ax.imshow(image_grid(examples[name].images[:48]), cmap="gray", vmin=0, vmax=1)
        ax.set_title(f"{name}\nNFE {examples[name].total_nfe / len(examples[name].nfe):.1f}", fontsize=9)
        ax.axis("off")
    fig.tight_layout()
    fig.savefig(out_dir / "diffrs_samples.png", dpi=100)
    plt.close(fig)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    for name, out in examples.items():
        if "DiffRS" in name:
            ax.plot(out.acceptance_per_level, marker="o", label=f"digits {name}")
    for name, acc in (toy_acceptance or {}).items():
        ax.plot(acc, marker=".", linestyle="--", label=f"toy {name}")
    ax.set_xlabel("level (0 = start noise, N = final)")
    ax.set_ylabel("acceptance rate")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out_dir / "diffrs_acceptance.png", dpi=100)
    plt.close(fig)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default="benchmarks/results/diffrs.json")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--toy-samples", type=int, default=4000)
    parser.add_argument("--toy-disc-steps", type=int, default=2000)
    parser.add_argument("--image-samples", type=int, default=512)
    parser.add_argument("--skip-images", action="store_true")
    parser.add_argument("--skip-toy", action="store_true")
    parser.add_argument(
        "--only-memory", action="store_true", help="re-measure peak memory into an existing JSON"
    )
    args = parser.parse_args(argv)
    log = lambda *a: print(*a, flush=True)  # noqa: E731
    seeds = list(range(args.seeds))
    result = {
        "settings": {
            "seeds": seeds,
            "toy_samples": args.toy_samples,
            "toy_disc_steps": args.toy_disc_steps,
            "toy_scheduler": "EDMEulerScheduler, 18 steps",
            "max_nfe_per_sample": "3 x base",
            "image_samples": args.image_samples,
        },
        "machine": {
            "python": platform.python_version(),
            "platform": platform.platform(),
            "torch": torch.__version__,
            "diffusers": __import__("diffusers").__version__,
            "numpy": np.__version__,
            "torch_threads": torch.get_num_threads(),
            "package": diffusers_plugins.__name__,
        },
    }
    if args.only_memory:
        path = Path(args.json)
        previous = json.loads(path.read_text())
        previous["peak_memory_mib"] = {mode: peak_memory_mb(mode) for mode in ("base", "diffrs")}
        path.write_text(json.dumps(previous, indent=2, default=str))
        write_markdown(previous, path.with_suffix(".md"))
        log(previous["peak_memory_mib"])
        return
    t_start = time.time()
    toy_acc = {}
    if not args.skip_toy:
        rows = run_toy(seeds, args.toy_samples, args.toy_disc_steps, log)
        result["toy"] = summarise(rows)
        result["toy_per_seed"] = rows
        base_tv = result["toy"]["base (18 steps)"]["tv"]["mean"]
        best = {g: result["toy"][f"DiffRS trained gamma={g}"] for g in (0.5, 0.75, 0.9)}
        ok = {
            g: (m["tv"]["mean"] <= 0.6 * base_tv and m["nfe"]["mean"] <= 2 * N_TOY) for g, m in best.items()
        }
        result["toy_target"] = {
            "met_for_gamma": [g for g, v in ok.items() if v],
            "base_tv": base_tv,
            "trained_tv": {g: m["tv"]["mean"] for g, m in best.items()},
        }
    examples = {}
    if not args.skip_images:
        rows, extra = run_images(seeds, args.image_samples, log)
        result["images"] = summarise(rows)
        result["images_per_seed"] = rows
        result["classifier_accuracy_on_real"] = extra["classifier_accuracy_on_real"]
        examples = extra["examples"]
        base = result["images"]["base DDIM 20"]
        result["images_target"] = {
            name: {
                "frechet_lower": m["frechet"]["mean"] < base["frechet"]["mean"],
                "nfe_ratio": m["nfe"]["mean"] / base["nfe"]["mean"],
            }
            for name, m in result["images"].items()
            if "DiffRS" in name
        }
        result["peak_memory_mib"] = {mode: peak_memory_mb(mode) for mode in ("base", "diffrs")}
    result["wall_seconds"] = time.time() - t_start
    result["max_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.exists() and (args.skip_toy or args.skip_images):  # keep the part this run skipped
        previous = json.loads(path.read_text())
        kept = (
            ("toy", "toy_per_seed", "toy_target")
            if args.skip_toy
            else (
                "images",
                "images_per_seed",
                "classifier_accuracy_on_real",
                "images_target",
                "peak_memory_mib",
            )
        )
        for key in kept:
            if key in previous:
                result[key] = previous[key]
        result["settings_previous_part"] = previous.get("settings")
    path.write_text(json.dumps(result, indent=2, default=str))
    write_markdown(result, path.with_suffix(".md"))
    for g in (0.75, 0.9):
        per_seed = result.get("toy_per_seed", {}).get(f"DiffRS trained gamma={g}")
        if per_seed:
            toy_acc[f"trained gamma={g}"] = next(iter(per_seed.values()))["acceptance_per_level"]
    if examples:
        save_figures(examples, toy_acc, path.parent)
    log(f"wrote {path} and {path.with_suffix('.md')} in {result['wall_seconds']:.0f}s")


if __name__ == "__main__":
    main()
