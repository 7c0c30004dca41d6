"""Digits data, the digits UNet and classifier, and the sample-quality metrics of demo and benchmark."""

import numpy as np
import scipy.linalg
import torch

from diffusers_plugins.testing_utils import (
    DigitsClassifier,
    digits_quality,
    digits_unet,
    frechet_distance,
    load_digits_images,
    train_digits_classifier,
)


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


def scipy_frechet(a, b):
    ca, cb = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    return ((a.mean(0) - b.mean(0)) ** 2).sum() + np.trace(ca + cb - 2 * scipy.linalg.sqrtm(ca @ cb).real)


def test_digits_quality_is_the_frechet_distance_and_precision_of_the_classifier():
    """Independent recomputation on a random classifier, then what the metrics must tell apart."""
    with torch.random.fork_rng():
        torch.manual_seed(0)
        clf = DigitsClassifier().eval()
    images, labels = load_digits_images(16)
    noise = torch.rand(200, 1, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    with torch.no_grad():
        fa, fb = clf.embed(noise).double().numpy(), clf.embed(images[:300]).double().numpy()
        confidence = clf(noise).softmax(-1).max(-1).values
    threshold = float(confidence.median())  # splits the sample, so a wrong precision shows
    q = digits_quality(clf, noise, images[:300], threshold=threshold)
    assert abs(q["frechet"] - scipy_frechet(fa, fb)) <= 1e-6 * max(1.0, abs(q["frechet"]))
    assert q["precision"] == float((confidence >= threshold).float().mean())  # same batch, same kernels
    # A trained classifier: held-out real digits are close to the training digits and recognised,
    # uniform noise is far away and not recognised.
    images, labels = load_digits_images(8)  # 8 px keeps the training short
    state = torch.random.get_rng_state()
    clf = train_digits_classifier(images[:1500], labels[:1500], num_steps=60, seed=0, progress=False)
    assert torch.equal(state, torch.random.get_rng_state())  # seeded locally
    real = digits_quality(clf, images[1500:], images[:1500])
    fake = digits_quality(clf, noise[:, :, ::2, ::2], images[:1500])
    assert real["precision"] > 0.4 and fake["precision"] < 0.05, (real, fake)
    assert real["frechet"] < 0.2 * fake["frechet"], (real, fake)


def test_digits_unet_is_seeded_and_leaves_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = digits_unet(16, 8, seed=1), digits_unet(16, 8, seed=1), digits_unet(16, 8, seed=2)
    assert torch.equal(state, torch.random.get_rng_state())
    assert all(torch.equal(v, b.state_dict()[k]) for k, v in a.state_dict().items())
    assert not torch.equal(a.conv_in.weight, c.conv_in.weight)
