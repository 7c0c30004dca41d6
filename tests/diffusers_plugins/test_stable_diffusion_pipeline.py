"""DiffRSStableDiffusionPipeline with tiny SD components: stock equivalence, save/load, conditioning."""

import numpy as np
import pytest
import torch
from diffusers import DiffusionPipeline, StableDiffusionPipeline

import diffusers_plugins
from diffusers_plugins import DiffRSStableDiffusionPipeline, TimeDependentDiscriminator
from diffusers_plugins.testing_utils.tiny_stable_diffusion import tiny_stable_diffusion_components

from .conftest import assert_equal_up_to_kernel_rounding

N = 3
PROMPTS = ["a handwritten digit 3", "a handwritten digit 7"]


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def quiet(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    """Tiny components saved by the stock pipeline and reloaded with the real from_pretrained paths."""
    path = tmp_path_factory.mktemp("tiny_sd")
    StableDiffusionPipeline(
        **tiny_stable_diffusion_components(), requires_safety_checker=False
    ).save_pretrained(path)
    return path


def constant_discriminator():
    d = TimeDependentDiscriminator(
        in_channels=4, block_out_channels=(8,), norm_num_groups=4, encoder_hid_dim=32
    )
    with torch.no_grad():
        d.head.weight.zero_()
        d.head.bias.zero_()  # logit exactly 0: L = 1, every test accepts
    return d


@pytest.mark.parametrize("guidance_scale, nipp", [(1.0, 1), (3.0, 2)])
def test_equals_stock_stable_diffusion_without_or_with_constant_discriminator(saved, guidance_scale, nipp):
    stock = quiet(StableDiffusionPipeline.from_pretrained(saved, safety_checker=None))
    call = dict(num_inference_steps=N, guidance_scale=guidance_scale, num_images_per_prompt=nipp, output_type="np")
    ref = stock(PROMPTS, generator=gen(), **call)
    plain = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved))
    out = plain(PROMPTS, generator=gen(), **call)
    # closed-form DDIM step vs scheduler.step and per-row vs scalar timesteps: fp32 rounding of states
    # in [-1, 1]-scale latents over 3 steps, decoded by the same VAE.
    assert_equal_up_to_kernel_rounding(out.images, ref.images)
    assert out.images.shape == (2 * nipp, 16, 16, 3) and out.nsfw_content_detected is None
    assert out.nfe.tolist() == [N] * (2 * nipp) and out.discriminator_evals.sum() == 0
    pipe = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved, discriminator=constant_discriminator()))
    pipe.calibrate(PROMPTS, num_inference_steps=N, guidance_scale=guidance_scale, generator=gen(1))
    with_disc = pipe(PROMPTS, generator=gen(), num_slots=3, **call)
    assert_equal_up_to_kernel_rounding(with_disc.images, ref.images)
    assert with_disc.rejections.sum() == 0 and with_disc.nfe.tolist() == [N] * (2 * nipp)
    assert with_disc.discriminator_evals.tolist() == [N + 1] * (2 * nipp)


def test_calibration_is_keyed_on_guidance_scale_and_reloads_through_custom_pipeline(saved, tmp_path):
    pipe = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved, discriminator=constant_discriminator()))
    pipe.calibrate(PROMPTS, num_inference_steps=N, guidance_scale=2.0, generator=gen(1))
    with pytest.raises(ValueError, match="guidance_scale=2.0 \\(stored\\) vs 5.0"):
        pipe(PROMPTS, num_inference_steps=N, guidance_scale=5.0)
    pipe.save_pretrained(tmp_path)
    loaded = DiffusionPipeline.from_pretrained(
        tmp_path, custom_pipeline=diffusers_plugins.STABLE_DIFFUSION_PIPELINE_FILE, trust_remote_code=True
    )
    assert type(loaded).__name__ == "DiffRSStableDiffusionPipeline"
    assert isinstance(loaded.discriminator, TimeDependentDiscriminator)
    assert loaded.config.calibration == pipe.config.calibration
    a = pipe(PROMPTS, num_inference_steps=N, guidance_scale=2.0, generator=gen(), output_type="latent").images
    b = quiet(loaded)(
        PROMPTS, num_inference_steps=N, guidance_scale=2.0, generator=gen(), output_type="latent"
    ).images
    assert_equal_up_to_kernel_rounding(b, a)


