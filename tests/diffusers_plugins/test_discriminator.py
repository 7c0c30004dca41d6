"""TimeDependentDiscriminator: conversions, frozen UNet features, save/load, training."""

import pytest
import torch
from diffusers import DDIMScheduler, DDPMScheduler, EDMEulerScheduler
from torch.utils.data import TensorDataset

from diffusers_plugins import TimeDependentDiscriminator, train_discriminator
from diffusers_plugins.discriminator import vp_time


def small(**kw):
    torch.manual_seed(0)
    return TimeDependentDiscriminator(in_channels=1, block_out_channels=(8, 16), norm_num_groups=4, **kw)


def test_vp_time_matches_reference_values():
    """U13: tau(0) = 0, tau(0.002) = 3.98e-5, tau(1) = 0.2590, tau(80) = 0.9335 (linear VP, beta 0.1..20)."""
    tau = vp_time(torch.tensor([0.0, 0.002, 1.0, 80.0], dtype=torch.float64))
    assert tau[0] == 0
    assert torch.allclose(tau[1:], torch.tensor([3.98e-5, 0.2590, 0.9335], dtype=torch.float64), rtol=2e-3)
    # alpha(tau) = exp(-tau^2 (b1 - b0) / 4 - tau b0 / 2) must equal 1 / sqrt(1 + sigma^2)
    sig = torch.tensor([0.5, 3.0, 80.0], dtype=torch.float64)
    t = vp_time(sig)
    alpha = torch.exp(-0.25 * t**2 * 19.9 - 0.5 * t * 0.1)
    assert torch.allclose(alpha, (1 + sig**2).rsqrt(), rtol=1e-10)


def test_forward_shapes_and_bad_input():
    d = small()
    out = d(torch.randn(3, 1, 8, 8), torch.tensor([0.0, 1.0, 50.0]))
    assert out.shape == (3,) and out.dtype == torch.float32
    assert d(torch.randn(2, 1, 8, 8), 0.5).shape == (2,)
    with pytest.raises(ValueError, match="sample must have shape"):
        d(torch.randn(3, 2, 8, 8), torch.ones(3))
    with pytest.raises(ValueError, match="sigma must be a scalar or have shape"):
        d(torch.randn(3, 1, 8, 8), torch.ones(2))
    with pytest.raises(ValueError, match="class_labels"):
        d(torch.randn(3, 1, 8, 8), torch.ones(3), class_labels=torch.zeros(3, dtype=torch.long))
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        d(torch.randn(3, 1, 8, 8), torch.ones(3), encoder_hidden_states=torch.randn(3, 4, 5))
    cond = small(num_class_embeds=3, encoder_hid_dim=5)
    assert cond(torch.randn(2, 1, 8, 8), 1.0, torch.tensor([0, 2]), torch.randn(2, 4, 5)).shape == (2,)
    with pytest.raises(ValueError, match="class_labels"):
        cond(torch.randn(2, 1, 8, 8), 1.0)


@torch.no_grad()
def test_from_unet_features_are_the_unets_own_encoder(unet):
    """The head sees exactly the UNet's mid-block output for input x / sqrt(1 + sigma^2) at timestep t(sigma)."""
    d = TimeDependentDiscriminator.from_unet(unet, DDPMScheduler(), norm_num_groups=4)
    ac = DDPMScheduler().alphas_cumprod
    t = torch.tensor([0, 250, 999])
    sigma = ((1 - ac[t]) / ac[t]).sqrt()
    x_ve = (
        torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(0))
        * (1 + sigma.view(-1, 1, 1, 1) ** 2).sqrt()
    )
    seen = {}
    unet.mid_block.register_forward_hook(lambda m, i, o: seen.__setitem__("unet", o))
    d.features.mid_block.register_forward_hook(lambda m, i, o: seen.__setitem__("disc", o))
    unet(x_ve / (1 + sigma.view(-1, 1, 1, 1) ** 2).sqrt(), t)
    d(x_ve, sigma)
    assert torch.allclose(seen["unet"], seen["disc"], atol=1e-5)
    unet.mid_block._forward_hooks.clear()
    assert all(not p.requires_grad for p in d.features.parameters())
    assert d.features.up_blocks is None


def test_save_load_round_trip(tmp_path, unet):
    x, s = torch.randn(4, 1, 8, 8), torch.tensor([0.0, 0.3, 2.0, 40.0])
    for name, d in {
        "standalone": small(num_class_embeds=2),
        "unet": TimeDependentDiscriminator.from_unet(
            unet, EDMEulerScheduler(), norm_num_groups=4, num_class_embeds=2
        ),
    }.items():
        d.save_pretrained(tmp_path / name)
        back = TimeDependentDiscriminator.from_pretrained(tmp_path / name)
        labels = torch.tensor([0, 1, 1, 0])
        with torch.no_grad():
            want = d(x, s, labels)
            # reloaded weights may sit at other alignments and run other oneDNN kernels: a few ulp of
            # the logits' scale (<= 8 measured): 32 * 2**-23 * max(1, |logit|)
            assert (back(x, s, labels) - want).abs().max() <= 32 * 2**-23 * max(1, want.abs().max()), name
        assert back.config.feature_time_input == ("edm" if name == "unet" else "vp_discrete")


