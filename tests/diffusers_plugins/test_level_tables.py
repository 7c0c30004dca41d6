"""Per-level tables and vectorised step kernels against the stock diffusers schedulers."""

import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EDMEulerScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
)

from diffusers_plugins.level_tables import LevelTables

SCHEDULERS = {
    "ddpm": lambda: DDPMScheduler(),
    "ddim": lambda: DDIMScheduler(),
    "ddim_vpred_trailing": lambda: DDIMScheduler(prediction_type="v_prediction", timestep_spacing="trailing"),
    "euler": lambda: EulerDiscreteScheduler(),
    "euler_karras_vpred": lambda: EulerDiscreteScheduler(
        use_karras_sigmas=True, prediction_type="v_prediction"
    ),
    "edm": lambda: EDMEulerScheduler(),
    "heun": lambda: HeunDiscreteScheduler(),
}
N = 6


def _stock_trajectory(scheduler, unet, x):
    """The stock pipeline loop; DDPM's noise of call j comes from a generator seeded 100 + j."""
    scheduler.set_timesteps(N)
    states = [x]
    for j, t in enumerate(scheduler.timesteps):
        out = unet(scheduler.scale_model_input(x, t), t).sample
        kwargs = (
            {"generator": torch.Generator().manual_seed(100 + j)}
            if isinstance(scheduler, DDPMScheduler)
            else {}
        )
        x = scheduler.step(out, t, x, **kwargs).prev_sample
        states.append(x)
    return states


@pytest.mark.parametrize("name", list(SCHEDULERS))
@torch.no_grad()
def test_lockstep_step_equals_stock_step(name, unet):
    scheduler = SCHEDULERS[name]()
    tables = LevelTables(SCHEDULERS[name](), N)
    x = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(1)) * tables.init_noise_sigma
    stock = _stock_trajectory(scheduler, unet, x)
    if isinstance(scheduler, HeunDiscreteScheduler):  # one macro-step = two stock calls (one at the end)
        stock = [stock[0]] + [stock[min(2 * i, len(stock) - 1)] for i in range(1, N + 1)]
    y = x
    model = lambda inp, t, rows: unet(inp, t).sample  # noqa: E731
    for i in range(N):
        noise = torch.randn(3, 1, 8, 8, generator=torch.Generator().manual_seed(100 + i))
        y, nfe = tables.step(y, torch.full((3,), i), model, noise=noise)
        # the stock step()'s elementwise op sequence on the same UNet output: equal to the last bit
        assert torch.allclose(y, stock[i + 1], atol=1e-6, rtol=0), (name, i)
        assert nfe.tolist() == [int(tables.nfe[i])] * 3
    assert tables.base_nfe == (2 * N - 1 if name == "heun" else N)


@torch.no_grad()
def test_mixed_level_batch_equals_each_sample_alone(unet):
    """U8: one tick on a mixed-level batch == stepping each slot alone at its own level."""
    model = lambda inp, t, rows: unet(inp, t).sample  # noqa: E731
    for name in ("ddim", "heun", "edm"):
        tables = LevelTables(SCHEDULERS[name](), N)
        x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(2))
        idx = torch.tensor([0, 3, 5, 1])
        batched, nfe = tables.step(x, idx, model)
        for b in range(4):
            alone, nfe_b = tables.step(x[b : b + 1], idx[b : b + 1], model)
            # batch size 1 selects other kernels: a few ulp of the row's magnitude through one
            # macro-step (<= 8 ulp measured on AVX-512/AVX2/SSE4.1 kernels): 32 * 2**-23 * |x|
            scale = max(x[b].abs().max(), batched[b].abs().max())
            assert (batched[b] - alone[0]).abs().max() <= 32 * 2**-23 * scale, (name, b)
            assert int(nfe[b]) == int(nfe_b[0])


def test_sigma_tables_match_independent_formulas():
    ddim = DDIMScheduler()
    tab = LevelTables(DDIMScheduler(), N)
    ddim.set_timesteps(N)
    ac = ddim.alphas_cumprod
    abar = [float(ac[int(t)]) for t in ddim.timesteps] + [1.0]  # set_alpha_to_one -> final level is clean
    expected = torch.tensor([((1 - a) / a) ** 0.5 for a in abar])
    assert torch.allclose(tab.sigma, expected, rtol=1e-5)
    assert torch.allclose(tab.ve_scale, torch.tensor(abar) ** -0.5, rtol=1e-5)
    # Heun's de-duplicated levels are Euler's levels for the same training schedule.
    heun = LevelTables(HeunDiscreteScheduler(), N)
    euler = LevelTables(EulerDiscreteScheduler(beta_start=0.00085, beta_end=0.012), N)  # Heun's defaults
    assert torch.allclose(heun.sigma, euler.sigma, rtol=1e-6)
    assert heun.nfe.tolist() == [2] * (N - 1) + [1]
    assert heun.remaining_nfe(torch.tensor([0, N - 1, N])).tolist() == [2 * N - 1, 1, 0]


def test_renoise_is_the_forward_kernel():
    """U6: VE adds variance sigma_j^2 - sigma_i^2; VP scales by sqrt(a_j / a_i) and adds 1 - a_j / a_i."""
    noise = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(3))
    x = torch.randn(2, 1, 8, 8, generator=torch.Generator().manual_seed(4))
    i, j = torch.tensor([4, 5]), torch.tensor([3, 2])
    edm = LevelTables(EDMEulerScheduler(), N)
    sched = EDMEulerScheduler()
    sched.set_timesteps(N)
    s = sched.sigmas
    want = torch.stack([x[b] + (s[j[b]] ** 2 - s[i[b]] ** 2).sqrt() * noise[b] for b in range(2)])
    assert torch.allclose(edm.renoise(x, i, j, noise), want, atol=1e-5)
    ddpm = LevelTables(DDPMScheduler(), N)
    ref = DDPMScheduler()
    ref.set_timesteps(N)
    a = [float(ref.alphas_cumprod[int(t)]) for t in ref.timesteps] + [1.0]
    want = torch.stack(
        [(a[j[b]] / a[i[b]]) ** 0.5 * x[b] + (1 - a[j[b]] / a[i[b]]) ** 0.5 * noise[b] for b in range(2)]
    )
    assert torch.allclose(ddpm.renoise(x, i, j, noise), want, atol=1e-5)
    # Statistics from x = 0: per-coordinate variance sigma_j^2 - sigma_i^2.
    big = torch.randn(20000, 1, 1, 1, generator=torch.Generator().manual_seed(5))
    out = edm.renoise(torch.zeros_like(big), torch.full((20000,), 5), torch.full((20000,), 4), big)
    var = float(s[4] ** 2 - s[5] ** 2)
    assert abs(out.var().item() - var) < 4 * var * (2 / 20000) ** 0.5
    with pytest.raises(ValueError, match="idx_to"):
        edm.renoise(x, j, i, noise)


def test_unsupported_scheduler_and_bad_steps_raise():
    with pytest.raises(TypeError, match="DDPMScheduler, DDIMScheduler, EulerDiscreteScheduler"):
        LevelTables(DPMSolverMultistepScheduler(), N)
    with pytest.raises(ValueError, match="num_inference_steps"):
        LevelTables(DDIMScheduler(), 0)
    with pytest.raises(ValueError, match="variance_type"):
        LevelTables(DDPMScheduler(variance_type="learned_range"), N)
