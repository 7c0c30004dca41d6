"""Sample-quality metrics for digits: a classifier trained on real digits and distances in its features.

* Frechet distance between Gaussian fits of classifier penultimate features (an FID analogue).
* Precision: the fraction of samples the classifier recognises with max softmax >= ``threshold``
  (real held-out digits score close to its accuracy).
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm


class DigitsClassifier(nn.Module):
    """A small CNN for ``[B, 1, S, S]`` digits in [-1, 1]; ``embed`` gives 64-d penultimate features."""

    def __init__(self, num_classes: int = 10, width: int = 32):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.GroupNorm(8, width),
            nn.SiLU(),
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1),
            nn.GroupNorm(8, 2 * width),
            nn.SiLU(),
            nn.Conv2d(2 * width, 2 * width, 3, stride=2, padding=1),
            nn.GroupNorm(8, 2 * width),
            nn.SiLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.embed(x))


def train_digits_classifier(
    images: torch.Tensor,
    labels: torch.Tensor,
    num_steps: int = 600,
    seed: int = 0,
    progress: bool = True,
) -> DigitsClassifier:
    """Train :class:`DigitsClassifier` with Adam (batch 128) and light noise augmentation; ``seed``
    seeds the initialisation and the batches (the caller's global RNG state is left unchanged)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = DigitsClassifier()
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    for _ in tqdm(range(num_steps), desc="digits classifier", disable=not progress):
        rows = torch.randint(0, len(images), (128,), generator=gen)
        x = images[rows] + 0.1 * torch.randn(images[rows].shape, generator=gen)
        loss = F.cross_entropy(model(x), labels[rows])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return model.eval()


def frechet_distance(feat_a: np.ndarray, feat_b: np.ndarray) -> float:
    """``|mu_a - mu_b|^2 + tr(S_a + S_b - 2 (S_a S_b)^(1/2))`` of two feature sets ``[n, d]``."""
    mu_a, mu_b = feat_a.mean(0), feat_b.mean(0)
    cov_a = np.cov(feat_a, rowvar=False)
    cov_b = np.cov(feat_b, rowvar=False)
    # (S_a S_b)^(1/2) has the eigenvalues of S_a^(1/2) S_b S_a^(1/2), which is symmetric PSD.
    w, v = np.linalg.eigh(cov_a)
    root_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    middle = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    tr_sqrt = np.sqrt(np.clip(middle, 0, None)).sum()
    return float(((mu_a - mu_b) ** 2).sum() + np.trace(cov_a) + np.trace(cov_b) - 2 * tr_sqrt)


@torch.no_grad()
def digits_quality(
    classifier: DigitsClassifier, samples: torch.Tensor, reference: torch.Tensor, threshold: float = 0.9
) -> dict:
    """``{"frechet": FD(samples, reference), "precision": P(max softmax >= threshold)}`` for [-1, 1] images."""
    fs = classifier.embed(samples).numpy().astype(np.float64)
    fr = classifier.embed(reference).numpy().astype(np.float64)
    conf = classifier.classifier(torch.from_numpy(fs).float()).softmax(-1).max(-1).values
    return {"frechet": frechet_distance(fs, fr), "precision": float((conf >= threshold).float().mean())}
