"""Time-dependent discriminator d(x, sigma) whose raw logit estimates log q_sigma(x) / p_sigma(x).

It separates diffused real data (label 1) from diffused base-sampler outputs (label 0); for the
Bayes-optimal classifier ``d = q / (q + p)``, so its pre-sigmoid output is the log density ratio
``log L = logit(d)`` that DiffRS (arXiv 2405.17880) uses directly. Inputs are VE coordinates
``x = x0 + sigma * eps`` with a per-sample noise level ``sigma`` (``sigma = 0``: clean data).

A backbone turns ``(x, sigma)`` into a feature map and a time embedding; one trainable head (class /
text conditioning added to the embedding, residual blocks, GroupNorm, mean pooling, a linear logit)
sits on top. Backbones: :class:`VPTimeStem` (standalone) and :class:`UNetEncoder` (the frozen encoder
of the user's own ``UNet2DModel`` or ``UNet2DConditionModel``, :meth:`TimeDependentDiscriminator.from_unet`).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from diffusers import ConfigMixin, DDPMScheduler, ModelMixin, UNet2DConditionModel, UNet2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

from diffusers_plugins.saved_files import check_saved_directory

BETA_MIN = 0.1
BETA_MAX = 20.0
FEATURE_TIME_INPUTS = ("vp_discrete", "edm")


def vp_time(sigma: torch.Tensor, beta_min: float = BETA_MIN, beta_max: float = BETA_MAX) -> torch.Tensor:
    """VP-SDE time tau(sigma) of the linear schedule: ``alpha(tau) = 1 / sqrt(1 + sigma^2)``.

    ``tau = (-b0 + sqrt(b0^2 + 2 (b1 - b0) ln(1 + sigma^2))) / (b1 - b0)``; ``tau(0) = 0``.
    """
    log1p = torch.log1p(sigma.to(torch.float64) ** 2)
    tau = (-beta_min + torch.sqrt(beta_min**2 + 2 * (beta_max - beta_min) * log1p)) / (beta_max - beta_min)
    return tau.to(sigma.dtype if sigma.dtype.is_floating_point else torch.float32)


def _config_dict(config) -> dict:
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dict(config).items() if not k.startswith("_")
    }


def _as_batch(sigma: torch.Tensor) -> torch.Tensor:
    return sigma.to(torch.float32).view(-1, 1, 1, 1)


class VPTimeStem(nn.Module):
    """Standalone backbone: ``(conv_in(x / sqrt(1 + sigma^2)) [B, width, H, W], emb [B, time_embed_dim])``
    with ``emb`` an MLP of the sinusoidal embedding of ``999 * tau(sigma)``, the time the DG/DiffRS
    discriminators see; the head's blocks on top form a small multi-resolution conv net."""

    def __init__(self, in_channels: int, width: int, time_embed_dim: int):
        super().__init__()
        self.time_proj = Timesteps(time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
        self.time_embedding = TimestepEmbedding(time_embed_dim, time_embed_dim)
        self.conv_in = nn.Conv2d(in_channels, width, kernel_size=3, padding=1)
        self.out_channels, self.embed_dim = width, time_embed_dim

    def forward(self, sample, sigma, class_labels=None, encoder_hidden_states=None):
        dtype = self.conv_in.weight.dtype
        emb = self.time_embedding(self.time_proj(999.0 * vp_time(sigma.to(torch.float32))).to(dtype))
        return self.conv_in(sample / (sigma.to(dtype).view(-1, 1, 1, 1) ** 2 + 1).sqrt()), emb


class UNetEncoder(nn.Module):
    """Frozen backbone: the mid-block output of a ``UNet2DModel`` (built from ``unet_config``; its up
    path is dropped) and the UNet's own time (+ class) embedding, for VE samples at noise ``sigma``.

    ``time_input="vp_discrete"``: input ``x / sqrt(1 + sigma^2)`` at the (fractional) training timestep
    whose ``sqrt((1 - abar) / abar)`` is ``sigma`` under the DDPM schedule ``schedule``;
    ``"edm"``: input ``x / sqrt(sigma^2 + sigma_data^2)`` at timestep ``ln(max(sigma, sigma_min)) / 4``.
    Always in eval mode and without gradients.
    """

    def __init__(
        self, unet_config: dict, time_input: str, schedule: dict, sigma_data: float, sigma_min: float
    ):
        super().__init__()
        text = "cross_attention_dim" in unet_config  # a UNet2DConditionModel config
        unet = (UNet2DConditionModel if text else UNet2DModel).from_config(unet_config)
        unet.up_blocks = unet.conv_norm_out = unet.conv_act = unet.conv_out = None
        self.unet = unet.requires_grad_(False)
        ac = DDPMScheduler(**schedule).alphas_cumprod.to(torch.float64)
        self.register_buffer("train_log_sigmas", (((1 - ac) / ac).sqrt().log()).to(torch.float32))
        self.time_input, self.sigma_data, self.sigma_min = time_input, sigma_data, sigma_min
        self.out_channels = unet.config.block_out_channels[-1]
        self.embed_dim = unet.time_embedding.linear_2.out_features

    def train(self, mode: bool = True):
        return super().train(False)

    def unet_inputs(self, sample, sigma):
        """The UNet's ``(model input, timestep [B])`` for VE ``sample`` at noise ``sigma [B]``."""
        if self.time_input == "edm":
            t = 0.25 * sigma.to(torch.float32).clamp_min(self.sigma_min).log()
            return sample / (_as_batch(sigma) ** 2 + self.sigma_data**2).sqrt(), t
        log_s = sigma.to(torch.float32).clamp_min(1e-10).log()
        table = self.train_log_sigmas
        hi = torch.searchsorted(table, log_s).clamp(1, table.numel() - 1)
        w = ((log_s - table[hi - 1]) / (table[hi] - table[hi - 1])).clamp(0, 1)
        return sample / (_as_batch(sigma) ** 2 + 1).sqrt(), (hi - 1).to(torch.float32) + w

    @torch.no_grad()
    def forward(self, sample, sigma, class_labels=None, encoder_hidden_states=None):
        unet, dtype = self.unet, self.unet.dtype
        cross = isinstance(unet, UNet2DConditionModel)
        if cross and encoder_hidden_states is None:
            raise ValueError("the feature UNet2DConditionModel needs encoder_hidden_states (prompt embeddings)")
        text = {"encoder_hidden_states": encoder_hidden_states.to(dtype)} if cross else {}
        x, t = self.unet_inputs(sample, sigma)
        # UNet2DModel.forward up to its mid block (the up path is not kept).
        emb = unet.time_embedding(unet.time_proj(t).to(dtype))
        if unet.class_embedding is not None:
            timestep_labels = unet.config.class_embed_type == "timestep"
            emb = emb + unet.class_embedding(
                unet.time_proj(class_labels) if timestep_labels else class_labels
            ).to(dtype)
        x = 2 * x - 1.0 if unet.config.center_input_sample else x
        skip, h = x, unet.conv_in(x.to(dtype))
        for block in unet.down_blocks:
            if hasattr(block, "skip_conv"):
                h, _, skip = block(hidden_states=h, temb=emb, skip_sample=skip)
            elif getattr(block, "has_cross_attention", False):
                h, _ = block(hidden_states=h, temb=emb, **text)
            else:
                h, _ = block(hidden_states=h, temb=emb)
        if unet.mid_block is None:
            return h, emb
        return (unet.mid_block(h, emb, **text) if cross else unet.mid_block(h, emb)), emb


# Key prefixes of the format saved before the backbones were submodules (still loadable).
_LEGACY_PREFIXES = ("features.", "train_log_sigmas", "time_embedding.", "conv_in.")


class TimeDependentDiscriminator(ModelMixin, ConfigMixin):
    """``forward(sample [B,C,H,W], sigma [B] or scalar, class_labels [B] | None,
    encoder_hidden_states [B,L,D] | None) -> log_ratio [B]`` (raw logit, float32).

    Args:
        in_channels: channels of the samples it judges.
        block_out_channels: widths of the head's resolution levels on the standalone backbone (a
            stride-2 conv between levels); ignored with a feature UNet (one level of ``head_channels``).
        layers_per_block: residual blocks per head level.
        norm_num_groups: GroupNorm groups (the largest divisor of every width up to this value is used).
        time_embed_dim: width of the time embedding of the standalone backbone.
        num_class_embeds: number of classes for a class-conditional discriminator (``None``: not).
        encoder_hid_dim: width of ``encoder_hidden_states`` for a text-conditional discriminator
            (max-pooled over tokens, added to the time embedding; ``None``: not).
        head_channels: width of the head on top of a feature UNet (``None``: the mid-block width).
        feature_unet_config: config of the frozen ``UNet2DModel`` feature extractor (set by
            :meth:`from_unet`); ``None`` selects the standalone backbone.
        feature_time_input: ``"vp_discrete"`` or ``"edm"``: how sigma is turned into the feature
            UNet's input scaling and timestep.
        num_train_timesteps, beta_start, beta_end, beta_schedule: the DDPM training schedule that
            maps sigma to the feature UNet's timestep (``vp_discrete``).
        sigma_data: EDM's data standard deviation (``edm``).
        sigma_min: smallest sigma used for the EDM ``ln(sigma) / 4`` timestep (``sigma = 0`` maps to it).
    """

    @register_to_config
    def __init__(
        self,
        in_channels: int = 1,
        block_out_channels: tuple[int, ...] = (32, 64),
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        time_embed_dim: int = 64,
        num_class_embeds: int | None = None,
        encoder_hid_dim: int | None = None,
        head_channels: int | None = None,
        feature_unet_config: dict | None = None,
        feature_time_input: str = "vp_discrete",
        num_train_timesteps: int = 1000,
        beta_start: float = 0.0001,
        beta_end: float = 0.02,
        beta_schedule: str = "linear",
        sigma_data: float = 0.5,
        sigma_min: float = 0.002,
    ):
        super().__init__()
        if feature_time_input not in FEATURE_TIME_INPUTS:
            raise ValueError(
                f"feature_time_input must be one of {FEATURE_TIME_INPUTS}, got {feature_time_input!r}"
            )
        if in_channels < 1 or layers_per_block < 1:
            raise ValueError("in_channels and layers_per_block must be >= 1")
        if feature_unet_config is None:
            self.backbone = VPTimeStem(in_channels, block_out_channels[0], time_embed_dim)
            widths = tuple(block_out_channels)
        else:
            schedule = dict(num_train_timesteps=num_train_timesteps, beta_start=beta_start, beta_end=beta_end)
            schedule["beta_schedule"] = beta_schedule
            self.backbone = UNetEncoder(
                feature_unet_config, feature_time_input, schedule, sigma_data, sigma_min
            )
            if self.features.config.in_channels != in_channels:
                raise ValueError(
                    f"in_channels={in_channels} does not match the feature UNet's in_channels="
                    f"{self.features.config.in_channels}"
                )
            widths = (head_channels or self.backbone.out_channels,)
        ch, cond_dim = self.backbone.out_channels, self.backbone.embed_dim
        groups = math.gcd(norm_num_groups, ch, *widths)
        blocks = []
        for level, width in enumerate(widths):
            for _ in range(layers_per_block):
                blocks.append(
                    ResnetBlock2D(in_channels=ch, out_channels=width, temb_channels=cond_dim, groups=groups)
                )
                ch = width
            if level < len(widths) - 1:
                blocks.append(nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=1))
        self.blocks = nn.ModuleList(blocks)
        self.class_embedding = nn.Embedding(num_class_embeds, cond_dim) if num_class_embeds else None
        self.encoder_proj = nn.Linear(encoder_hid_dim, cond_dim) if encoder_hid_dim else None
        self.norm_out = nn.GroupNorm(groups, ch)
        self.head = nn.Linear(ch, 1)

    # ------------------------------------------------------------------ constructors
    @classmethod
    def from_unet(
        cls,
        unet: UNet2DModel,
        scheduler=None,
        head_channels: int | None = None,
        layers_per_block: int = 1,
        norm_num_groups: int = 8,
        num_class_embeds: int | None = None,
        encoder_hid_dim: int | None = None,
        seed: int = 0,
    ) -> TimeDependentDiscriminator:
        """A discriminator whose features are the frozen down/mid blocks of ``unet``.

        For a ``UNet2DConditionModel`` (Stable Diffusion) the encoder's cross-attention reads the prompt
        embeddings and the head adds their max-pooled projection to its time embedding (as the official
        code's ``text_cond`` hook); ``encoder_hidden_states`` are then required by ``forward``.

        ``scheduler`` (the one the UNet was trained with) fixes how sigma is fed to the UNet:
        ``EDMEulerScheduler`` -> ``"edm"``, anything with ``beta_start/beta_end/beta_schedule`` ->
        ``"vp_discrete"`` with that schedule; ``None`` -> DDPM's default linear schedule. The weights
        are copied, so later changes to ``unet`` do not affect the discriminator. ``seed`` seeds the
        head's initialisation (the caller's global RNG state is left unchanged).
        """
        if not isinstance(unet, (UNet2DModel, UNet2DConditionModel)):
            raise TypeError(
                f"from_unet needs a diffusers UNet2DModel or UNet2DConditionModel, got {type(unet).__name__}"
            )
        if isinstance(unet, UNet2DConditionModel) and encoder_hid_dim is None:
            encoder_hid_dim = unet.config.cross_attention_dim  # pooled prompt embedding into the head
        kwargs, cfg = {}, getattr(scheduler, "config", {})
        schedule = ("num_train_timesteps", "beta_start", "beta_end", "beta_schedule")
        if type(scheduler).__name__ == "EDMEulerScheduler":
            kwargs = dict(feature_time_input="edm", sigma_data=cfg.sigma_data, sigma_min=cfg.sigma_min)
        elif scheduler is not None:
            if not all(k in cfg for k in schedule):
                raise TypeError(f"cannot derive the UNet's time input from {type(scheduler).__name__}")
            if cfg.get("trained_betas") is not None:
                raise ValueError("schedulers with trained_betas are not supported by from_unet")
            kwargs = {k: cfg[k] for k in schedule}  # feature_time_input="vp_discrete"
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = cls(
                in_channels=unet.config.in_channels,
                layers_per_block=layers_per_block,
                norm_num_groups=norm_num_groups,
                num_class_embeds=num_class_embeds,
                encoder_hid_dim=encoder_hid_dim,
                head_channels=head_channels,
                feature_unet_config=_config_dict(unet.config),
                **kwargs,
            )
        state = {k: v for k, v in unet.state_dict().items() if k in model.features.state_dict()}
        model.features.load_state_dict(state, strict=True)
        model.to(unet.device)
        return model if unet.dtype == torch.float32 else model.to(unet.dtype)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, **kwargs) -> TimeDependentDiscriminator:
        """``ModelMixin.from_pretrained``; a local directory that is incomplete or corrupt (e.g. a
        truncated ``diffusion_pytorch_model.safetensors``) raises ``ValueError`` naming the file."""
        directory = Path(pretrained_model_name_or_path) / kwargs.get("subfolder", "")
        writer = f"{cls.__name__}.save_pretrained"
        check_saved_directory(directory, ("config.json", "diffusion_pytorch_model*"), writer)
        return super().from_pretrained(pretrained_model_name_or_path, **kwargs)

    def _fix_state_dict_keys_on_load(self, state_dict) -> None:
        super()._fix_state_dict_keys_on_load(state_dict)
        for key in [k for k in state_dict if k.startswith(_LEGACY_PREFIXES)]:
            state_dict["backbone." + key.replace("features.", "unet.", 1)] = state_dict.pop(key)

    @property
    def features(self) -> UNet2DModel | None:
        """The frozen feature ``UNet2DModel`` (without its up path), or ``None`` when standalone."""
        return self.backbone.unet if isinstance(self.backbone, UNetEncoder) else None

    @property
    def is_text_conditional(self) -> bool:
        """Whether ``forward`` needs ``encoder_hidden_states`` (``encoder_hid_dim`` or a cross-attention feature UNet)."""
        return self.encoder_proj is not None or isinstance(self.features, UNet2DConditionModel)

    @property
    def is_class_conditional(self) -> bool:
        """Whether ``forward`` needs ``class_labels`` (own class embedding or a conditional feature UNet)."""
        return self.class_embedding is not None or getattr(self.features, "class_embedding", None) is not None

    # ------------------------------------------------------------------ forward
    def forward(
        self,
        sample: torch.Tensor,
        sigma: torch.Tensor | float,
        class_labels: torch.Tensor | None = None,
        encoder_hidden_states: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Raw logit ``log L`` ``[B]`` (float32) for VE samples ``[B, C, H, W]`` at noise ``sigma``."""
        if sample.ndim != 4 or sample.shape[1] != self.config.in_channels:
            raise ValueError(
                f"sample must have shape [B, {self.config.in_channels}, H, W], got {tuple(sample.shape)}"
            )
        batch = sample.shape[0]
        sigma = torch.as_tensor(sigma, device=sample.device)
        sigma = sigma.expand(batch) if sigma.ndim == 0 else sigma
        if sigma.shape != (batch,):
            raise ValueError(f"sigma must be a scalar or have shape [{batch}], got {tuple(sigma.shape)}")
        if bool((sigma < 0).any()):
            raise ValueError("sigma must be >= 0")
        if (class_labels is None) == self.is_class_conditional:
            raise ValueError(
                "class_labels must be given exactly when the discriminator (or its feature UNet) is "
                f"class-conditional; this one is {'' if self.is_class_conditional else 'not '}conditional"
            )
        if (encoder_hidden_states is None) == self.is_text_conditional:
            raise ValueError(
                "encoder_hidden_states (prompt embeddings [B, L, D]) must be given exactly when the "
                f"discriminator is text-conditional; this one is {'' if self.is_text_conditional else 'not '}"
                "text-conditional"
            )
        dtype = self.head.weight.dtype
        h, emb = self.backbone(sample.to(dtype), sigma, class_labels, encoder_hidden_states)
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(class_labels.to(sample.device).long()).to(dtype)
        if encoder_hidden_states is not None:
            emb = emb + self.encoder_proj(encoder_hidden_states.to(dtype).amax(dim=1))
        for block in self.blocks:
            h = block(h, emb) if isinstance(block, ResnetBlock2D) else block(h)
        h = torch.nn.functional.silu(self.norm_out(h)).mean(dim=(2, 3))
        return self.head(h).squeeze(-1).to(torch.float32)