def test_each_image_uses_its_own_prompt_and_the_discriminator_sees_it(saved):
    """Two prompts in one batch equal two single-prompt calls with the same start latents."""
    pipe = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved))
    latents = torch.randn(2, 4, 8, 8, generator=gen(3))
    both = pipe(
        PROMPTS, num_inference_steps=N, guidance_scale=3.0, latents=latents, output_type="latent"
    ).images
    for i, prompt in enumerate(PROMPTS):
        one = pipe(
            prompt,
            num_inference_steps=N,
            guidance_scale=3.0,
            latents=latents[i : i + 1],
            output_type="latent",
        ).images
        assert_equal_up_to_kernel_rounding(one[0], both[i])
    assert float((both[0] - both[1]).abs().max()) > 1e-3  # the prompts really differ
    seen = []
    disc = constant_discriminator()
    disc.register_forward_hook(
        lambda m, args, kwargs, out: seen.append(kwargs["encoder_hidden_states"]), with_kwargs=True
    )
    pipe = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved, discriminator=disc))
    pipe.calibrate(PROMPTS, num_inference_steps=N, guidance_scale=1.0, generator=gen(1), num_slots=2)
    emb = pipe.encode_prompt(PROMPTS, "cpu", 1, False)[0]
    assert torch.equal(seen[0], emb)  # level-0 test of both rows with their own prompt embeddings


def test_from_unet_text_conditional_discriminator_trains_calibrates_and_reloads(saved, tmp_path):
    pipe = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved))
    disc = TimeDependentDiscriminator.from_unet(pipe.unet, pipe.scheduler, norm_num_groups=4, seed=0)
    assert disc.is_text_conditional and disc.config.encoder_hid_dim == 32
    # the frozen encoder is the SD UNet's own down path + mid block: compare with the UNet's mid output
    x, t = torch.randn(2, 4, 8, 8, generator=gen(5)), torch.tensor([500.0, 20.0])
    emb = pipe.encode_prompt(PROMPTS, "cpu", 1, False)[0]
    mids = []
    handle = pipe.unet.mid_block.register_forward_hook(lambda m, a, o: mids.append(o))
    pipe.unet(x, t, encoder_hidden_states=emb)
    handle.remove()
    ac = pipe.scheduler.alphas_cumprod[t.long()]
    sigma = ((1 - ac) / ac).sqrt()
    feats, _ = disc.backbone(x * (1 + sigma**2).sqrt().view(-1, 1, 1, 1), sigma, None, emb)
    assert torch.allclose(feats, mids[0], atol=1e-5)  # same kernels, sigma -> t round trip in fp32
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        disc(x, sigma)
    real = pipe.discriminator_training_data(
        PROMPTS * 2, images=torch.rand(4, 3, 16, 16) * 2 - 1, generator=gen(1)
    )
    fake_latents = pipe(
        PROMPTS * 2, num_inference_steps=N, guidance_scale=1.0, generator=gen(2), output_type="latent"
    ).images
    fake = pipe.discriminator_training_data(PROMPTS * 2, latents=fake_latents)
    _, losses = diffusers_plugins.train_discriminator(
        disc,
        real,
        fake,
        pipe.scheduler,
        num_inference_steps=N,
        num_steps=3,
        batch_size=2,
        input_range=None,
        progress=False,
    )
    assert len(losses) == 3 and all(np.isfinite(losses))
    disc.save_pretrained(tmp_path / "disc")
    again = TimeDependentDiscriminator.from_pretrained(tmp_path / "disc")
    assert again.is_text_conditional and again.config.encoder_hid_dim == 32
    # weights loaded from safetensors are not 64-byte aligned: oneDNN may run other conv kernels (fp32 rounding)
    assert_equal_up_to_kernel_rounding(
        again(x, sigma, encoder_hidden_states=emb), disc(x, sigma, encoder_hidden_states=emb)
    )
    pipe = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved, discriminator=again))
    pipe.calibrate(PROMPTS * 2, num_inference_steps=N, guidance_scale=2.0, generator=gen(1))
    out = pipe(
        PROMPTS,
        num_inference_steps=N,
        guidance_scale=2.0,
        generator=gen(3),
        output_type="np",
        rejection_percentile=0.9,
        max_nfe_per_sample=4 * N,
    )
    assert out.images.shape == (2, 16, 16, 3) and out.discriminator_evals.min() >= N + 1


def test_bad_inputs_raise_clear_errors(saved):
    from diffusers import DPMSolverMultistepScheduler

    with pytest.raises(TypeError, match="Supported: DDPMScheduler"):
        DiffRSStableDiffusionPipeline.from_pretrained(saved, scheduler=DPMSolverMultistepScheduler())
    pipe = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved))
    with pytest.raises(ValueError, match="rejection_percentile"):
        pipe(PROMPTS, num_inference_steps=N, rejection_percentile=1.5)
    with pytest.raises(ValueError, match="calibrate needs a discriminator"):
        pipe.calibrate(PROMPTS, num_inference_steps=N)
    with pytest.raises(ValueError, match="3 prompts for 2"):
        pipe.discriminator_training_data(PROMPTS + ["x"], latents=torch.zeros(2, 4, 8, 8))
    with pytest.raises(ValueError, match="exactly one of images"):
        pipe.discriminator_training_data(PROMPTS)
    with pytest.raises(TypeError):
        pipe(PROMPTS, num_inference_steps=N, batch_size=2)
    pipe = quiet(DiffRSStableDiffusionPipeline.from_pretrained(saved, discriminator=constant_discriminator()))
    with pytest.raises(ValueError, match="no calibration"):
        pipe(PROMPTS, num_inference_steps=N)
