"""Tiny Stable Diffusion components built from configs (no hub), for tests and README examples.

Sizes follow diffusers' own ``StableDiffusionPipelineFastTests.get_dummy_components``; the CLIP
tokenizer is a byte-level vocabulary (every byte, alone and word-final) written to local files.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer


def _bytes_to_unicode() -> list[str]:
    """The 256 printable stand-ins of GPT-2 / CLIP byte-level BPE, in byte order."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
    printable += list(range(ord("®"), ord("ÿ") + 1))
    extra, chars = 0, []
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return chars


def tiny_clip_tokenizer(directory: str | Path, model_max_length: int = 77) -> CLIPTokenizer:
    """A CLIP tokenizer over single bytes (no merges) saved to and loaded from ``directory``."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    chars = _bytes_to_unicode()
    tokens = ["<|startoftext|>", "!", "<|endoftext|>"] + [c for c in chars if c != "!"]
    tokens += [c + "</w>" for c in chars]
    (directory / "vocab.json").write_text(json.dumps({t: i for i, t in enumerate(tokens)}), encoding="utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n", encoding="utf-8")
    return CLIPTokenizer.from_pretrained(directory, model_max_length=model_max_length)


def tiny_stable_diffusion_components(seed: int = 0, sample_size: int = 8) -> dict:
    """``{vae, text_encoder, tokenizer, unet, scheduler, safety_checker=None, feature_extractor=None}``
    for a ``StableDiffusionPipeline`` of ``2 * sample_size`` px images (random weights seeded by
    ``seed``; the caller's global RNG state is left unchanged); scheduler: DDIM with SD's config."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = UNet2DConditionModel(
            block_out_channels=(4, 8),
            layers_per_block=1,
            sample_size=sample_size,
            in_channels=4,
            out_channels=4,
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
            cross_attention_dim=32,
            norm_num_groups=2,
        )
        vae = AutoencoderKL(
            block_out_channels=(4, 8),
            in_channels=3,
            out_channels=3,
            down_block_types=("DownEncoderBlock2D",) * 2,
            up_block_types=("UpDecoderBlock2D",) * 2,
            latent_channels=4,
            norm_num_groups=2,
        )
        text_encoder = CLIPTextModel(
            CLIPTextConfig(
                bos_token_id=0,
                eos_token_id=2,
                hidden_size=32,
                intermediate_size=37,
                layer_norm_eps=1e-05,
                num_attention_heads=4,
                num_hidden_layers=5,
                pad_token_id=1,
                vocab_size=1000,
            )
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    with tempfile.TemporaryDirectory() as tmp:
        tokenizer = tiny_clip_tokenizer(tmp)
    return dict(
        vae=vae.eval(),
        text_encoder=text_encoder.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
    )
