"""DiffRS calibration: per-level warm-up statistics of the discriminator, keyed by the sampler settings.

The thresholds ``log M`` / ``log M'`` are gamma-quantiles of the discriminator's log-ratios (and their
increments) along base-sampler trajectories (the official code's warm-up). They depend on the
scheduler class and config, the step count and the discriminator's weights; each entry is stored under
a key fingerprinting all of them, and a request matching no entry is refused naming what differs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from diffusers import ConfigMixin
from diffusers.configuration_utils import register_to_config

from diffusers_plugins.rejection_sampler import thresholds_from_statistics
from diffusers_plugins.saved_files import check_saved_directory

SETTING_NAMES = {
    "class": "scheduler class",
    "steps": "num_inference_steps",
    "scheduler": "scheduler config",
    "discriminator": "discriminator weights",
}


def calibration_settings(scheduler, num_inference_steps: int, discriminator) -> dict:
    """What a calibration depends on: scheduler class and config, step count, discriminator weights
    (a SHA-256 fingerprint of its state dict, ``"none"`` without a discriminator)."""
    config = json.loads(
        json.dumps({k: v for k, v in scheduler.config.items() if not k.startswith("_")}, default=str)
    )
    weights = "none"
    if discriminator is not None:
        h = hashlib.sha256()
        for name, tensor in sorted(discriminator.state_dict().items()):
            h.update(name.encode() + tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        weights = h.hexdigest()[:12]
    digest = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:12]
    settings = {"class": type(scheduler).__name__, "steps": num_inference_steps, "scheduler": digest}
    return {**settings, "discriminator": weights, "scheduler_config": config}


def calibration_key(settings: dict) -> str:
    """``"<scheduler class>/steps=N/scheduler=<config hash>/discriminator=<weights hash>"``."""
    return "{class}/steps={steps}/scheduler={scheduler}/discriminator={discriminator}".format(**settings)


class DiffRSCalibration(ConfigMixin):
    """Warm-up statistics of one or more sampler settings, saved like a scheduler (a JSON config).

    ``entries`` maps :func:`calibration_key` to ``{"scheduler", "num_inference_steps", "num_samples",
    "scheduler_config", "marginal" [N+1][n], "transition" [N+1][n]}`` (what a ``DiffRSPipeline`` keeps
    in its config and ``model_index.json``).
    """

    config_name = "calibration.json"

    @register_to_config
    def __init__(self, entries: dict | None = None):
        self.entries = dict(entries or {})

    def add(self, settings: dict, marginal: torch.Tensor, transition: torch.Tensor) -> dict:
        """Store ``marginal`` / ``transition`` ``[n, N+1]`` under ``settings``; returns the entry."""
        entry = {"scheduler": settings["class"], "num_inference_steps": settings["steps"]}
        entry.update(num_samples=marginal.shape[0], scheduler_config=settings["scheduler_config"])
        entry.update(marginal=marginal.T.tolist(), transition=transition.T.tolist())
        self.entries[calibration_key(settings)] = entry
        return entry

    def thresholds(self, settings: dict, rejection_percentile: float, clamp_log_m: bool = True):
        """``(log_m [N+1], log_m_transition [N+1])`` float64 for ``settings``; ``ValueError`` naming the
        differing settings when no entry matches."""
        entry = self.entries.get(calibration_key(settings))
        if entry is None:
            raise ValueError(
                f"no calibration for num_inference_steps={settings['steps']} with this scheduler and "
                f"discriminator; {self._differences(settings)}. Call pipe.calibrate(num_samples=..., "
                f"num_inference_steps={settings['steps']}) first."
            )
        return tuple(
            thresholds_from_statistics(
                torch.tensor(entry[name], dtype=torch.float32).T, rejection_percentile, clamp_log_m
            )
            for name in ("marginal", "transition")
        )

    def _differences(self, settings: dict) -> str:
        lines = []
        for key, entry in self.entries.items():
            cls, *parts = key.split("/")
            stored = {"class": cls, **dict(part.split("=", 1) for part in parts)}
            diffs = [
                f"{label} {stored[k]} (stored) vs {settings[k]}"
                for k, label in SETTING_NAMES.items()
                if str(stored[k]) != str(settings[k])
            ]
            old, new = entry.get("scheduler_config") or {}, settings["scheduler_config"]
            diffs += [
                f"scheduler config {k}={old.get(k)!r} (stored) vs {new.get(k)!r}"
                for k in sorted(old.keys() | new.keys())
                if old and old.get(k) != new.get(k)
            ]
            lines.append(f"stored {key!r} differs in: " + "; ".join(diffs))
        return "; ".join(lines) or "nothing is calibrated yet"

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write ``calibration.json`` to ``save_directory``."""
        self.register_to_config(entries=self.entries)
        self.save_config(save_directory)

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DiffRSCalibration:
        """Load what :meth:`save_pretrained` wrote; ``ValueError`` naming the file if it is incomplete or corrupt."""
        writer = f"{cls.__name__}.save_pretrained"
        if not Path(directory).is_dir():
            raise ValueError(f"{directory} is not a directory written by {writer}")
        check_saved_directory(directory, (cls.config_name,), writer)
        return cls.from_config(cls.load_config(directory))