def test_training_separates_real_from_generated_and_freezes_features(unet):
    """A learnable difference (real = bright, generated = dark) is learnt; UNet features stay frozen.

    Both sets lie in input_range=(-1, 1) and overlap in range, as the input checks require."""
    gen = torch.Generator().manual_seed(0)
    real = TensorDataset(0.3 + 0.1 * torch.randn(128, 1, 8, 8, generator=gen))
    fake = -0.3 + 0.1 * torch.randn(128, 1, 8, 8, generator=gen)
    d = TimeDependentDiscriminator.from_unet(unet, DDIMScheduler(), norm_num_groups=4)
    frozen = {k: v.clone() for k, v in d.features.state_dict().items()}
    head = d.head.weight.clone()
    settings = dict(num_inference_steps=5, batch_size=16, learning_rate=3e-3, show_progress=False)
    d, hist = train_discriminator(d, real, fake, DDIMScheduler(), num_steps=60, **settings)
    assert len(hist) == 60 and all(torch.isfinite(torch.tensor(hist)))
    assert sum(hist[-10:]) / 10 < 0.8 * sum(hist[:10]) / 10
    assert all(torch.equal(v, d.features.state_dict()[k]) for k, v in frozen.items())
    assert not torch.equal(head, d.head.weight)
    with torch.no_grad():  # clean (sigma = 0) real images get a higher log-ratio than generated ones
        assert d(torch.full((1, 1, 8, 8), 0.3), 0.0) > d(torch.full((1, 1, 8, 8), -0.3), 0.0)

    def short_run():
        torch.manual_seed(5)
        fresh = TimeDependentDiscriminator.from_unet(unet, DDIMScheduler(), norm_num_groups=4)
        return train_discriminator(fresh, real, fake, DDIMScheduler(), num_steps=5, **settings)

    _, hist2 = short_run()
    _, hist3 = short_run()
    assert hist2 == hist3  # same seed -> same run
    with pytest.raises(TypeError, match="real_dataset"):
        train_discriminator(d, [1, 2], fake, DDIMScheduler(), show_progress=False)
    with pytest.raises(ValueError, match="num_steps"):
        train_discriminator(d, real, fake, DDIMScheduler(), num_steps=0, show_progress=False)


# Key names of the format written before the backbones were submodules (standalone / from_unet).
LEGACY_PREFIXES = {"backbone.unet.": "features.", "backbone.": ""}


def test_discriminators_saved_in_the_earlier_format_still_load(tmp_path, unet):
    from safetensors.torch import save_file

    x, s, labels = torch.randn(4, 1, 8, 8), torch.tensor([0.0, 0.3, 2.0, 40.0]), torch.tensor([0, 1, 1, 0])
    for name, d in {
        "standalone": small(num_class_embeds=2),
        "unet": TimeDependentDiscriminator.from_unet(unet, EDMEulerScheduler(), norm_num_groups=4),
    }.items():
        d.save_pretrained(tmp_path / name)
        legacy = {}
        for key, value in d.state_dict().items():
            prefix = next(p for p in (*LEGACY_PREFIXES, "") if key.startswith(p))
            legacy[LEGACY_PREFIXES.get(prefix, prefix) + key[len(prefix) :]] = value.contiguous()
        assert "head.weight" in legacy and any(k.startswith(("features.", "conv_in.")) for k in legacy)
        save_file(legacy, tmp_path / name / "diffusion_pytorch_model.safetensors", metadata={"format": "pt"})
        back = TimeDependentDiscriminator.from_pretrained(tmp_path / name)
        lab = labels if d.is_class_conditional else None
        with torch.no_grad():
            want = d(x, s, lab)  # reloaded weights: other alignment, maybe other kernels (see above)
            assert (back(x, s, lab) - want).abs().max() <= 32 * 2**-23 * max(1, want.abs().max()), name
        assert all(torch.equal(v, back.state_dict()[k]) for k, v in d.state_dict().items()), name


