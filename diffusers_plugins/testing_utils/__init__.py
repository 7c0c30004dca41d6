"""Offline fixtures for the demo, notebook, benchmark and tests (not part of the DiffRS plugin).

The scikit-learn digits as images, a tiny digits ``UNet2DModel`` and its trainer, and sample-quality
metrics in the features of a digits classifier. The demo is :mod:`diffusers_plugins.testing_utils.demo`.
"""

from diffusers_plugins.testing_utils.digits import digits_unet, load_digits_images, train_digits_unet
from diffusers_plugins.testing_utils.digits_metrics import (
    DigitsClassifier,
    digits_quality,
    frechet_distance,
    train_digits_classifier,
)

__all__ = [
    "DigitsClassifier",
    "digits_quality",
    "digits_unet",
    "frechet_distance",
    "load_digits_images",
    "train_digits_classifier",
    "train_digits_unet",
]
