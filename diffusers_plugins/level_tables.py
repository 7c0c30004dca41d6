"""Canonical per-level tables built from a stock diffusers scheduler, and vectorised step kernels.

DiffRS moves every sample independently along the levels ``0..N`` of a sampler (0: the noisiest start,
``N``: finished). The stock schedulers keep one batch-wide step index, so :class:`LevelTables` reads
their tables once after ``set_timesteps`` and re-implements each supported scheduler's closed-form
update per sample, gathering every quantity with a ``[B]`` tensor of levels. :meth:`LevelTables.step`
advances each sample from its own level by one *macro-step* (Heun: predictor plus corrector) with one
batched model call per stage. States stay in the scheduler's coordinates; the discriminator's VE view
is ``x_ve = ve_scale[idx] * x`` at noise ``sigma[idx]`` (``ve_scale = 1 / sqrt(alphā)`` for DDPM/DDIM).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

SUPPORTED_SCHEDULERS = (
    DDPMScheduler,
    DDIMScheduler,
    EulerDiscreteScheduler,
    EDMEulerScheduler,
    HeunDiscreteScheduler,
)
SUPPORTED_SCHEDULER_NAMES = tuple(cls.__name__ for cls in SUPPORTED_SCHEDULERS)

ModelFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
"""``model_fn(model_input [B,C,H,W], timestep [B], rows [B] long) -> model_output [B,C,H,W]``.

