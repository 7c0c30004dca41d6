"""DiffRSPipeline end to end with a tiny UNet2DModel: base equivalence, save/load, bad input."""

import numpy as np
import pytest
import torch
from diffusers import (
    DDIMPipeline,
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EDMEulerScheduler,
    HeunDiscreteScheduler,
)

import diffusers_plugins
from diffusers_plugins import DiffRSPipeline, TimeDependentDiscriminator

from .conftest import assert_equal_up_to_kernel_rounding, make_unet

DECISIONS = ("nfe", "trajectory_nfe", "rejections", "restarts", "discriminator_evals", "tests_per_level")

N = 5


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def constant_discriminator():
    d = TimeDependentDiscriminator(in_channels=1, block_out_channels=(8,), norm_num_groups=4)
    with torch.no_grad():
        d.head.weight.zero_()
        d.head.bias.zero_()  # logit exactly 0: L = 1 everywhere
    return d


def assert_same_decisions(a, b) -> None:
    for name in DECISIONS:
        assert np.array_equal(getattr(a, name), getattr(b, name)), name


def random_discriminator(unet, seed=3, scale=40.0, **kw):
    d = TimeDependentDiscriminator.from_unet(unet, DDIMScheduler(), norm_num_groups=4, seed=seed, **kw)
    with torch.no_grad():
        d.head.weight.mul_(scale)  # spread the logits so that rejections happen
    return d


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


def test_without_or_with_constant_discriminator_equals_ddim_pipeline(unet):
    """U1/U15: discriminator None or constant -> the stock DDIMPipeline's images, base NFE, no rejections."""
    ref = quiet(DDIMPipeline(unet, DDIMScheduler()))(
        batch_size=4, num_inference_steps=N, generator=gen(), output_type="np"
    )
    plain = quiet(DiffRSPipeline(unet, DDIMScheduler()))(4, N, gen(), output_type="np")
    assert np.abs(plain.images - ref.images).max() <= 1e-5
    assert plain.nfe.tolist() == [N] * 4 and plain.discriminator_evals.tolist() == [0] * 4
    pipe = quiet(DiffRSPipeline(unet, DDIMScheduler(), constant_discriminator()))
    pipe.calibrate(num_samples=8, num_inference_steps=N, generator=gen(1))
    log_m, log_m_t = pipe.thresholds(N, 0.75)
    assert torch.equal(log_m, torch.zeros(N + 1, dtype=torch.float64)) and torch.equal(log_m_t, log_m)
    out = pipe(4, N, gen(), rejection_percentile=0.75, output_type="np", num_slots=3)
    assert_equal_up_to_kernel_rounding(out.images, ref.images)  # batches of 3 + 1 vs the stock 4
    assert out.rejections.sum() == 0 and out.restarts.sum() == 0 and out.nfe.tolist() == [N] * 4
    assert out.acceptance_per_level.tolist() == [1.0] * (N + 1) and out.total_nfe == 4 * N


def test_save_and_load_through_custom_pipeline_offline(tmp_path, unet):
    pipe = quiet(DiffRSPipeline(unet, EDMEulerScheduler(), random_discriminator(unet)))
    pipe.calibrate(num_samples=12, num_inference_steps=N, generator=gen(1))
    first = pipe(6, N, gen(2), rejection_percentile=0.9, output_type="pt")
    assert first.rejections.sum() > 0
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(
        tmp_path, custom_pipeline=diffusers_plugins.CUSTOM_PIPELINE_FILE, trust_remote_code=True
    )
    assert type(loaded).__name__ == "DiffRSPipeline"
    assert isinstance(loaded.discriminator, TimeDependentDiscriminator)
    assert loaded.config.calibration == pipe.config.calibration
    again = quiet(loaded)(6, N, gen(2), rejection_percentile=0.9, output_type="pt")
    # weights loaded from safetensors are not 64-byte aligned: oneDNN may run other kernels
    assert_equal_up_to_kernel_rounding(again.images, first.images)
    assert_same_decisions(again, first)
    direct = quiet(DiffRSPipeline.from_pretrained(tmp_path))(
        6, N, gen(2), rejection_percentile=0.9, output_type="pt"
    )
    assert_equal_up_to_kernel_rounding(direct.images, first.images)
    assert_same_decisions(direct, first)


