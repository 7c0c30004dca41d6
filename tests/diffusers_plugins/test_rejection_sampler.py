"""Rejection-sampler facts (spec F.5 U1-U7, U10-U12, U14) on an exact Gaussian denoiser."""

import numpy as np
import pytest
import torch
from diffusers import EulerDiscreteScheduler, HeunDiscreteScheduler

from diffusers_plugins.level_tables import LevelTables
from diffusers_plugins.rejection_sampler import (
    RejectionSampler,
    SampleStreams,
    acceptance_test,
    thresholds_from_statistics,
)

N = 8
SHAPE = (1, 2, 2)


def gaussian_model(tables, s=0.5):
    """Epsilon-prediction of the exact denoiser of N(0, s^2 I) data (Euler/Heun input convention)."""

    def fn(inp, t, sample_ids):
        idx = (tables.timesteps[None, :] == t[:, None]).float().argmax(1)
        sigma = tables.sigma[idx].view(-1, 1, 1, 1)
        x = inp * (sigma**2 + 1).sqrt()
        return (x - s**2 / (s**2 + sigma**2) * x) / sigma

    return fn


def make(
    n=24, log_ratio_fn=None, scheduler=EulerDiscreteScheduler, percentile=0.75, clamp=True, warm=64, **kw
):
    tables = LevelTables(scheduler(), N)
    model = gaussian_model(tables)
    latents = torch.randn(n, *SHAPE, generator=torch.Generator().manual_seed(0)) * tables.init_noise_sigma
    log_m = log_m_t = None
    if log_ratio_fn is not None:
        warmup = RejectionSampler(tables, model, log_ratio_fn, SampleStreams(range(1000, 1000 + warm)))
        wl = torch.randn(warm, *SHAPE, generator=torch.Generator().manual_seed(9)) * tables.init_noise_sigma
        marginal, transition = warmup.warmup_statistics(wl, torch.arange(warm))
        log_m = thresholds_from_statistics(marginal, percentile, clamp)
        log_m_t = thresholds_from_statistics(transition, percentile, clamp)
    sampler = RejectionSampler(
        tables, model, log_ratio_fn, SampleStreams(range(n)), log_m=log_m, log_m_transition=log_m_t, **kw
    )
    return sampler, latents


def run(n=24, log_ratio_fn=None, **kw):
    sampler, latents = make(n, log_ratio_fn, **kw)
    return sampler.run(latents, torch.arange(n))


def constant(c):
    return lambda x, sigma, sids: torch.full((x.shape[0],), float(c))


def level_logit(x, sigma, sids):
    """x-independent, decreasing in the level: -0.3 * level (spec U3), via sigma's rank."""
    levels = LevelTables(EulerDiscreteScheduler(), N).sigma
    idx = (levels[None, :] == sigma[:, None]).float().argmax(1)
    return -0.3 * idx.float()


def noisy_logit(x, sigma, sids):
    return 0.7 * torch.tanh(x.flatten(1).mean(1))


def test_acceptance_law_and_ties():
    """U4: acceptance rate is min(1, e^delta) within binomial error; delta = 0 always accepts."""
    u = torch.rand(200_000, generator=torch.Generator().manual_seed(0))
    for delta in (-2.0, -0.5, 0.0, 0.7):
        rate = acceptance_test(torch.full_like(u, delta), torch.zeros(()), u).float().mean().item()
        p = min(1.0, float(np.exp(delta)))
        assert abs(rate - p) <= 4 * (p * (1 - p) / u.numel()) ** 0.5 + 1e-12, (delta, rate, p)
    top = torch.tensor([1 - 2**-24, 0.0])  # largest float32 below 1: log(u + 1e-7) rounds to 0
    assert acceptance_test(torch.zeros(2), torch.zeros(()), top).all()


def test_thresholds_are_clamped_linear_quantiles():
    """U5: log M_k = max(0, quantile_linear(values[:, k], gamma)); gamma = 1 is the maximum."""
    values = torch.randn(37, 5, generator=torch.Generator().manual_seed(1)) - 0.3
    for gamma in (0.0, 0.5, 0.75, 1.0):
        ref = np.quantile(values.numpy().astype(np.float64), gamma, axis=0, method="linear")
        assert np.allclose(thresholds_from_statistics(values, gamma, False).numpy(), ref, atol=1e-6)
        assert np.allclose(
            thresholds_from_statistics(values, gamma, True).numpy(), np.maximum(ref, 0), atol=1e-6
        )
    assert torch.allclose(thresholds_from_statistics(values, 1.0, False), values.max(0).values.double())
    with pytest.raises(ValueError, match="rejection_percentile"):
        thresholds_from_statistics(values, 1.5)


