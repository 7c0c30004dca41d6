"""hf_plugins.losses.chunked and the closed-form per-chunk gradients: equal to the full-logit losses."""

import importlib
import importlib.util
import math
from pathlib import Path

import pytest
import torch

import hf_plugins.losses as L

_spec = importlib.util.spec_from_file_location("_loss_settings", Path(__file__).with_name("test_losses.py"))
_settings = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_settings)
SETTINGS, IDS = _settings.SETTINGS, _settings.IDS


def _heads(dtype=torch.float64, seed=0, vocab=13):
    g = torch.Generator().manual_seed(seed)
    student = (
        torch.randn(3, 5, 6, dtype=dtype, generator=g),
        torch.randn(vocab, 6, dtype=dtype, generator=g),
        torch.randn(vocab, dtype=dtype, generator=g),
    )
    teacher = (
        2 * torch.randn(3, 5, 8, dtype=dtype, generator=g),
        torch.randn(vocab, 8, dtype=dtype, generator=g),
        torch.randn(vocab, dtype=dtype, generator=g),
    )
    mask = torch.rand(3, 5, generator=g) > 0.3
    mask[1] = False
    return student, teacher, mask


@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_closed_form_gradient_equals_autograd(name, options):
    """Every kernel's closed-form value_and_grad equals autograd through its value, masked vocabulary included."""
    g = torch.Generator().manual_seed(1)
    b = 3 * torch.randn(6, 9, generator=g, dtype=torch.float64)
    a = 3 * torch.randn(6, 9, generator=g, dtype=torch.float64)
    b[:2, 7:] = a[:2, 7:] = -math.inf  # shared masked entries
    b[3, 0], a[4, 1] = -math.inf, -math.inf  # one-sided masked entries
    b[5, 2] = a[5, 2] = -200.0
    kernel = L.get(name, **options)
    assert type(kernel).value_and_grad is not L.Loss.value_and_grad  # a closed form, not the fallback
    values, grad = kernel.value_and_grad(b, a)
    ref_values, ref_grad = L.Loss.value_and_grad(kernel, b, a)
    torch.testing.assert_close(values, ref_values, rtol=1e-12, atol=1e-14)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-10, atol=1e-13)


# every setting with chunks of 2 positions, and some with the automatic chunk size (one chunk here)
CHUNK_CASES = [(n, o, 2) for n, o in SETTINGS] + [(n, o, None) for n, o in SETTINGS[::4]]
CHUNK_IDS = [f"{i}-{c}" for i, c in zip(IDS + IDS[::4], [c for _, _, c in CHUNK_CASES])]


@pytest.mark.parametrize("name, options, chunk_size", CHUNK_CASES, ids=CHUNK_IDS)
def test_chunked_equals_full_logits_in_value_and_gradient(name, options, chunk_size):
    (hs, ws, bs), (ht, wt, bt), mask = _heads()
    params = [x.clone().requires_grad_(True) for x in (hs, ws, bs)]
    value = L.chunked(
        name,
        params[0],
        params[1],
        ht,
        wt,
        mask,
        chunk_size,
        student_head_bias=params[2],
        teacher_head_bias=bt,
        **options,
    )
    grads = torch.autograd.grad(value, params)
    ref_params = [x.clone().requires_grad_(True) for x in (hs, ws, bs)]
    ref = L.get(name, **options)(ref_params[0] @ ref_params[1].T + ref_params[2], ht @ wt.T + bt, mask)
    ref_grads = torch.autograd.grad(ref, ref_params)
    assert value.dtype == torch.float64 and value.dim() == 0
    torch.testing.assert_close(value, ref, rtol=1e-11, atol=1e-12)
    for got, want in zip(grads, ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


def test_chunked_without_bias_without_mask_and_scaled_backward():
    (hs, ws, _), (ht, wt, _), _ = _heads(seed=2)
    params = [x.clone().requires_grad_(True) for x in (hs, ws)]
    (3.0 * L.chunked("amid", params[0], params[1], ht, wt, chunk_size=3, alpha=-0.5)).backward()
    ref_params = [x.clone().requires_grad_(True) for x in (hs, ws)]
    (3.0 * L.amid(ref_params[0] @ ref_params[1].T, ht @ wt.T, alpha=-0.5)).backward()
    for got, want in zip(params, ref_params):
        torch.testing.assert_close(got.grad, want.grad, rtol=1e-10, atol=1e-12)


def test_chunked_projects_at_most_chunk_size_rows_at_a_time(monkeypatch):
    (hs, ws, bs), (ht, wt, bt), mask = _heads()
    seen = []
    real = L.CSDLoss.value_and_grad

    def recording(self, b, a):
        seen.append(tuple(b.shape))
        return real(self, b, a)

    monkeypatch.setattr(L.CSDLoss, "value_and_grad", recording)
    hs = hs.clone().requires_grad_(True)
    L.chunked("csd", hs, ws, ht, wt, mask, chunk_size=2).backward()
    assert all(rows <= 2 and vocab == 13 for rows, vocab in seen)
    assert sum(rows for rows, _ in seen) == int(mask.sum())


def test_default_chunk_size_bounds_the_chunk_to_about_2_pow_23_logits():
    assert L.default_chunk_size(32000) == 256 and L.default_chunk_size(128000) == 64
    assert L.default_chunk_size(256000) == 32 and L.default_chunk_size(13) == 1024
    assert L.default_chunk_size(10**7) == 8
    for vocab in (1000, 50257, 151936):
        rows = L.default_chunk_size(vocab)
        assert rows % 8 == 0 and (rows * vocab <= 1 << 23 or rows == 8)


def test_chunked_and_full_logit_losses_are_deterministic():
    (hs, ws, bs), (ht, wt, bt), mask = _heads(dtype=torch.float32, seed=3)
    runs = []
    for _ in range(2):
        h = hs.clone().requires_grad_(True)
        value = L.chunked("amid", h, ws, ht, wt, mask, chunk_size=3) + L.csd(h @ ws.T, ht @ wt.T, mask)
        value.backward()
        runs.append((value.detach(), h.grad))
    # the same tensors through the same kernels twice in one process: bitwise by construction
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])