``rows`` are the positions of the samples in the caller's slot arrays, so the caller can pick the
matching class labels / prompt embeddings for a subset of slots."""


def check_supported_scheduler(scheduler) -> None:
    """Raise ``TypeError`` unless ``scheduler`` is one of the schedulers DiffRS supports."""
    if type(scheduler) not in SUPPORTED_SCHEDULERS:
        raise TypeError(
            f"scheduler {type(scheduler).__name__} is not supported by DiffRS: per-sample back-steps need "
            f"a Markov one-step (or Heun macro-step) kernel. Supported: {', '.join(SUPPORTED_SCHEDULER_NAMES)}. "
            "Multistep solvers (DPM-Solver, UniPC, DEIS, LMS, PNDM) keep batch-wide histories that a "
            "back-step invalidates."
        )


def _gather(table: torch.Tensor, idx: torch.Tensor, ndim: int) -> torch.Tensor:
    """``table[idx]`` reshaped to ``[B, 1, ..., 1]`` with ``ndim`` dimensions in total."""
    return table[idx].reshape((-1,) + (1,) * (ndim - 1))


class LevelTables:
    """Per-level tables of one scheduler at one ``num_inference_steps`` and the per-sample kernels.

    Attributes (all on ``device``; ``N = num_levels``):
        family: ``"ddpm" | "ddim" | "euler" | "edm" | "heun"``.
        sigma: ``[N+1]`` float32, VE noise level of each level (``sigma[N]`` is the final level).
        ve_scale: ``[N+1]`` float32, multiply a state by it to get VE coordinates.
        timesteps: ``[N]``, the model timestep of each level (dtype of ``scheduler.timesteps``).
        nfe: ``[N]`` long, model calls of the macro-step leaving each level.
        init_noise_sigma: standard deviation of a fresh level-0 state (``scheduler.init_noise_sigma``).
    """

    def __init__(self, scheduler, num_inference_steps: int, device: torch.device | str = "cpu"):
        check_supported_scheduler(scheduler)
        N = num_inference_steps
        if not isinstance(N, int) or isinstance(N, bool) or N < 1:
            raise ValueError(f"num_inference_steps must be a positive int, got {N!r}")
        self.scheduler, self.device, self.num_levels = scheduler, torch.device(device), N
        device = self.device
        scheduler.set_timesteps(N, device=device)
        self.init_noise_sigma = float(scheduler.init_noise_sigma)
        cfg = scheduler.config
        self.prediction_type = cfg.prediction_type
        self._clip = float(cfg.clip_sample_range) if cfg.get("clip_sample") else None
        self._thresholding = bool(cfg.get("thresholding"))
        self.ve_scale = torch.ones(N + 1, device=device)
        self.nfe = torch.ones(N, dtype=torch.long, device=device)
        if isinstance(scheduler, (DDPMScheduler, DDIMScheduler)):
            self._build_vp(scheduler, N, device)
        else:
            self.family = {HeunDiscreteScheduler: "heun", EDMEulerScheduler: "edm"}.get(
                type(scheduler), "euler"
            )
            self.sigma = scheduler.sigmas.to(device=device, dtype=torch.float32)
            self.timesteps = scheduler.timesteps.to(device)
        if self.family == "heun":
            # Interleaved tables: sigmas [s0, s1, s1, ..., s_{N-1}, s_{N-1}, 0]; timesteps [t0, t1, t1, ...].
            level_call = torch.tensor([max(0, 2 * i - 1) for i in range(N)], device=device)
            self.sigma = torch.cat([self.sigma[level_call], self.sigma[-1:]])
            self.timesteps = self.timesteps[level_call]
            self.nfe = 1 + (self.sigma[1:] > 0).long()  # corrector except on the last (sigma -> 0) step
        if self.sigma.shape != (N + 1,) or self.timesteps.shape[0] != N:
            raise RuntimeError(
                f"{type(scheduler).__name__} produced {self.timesteps.shape[0]} timesteps / "
                f"{self.sigma.shape[0]} sigmas for num_inference_steps={N}; expected N and N+1"
            )

    # ------------------------------------------------------------------ construction
    def _build_vp(self, scheduler, N: int, device: torch.device) -> None:
        cfg = scheduler.config
        if cfg.prediction_type not in ("epsilon", "sample", "v_prediction"):
            raise ValueError(f"prediction_type {cfg.prediction_type!r} is not supported")
        ac = scheduler.alphas_cumprod.to(device=device, dtype=torch.float32)
        self.timesteps = ts = scheduler.timesteps.to(device)
        self.abar_t = ac[ts]
        if isinstance(scheduler, DDPMScheduler):
            self.family = "ddpm"
            if cfg.variance_type not in ("fixed_small", "fixed_small_log", "fixed_large"):
                raise ValueError(
                    f"DDPMScheduler variance_type {cfg.variance_type!r} is not supported; use one of "
                    "'fixed_small', 'fixed_small_log', 'fixed_large' (learned variances need the model's "
                    "variance channels)"
                )
            one = torch.ones((), device=device)
            self.abar_prev = torch.stack([ac[ts[i + 1]] if i + 1 < N else one for i in range(N)])
            # Standard deviation of the ancestral noise, from the scheduler's own variance formula.
            var = torch.stack(
                [scheduler._get_variance(int(t)).to(device=device, dtype=torch.float32) for t in ts]
            )
            self.noise_std = var if cfg.variance_type == "fixed_small_log" else var**0.5
            self.noise_mask = ts > 0
        else:
            self.family = "ddim"
            step = cfg.num_train_timesteps // N
            final = scheduler.final_alpha_cumprod.to(device=device, dtype=torch.float32)
            self.abar_prev = torch.stack([ac[int(t) - step] if int(t) - step >= 0 else final for t in ts])
        # Level i < N holds the state that the step from level i reads; level N holds the final
        # state. For DDIM's "linspace" spacing the step lands on alphā(t - T/N), which need not be
        # alphā of the next listed timestep; the landing value is used for the level after a step.
        self.abar_level = torch.cat([self.abar_t[:1], self.abar_prev])
        self.sigma = ((1 - self.abar_level) / self.abar_level).sqrt()
        self.ve_scale = self.abar_level.rsqrt()

    # ------------------------------------------------------------------ helpers
    @property
    def base_nfe(self) -> int:
        """Model calls of one unrejected trajectory (level 0 to level N)."""
        return int(self.nfe.sum())

    def remaining_nfe(self, idx: torch.Tensor) -> torch.Tensor:
        """``[B]`` long: minimum model calls still needed to finish from levels ``idx``."""
        tail = torch.cat([self.nfe.flip(0).cumsum(0).flip(0), self.nfe.new_zeros(1)])
        return tail[idx]

    def to_ve(self, x: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        """State in scheduler coordinates -> VE coordinates ``x0 + sigma * eps``."""
        return x * _gather(self.ve_scale, idx, x.ndim).to(x.dtype)

    def renoise(self, x: torch.Tensor, idx_from: torch.Tensor, idx_to: torch.Tensor, noise: torch.Tensor):
        """Forward kernel q(x_to | x_from) for back-steps (``idx_to <= idx_from``), per sample.

        VE: ``x + sqrt(sigma_to^2 - sigma_from^2) * noise``. VP: ``sqrt(a_to / a_from) * x +
        sqrt(1 - a_to / a_from) * noise`` with ``a = alphā``. ``noise`` is standard normal, shape of x.
        """
        if bool((idx_to > idx_from).any()) or bool((idx_to < 0).any()):
            raise ValueError("renoise needs 0 <= idx_to <= idx_from")
        if self.family in ("ddpm", "ddim"):
            ratio = _gather(self.abar_level, idx_to, x.ndim) / _gather(self.abar_level, idx_from, x.ndim)
            return ratio.sqrt() * x + (1 - ratio).clamp_min(0).sqrt() * noise
        s_to = _gather(self.sigma, idx_to, x.ndim)
        s_from = _gather(self.sigma, idx_from, x.ndim)
        return x + (s_to**2 - s_from**2).clamp_min(0).sqrt() * noise

    def model_input(self, x: torch.Tensor, idx: torch.Tensor):
        """(scaled model input, timestep ``[B]``) for samples at levels ``idx``."""
        if self.family in ("ddpm", "ddim"):
            return x, self.timesteps[idx]
        sigma = _gather(self.sigma, idx, x.ndim)
        if self.family == "edm":
            return self.scheduler.precondition_inputs(x, sigma), self.timesteps[idx]
        return x / ((sigma**2 + 1) ** 0.5), self.timesteps[idx]

    # ------------------------------------------------------------------ kernels
    def step(
        self,
        x: torch.Tensor,
        idx: torch.Tensor,
        model_fn: ModelFn,
        noise: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """One macro-step per sample from level ``idx[b]`` to ``idx[b] + 1``.

        Args:
            x: ``[B, C, H, W]`` states in scheduler coordinates.
            idx: ``[B]`` long levels, each in ``[0, N)``.
            model_fn: see :data:`ModelFn`.
            noise: ``[B, C, H, W]`` standard normal noise for DDPM's ancestral step (ignored elsewhere;
                required for DDPM).
        Returns:
            ``(x_next [B, C, H, W], nfe [B] long)``.
        """
        if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= self.num_levels):
            raise ValueError(f"levels must lie in [0, {self.num_levels}), got {idx.tolist()}")
        kernel = {"ddpm": self._step_vp, "ddim": self._step_vp, "heun": self._step_heun}.get(self.family)
        rows = torch.arange(x.shape[0], device=x.device)
        return (kernel or self._step_euler)(x, idx, model_fn, rows, noise), self.nfe[idx]

    def _pred_x0_vp(self, x, out, a_t):
        b_t = 1 - a_t
        if self.prediction_type == "epsilon":
            x0, eps = (x - b_t ** (0.5) * out) / a_t ** (0.5), out
        elif self.prediction_type == "sample":
            x0, eps = out, (x - a_t ** (0.5) * out) / b_t ** (0.5)
        else:
            x0, eps = (a_t**0.5) * x - (b_t**0.5) * out, (a_t**0.5) * out + (b_t**0.5) * x
        if self._thresholding:
            x0 = self.scheduler._threshold_sample(x0)
        elif self._clip is not None:
            x0 = x0.clamp(-self._clip, self._clip)
        return x0, eps

    def _step_vp(self, x, idx, model_fn, rows, noise):
        out = model_fn(*self.model_input(x, idx), rows)
        a_t, a_prev = _gather(self.abar_t, idx, x.ndim), _gather(self.abar_prev, idx, x.ndim)
        x0, eps = self._pred_x0_vp(x, out, a_t)
        if self.family == "ddim":  # eta = 0: deterministic DDIM update
            return a_prev ** (0.5) * x0 + (1 - a_prev) ** (0.5) * eps
        if noise is None:
            raise ValueError("DDPM steps need `noise` (standard normal, same shape as x)")
        cur_alpha = a_t / a_prev  # diffusers' "current" alpha of a strided schedule
        mean = (a_prev ** (0.5) * (1 - cur_alpha)) / (1 - a_t) * x0 + cur_alpha ** (0.5) * (1 - a_prev) / (
            1 - a_t
        ) * x
        std, mask = _gather(self.noise_std, idx, x.ndim), _gather(self.noise_mask, idx, x.ndim)
        return torch.where(mask, mean + std * noise.to(x.dtype), mean)

    def _pred_x0_ve(self, x, out, sigma):
        if self.family == "edm":
            return self.scheduler.precondition_outputs(x, out, sigma)
        if self.prediction_type == "epsilon":
            x0 = x - sigma * out
        elif self.prediction_type == "v_prediction":
            x0 = out * (-sigma / (sigma**2 + 1) ** 0.5) + (x / (sigma**2 + 1))
        elif self.prediction_type in ("sample", "original_sample"):
            x0 = out
        else:
            raise ValueError(f"prediction_type {self.prediction_type!r} is not supported")
        return x0 if self._clip is None else x0.clamp(-self._clip, self._clip)

    def _step_euler(self, x, idx, model_fn, rows, noise=None):
        xf = x.to(torch.float32)
        sigma, sigma_next = _gather(self.sigma, idx, x.ndim), _gather(self.sigma, idx + 1, x.ndim)
        out = model_fn(*self.model_input(x, idx), rows)
        derivative = (xf - self._pred_x0_ve(xf, out, sigma)) / sigma
        return (xf + derivative * (sigma_next - sigma)).to(
            out.dtype if out.dtype.is_floating_point else x.dtype
        )

    def _step_heun(self, x, idx, model_fn, rows, noise=None):
        sigma, sigma_next = _gather(self.sigma, idx, x.ndim), _gather(self.sigma, idx + 1, x.ndim)
        out = model_fn(*self.model_input(x, idx), rows)
        d1 = (x - self._pred_x0_ve(x, out, sigma)) / sigma
        dt = sigma_next - sigma
        x_next = x + d1 * dt
        sub = (self.sigma[idx + 1] > 0).nonzero(as_tuple=True)[0]  # corrector where the next sigma > 0
        if sub.numel():
            xs, s2 = x_next[sub], sigma_next[sub]
            out2 = model_fn(*self.model_input(xs, idx[sub] + 1), rows[sub])
            d2 = (xs - self._pred_x0_ve(xs, out2, s2)) / s2
            x_next = x_next.clone()
            x_next[sub] = x[sub] + (d1[sub] + d2) / 2 * dt[sub]
        return x_next
