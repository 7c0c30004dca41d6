"""``DiffRSStableDiffusionPipeline``: diffusion rejection sampling for text-to-image latent diffusion.

A ``StableDiffusionPipeline`` whose denoising loop is the shared DiffRS :class:`RejectionSampler` over
scaled VAE latents; prompts are encoded, latents drawn and decoded by the parent's own methods. The
discriminator judges latents and sees each image's prompt embeddings. Load a saved pipeline with::

    import diffusers_plugins
    pipe = DiffusionPipeline.from_pretrained(path, trust_remote_code=True,
                                             custom_pipeline=diffusers_plugins.STABLE_DIFFUSION_PIPELINE_FILE)

Only absolute imports, so that diffusers can load this file itself as a custom pipeline.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass

import torch
from diffusers import StableDiffusionPipeline
from diffusers.pipelines.stable_diffusion import StableDiffusionPipelineOutput
from torch.utils.data import TensorDataset

from diffusers_plugins.calibration import DiffRSCalibration, calibration_settings
from diffusers_plugins.level_tables import LevelTables, check_supported_scheduler
from diffusers_plugins.pipeline import DiffRSPipelineOutput, _acceptance_rate
from diffusers_plugins.rejection_sampler import RejectionSampler, SampleStreams, SamplingResult


@dataclass
class DiffRSStableDiffusionPipelineOutput(DiffRSPipelineOutput, StableDiffusionPipelineOutput):
    """``images`` and ``nsfw_content_detected`` as in ``StableDiffusionPipelineOutput`` (in that order, first),
    then the cost / acceptance statistics of :class:`~diffusers_plugins.DiffRSPipelineOutput` (one NFE = one
    UNet call of one image: the conditional/unconditional pair of classifier-free guidance counts as one)."""


class DiffRSStableDiffusionPipeline(StableDiffusionPipeline):
    """Stable Diffusion with DiffRS (Na et al., ICML 2024). Modules: the parent's, plus ``discriminator``
    (a :class:`~diffusers_plugins.TimeDependentDiscriminator` on scaled VAE latents, text-conditioned, or
    ``None``: exactly the base sampler). ``calibration`` (warm-up statistics written by :meth:`calibrate`)
    is saved in ``model_index.json``; its key includes the guidance scale."""

    _optional_components = [*StableDiffusionPipeline._optional_components, "discriminator"]
    _exclude_from_cpu_offload = [*StableDiffusionPipeline._exclude_from_cpu_offload, "discriminator"]

    def __init__(
        self,
        vae,
        text_encoder,
        tokenizer,
        unet,
        scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker: bool = False,
        discriminator=None,
        calibration: dict | None = None,
    ):
        check_supported_scheduler(scheduler)
        super().__init__(
            vae,
            text_encoder,
            tokenizer,
            unet,
            scheduler,
            safety_checker,
            feature_extractor,
            image_encoder,
            requires_safety_checker,
        )
        if discriminator is not None and not callable(discriminator):
            raise TypeError("discriminator must be a TimeDependentDiscriminator (or a module) or None")
        self.register_modules(discriminator=discriminator)
        self.register_to_config(calibration=dict(calibration or {}))

    # ------------------------------------------------------------------ calibration
    @property
    def calibration(self) -> DiffRSCalibration:
        """The stored warm-up statistics (a copy)."""
        return DiffRSCalibration(self.config.calibration)

    def _settings(self, num_inference_steps: int, guidance_scale: float) -> dict:
        """Calibration settings of the pixel pipeline with ``guidance_scale`` added to the hashed config."""
        settings = calibration_settings(self.scheduler, num_inference_steps, self.discriminator)
        config = {**settings["scheduler_config"], "guidance_scale": float(guidance_scale)}
        digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
        return {**settings, "scheduler": digest, "scheduler_config": config}

    # ------------------------------------------------------------------ pieces
    def _encode(self, prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, nipp, guidance_scale,
                height, width, tensor_inputs=None):
        """Checked inputs as ``(height, width, cond [n, L, D], uncond [n, L, D] | None)``, one row per image
        (the parent's ``check_inputs`` and ``encode_prompt``; height and width default to the UNet's size)."""
        height = height or self.unet.config.sample_size * self.vae_scale_factor
        width = width or self.unet.config.sample_size * self.vae_scale_factor
        self.check_inputs(
            prompt,
            height,
            width,
            None,
            negative_prompt,
            prompt_embeds,
            negative_prompt_embeds,
            callback_on_step_end_tensor_inputs=tensor_inputs,
        )
        self._guidance_scale = guidance_scale
        cond, uncond = self.encode_prompt(
            prompt,
            self._execution_device,
            nipp,
            self.do_classifier_free_guidance,
            negative_prompt,
            prompt_embeds=prompt_embeds,
            negative_prompt_embeds=negative_prompt_embeds,
        )
        return height, width, cond, (uncond if self.do_classifier_free_guidance else None)

    def _start(self, n, height, width, generator, latents, cond, tables):
        """Start latents exactly as the parent draws them, then one stream seed per image from ``generator``."""
        latents = self.prepare_latents(
            n,
            self.unet.config.in_channels,
            height,
            width,
            cond.dtype,
            self._execution_device,
            generator,
            latents,
        )
        if isinstance(generator, list):
            seeds = [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in generator]
        else:
            dev = generator.device if generator is not None else "cpu"
            seeds = torch.randint(0, 2**62, (n,), generator=generator, device=dev).tolist()
        return latents, SampleStreams(seeds, self._execution_device)

    def _denoiser(self, cond, uncond, guidance_scale, callback, callback_inputs):
        """``model_fn(x, t [n], sample_ids [n])``: the UNet with each image's own prompt embeddings and
        classifier-free guidance ``uncond + g * (cond - uncond)`` (one batched call of both halves)."""
        calls = [0]

        def model_fn(x, t, sids):
            emb = cond[sids.to(cond.device)]
            if uncond is None:
                out = self.unet(x, t, encoder_hidden_states=emb).sample
            else:
                both = torch.cat([uncond[sids.to(cond.device)], emb])
                out_u, out_c = self.unet(
                    torch.cat([x, x]), torch.cat([t, t]), encoder_hidden_states=both
                ).sample.chunk(2)
                out = out_u + guidance_scale * (out_c - out_u)
            if callback is not None:
                tensors = {
                    "latents": x,
                    "prompt_embeds": emb,
                    "negative_prompt_embeds": None if uncond is None else uncond[sids],
                }
                callback(self, calls[0], t, {k: tensors[k] for k in callback_inputs})
            calls[0] += 1
            return out

        return model_fn

    def _sampler(
        self,
        tables,
        cond,
        uncond,
        guidance_scale,
        streams,
        num_slots,
        callback=None,
        callback_inputs=(),
        **kwargs,
    ) -> RejectionSampler:
        disc = self.discriminator

        def log_ratio_fn(x_ve, sigma, sids):
            return disc(x_ve, sigma, encoder_hidden_states=cond[sids.to(cond.device)])

        return RejectionSampler(
            tables,
            self._denoiser(cond, uncond, guidance_scale, callback, callback_inputs),
            None if disc is None else log_ratio_fn,
            streams,
            num_slots=num_slots,
            progress_bar=lambda total: self.progress_bar(total=total),
            **kwargs,
        )

    def _decode(self, latents, output_type):
        """The parent's decoding: VAE decode of ``latents / scaling_factor``, safety checker, postprocess."""
        if output_type == "latent":
            return latents, None
        image = self.vae.decode(latents / self.vae.config.scaling_factor, return_dict=False)[0]
        image, nsfw = self.run_safety_checker(image, self._execution_device, latents.dtype)
        denorm = [True] * image.shape[0] if nsfw is None else [not c for c in nsfw]
        return self.image_processor.postprocess(image, output_type=output_type, do_denormalize=denorm), nsfw

    # ------------------------------------------------------------------ public API
    @torch.no_grad()
    def discriminator_training_data(
        self,
        prompt: str | list[str],
        images: torch.Tensor | None = None,
        latents: torch.Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> TensorDataset:
        """``TensorDataset(latents [n, 4, h, w], prompt_embeds [n, L, D])`` for ``train_discriminator``
        (``input_range=None``): real ``images [n, 3, H, W]`` in [-1, 1] encoded by the VAE (a latent
        sample drawn with ``generator``, times ``scaling_factor``), or scaled ``latents`` (e.g. base
        pipeline outputs with ``output_type="latent"``), with the prompts that describe / produced them."""
        if (images is None) == (latents is None):
            raise ValueError(
                "pass exactly one of images= (pixels in [-1, 1]) or latents= (scaled VAE latents)"
            )
        if images is not None:
            dist = self.vae.encode(images.to(self._execution_device, self.vae.dtype)).latent_dist
            latents = dist.sample(generator) * self.vae.config.scaling_factor
        prompts = [prompt] * latents.shape[0] if isinstance(prompt, str) else list(prompt)
        if len(prompts) != latents.shape[0]:
            raise ValueError(
                f"{len(prompts)} prompts for {latents.shape[0]} images/latents: give one per image"
            )
        embeds = self.encode_prompt(prompts, self._execution_device, 1, False)[0]
        return TensorDataset(latents.float().cpu(), embeds.float().cpu())

    @torch.no_grad()
    def calibrate(
        self,
        prompt: str | list[str] | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        num_images_per_prompt: int = 1,
        negative_prompt: str | list[str] | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        height: int | None = None,
        width: int | None = None,
        generator: torch.Generator | list[torch.Generator] | None = None,
        num_slots: int | None = None,
    ) -> dict:
        """Warm-up on the prompts users will sample: the base sampler for every image, the discriminator
        (with that image's prompt) at every level; stored under the key of scheduler, steps, guidance
        scale and discriminator weights. Returns the stored entry."""
        if self.discriminator is None:
            raise ValueError("calibrate needs a discriminator; this pipeline has discriminator=None")
        height, width, cond, uncond = self._encode(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt, guidance_scale,
            height, width,
        )
        n = cond.shape[0]
        if n < 2:
            raise ValueError(f"calibrate needs at least 2 images (prompts x num_images_per_prompt), got {n}")
        tables = LevelTables(self.scheduler, num_inference_steps, self._execution_device)
        latents, streams = self._start(n, height, width, generator, None, cond, tables)
        sampler = self._sampler(tables, cond, uncond, guidance_scale, streams, num_slots or min(n, 64))
        marginal, transition = sampler.warmup_statistics(latents, torch.arange(n))
        calibration = self.calibration
        entry = calibration.add(self._settings(num_inference_steps, guidance_scale), marginal, transition)
        self.register_to_config(calibration=calibration.entries)
        return entry

    @torch.no_grad()
    def __call__(
        self,
        prompt: str | list[str] | None = None,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int = 50,
        guidance_scale: float = 7.5,
        negative_prompt: str | list[str] | None = None,
        num_images_per_prompt: int = 1,
        generator: torch.Generator | list[torch.Generator] | None = None,
        latents: torch.Tensor | None = None,
        prompt_embeds: torch.Tensor | None = None,
        negative_prompt_embeds: torch.Tensor | None = None,
        output_type: str = "pil",
        return_dict: bool = True,
        callback_on_step_end=None,
        callback_on_step_end_tensor_inputs: list[str] = ("latents",),
        rejection_percentile: float = 0.75,
        backsteps: int = 1,
        max_nfe_per_sample: int | None = None,
        clamp_log_m: bool = True,
        num_slots: int | None = None,
        max_ticks: int | None = None,
    ):
        """Text-to-image with DiffRS. The parent's arguments mean what they mean there; the DiffRS ones
        what they mean in :class:`~diffusers_plugins.DiffRSPipeline`. NFE counts one UNet call per image
        and level: with classifier-free guidance (``guidance_scale > 1``) the conditional and
        unconditional halves, evaluated in one batch, count as one. Slots run at different levels, so
        ``callback_on_step_end(pipe, call_index, timesteps [n], tensors)`` is called after every batched
        UNet call with that call's ``n`` rows (timesteps per row); it observes, its return is not written
        back. Thresholds must have been calibrated at this ``guidance_scale`` (:meth:`calibrate`).
        """
        gamma = rejection_percentile
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"rejection_percentile must be a number in [0, 1], got {rejection_percentile!r}")
        height, width, cond, uncond = self._encode(
            prompt, negative_prompt, prompt_embeds, negative_prompt_embeds, num_images_per_prompt, guidance_scale,
            height, width, callback_on_step_end_tensor_inputs,
        )
        n = cond.shape[0]
        tables = LevelTables(self.scheduler, num_inference_steps, self._execution_device)
        log_m = log_m_t = None
        if self.discriminator is not None:
            log_m, log_m_t = self.calibration.thresholds(
                self._settings(num_inference_steps, guidance_scale), float(gamma), bool(clamp_log_m)
            )
        latents, streams = self._start(n, height, width, generator, latents, cond, tables)
        sampler = self._sampler(
            tables,
            cond,
            uncond,
            guidance_scale,
            streams,
            num_slots or n,
            callback_on_step_end,
            tuple(callback_on_step_end_tensor_inputs),
            log_m=log_m,
            log_m_transition=log_m_t,
            backsteps=backsteps,
            max_nfe_per_sample=max_nfe_per_sample,
            max_ticks=max_ticks,
        )
        res = sampler.run(latents, torch.arange(n))
        images, nsfw = self._decode(res.samples, output_type)
        self.maybe_free_model_hooks()
        out = DiffRSStableDiffusionPipelineOutput(
            images=images,
            nsfw_content_detected=nsfw,
            **{name: getattr(res, name).numpy() for name in SamplingResult.PER_SAMPLE},
            acceptance_per_level=_acceptance_rate(res.accepts_per_level, res.tests_per_level),
            tests_per_level=res.tests_per_level.numpy(),
            total_nfe=int(res.nfe.sum()),
        )
        return out if return_dict else out.to_tuple()
