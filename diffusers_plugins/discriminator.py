"""Time-dependent discriminator d(x, sigma) whose raw logit estimates log q_sigma(x) / p_sigma(x).

The discriminator separates diffused real data (label 1) from diffused base-sampler outputs (label 0).
For the Bayes-optimal classifier ``d = q / (q + p)``, so its pre-sigmoid output is the log density
ratio ``log L = logit(d)`` that DiffRS uses directly (spec A.2).

Inputs are always VE coordinates ``x = x0 + sigma * eps`` with a per-sample noise level ``sigma``
(units of the data, ``sigma = 0`` is clean data). Two backbones:

* standalone (default): a small time-conditioned conv net on ``x / sqrt(1 + sigma^2)`` with the VP
  time ``tau(sigma)`` of the linear VP-SDE (beta 0.1..20) as a sinusoidal embedding of ``999 * tau``,
  exactly as the DG/DiffRS discriminators see time;
* :meth:`TimeDependentDiscriminator.from_unet`: a trainable head on the frozen down and mid blocks of
  the user's own diffusion ``UNet2DModel`` (a noise-aware feature extractor every diffusers user
  already has), fed in the UNet's own input convention (``vp_discrete``: ``x / sqrt(1 + sigma^2)``
  and the continuous training timestep of ``sigma``; ``edm``: ``c_in(sigma) * x`` and
  ``ln(sigma) / 4``).
"""

from __future__ import annotations

import math

import torch
from diffusers import ConfigMixin, DDPMScheduler, ModelMixin, UNet2DModel
from diffusers.configuration_utils import register_to_config
from diffusers.models.embeddings import TimestepEmbedding, Timesteps
from diffusers.models.resnet import ResnetBlock2D
from torch import nn

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


def _unet_config_dict(config) -> dict:
    return {
        k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items() if not k.startswith("_")
    }


