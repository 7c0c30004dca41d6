"""``DiffRSPipeline``: diffusion rejection sampling around a user's UNet and stock scheduler.

Load a saved pipeline with the plain diffusers loader (offline)::

    import diffusers_plugins  # registers the discriminator class for from_pretrained
    pipe = DiffusionPipeline.from_pretrained(path, custom_pipeline=diffusers_plugins.CUSTOM_PIPELINE_FILE,
                                             trust_remote_code=True)

This module only uses absolute imports so that diffusers can load the file itself as a custom
pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import PIL.Image
import torch
from diffusers import DiffusionPipeline, UNet2DModel
from diffusers.image_processor import VaeImageProcessor
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor

from diffusers_plugins.calibration import DiffRSCalibration, calibration_key, calibration_settings
from diffusers_plugins.discriminator import TimeDependentDiscriminator
from diffusers_plugins.level_tables import LevelTables, check_supported_scheduler
from diffusers_plugins.rejection_sampler import RejectionSampler, SampleStreams, SamplingResult
from diffusers_plugins.saved_files import check_saved_directory

OUTPUT_TYPES = ("pil", "np", "pt", "latent")


@dataclass
class DiffRSPipelineOutput(BaseOutput):
    """Images and the cost/acceptance statistics of one DiffRS call (``B`` images, ``N`` levels).

    Attributes:
        images: ``B`` PIL images, a ``[B, H, W, C]`` float array in [0, 1] (``"np"``) or a
            ``[B, C, H, W]`` tensor in [0, 1] (``"pt"``) or the raw final states ``[B, C, H, W]``
            (``"latent"``, the model's data space), in sample order.
        nfe: ``[B]`` int, all UNet calls spent on each image, discarded restarts included.
        trajectory_nfe: ``[B]`` int, UNet calls of the emitted trajectory (base sampler: the same for all).
        discriminator_evals: ``[B]`` int, discriminator calls per image (not counted in ``nfe``).
        rejections: ``[B]`` int, failed acceptance tests per image.
        restarts: ``[B]`` int, trajectories abandoned because of ``max_nfe_per_sample``.
        acceptance_per_level: ``[N+1]`` float, accepted / tested at each level (1.0 where untested).
        tests_per_level: ``[N+1]`` int, acceptance tests at each level.
        total_nfe: all UNet calls of the call (``nfe.sum()``).
    """

    images: list[PIL.Image.Image] | np.ndarray | torch.Tensor
    nfe: np.ndarray
    trajectory_nfe: np.ndarray
    discriminator_evals: np.ndarray
    rejections: np.ndarray
    restarts: np.ndarray
    acceptance_per_level: np.ndarray
    tests_per_level: np.ndarray
    total_nfe: int


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


class DiffRSPipeline(DiffusionPipeline):
    """Diffusion rejection sampling (Na et al., ICML 2024) for ``UNet2DModel`` + a stock scheduler.

    Modules: ``unet`` (a ``UNet2DModel``, optionally class-conditional), ``scheduler`` (one of
    DDPMScheduler, DDIMScheduler (eta = 0), EulerDiscreteScheduler, EDMEulerScheduler,
    HeunDiscreteScheduler), ``discriminator`` (a :class:`TimeDependentDiscriminator` or ``None``:
    exactly the base sampler). ``calibration`` holds the warm-up statistics written by
    :meth:`calibrate`, keyed by :meth:`calibration_key`; it is saved in ``model_index.json``.
    """

    model_cpu_offload_seq = "unet"
    _optional_components = ["discriminator"]
    _exclude_from_cpu_offload = ["discriminator"]

    def __init__(
        self,
        unet: UNet2DModel,
        scheduler,
        discriminator: TimeDependentDiscriminator | None = None,
        calibration: dict | DiffRSCalibration | None = None,
    ):
        super().__init__()
        check_supported_scheduler(scheduler)
        if discriminator is not None and not callable(discriminator):
            raise TypeError("discriminator must be a TimeDependentDiscriminator (or a module) or None")
        self.register_modules(unet=unet, scheduler=scheduler, discriminator=discriminator)
        entries = calibration.entries if isinstance(calibration, DiffRSCalibration) else calibration
        self.register_to_config(calibration=dict(entries or {}))
        self.image_processor = VaeImageProcessor()  # [-1, 1] states -> "pil" / "np" / "pt" in [0, 1]

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs):
        """``DiffusionPipeline.from_pretrained``; an incomplete or corrupt local ``model_index.json``
        (which holds the calibration) raises ``ValueError`` naming the file."""
        writer = f"{cls.__name__}.save_pretrained"
        check_saved_directory(Path(pretrained_model_name_or_path), ("model_index.json",), writer)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    # ------------------------------------------------------------------ calibration
    @property
    def calibration(self) -> DiffRSCalibration:
        """The stored warm-up statistics (a copy; ``save_pretrained`` / ``from_pretrained`` on its own)."""
        return DiffRSCalibration(self.config.calibration)

    def _settings(self, num_inference_steps: int) -> dict:
        return calibration_settings(self.scheduler, num_inference_steps, self.discriminator)

    def calibration_key(self, num_inference_steps: int) -> str:
        """Key of the thresholds for this scheduler (class + config), step count and discriminator weights."""
        return calibration_key(self._settings(num_inference_steps))

    def thresholds(
        self, num_inference_steps: int, rejection_percentile: float = 0.75, clamp_log_m: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(log_m [N+1], log_m_transition [N+1])`` float64 from the stored calibration; a
        ``ValueError`` names the settings that differ from every stored calibration."""
        return self.calibration.thresholds(
            self._settings(num_inference_steps), rejection_percentile, clamp_log_m
        )

    # ------------------------------------------------------------------ input checks
    def _num_classes(self) -> int | None:
        return self.unet.config.num_class_embeds or getattr(self.discriminator, "config", {}).get(
            "num_class_embeds"
        )

    def _needs_labels(self) -> bool:
        return self.unet.class_embedding is not None or bool(
            getattr(self.discriminator, "is_class_conditional", 0)
        )

    def _check_labels(self, class_labels, n: int) -> torch.Tensor | None:
        if class_labels is None and self._needs_labels():
            raise ValueError("class_labels is required: the UNet or discriminator is class-conditional")
        if class_labels is None:
            return None
        if not self._needs_labels():
            raise ValueError(
                "class_labels given but neither the UNet nor the discriminator is class-conditional"
            )
        labels, num = torch.as_tensor(class_labels), self._num_classes()
        if labels.shape != (n,) or labels.dtype.is_floating_point:
            raise ValueError(
                f"class_labels must be {n} integer class ids, got shape {tuple(labels.shape)} {labels.dtype}"
            )
        if num is not None and (int(labels.min()) < 0 or int(labels.max()) >= num):
            raise ValueError(
                f"class_labels must lie in [0, {num}), got range [{int(labels.min())}, {int(labels.max())}]"
            )
        return labels.long()

    @staticmethod
    def _check_generator(generator, n: int) -> None:
        gens = generator if isinstance(generator, list) else [generator] * n
        if not (generator is None or (len(gens) == n and all(isinstance(g, torch.Generator) for g in gens))):
            raise ValueError(f"generator must be None, a torch.Generator or a list of {n} torch.Generators")

    def _start(self, n: int, generator, tables: LevelTables) -> tuple[torch.Tensor, SampleStreams]:
        """Start latents drawn exactly as the stock pipelines draw them (``randn_tensor`` of the batch
        times ``init_noise_sigma``), then one seed per image from ``generator`` for its own streams."""
        size = self.unet.config.sample_size
        shape = (n, self.unet.config.in_channels, *((size, size) if isinstance(size, int) else size))
        latents = randn_tensor(
            shape, generator=generator, device=self._execution_device, dtype=self.unet.dtype
        )
        if isinstance(generator, list):
            seeds = [int(torch.randint(0, 2**62, (1,), generator=g, device=g.device)) for g in generator]
        else:
            dev = generator.device if generator is not None else "cpu"
            seeds = torch.randint(0, 2**62, (n,), generator=generator, device=dev).tolist()
        return latents * tables.init_noise_sigma, SampleStreams(seeds, self._execution_device)

    def _sampler(self, tables, labels, streams, num_slots, **kwargs) -> RejectionSampler:
        unet, disc = self.unet, self.discriminator
        unet_labels = labels if unet.class_embedding is not None else None
        disc_labels = labels if getattr(disc, "is_class_conditional", False) else None

        def model_fn(inp, t, sids):
            lab = None if unet_labels is None else unet_labels[sids].to(inp.device)
            return unet(inp.to(unet.dtype), t, class_labels=lab).sample

        def log_ratio_fn(x_ve, sigma, sids):
            return disc(
                x_ve, sigma, class_labels=None if disc_labels is None else disc_labels[sids].to(x_ve.device)
            )

        bar = lambda total: self.progress_bar(total=total)  # noqa: E731
        fn = None if disc is None else log_ratio_fn
        return RejectionSampler(
            tables, model_fn, fn, streams, num_slots=num_slots, progress_bar=bar, **kwargs
        )

    @torch.no_grad()
    def calibrate(
        self,
        num_samples: int,
        num_inference_steps: int,
        generator: torch.Generator | list[torch.Generator] | None = None,
        class_labels: torch.Tensor | None = None,
        num_slots: int | None = None,
    ) -> dict:
        """Warm-up: run the base sampler ``num_samples`` times and store, per level, the
        discriminator log-ratios and their increments. The entry is stored under
        :meth:`calibration_key` (saved with the pipeline), so any ``rejection_percentile`` /
        ``clamp_log_m`` can be applied later. Class-conditional models without ``class_labels``
        calibrate on labels drawn uniformly with ``generator``. Returns the stored entry.
        """
        if self.discriminator is None:
            raise ValueError("calibrate needs a discriminator; this pipeline has discriminator=None")
        if not _is_int(num_samples) or num_samples < 2:
            raise ValueError(f"num_samples must be an int >= 2, got {num_samples!r}")
        self._check_generator(generator, num_samples)
        if class_labels is None and self._needs_labels():
            gen = generator[0] if isinstance(generator, list) else generator
            class_labels = torch.randint(self._num_classes(), (num_samples,), generator=gen)
        labels = self._check_labels(class_labels, num_samples)
        tables = LevelTables(self.scheduler, num_inference_steps, self._execution_device)
        latents, streams = self._start(num_samples, generator, tables)
        sampler = self._sampler(tables, labels, streams, num_slots or min(num_samples, 64))
        marginal, transition = sampler.warmup_statistics(latents, torch.arange(num_samples))
        calibration = self.calibration
        entry = calibration.add(self._settings(num_inference_steps), marginal, transition)
        self.register_to_config(calibration=calibration.entries)
        return entry

    # ------------------------------------------------------------------ sampling
    @torch.no_grad()
    def __call__(
        self,
        batch_size: int = 1,
        num_inference_steps: int = 50,
        generator: torch.Generator | list[torch.Generator] | None = None,
        rejection_percentile: float = 0.75,
        backsteps: int = 1,
        max_nfe_per_sample: int | None = None,
        clamp_log_m: bool = True,
        output_type: str = "pil",
        return_dict: bool = True,
        class_labels: torch.Tensor | None = None,
        num_slots: int | None = None,
        max_ticks: int | None = None,
        distributed: bool | None = None,
    ) -> DiffRSPipelineOutput | tuple:
        """Generate ``batch_size`` images with DiffRS.

        Args:
            batch_size: number of images.
            num_inference_steps: levels ``N`` of the base sampler (a calibration for it must exist when
                a discriminator is set; see :meth:`calibrate`).
            generator: start latents are drawn exactly as the stock pipelines do
                (``randn_tensor`` of the full batch times ``init_noise_sigma``); afterwards one seed per
                image is drawn from it for that image's own sampler/acceptance/back-step/fresh-noise streams.
            rejection_percentile: gamma in [0, 1]; log M is the gamma-quantile of the warm-up statistics.
            backsteps: levels to re-noise on a rejection.
            max_nfe_per_sample: per-trajectory UNet-call cap (restart from fresh noise beyond it).
            clamp_log_m: apply ``log M = max(0, quantile)`` as the official code does.
            output_type: ``"pil"``, ``"np"``, ``"pt"`` (images in [0, 1]) or ``"latent"`` (raw final states).
            class_labels: ``[batch_size]`` ints for class-conditional UNets/discriminators.
            num_slots: concurrent samples per UNet call (default: ``batch_size``).
            max_ticks: hard tick limit; exceeding it raises ``RuntimeError`` (never hangs).
            distributed: split the batch over ``torch.distributed`` processes (e.g. started by
                ``accelerate launch``) and all-gather the results; ``None`` = when a process group with
                more than one process is initialised. Every process returns the full batch.
        """
        self._check_call(batch_size, output_type, rejection_percentile, num_slots, generator)
        labels = self._check_labels(class_labels, batch_size)
        tables = LevelTables(self.scheduler, num_inference_steps, self._execution_device)
        log_m = log_m_t = None
        if self.discriminator is not None:
            log_m, log_m_t = self.thresholds(
                num_inference_steps, float(rejection_percentile), bool(clamp_log_m)
            )
        latents, streams = self._start(batch_size, generator, tables)
        rank, world = _process_group(distributed)
        shard = torch.from_numpy(np.array_split(np.arange(batch_size), world)[rank]).long()
        sampler = self._sampler(
            tables,
            labels,
            streams,
            num_slots or max(1, shard.numel()),
            log_m=log_m,
            log_m_transition=log_m_t,
            backsteps=backsteps,
            max_nfe_per_sample=max_nfe_per_sample,
            max_ticks=max_ticks,
        )
        res = _all_gather(sampler.run(latents[shard], shard), world)
        self.maybe_free_model_hooks()
        out = DiffRSPipelineOutput(
            images=self.image_processor.postprocess(res.samples, output_type),
            **{name: getattr(res, name).numpy() for name in SamplingResult.PER_SAMPLE},
            acceptance_per_level=_acceptance_rate(res.accepts_per_level, res.tests_per_level),
            tests_per_level=res.tests_per_level.numpy(),
            total_nfe=int(res.nfe.sum()),
        )
        return out if return_dict else out.to_tuple()

    def _check_call(self, batch_size, output_type, rejection_percentile, num_slots, generator) -> None:
        if not _is_int(batch_size) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        gamma = rejection_percentile
        if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"rejection_percentile must be a number in [0, 1], got {rejection_percentile!r}")
        if num_slots is not None and (not _is_int(num_slots) or num_slots < 1):
            raise ValueError(f"num_slots must be None or a positive int, got {num_slots!r}")
        self._check_generator(generator, batch_size)


