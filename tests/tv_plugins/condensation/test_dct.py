import numpy as np
import pytest
import scipy.fft
import torch

from tv_plugins.condensation.dct import dct2, dct_matrix, dct_scales, idct2, ortho_learning_rates


@pytest.mark.parametrize("n", [8, 28, 32])
def test_reference_dct_matches_scipy_and_round_trips(n):
    x64 = torch.randn(3, 2, n, n, dtype=torch.float64)
    expected = scipy.fft.dctn(x64.numpy(), type=2, norm=None, axes=(-2, -1))
    np.testing.assert_allclose(dct2(x64).numpy(), expected, rtol=1e-10, atol=1e-8)
    np.testing.assert_allclose(idct2(torch.from_numpy(expected)).numpy(),
                               scipy.fft.idctn(expected, type=2, norm=None, axes=(-2, -1)), rtol=1e-10, atol=1e-10)
    assert (idct2(dct2(x64)) - x64).abs().max() < 1e-10
    x32 = x64.float()
    assert (idct2(dct2(x32)) - x32).abs().max() < 1e-4


def test_dct_of_non_square_image_matches_scipy():
    x = torch.randn(2, 6, 10, dtype=torch.float64)
    np.testing.assert_allclose(dct2(x).numpy(), scipy.fft.dctn(x.numpy(), type=2, axes=(-2, -1)), atol=1e-9)
    np.testing.assert_allclose(dct2(x, "ortho").numpy(), scipy.fft.dctn(x.numpy(), type=2, norm="ortho",
                                                                       axes=(-2, -1)), atol=1e-9)


@pytest.mark.parametrize("n", [8, 16])
def test_orthonormal_variant_and_scaling_identities(n):
    o = dct_matrix(n, "ortho")
    assert torch.allclose(o @ o.T, torch.eye(n, dtype=torch.float64), atol=1e-12)
    s = torch.full((n,), (2.0 * n) ** 0.5, dtype=torch.float64)
    s[0] = 2.0 * n ** 0.5
    assert torch.allclose(dct_scales(n), s)
    x = torch.randn(n, n, dtype=torch.float64)
    assert torch.allclose(dct2(x, "reference"), torch.diag(s) @ dct2(x, "ortho") @ torch.diag(s), atol=1e-9)
    a = torch.linalg.inv(dct_matrix(n, "reference"))
    diag = torch.diagonal(a.T @ a)  # per frequency: 1/(4N) at index 0 and 1/(2N) elsewhere (a property of the DCT-II matrix)
    assert torch.allclose(diag[0], torch.tensor(1 / (4 * n), dtype=torch.float64))
    assert torch.allclose(diag[1:], torch.full((n - 1,), 1 / (2 * n), dtype=torch.float64))


def test_constant_image_has_single_dc_coefficient():
    h, w, a = 8, 8, 0.7
    coefficients = dct2(torch.full((h, w), a, dtype=torch.float64))
    assert coefficients[0, 0].item() == pytest.approx(4 * h * w * a)
    rest = coefficients.clone()
    rest[0, 0] = 0
    assert rest.abs().max() < 1e-10


def test_learning_rate_conversion_gives_the_same_pixel_update():
    # one SGD step on reference coefficients == one step on orthonormal coefficients with per-coefficient rates
    n, lr = 8, 3.0
    x = torch.randn(n, n, dtype=torch.float64)
    target = torch.randn(n, n, dtype=torch.float64)

    def step(convention, rate):
        coef = dct2(x, convention).requires_grad_(True)
        loss = ((idct2(coef, convention) - target) ** 2).sum()
        (grad,) = torch.autograd.grad(loss, coef)
        return idct2(coef.detach() - rate * grad, convention)

    rates = ortho_learning_rates(lr, n, n)
    assert torch.allclose(step("reference", lr), step("ortho", rates), atol=1e-10)
    assert rates[3, 3].item() == pytest.approx(lr / (4 * n * n))
    assert rates[0, 0].item() == pytest.approx(lr / (16 * n * n))
    assert rates[0, 3].item() == pytest.approx(lr / (8 * n * n))


def test_bad_convention_is_rejected():
    with pytest.raises(ValueError, match="convention"):
        dct2(torch.zeros(4, 4), "unitary")
