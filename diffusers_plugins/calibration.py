"""DiffRS calibration: per-level warm-up statistics of the discriminator, keyed by the sampler settings.

The thresholds ``log M`` / ``log M'`` are gamma-quantiles of the discriminator's log-ratios (and their
increments) along base-sampler trajectories (Na et al., ICML 2024, arXiv 2405.17880: the official
code's warm-up). They depend on the scheduler class and config, the step count and the
discriminator's weights, so each entry is stored under a key fingerprinting all of them; a request
that matches no entry is refused with the settings that differ.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from diffusers_plugins.rejection_sampler import thresholds_from_statistics
from diffusers_plugins.saved_files import check_saved_directory

CONFIG_NAME = "config.json"
WEIGHTS_NAME = "calibration.safetensors"
SETTING_NAMES = {"class": "scheduler class", "steps": "num_inference_steps", "scheduler": "scheduler config"}


def calibration_settings(scheduler, num_inference_steps: int, discriminator) -> dict:
    """What a calibration depends on: scheduler class and config, step count, discriminator weights
    (a SHA-256 fingerprint of its state dict, ``"none"`` without a discriminator)."""
    config = {k: v for k, v in dict(scheduler.config).items() if not k.startswith("_")}
    weights = "none"
    if discriminator is not None:
        h = hashlib.sha256()
        for name, tensor in sorted(discriminator.state_dict().items()):
            h.update(name.encode())
            h.update(tensor.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
        weights = h.hexdigest()[:12]
    return {
        "class": type(scheduler).__name__,
        "steps": num_inference_steps,
        "scheduler": hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[
            :12
        ],
        "discriminator": weights,
        "scheduler_config": json.loads(json.dumps(config, default=str)),
    }


def calibration_key(settings: dict) -> str:
    """``"<scheduler class>/steps=N/scheduler=<config hash>/discriminator=<weights hash>"``."""
    return "{class}/steps={steps}/scheduler={scheduler}/discriminator={discriminator}".format(**settings)


def _key_settings(key: str) -> dict:
    cls, *parts = key.split("/")
    return {"class": cls, **dict(part.split("=", 1) for part in parts)}


class DiffRSCalibration:
    """Warm-up statistics of one or more sampler settings.

    ``entries`` maps :func:`calibration_key` to ``{"scheduler", "num_inference_steps", "num_samples",
    "scheduler_config", "marginal" [N+1][n], "transition" [N+1][n]}`` (JSON-able; this is what a
    ``DiffRSPipeline`` keeps in its config and ``model_index.json``).
    """

    def __init__(self, entries: dict | None = None):
        self.entries = dict(entries or {})

    def add(self, settings: dict, marginal: torch.Tensor, transition: torch.Tensor) -> dict:
        """Store ``marginal`` / ``transition`` ``[n, N+1]`` under ``settings``; returns the entry."""
        entry = {
            "scheduler": settings["class"],
            "num_inference_steps": settings["steps"],
            "num_samples": marginal.shape[0],
            "scheduler_config": settings["scheduler_config"],
            "marginal": marginal.T.tolist(),
            "transition": transition.T.tolist(),
        }
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
        if not self.entries:
            return "nothing is calibrated yet"
        lines = []
        for key, entry in self.entries.items():
            stored = _key_settings(key)
            diffs = [
                f"{SETTING_NAMES.get(name, 'discriminator weights')} {stored[name]} (stored) vs {settings[name]}"
                for name in ("class", "steps", "scheduler", "discriminator")
                if str(stored[name]) != str(settings[name])
            ]
            old = entry.get("scheduler_config", {})
            new = settings["scheduler_config"]
            diffs += [
                f"scheduler config {k}={old.get(k)!r} (stored) vs {new.get(k)!r}"
                for k in sorted(set(old) | set(new))
                if old and old.get(k) != new.get(k)
            ]
            lines.append(f"stored {key!r} differs in: " + "; ".join(diffs))
        return "; ".join(lines)

    def save_pretrained(self, save_directory: str | Path) -> None:
        """Write ``config.json`` (settings) and ``calibration.safetensors`` (statistics) to the directory."""
        directory = Path(save_directory)
        directory.mkdir(parents=True, exist_ok=True)
        stats = {
            f"{key}|{name}": torch.tensor(entry[name])
            for key, entry in self.entries.items()
            for name in ("marginal", "transition")
        }
        save_file(stats, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        settings = {
            key: {k: v for k, v in e.items() if k not in ("marginal", "transition")}
            for key, e in self.entries.items()
        }
        config = {"_class_name": type(self).__name__, "entries": settings}
        (directory / CONFIG_NAME).write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> DiffRSCalibration:
        """Load what :meth:`save_pretrained` wrote; ``ValueError`` naming the file if it is incomplete or corrupt."""
        directory = Path(directory)
        if not directory.is_dir():
            raise ValueError(f"{directory} is not a directory written by DiffRSCalibration.save_pretrained")
        check_saved_directory(directory, (CONFIG_NAME, WEIGHTS_NAME), f"{cls.__name__}.save_pretrained")
        settings = json.loads((directory / CONFIG_NAME).read_text(encoding="utf-8"))["entries"]
        stats = load_file(str(directory / WEIGHTS_NAME))
        entries = {}
        for key, entry in settings.items():
            names = [f"{key}|marginal", f"{key}|transition"]
            if not all(name in stats for name in names):
                raise ValueError(f"{directory / WEIGHTS_NAME} is incomplete: no statistics for {key!r}")
            entries[key] = {
                **entry,
                "marginal": stats[names[0]].tolist(),
                "transition": stats[names[1]].tolist(),
            }
        return cls(entries)
