"""Digits data for the demo and the Frechet distance used by the benchmark."""

import numpy as np
import scipy.linalg
import torch

from diffusers_plugins.testing_utils.digits import load_digits_images
from diffusers_plugins.testing_utils.digits_metrics import DigitsClassifier, digits_quality, frechet_distance


def test_load_digits_images_range_and_shape():
    x, y = load_digits_images(16)
    assert x.shape == (1797, 1, 16, 16) and y.shape == (1797,)
    assert x.min() >= -1 and x.max() <= 1 and set(y.tolist()) == set(range(10))
    x8, _ = load_digits_images(8)
    from sklearn.datasets import load_digits

    assert torch.allclose(x8[:, 0], torch.tensor(load_digits().images, dtype=torch.float32) / 8 - 1)


def test_frechet_distance_matches_scipy_sqrtm():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(400, 5)) @ rng.normal(size=(5, 5))
    b = rng.normal(size=(300, 5)) @ rng.normal(size=(5, 5)) + 0.5
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    ref = ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)
    assert abs(frechet_distance(a, b) - ref) < 1e-6 * max(1.0, abs(ref))
    assert abs(frechet_distance(a, a)) < 1e-8


def test_digits_quality_keys_and_ranges():
    torch.manual_seed(0)
    q = digits_quality(
        DigitsClassifier(), torch.rand(20, 1, 16, 16) * 2 - 1, torch.rand(30, 1, 16, 16) * 2 - 1
    )
    assert q["frechet"] >= -1e-9 and 0 <= q["precision"] <= 1