def test_chunked_half_precision_and_no_grad():
    (hs, ws, bs), (ht, wt, bt), mask = _heads(dtype=torch.float32)
    h16, w16 = hs.bfloat16().requires_grad_(True), ws.bfloat16().requires_grad_(True)
    value = L.chunked("generalized_jsd", h16, w16, ht.bfloat16(), wt.bfloat16(), mask, beta=0.3)
    value.backward()
    assert (
        value.dtype == torch.float32 and h16.grad.dtype == torch.bfloat16 and w16.grad.dtype == torch.bfloat16
    )
    h32, w32 = h16.detach().float().requires_grad_(True), w16.detach().float().requires_grad_(True)
    ref = L.generalized_jsd(h32 @ w32.T, ht.bfloat16().float() @ wt.bfloat16().float().T, mask, beta=0.3)
    ref.backward()
    torch.testing.assert_close(value, ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(w16.grad.float(), w32.grad.bfloat16().float(), rtol=2e-2, atol=1e-4)
    with torch.no_grad():
        no_grad_value = L.chunked("generalized_jsd", h16, w16, ht.bfloat16(), wt.bfloat16(), mask, beta=0.3)
    assert no_grad_value.grad_fn is None
    torch.testing.assert_close(no_grad_value, value.detach(), rtol=1e-6, atol=1e-7)


def test_chunked_empty_mask_and_constant_teacher():
    (hs, ws, bs), (ht, wt, bt), mask = _heads()
    hs, ws = hs.requires_grad_(True), ws.requires_grad_(True)
    wt = wt.clone().requires_grad_(True)
    value = L.chunked("amid", hs, ws, ht, wt, torch.zeros_like(mask))
    value.backward()
    assert value.item() == 0.0 and torch.all(hs.grad == 0) and torch.all(ws.grad == 0)
    L.chunked("csd", hs, ws, ht, wt, mask).backward()
    assert wt.grad is None


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"name": "nope"}, ValueError, "valid names"),
        ({"name": "amid", "lam": 2.0}, ValueError, "lam"),
        ({"name": "csd", "beta": 0.5}, TypeError, "valid options"),
        ({"chunk_size": 0}, ValueError, "chunk_size"),
        ({"chunk_size": True}, ValueError, "chunk_size"),
        ({"chunk_size": 2.5}, ValueError, "chunk_size"),
        ({"teacher_head_weight": torch.randn(12, 8, dtype=torch.float64)}, ValueError, "vocabulary size"),
        ({"student_head_weight": torch.randn(13, 5, dtype=torch.float64)}, ValueError, "student_head_weight"),
        ({"teacher_hidden": torch.randn(3, 4, 8, dtype=torch.float64)}, ValueError, "leading"),
        ({"student_head_bias": torch.randn(12, dtype=torch.float64)}, ValueError, "student_head_bias"),
        ({"mask": torch.ones(3, 5, dtype=torch.long)}, TypeError, "mask"),
        ({"student_hidden": torch.ones(3, 5, 6, dtype=torch.long)}, TypeError, "student_hidden"),
    ],
)
def test_chunked_rejects_bad_input(kwargs, error, match):
    (hs, ws, bs), (ht, wt, bt), mask = _heads()
    call = {
        "name": "generalized_jsd",
        "student_hidden": hs,
        "student_head_weight": ws,
        "teacher_hidden": ht,
        "teacher_head_weight": wt,
        "mask": mask,
    } | kwargs
    with pytest.raises(error, match=match):
        L.chunked(**call)


def test_chunked_on_tiny_causal_lms_matches_full_logits():
    from hf_plugins import tiny_causal_lm

    student, teacher = tiny_causal_lm(64, "student", seed=0), tiny_causal_lm(64, "teacher", seed=1)
    ids = torch.randint(0, 64, (2, 9), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(2, 9, dtype=torch.bool)
    mask[0, :3] = False
    with torch.no_grad():
        t_out = teacher(ids, output_hidden_states=True)
    s_out = student(ids, output_hidden_states=True)
    full = L.amid(s_out.logits, t_out.logits, mask, alpha=0.0, lam=0.3)
    full_grads = torch.autograd.grad(full, list(student.parameters()), allow_unused=True)
    s_out = student(ids, output_hidden_states=True)
    lean = L.chunked(
        "amid",
        s_out.hidden_states[-1],
        student.get_output_embeddings().weight,
        t_out.hidden_states[-1],
        teacher.get_output_embeddings().weight,
        mask,
        chunk_size=4,
        alpha=0.0,
        lam=0.3,
    )
    lean_grads = torch.autograd.grad(lean, list(student.parameters()), allow_unused=True)
    torch.testing.assert_close(lean, full, rtol=1e-5, atol=1e-6)
    for got, want in zip(lean_grads, full_grads):
        assert (got is None) == (want is None)
        if got is not None:
            torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-6)