def test_constant_zero_logit_is_exactly_the_base_sampler():
    """U1 + NFE accounting: no rejections, bitwise equal outputs, base NFE per sample."""
    base = run(num_slots=5)
    rs = run(log_ratio_fn=constant(0.0), num_slots=5)
    assert torch.equal(rs.samples, base.samples)
    assert rs.rejections.sum() == 0 and rs.restarts.sum() == 0
    assert rs.nfe.tolist() == [N] * 24 and base.nfe.tolist() == [N] * 24
    assert rs.discriminator_evals.tolist() == [N + 1] * 24  # start test + one test per level
    assert (rs.tests_per_level == rs.accepts_per_level).all() and rs.tests_per_level.tolist() == [24] * (
        N + 1
    )
    heun = run(scheduler=HeunDiscreteScheduler, log_ratio_fn=constant(0.0))
    assert heun.nfe.tolist() == [2 * N - 1] * 24  # U12: a Heun macro-step costs 2, the last one 1


def test_constant_logits_and_the_clamp():
    """U2: c > 0 equals base; c < 0 with the clamp only rejects at the start level."""
    base = run()
    assert torch.equal(run(log_ratio_fn=constant(1.3)).samples, base.samples)
    neg = run(log_ratio_fn=constant(-1.0))
    assert neg.rejections.sum() > 0
    assert (neg.tests_per_level[1:] == neg.accepts_per_level[1:]).all()
    accept_rate = neg.accepts_per_level[0].item() / neg.tests_per_level[0].item()
    assert abs(accept_rate - np.exp(-1.0)) < 0.2
    assert torch.equal(run(log_ratio_fn=constant(-1.0), clamp=False).samples, base.samples)


def test_level_dependent_offset_and_the_clamp():
    """U3: an x-independent, level-dependent logit never rejects without the clamp but does with it."""
    base = run()
    free = run(log_ratio_fn=level_logit, clamp=False)
    assert free.rejections.sum() == 0 and torch.equal(free.samples, base.samples)
    clamped = run(n=100, log_ratio_fn=level_logit, clamp=True, max_nfe_per_sample=4 * N)
    assert clamped.rejections.sum() > 0
    # Level 0 (logit 0 against log M = 0) always accepts. At level 1 the transition test (Delta = -0.3
    # against log M' = 0) and the marginal re-test (log L = -0.3 against log M = 0), and at level N the
    # transition test, all accept with probability e^-0.3 (each with a fresh uniform).
    assert clamped.tests_per_level[0] == clamped.accepts_per_level[0] > 0
    tests = int(clamped.tests_per_level[1] + clamped.tests_per_level[N])
    rate = int(clamped.accepts_per_level[1] + clamped.accepts_per_level[N]) / tests
    p = float(np.exp(-0.3))
    assert tests > 300 and abs(rate - p) <= 4 * (p * (1 - p) / tests) ** 0.5, (rate, p, tests)


def test_budget_restarts_and_accounting():
    """U7: with max_nfe_per_sample = base NFE every emitted trajectory costs exactly the base NFE."""
    rs = run(n=16, log_ratio_fn=noisy_logit, percentile=0.9, max_nfe_per_sample=N)
    assert rs.trajectory_nfe.tolist() == [N] * 16
    assert rs.restarts.sum() > 0
    assert (rs.nfe >= rs.trajectory_nfe).all() and rs.nfe.sum() > 16 * N
    loose = run(n=16, log_ratio_fn=noisy_logit, percentile=0.9, max_nfe_per_sample=2 * N)
    assert (loose.trajectory_nfe <= 2 * N).all()


def test_same_seeds_same_result_for_any_slot_count():
    """U14 and batch invariance: per-sample streams make results independent of num_slots."""
    a = run(n=12, log_ratio_fn=noisy_logit, percentile=0.9, num_slots=12)
    b = run(n=12, log_ratio_fn=noisy_logit, percentile=0.9, num_slots=12)
    c = run(n=12, log_ratio_fn=noisy_logit, percentile=0.9, num_slots=5)
    assert a.rejections.sum() > 0
    assert torch.equal(a.samples, b.samples) and torch.equal(a.rejections, b.rejections)  # same run twice
    # the Gaussian model is elementwise (+ - * / sqrt, all correctly rounded): no batch-size effect
    assert torch.allclose(a.samples, c.samples, atol=1e-6) and torch.equal(a.nfe, c.nfe)
    assert torch.equal(a.rejections, c.rejections) and torch.equal(a.tests_per_level, c.tests_per_level)


def test_hopeless_discriminator_terminates_with_a_clear_error():
    sampler, latents = make(n=4, log_ratio_fn=constant(-30.0), max_ticks=40)
    with pytest.raises(RuntimeError, match="max_ticks=40"):
        sampler.run(latents, torch.arange(4))


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match=r"log-ratio of shape \["):
        run(n=3, log_ratio_fn=lambda x, s, i: torch.zeros(x.shape[0], 1))
    with pytest.raises(ValueError, match="non-finite"):
        run(n=3, log_ratio_fn=lambda x, s, i: torch.full((x.shape[0],), float("nan")))
    with pytest.raises(ValueError, match="backsteps"):
        make(n=3, backsteps=0)
    with pytest.raises(ValueError, match="max_nfe_per_sample"):
        make(n=3, max_nfe_per_sample=N - 1)