@pytest.mark.parametrize("damage", ["truncated weights", "garbage weights", "truncated config", "no weights"])
def test_incomplete_or_corrupt_saved_discriminator_names_the_file(tmp_path, damage):
    small().save_pretrained(tmp_path)
    weights, config = tmp_path / "diffusion_pytorch_model.safetensors", tmp_path / "config.json"
    if damage == "truncated weights":
        weights.write_bytes(weights.read_bytes()[:-100])
    elif damage == "garbage weights":
        weights.write_bytes(b"\x00" * 64)
    elif damage == "truncated config":
        config.write_text(config.read_text()[:40])
    else:
        weights.unlink()
    name = "diffusion_pytorch_model" if "weights" in damage else "config.json"
    with pytest.raises(
        ValueError, match=rf"{name}.*(incomplete|corrupt).*TimeDependentDiscriminator\.save_pretrained"
    ):
        TimeDependentDiscriminator.from_pretrained(tmp_path)


def test_from_unet_is_seeded_and_leaves_the_global_rng_alone(unet):
    state = torch.random.get_rng_state()
    a = TimeDependentDiscriminator.from_unet(unet, DDPMScheduler(), norm_num_groups=4, seed=7)
    assert torch.equal(state, torch.random.get_rng_state())
    torch.manual_seed(123)  # the global RNG does not influence the head
    b = TimeDependentDiscriminator.from_unet(unet, DDPMScheduler(), norm_num_groups=4, seed=7)
    c = TimeDependentDiscriminator.from_unet(unet, DDPMScheduler(), norm_num_groups=4, seed=8)
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.head.weight, c.head.weight)
    assert torch.equal(a.features.conv_in.weight, c.features.conv_in.weight)  # the UNet's weights, copied


def test_training_data_are_checked_before_any_update():
    """Ranges against input_range, one value convention for both sets, channels and resolution."""
    real = torch.rand(32, 1, 8, 8, generator=torch.Generator().manual_seed(0)) * 2 - 1
    real[0, 0, 0, :2] = torch.tensor([-1.0, 1.0])  # spans exactly [-1, 1]
    kw = dict(scheduler=DDIMScheduler(), num_inference_steps=5, num_steps=3, batch_size=8, progress=False)
    d = small()
    before = {k: v.clone() for k, v in d.state_dict().items()}
    pt_images = (real + 1) / 2  # what DiffRSPipeline(output_type="pt") returns: [0, 1]
    with pytest.raises(
        ValueError, match=r"real_dataset spans \[-1, 1\] but generated_dataset spans \[0, 1\]"
    ):
        train_discriminator(d, real, pt_images, **kw)
    with pytest.raises(
        ValueError,
        match=r"real_dataset spans \[-0.99\d*, 0.99\d*\] but generated_dataset spans \[[\de.-]+, 0.99",
    ):
        train_discriminator(d, TensorDataset(real), TensorDataset(pt_images), **kw)  # first batches
    uint8 = ((real + 1) * 127.5).round().to(torch.uint8)
    with pytest.raises(
        ValueError, match=r"real_dataset values span \[0, 255\], outside input_range=\(-1, 1\)"
    ):
        train_discriminator(d, uint8, uint8, **kw)
    with pytest.raises(
        ValueError, match=r"shape \(1, 8, 8\) but generated_dataset images have shape \(1, 16, 16\)"
    ):
        train_discriminator(d, real, torch.zeros(4, 1, 16, 16), **kw)
    with pytest.raises(
        ValueError, match="generated_dataset images have 3 channels; the discriminator takes 1"
    ):
        train_discriminator(d, real, torch.zeros(4, 3, 8, 8), **kw)
    with pytest.raises(ValueError, match=r"generated_dataset values span \[nan, nan\]"):
        train_discriminator(d, real, torch.full((4, 1, 8, 8), float("nan")), **kw)
    assert all(torch.equal(v, d.state_dict()[k]) for k, v in before.items())  # nothing was trained
    # Declared ranges are accepted, and map to the same model inputs: (0, 255) uint8 == (-1, 1) floats.
    _, h_uint8 = train_discriminator(small(), uint8, uint8, input_range=(0, 255), **kw)
    _, h_float = train_discriminator(small(), uint8 / 127.5 - 1, uint8 / 127.5 - 1, **kw)
    assert torch.allclose(torch.tensor(h_uint8), torch.tensor(h_float), rtol=1e-5)
    train_discriminator(small(), pt_images, pt_images, input_range=(0, 1), **kw)
    # input_range=None: unbounded data (e.g. latents) is used as given, only NaN / inf is refused.
    _, h_none = train_discriminator(small(), 3 * real, 3 * real, input_range=None, **kw)
    assert len(h_none) == 3
    with pytest.raises(ValueError, match=r"real_dataset values span \[-inf, "):
        train_discriminator(small(), torch.full((4, 1, 8, 8), -float("inf")), real, input_range=None, **kw)


def test_training_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    train_discriminator(
        small(),
        torch.zeros(8, 1, 8, 8),
        torch.zeros(8, 1, 8, 8),
        DDIMScheduler(),
        num_inference_steps=3,
        num_steps=2,
        batch_size=4,
        progress=False,
    )
    assert torch.equal(state, torch.random.get_rng_state())