class TimeDependentDiscriminator(ModelMixin, ConfigMixin):
    """``forward(sample [B,C,H,W], sigma [B] or scalar, class_labels [B] | None,
    encoder_hidden_states [B,L,D] | None) -> log_ratio [B]`` (raw logit, float32).

    Args:
        in_channels: channels of the samples it judges.
        block_out_channels: widths of the standalone conv net's resolution levels (ignored with a
            feature UNet).
        layers_per_block: residual blocks per level (standalone) or in the head (feature UNet).
        norm_num_groups: GroupNorm groups; must divide every width.
        time_embed_dim: width of the time embedding of the standalone net.
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
        self.features = None
        if feature_unet_config is not None:
            unet = UNet2DModel.from_config(feature_unet_config)
            if unet.config.in_channels != in_channels:
                raise ValueError(
                    f"in_channels={in_channels} does not match the feature UNet's in_channels="
                    f"{unet.config.in_channels}"
                )
            # Only the encoder path (conv_in, down and mid blocks, time/class embeddings) is kept.
            unet.up_blocks = None
            unet.conv_norm_out = None
            unet.conv_act = None
            unet.conv_out = None
            unet.requires_grad_(False)
            self.features = unet
            feat_ch = unet.config.block_out_channels[-1]
            temb_ch = unet.time_embedding.linear_2.out_features
            width = head_channels or feat_ch
            groups = math.gcd(math.gcd(norm_num_groups, width), feat_ch)
            scheduler = DDPMScheduler(
                num_train_timesteps=num_train_timesteps,
                beta_start=beta_start,
                beta_end=beta_end,
                beta_schedule=beta_schedule,
            )
            ac = scheduler.alphas_cumprod.to(torch.float64)
            self.register_buffer("train_log_sigmas", (((1 - ac) / ac).sqrt().log()).to(torch.float32))
            blocks = []
            ch = feat_ch
            for _ in range(layers_per_block):
                blocks.append(
                    ResnetBlock2D(in_channels=ch, out_channels=width, temb_channels=temb_ch, groups=groups)
                )
                ch = width
            self.blocks = nn.ModuleList(blocks)
            self.time_proj = None
            self.time_embedding = None
            cond_dim = temb_ch
        else:
            self.time_proj = Timesteps(time_embed_dim, flip_sin_to_cos=True, downscale_freq_shift=0)
            self.time_embedding = TimestepEmbedding(time_embed_dim, time_embed_dim)
            self.conv_in = nn.Conv2d(in_channels, block_out_channels[0], kernel_size=3, padding=1)
            blocks = []
            ch = block_out_channels[0]
            for level, width in enumerate(block_out_channels):
                for _ in range(layers_per_block):
                    blocks.append(
                        ResnetBlock2D(
                            in_channels=ch,
                            out_channels=width,
                            temb_channels=time_embed_dim,
                            groups=norm_num_groups,
                        )
                    )
                    ch = width
                if level < len(block_out_channels) - 1:
                    blocks.append(nn.Conv2d(ch, ch, kernel_size=3, stride=2, padding=1))
            self.blocks = nn.ModuleList(blocks)
            cond_dim = time_embed_dim
            groups = norm_num_groups
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
    ) -> TimeDependentDiscriminator:
        """A discriminator whose features are the frozen down/mid blocks of ``unet``.

        ``scheduler`` (the one the UNet was trained with) fixes how sigma is fed to the UNet:
        ``EDMEulerScheduler`` -> ``"edm"``, anything with ``beta_start/beta_end/beta_schedule`` ->
        ``"vp_discrete"`` with that schedule; ``None`` -> DDPM's default linear schedule. The weights
        are copied, so later changes to ``unet`` do not affect the discriminator.
        """
        if not isinstance(unet, UNet2DModel):
            raise TypeError(f"from_unet needs a diffusers UNet2DModel, got {type(unet).__name__}")
        kwargs = {}
        if scheduler is not None:
            cfg = scheduler.config
            if type(scheduler).__name__ == "EDMEulerScheduler":
                kwargs.update(feature_time_input="edm", sigma_data=cfg.sigma_data, sigma_min=cfg.sigma_min)
            elif all(k in cfg for k in ("beta_start", "beta_end", "beta_schedule", "num_train_timesteps")):
                if cfg.get("trained_betas") is not None:
                    raise ValueError("schedulers with trained_betas are not supported by from_unet")
                kwargs.update(
                    feature_time_input="vp_discrete",
                    num_train_timesteps=cfg.num_train_timesteps,
                    beta_start=cfg.beta_start,
                    beta_end=cfg.beta_end,
                    beta_schedule=cfg.beta_schedule,
                )
            else:
                raise TypeError(f"cannot derive the UNet's time input from {type(scheduler).__name__}")
        model = cls(
            in_channels=unet.config.in_channels,
            layers_per_block=layers_per_block,
            norm_num_groups=norm_num_groups,
            num_class_embeds=num_class_embeds,
            encoder_hid_dim=encoder_hid_dim,
            head_channels=head_channels,
            feature_unet_config=_unet_config_dict(unet.config),
            **kwargs,
        )
        state = {k: v for k, v in unet.state_dict().items() if k in model.features.state_dict()}
        model.features.load_state_dict(state, strict=True)
        model.to(unet.device)
        return model if unet.dtype == torch.float32 else model.to(unet.dtype)

    @property
    def is_class_conditional(self) -> bool:
        """Whether ``forward`` needs ``class_labels`` (own class embedding or a conditional feature UNet)."""
        return self.class_embedding is not None or (
            self.features is not None and self.features.class_embedding is not None
        )

    def train(self, mode: bool = True):
        super().train(mode)
        if self.features is not None:
            self.features.eval()  # frozen feature extractor stays in inference mode
        return self

    # ------------------------------------------------------------------ forward
    def _feature_inputs(self, sample: torch.Tensor, sigma: torch.Tensor):
        s = sigma.to(torch.float32).view(-1, 1, 1, 1)
        if self.config.feature_time_input == "edm":
            x_in = sample / (s**2 + self.config.sigma_data**2).sqrt()
            t = 0.25 * sigma.to(torch.float32).clamp_min(self.config.sigma_min).log()
            return x_in, t
        x_in = sample / (s**2 + 1).sqrt()
        log_s = sigma.to(torch.float32).clamp_min(1e-10).log()
        table = self.train_log_sigmas
        hi = torch.searchsorted(table, log_s).clamp(1, table.numel() - 1)
        lo = hi - 1
        w = ((log_s - table[lo]) / (table[hi] - table[lo])).clamp(0, 1)
        return x_in, lo.to(torch.float32) + w

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
        if sigma.ndim == 0:
            sigma = sigma.expand(batch)
        if sigma.shape != (batch,):
            raise ValueError(f"sigma must be a scalar or have shape [{batch}], got {tuple(sigma.shape)}")
        if bool((sigma < 0).any()):
            raise ValueError("sigma must be >= 0")
        if (class_labels is None) == self.is_class_conditional:
            raise ValueError(
                "class_labels must be given exactly when the discriminator (or its feature UNet) is "
                f"class-conditional; this one is {'' if self.is_class_conditional else 'not '}conditional"
            )
        if encoder_hidden_states is not None and self.encoder_proj is None:
            raise ValueError("encoder_hidden_states given but the discriminator has encoder_hid_dim=None")
        dtype = self.head.weight.dtype
        sample = sample.to(dtype)
        if self.features is not None:
            x_in, t = self._feature_inputs(sample, sigma)
            unet = self.features
            with torch.no_grad():
                emb = unet.time_embedding(unet.time_proj(t).to(dtype))
                if unet.class_embedding is not None:
                    labels = (
                        unet.time_proj(class_labels)
                        if unet.config.class_embed_type == "timestep"
                        else class_labels
                    )
                    emb = emb + unet.class_embedding(labels).to(dtype)
                if unet.config.center_input_sample:
                    x_in = 2 * x_in - 1.0
                skip = x_in
                h = unet.conv_in(x_in.to(dtype))
                for block in unet.down_blocks:
                    if hasattr(block, "skip_conv"):
                        h, _, skip = block(hidden_states=h, temb=emb, skip_sample=skip)
                    else:
                        h, _ = block(hidden_states=h, temb=emb)
                if unet.mid_block is not None:
                    h = unet.mid_block(h, emb)
            emb = emb.detach()
        else:
            x_in = sample / (sigma.to(dtype).view(-1, 1, 1, 1) ** 2 + 1).sqrt()
            tau = vp_time(sigma.to(torch.float32))
            emb = self.time_embedding(self.time_proj(999.0 * tau).to(dtype))
            h = self.conv_in(x_in)
        if self.class_embedding is not None:
            emb = emb + self.class_embedding(class_labels.to(sample.device).long()).to(dtype)
        if encoder_hidden_states is not None:
            emb = emb + self.encoder_proj(encoder_hidden_states.to(dtype).amax(dim=1))
        for block in self.blocks:
            h = block(h, emb) if isinstance(block, ResnetBlock2D) else block(h)
        h = torch.nn.functional.silu(self.norm_out(h)).mean(dim=(2, 3))
        return self.head(h).squeeze(-1).to(torch.float32)