def test_seeded_runs_are_reproducible_and_slot_invariant(unet):
    pipe = quiet(DiffRSPipeline(unet, DDIMScheduler(), random_discriminator(unet, scale=8.0)))
    pipe.calibrate(num_samples=12, num_inference_steps=N, generator=gen(1))
    a = pipe(5, N, gen(7), rejection_percentile=0.9, output_type="pt", max_nfe_per_sample=3 * N)
    b = pipe(5, N, gen(7), rejection_percentile=0.9, output_type="pt", max_nfe_per_sample=3 * N)
    c = pipe(5, N, gen(7), rejection_percentile=0.9, output_type="pt", max_nfe_per_sample=3 * N, num_slots=2)
    assert a.rejections.sum() > 0 and (a.trajectory_nfe <= 3 * N).all()
    assert torch.equal(a.images, b.images)  # same object, same inputs, same kernels: bitwise
    assert_same_decisions(a, b)
    assert_equal_up_to_kernel_rounding(c.images, a.images)
    assert_same_decisions(c, a)
    as_tuple = pipe(
        5, N, gen(7), rejection_percentile=0.9, output_type="pt", max_nfe_per_sample=3 * N, return_dict=False
    )
    assert torch.equal(as_tuple[0], a.images) and np.array_equal(as_tuple[1], a.nfe)  # same object: bitwise
    pil = pipe(2, N, gen(7), output_type="pil").images
    assert len(pil) == 2 and pil[0].size == (8, 8)
    assert pipe(2, N, gen(7), output_type="np").images.shape == (2, 8, 8, 1)


@pytest.mark.parametrize(
    "scheduler", [DDIMScheduler, DDPMScheduler, EDMEulerScheduler, HeunDiscreteScheduler]
)
def test_num_slots_changes_pixels_only_within_the_stated_bound(unet, scheduler):
    """README: any num_slots gives the same decisions and NFE exactly, images up to kernel rounding."""
    pipe = quiet(DiffRSPipeline(unet, scheduler(), random_discriminator(unet, scale=20.0)))
    pipe.calibrate(num_samples=12, num_inference_steps=N, generator=gen(1))
    cap = 4 * (2 * N - 1 if scheduler is HeunDiscreteScheduler else N)
    runs = {
        k: pipe(
            6, N, gen(2), rejection_percentile=0.9, output_type="latent", max_nfe_per_sample=cap, num_slots=k
        )
        for k in (1, 3, 6)
    }
    assert runs[6].rejections.sum() > 0
    for k in (1, 3):
        assert_equal_up_to_kernel_rounding(runs[k].images, runs[6].images)
        assert_same_decisions(runs[k], runs[6])


@torch.no_grad()
def test_class_conditional_unet(cond_unet):
    labels = torch.tensor([0, 2, 1])
    out = quiet(DiffRSPipeline(cond_unet, DDIMScheduler()))(
        3, N, gen(), output_type="pt", class_labels=labels
    )
    sched = DDIMScheduler()  # independent stock loop with the same latents
    sched.set_timesteps(N)
    x = torch.randn(3, 1, 8, 8, generator=gen())
    for t in sched.timesteps:
        x = sched.step(cond_unet(x, t, class_labels=labels).sample, t, x).prev_sample
    assert torch.allclose(out.images, (x / 2 + 0.5).clamp(0, 1), atol=1e-5)
    disc = TimeDependentDiscriminator.from_unet(cond_unet, DDIMScheduler(), norm_num_groups=4)
    pipe = quiet(DiffRSPipeline(cond_unet, DDIMScheduler(), disc))
    pipe.calibrate(num_samples=6, num_inference_steps=N, generator=gen(1))
    assert pipe(3, N, gen(), class_labels=labels, output_type="pt").images.shape == (3, 1, 8, 8)
    with pytest.raises(ValueError, match="class_labels is required"):
        pipe(3, N, gen())
    with pytest.raises(ValueError, match=r"class_labels must lie in \[0, 3\)"):
        pipe(3, N, gen(), class_labels=torch.tensor([0, 1, 5]))