def test_oracle_ratio_corrects_wrong_mode_weights():
    """Distribution-level check: a model with mode weights 0.8/0.2 (truth 0.5/0.5) sampled with the
    exact log-ratio log q_sigma - log m_sigma moves the weights toward the truth (spec F, 1-D)."""
    from diffusers import EDMEulerScheduler

    mu, s, sd = torch.tensor([2.0, -2.0], dtype=torch.float64), 0.3, 0.5
    w_model, w_true = (
        torch.tensor([0.8, 0.2], dtype=torch.float64),
        torch.tensor([0.5, 0.5], dtype=torch.float64),
    )

    def log_mix(x, w, sigma):
        var = (s**2 + sigma.double() ** 2)[:, None]
        return torch.logsumexp(
            w.log() - (x.double().flatten(1) - mu) ** 2 / (2 * var) - 0.5 * var.log(), dim=1
        )

    def model_fn(inp, t, sids):  # EDM-preconditioned exact denoiser of the model mixture
        sigma = torch.exp(4 * t.double())[:, None]
        x = inp.double().flatten(1) * (sigma**2 + sd**2).sqrt()
        var = s**2 + sigma**2
        r = torch.softmax(w_model.log() - (x - mu) ** 2 / (2 * var), dim=1)
        den = (r * (mu + s**2 / var * (x - mu))).sum(1, keepdim=True)
        out = (den - sd**2 / (sigma**2 + sd**2) * x) / (sigma * sd / (sigma**2 + sd**2).sqrt())
        return out.float().view_as(inp)

    def oracle(x, sigma, sids):
        return (log_mix(x, w_true, sigma) - log_mix(x, w_model, sigma)).float()

    tables = LevelTables(EDMEulerScheduler(), 18)
    n = 600
    base = RejectionSampler(tables, model_fn, None, SampleStreams(range(n)), num_slots=n)
    latents = torch.randn(n, 1, 1, 1, generator=torch.Generator().manual_seed(0)) * tables.init_noise_sigma
    base_frac = (base.run(latents, torch.arange(n)).samples > 0).double().mean().item()
    warm = RejectionSampler(tables, model_fn, oracle, SampleStreams(range(10_000, 10_400)), num_slots=400)
    wl = torch.randn(400, 1, 1, 1, generator=torch.Generator().manual_seed(1)) * tables.init_noise_sigma
    marginal, transition = warm.warmup_statistics(wl, torch.arange(400))
    fracs = {}
    for gamma in (0.9, 1.0):  # log M is a gamma-quantile, not a bound: gamma = 1 corrects (almost) fully
        rs = RejectionSampler(
            tables,
            model_fn,
            oracle,
            SampleStreams(range(n)),
            num_slots=n,
            log_m=thresholds_from_statistics(marginal, gamma),
            log_m_transition=thresholds_from_statistics(transition, gamma),
        )
        fracs[gamma] = (rs.run(latents, torch.arange(n)).samples > 0).double().mean().item()
    assert abs(base_frac - 0.8) < 0.06  # the base sampler reproduces the wrong model
    assert fracs[0.9] < base_frac - 0.08, (base_frac, fracs)
    assert abs(fracs[1.0] - 0.5) < 0.4 * abs(base_frac - 0.5), (base_frac, fracs)


def test_non_finite_model_or_discriminator_output_names_the_level():
    """NaN from the UNet or the discriminator is an error naming the level, in sampling and warm-up."""
    tables = LevelTables(EulerDiscreteScheduler(), N)
    model = gaussian_model(tables)
    third = tables.timesteps[3]

    def nan_at_level_3(inp, t, sids):
        out = model(inp, t, sids)
        return torch.where((t == third).view(-1, 1, 1, 1), torch.nan, out)

    def disc_nan_at_level_2(x, sigma, sids):
        return torch.where(sigma == tables.sigma[2], torch.nan, torch.zeros(len(sigma)))

    latents = torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(0)) * tables.init_noise_sigma
    zeros = torch.zeros(N + 1)
    cases = [
        (nan_at_level_3, None, r"UNet step .* level\(s\) \[3\]"),
        (model, disc_nan_at_level_2, r"log-ratio .* level\(s\) \[2\]"),
    ]
    for model_fn, disc, message in cases:
        for warmup in (False, True):
            sampler = RejectionSampler(
                tables,
                model_fn,
                disc or constant(0.0),
                SampleStreams(range(4)),
                log_m=zeros,
                log_m_transition=zeros,
            )
            with pytest.raises(ValueError, match="non-finite") as err:
                (sampler.warmup_statistics if warmup else sampler.run)(latents, torch.arange(4))
            assert err.match(message)