def _process_group(distributed: bool | None) -> tuple[int, int]:
    """``(rank, world size)`` of the default ``torch.distributed`` group (``None``: when one with more
    than one process is initialised), else ``(0, 1)``."""
    dist = torch.distributed
    if distributed is None:
        distributed = dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1
    return (dist.get_rank(), dist.get_world_size()) if distributed else (0, 1)


def _acceptance_rate(accepts: torch.Tensor, tests: torch.Tensor) -> np.ndarray:
    """Accepted / tested per level, 1.0 where nothing was tested."""
    return torch.where(tests > 0, accepts.double() / tests.clamp_min(1), 1.0).numpy()


def _all_gather(res: SamplingResult, world: int) -> SamplingResult:
    """Every process's shard of the batch, concatenated in rank order (per-level counts summed)."""
    res.samples = res.samples.cpu()
    if world == 1:
        return res
    gathered = [None] * world
    torch.distributed.all_gather_object(gathered, res)
    return SamplingResult(
        samples=torch.cat([g.samples for g in gathered]),
        **{k: torch.cat([getattr(g, k) for g in gathered]) for k in SamplingResult.PER_SAMPLE},
        **{k: sum(getattr(g, k) for g in gathered) for k in ("tests_per_level", "accepts_per_level")},
        ticks=max(g.ticks for g in gathered),
    )