class WrongShape(TimeDependentDiscriminator):
    def forward(self, sample, sigma, class_labels=None, encoder_hidden_states=None):
        return super().forward(sample, sigma)[:, None]


def test_bad_inputs_raise_clear_errors(unet):
    with pytest.raises(TypeError, match="Supported: DDPMScheduler"):
        DiffRSPipeline(unet, DPMSolverMultistepScheduler())
    pipe = quiet(DiffRSPipeline(unet, DDIMScheduler(), constant_discriminator()))
    with pytest.raises(ValueError, match="calibrate"):
        pipe(2, N, gen())
    pipe.calibrate(num_samples=4, num_inference_steps=N)
    with pytest.raises(ValueError, match="no calibration for num_inference_steps=7"):
        pipe(2, 7, gen())
    for bad in (1.5, -0.1):
        with pytest.raises(ValueError, match="rejection_percentile"):
            pipe(2, N, gen(), rejection_percentile=bad)
    with pytest.raises(ValueError, match="output_type"):
        pipe(2, N, gen(), output_type="jpg")
    with pytest.raises(ValueError, match="batch_size"):
        pipe(0, N, gen())
    with pytest.raises(ValueError, match="class_labels given"):
        pipe(2, N, gen(), class_labels=torch.tensor([0, 1]))
    with pytest.raises(ValueError, match="generator"):
        pipe(2, N, [gen()])
    with pytest.raises(ValueError, match="max_nfe_per_sample"):
        pipe(2, N, gen(), max_nfe_per_sample=N - 1)
    with pytest.raises(ValueError, match="calibrate needs a discriminator"):
        DiffRSPipeline(unet, DDIMScheduler()).calibrate(4, N)
    wrong = quiet(
        DiffRSPipeline(
            unet, DDIMScheduler(), WrongShape(in_channels=1, block_out_channels=(8,), norm_num_groups=4)
        )
    )
    with pytest.raises(ValueError, match=r"log-ratio of shape \[4\]"):
        wrong.calibrate(4, N)
    hopeless = quiet(DiffRSPipeline(unet, DDIMScheduler(), constant_discriminator()))
    with torch.no_grad():
        hopeless.discriminator.head.bias.fill_(-40.0)
    hopeless.calibrate(4, N)
    with pytest.raises(RuntimeError, match="max_ticks=30"):
        hopeless(2, N, gen(), max_ticks=30, clamp_log_m=True)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_pipeline_runs_end_to_end(unet, dtype):
    """fp16/bf16 UNet and discriminator: states, tables and tests stay fp32, images come back in the
    pipeline's dtype and follow the fp32 run within half-precision rounding of the UNet's output."""
    ref = quiet(DiffRSPipeline(unet, DDIMScheduler()))(3, N, gen(), output_type="latent").images
    half_unet = make_unet().to(dtype)
    pipe = quiet(DiffRSPipeline(half_unet, DDIMScheduler(), random_discriminator(half_unet, scale=8.0)))
    pipe.calibrate(num_samples=6, num_inference_steps=N, generator=gen(1))
    out = pipe(3, N, gen(), rejection_percentile=0.9, output_type="latent")
    assert out.images.dtype == dtype and bool(torch.isfinite(out.images).all())
    plain = quiet(DiffRSPipeline(half_unet, DDIMScheduler()))(3, N, gen(), output_type="latent").images
    # half weights and activations: relative rounding 2**-8 (bf16) per op, carried through N DDIM steps
    # amplified by 1/sqrt(abar) ~ 36 in total: a few 0.1 of the state scale at most
    assert plain.dtype == dtype and float((plain.float() - ref).abs().max()) <= 0.5 * float(ref.abs().max())
