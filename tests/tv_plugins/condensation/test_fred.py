import itertools

import numpy as np
import pytest
import scipy.fft
import torch

from tv_plugins.condensation import FreDParameterization
from tv_plugins.condensation.dct import dct2


def _data(n_per_class=12, classes=3, channels=2, size=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n_per_class * classes, channels, size, size, generator=g)
    labels = torch.arange(classes).repeat_interleave(n_per_class)
    return images, labels


def test_keeping_every_frequency_reconstructs_the_init_images_exactly():
    images, labels = _data()
    param = FreDParameterization.from_real((images, labels), ipc=2, k=64)
    assert param.instances_per_class == 2
    decoded, decoded_labels = param.decode()
    # every decoded image is one of the real images of its class
    for img, c in zip(decoded, decoded_labels):
        errors = (images[labels == c] - img).abs().flatten(1).max(1).values
        assert errors.min() < 1e-5


def test_partial_mask_decodes_the_orthogonal_projection_and_is_idempotent():
    images, labels = _data(size=8)
    param = FreDParameterization.from_real((images, labels), ipc=1, k=16, convention="ortho")
    decoded = param.decode()[0].detach().double().numpy()
    mask = param.mask[param.labels].numpy()[:, None]

    def project(x):  # keep the class's frequencies of the orthonormal DCT (scipy, independent of the code)
        return scipy.fft.idctn(scipy.fft.dctn(x, type=2, norm="ortho", axes=(-2, -1)) * mask, type=2, norm="ortho",
                               axes=(-2, -1))

    np.testing.assert_allclose(project(decoded), decoded, atol=1e-5)  # idempotent
    # each decoded instance is the projection of a real image of its class
    for i, c in enumerate(param.labels.tolist()):
        real = images[labels == c].double().numpy()
        proj = scipy.fft.idctn(scipy.fft.dctn(real, type=2, norm="ortho", axes=(-2, -1)) * mask[i], type=2,
                               norm="ortho", axes=(-2, -1))
        assert np.abs(proj - decoded[i]).reshape(len(real), -1).max(1).min() < 1e-5


def test_mask_is_the_top_k_unbiased_variance_of_channel_mean_coefficients():
    images, labels = _data(n_per_class=20, channels=3)
    k, ipc = 8, 1
    param = FreDParameterization.from_real((images, labels), ipc=ipc, k=k, seed=3)
    n = param.instances_per_class
    assert n == 8
    mask = param.mask
    assert mask.shape == (3, 8, 8)
    assert (mask.flatten(1).sum(1) == k).all()
    decoded = param.decode()[0].detach().double()
    for c in range(3):
        # the init images are what decoding returns projected; recover the init set from the real data:
        # each decoded instance is the projection of a distinct real image of class c
        real = images[labels == c].double()
        proj_real = scipy.fft.dctn(real.numpy(), type=2, axes=(-2, -1))
        m = mask[c].numpy()
        rec = scipy.fft.idctn(proj_real * m, type=2, axes=(-2, -1))
        chosen = [int(np.abs(rec - d.numpy()).reshape(len(rec), -1).max(1).argmin())
                  for d in decoded[param.class_instances(c)]]
        assert len(set(chosen)) == n
        coef = scipy.fft.dctn(real.numpy()[chosen], type=2, norm=None, axes=(-2, -1)).mean(1).reshape(n, -1)
        var = coef.var(axis=0, ddof=1)
        evr = var / var.sum()
        assert np.all(evr >= 0) and evr.sum() == pytest.approx(1.0)
        expected = set(np.argsort(-var, kind="stable")[:k].tolist())
        assert set(np.flatnonzero(m.reshape(-1)).tolist()) == expected


def test_coefficients_outside_the_mask_never_change_and_mask_is_fixed():
    images, labels = _data()
    param = FreDParameterization.from_real((images, labels), ipc=1, k=16)
    mask_before = param.mask.clone()
    init = param.coefficients.detach().clone()
    optimizer = param.make_optimizer("dm", lr=1e3)
    for _ in range(5):
        optimizer.zero_grad()
        param.decode()[0].pow(2).sum().backward()
        optimizer.step()
    assert torch.equal(param.mask, mask_before)
    assert not torch.allclose(param.coefficients, init)
    full = dct2(param.decode()[0].detach().double())
    outside = ~param.mask[param.labels][:, None].expand_as(full)
    scale = full.abs().max()
    assert full[outside].abs().max() < 1e-5 * scale  # only the kept frequencies are ever non-zero
    # the masked coefficient image is exactly zero outside the mask and equals the storage inside
    masked = param.full_coefficients()
    assert torch.equal(masked[outside], torch.zeros_like(masked[outside]))  # scattered into zeros: exact


@pytest.mark.parametrize("ipc,size,k", list(itertools.product([1, 2, 3, 10], [8, 16], [1, 5, 16, 33, 64])))
def test_budget_never_exceeded(ipc, size, k):
    param = FreDParameterization(num_classes=2, channels=3, spatial=(size, size), ipc=ipc, k=k)
    assert param.instances_per_class == ipc * size * size // k >= 1
    assert param.num_stored_floats == 2 * param.instances_per_class * k * 3
    assert param.num_stored_floats <= 2 * ipc * 3 * size * size
    assert param.overhead_bits == 2 * size * size


def test_single_instance_per_class_falls_back_to_class_variance():
    images, labels = _data(channels=1)
    param = FreDParameterization.from_real((images, labels), ipc=1, k=40)  # n = floor(64/40) = 1
    assert param.instances_per_class == 1
    assert torch.isfinite(param.coefficients).all()
    coef = scipy.fft.dctn(images.double().numpy(), type=2, axes=(-2, -1)).mean(1).reshape(len(images), -1)
    for c in range(3):
        var = coef[labels.numpy() == c].var(axis=0, ddof=1)
        assert set(np.flatnonzero(param.mask[c].numpy().reshape(-1))) == set(np.argsort(-var, kind="stable")[:40])


def test_invalid_arguments_raise():
    images, labels = _data()
    with pytest.raises(ValueError, match="k"):
        FreDParameterization.from_real((images, labels), ipc=1, k=65)
    with pytest.raises(ValueError, match="k"):
        FreDParameterization.from_real((images, labels), ipc=1, k=0)
    with pytest.raises(ValueError, match="ipc"):
        FreDParameterization.from_real((images, labels), ipc=0, k=8)
    with pytest.raises(ValueError, match="class 0 has 12"):
        FreDParameterization.from_real((images, labels), ipc=1, k=4)  # needs 16 per class
    with pytest.raises(ValueError, match="mask_source"):
        FreDParameterization.from_real((images, labels), ipc=1, k=8, mask_source="global")
    with pytest.raises(ValueError, match="training resolution"):
        FreDParameterization.from_real((images, labels), ipc=1, k=8).decode(resolution=16)
