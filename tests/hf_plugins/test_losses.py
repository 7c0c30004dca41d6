"""Numerical tests of hf_plugins.losses (full-logit functions and ``get``) against independent computations.

The references below work in probability space with explicit formulas (and an explicit O(V^2) double sum
for CSD), so they share no code path with the log-space implementation under test.
"""

import itertools
import math

import pytest
import torch

import hf_plugins.losses as L
from hf_plugins.losses.amid import assistant_log_probs
from hf_plugins.losses.kernel import log_pair

NAMES = [
    "amid",
    "csd",
    "forward_kl",
    "reverse_kl",
    "skew_forward_kl",
    "skew_reverse_kl",
    "generalized_jsd",
    "total_variation",
    "ab_divergence",
    "jeffreys",
]

# (name, options) settings covering every option branch; all are true divergences (0 iff p = q)
SETTINGS = [
    ("forward_kl", {}),
    ("reverse_kl", {}),
    ("jeffreys", {}),
    ("total_variation", {}),
    ("skew_forward_kl", {"lam": 0.1}),
    ("skew_forward_kl", {"lam": 0.7}),
    ("skew_reverse_kl", {"lam": 0.1}),
    ("skew_reverse_kl", {"lam": 0.6}),
    ("generalized_jsd", {"beta": 0.5}),
    ("generalized_jsd", {"beta": 0.1}),
    ("generalized_jsd", {"beta": 0.0}),
    ("generalized_jsd", {"beta": 1.0}),
    ("ab_divergence", {"alpha": 0.2, "beta": 0.7}),
    ("ab_divergence", {"alpha": 0.5, "beta": 0.5}),
    ("ab_divergence", {"alpha": 1.3, "beta": -0.4}),
    ("ab_divergence", {"alpha": 0.0, "beta": 0.0}),
    ("ab_divergence", {"alpha": 0.0, "beta": 0.6}),
    ("ab_divergence", {"alpha": 0.8, "beta": 0.0}),
    ("ab_divergence", {"alpha": 0.3, "beta": -0.3}),
    ("amid", {}),
    ("amid", {"alpha": -1.0, "lam": 0.3, "divergence": "kl", "order": "pr"}),
    ("amid", {"alpha": 0.0, "lam": 0.5, "divergence": "kl", "order": "qr"}),
    ("amid", {"alpha": 1.0, "lam": 0.4, "divergence": "kl", "order": "rq"}),
    ("amid", {"alpha": 3.0, "lam": 0.2, "divergence": "kl", "order": "rp"}),
    ("amid", {"alpha": -2.5, "lam": 0.7, "divergence": "ab", "order": "qr"}),
    ("amid", {"alpha": 2.0, "lam": 0.1, "divergence": "ab", "order": "rq", "ab_alpha": 0.5, "ab_beta": 0.4}),
    ("amid", {"alpha": 0.5, "lam": 0.9, "divergence": "ab", "order": "rp", "ab_alpha": 1.0, "ab_beta": 0.0}),
    ("csd", {}),
    ("csd", {"weights": ("uniform", "student")}),
    ("csd", {"weights": ("teacher", "student")}),
    ("csd", {"weights": ("mixture", "mixture"), "mix_alpha": 0.15}),
    ("csd", {"weights": ("student", "teacher"), "temperature": 1.5}),
    ("csd", {"weights": ("uniform", "uniform")}),
]
IDS = [f"{n}-{'-'.join(f'{k}={v}' for k, v in o.items())}" for n, o in SETTINGS]


# ----------------------------------------------------------------------------- independent references
def _kl(x, y):
    return (x * (x.log() - y.log())).sum(-1)


def _ab(x, y, al, be):
    """AB divergence in probability space (general branch and the closed-form limits)."""
    if al == 0 and be == 0:
        return 0.5 * ((y.log() - x.log()) ** 2).sum(-1)
    if al == 0:
        return (y**be * (be * (y.log() - x.log()) - 1) + x**be).sum(-1) / be**2
    if be == 0:
        return (x**al * (al * (x.log() - y.log()) - 1) + y**al).sum(-1) / al**2
    if al + be == 0:
        return (al * (y.log() - x.log()) + (x / y) ** al - 1).sum(-1) / al**2
    s = al + be
    return -((x**al * y**be) - al / s * x**s - be / s * y**s).sum(-1) / (al * be)


def _assistant(p, q, alpha, lam):
    if alpha == 1:
        r = p**lam * q ** (1 - lam)
    else:
        s = (1 - alpha) / 2
        r = (lam * p**s + (1 - lam) * q**s) ** (1 / s)
    return r / r.sum(-1, keepdim=True)


def _csd_double_sum(b, a, w1, w2):
    d = b - a
    diff = d.unsqueeze(-1) - d.unsqueeze(-2)  # [N, x, y] = d_x - d_y
    return 0.5 * (w2.unsqueeze(-1) * w1.unsqueeze(-2) * diff**2).sum((-1, -2))


def _csd_weight(kind, b, a, temperature=1.0, mix_alpha=0.15):
    b, a = b.detach(), a.detach()
    return {
        "student": torch.softmax(b / temperature, -1),
        "teacher": torch.softmax(a, -1),
        "uniform": torch.full_like(b, 1 / b.shape[-1]),
        "mixture": mix_alpha * torch.softmax(a, -1) + (1 - mix_alpha) * torch.softmax(b, -1),
    }[kind]


def reference_per_token(name, b, a, **o):
    """Per-token value ``[N]`` of loss ``name`` on rows ``b, a: [N, V]`` (probability space, fp64)."""
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    if name == "forward_kl":
        return _kl(p, q)
    if name == "reverse_kl":
        return _kl(q, p)
    if name == "jeffreys":
        return _kl(p, q) + _kl(q, p)
    if name == "total_variation":
        return 0.5 * (p - q).abs().sum(-1)
    if name == "skew_forward_kl":
        lam = o.get("lam", 0.1)
        return _kl(p, lam * p + (1 - lam) * q)
    if name == "skew_reverse_kl":
        lam = o.get("lam", 0.1)
        return _kl(q, lam * q + (1 - lam) * p)
    if name == "generalized_jsd":
        beta = o.get("beta", 0.5)
        if beta == 0:
            return _kl(p, q)
        if beta == 1:
            return _kl(q, p)
        m = beta * p + (1 - beta) * q
        return beta * _kl(p, m) + (1 - beta) * _kl(q, m)
    if name == "ab_divergence":
        return _ab(p, q, o.get("alpha", 0.2), o.get("beta", 0.7))
    if name == "amid":
        o = {"alpha": 0.5, "lam": 0.1, "divergence": "ab", "order": "pr", "ab_alpha": 0.2, "ab_beta": 0.7} | o
        r = _assistant(p, q, o["alpha"], o["lam"])
        x, y = {"pr": (p, r), "qr": (q, r), "rp": (r, p), "rq": (r, q)}[o["order"]]
        return _kl(x, y) if o["divergence"] == "kl" else _ab(x, y, o["ab_alpha"], o["ab_beta"])
    if name == "csd":
        o = {"weights": ("student", "student"), "temperature": 1.0, "mix_alpha": 0.15} | o
        w1, w2 = (_csd_weight(k, b, a, o["temperature"], o["mix_alpha"]) for k in o["weights"])
        return _csd_double_sum(b, a, w1, w2)
    raise KeyError(name)


def reference_loss(name, student, teacher, mask=None, **o):
    b, a = (student, teacher) if mask is None else (student[mask], teacher[mask])
    v = student.shape[-1]
    values = reference_per_token(name, b.reshape(-1, v), a.reshape(-1, v).detach(), **o)
    return values.sum() / max(values.numel(), 1)


# ----------------------------------------------------------------------------- fixtures
@pytest.fixture
def logits():
    g = torch.Generator().manual_seed(0)
    b = 3 * torch.randn(3, 5, 11, generator=g, dtype=torch.float64)
    a = 3 * torch.randn(3, 5, 11, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 11, (3, 5), generator=g)
    labels[0, :2] = -100
    labels[1, 3] = -100
    labels[2] = -100  # one fully masked sequence
    return b, a, labels != -100


def _grad(fn, b, *args, **kwargs):
    b = b.detach().clone().requires_grad_(True)
    value = fn(b, *args, **kwargs)
    (g,) = torch.autograd.grad(value, b)
    return value.detach(), g


# ----------------------------------------------------------------------------- API and validation
def test_public_names_and_registry():
    assert set(NAMES) == set(L.LOSS_NAMES)
    for name in NAMES:
        assert callable(getattr(L, name))
        assert L.get(name).name == name
    assert L.get("amid", alpha=-1.0, order="qr").options["order"] == "qr"


def test_get_configures_the_loss_it_names(logits):
    b, a, mask = logits
    for name, o in SETTINGS:
        loss = L.get(name, **o)
        assert loss.name == name and {k: loss.options[k] for k in o} == o
        # float64 on 11-entry rows: the references agree to ~1e-14, far inside 1e-10
        torch.testing.assert_close(loss(b, a, mask), reference_loss(name, b, a, mask, **o), rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("nope", {}, "valid names: amid, csd"),
        ("amid", {"lam": 1.5}, "lam"),
        ("amid", {"lam": -0.1}, "lam"),
        ("amid", {"order": "pq"}, "order"),
        ("amid", {"divergence": "js"}, "divergence"),
        ("amid", {"alpha": math.inf}, "alpha"),
        ("skew_forward_kl", {"lam": 2.0}, "lam"),
        ("skew_reverse_kl", {"lam": math.nan}, "lam"),
        ("generalized_jsd", {"beta": 1.01}, "beta"),
        ("csd", {"temperature": -1.0}, "temperature"),
        ("csd", {"temperature": 0.0}, "temperature"),
        ("csd", {"weights": ("student",)}, "weights"),
        ("csd", {"weights": "student"}, "weights"),
        ("csd", {"weights": ("student", "teachers")}, "weights"),
        ("csd", {"mix_alpha": 1.5}, "mix_alpha"),
    ],
)
def test_get_rejects_bad_names_and_options(name, options, match):
    with pytest.raises(ValueError, match=match):
        L.get(name, **options)


@pytest.mark.parametrize(
    "name, options, match",
    [
        ("amid", {"beta": 0.5}, "valid options: alpha, lam, divergence, order, ab_alpha, ab_beta"),
        ("forward_kl", {"lam": 0.1}, "valid options: none"),
    ],
)
def test_unknown_options_are_a_type_error_listing_the_valid_ones(name, options, match):
    with pytest.raises(TypeError, match=match):
        L.get(name, **options)
    with pytest.raises(TypeError, match=match):
        getattr(L, name)(torch.zeros(2, 3), torch.zeros(2, 3), **options)


def test_direct_calls_validate_options_before_work(logits):
    b, a, mask = logits
    with pytest.raises(ValueError, match="lam"):
        L.amid(b, a, mask, lam=1.2)
    with pytest.raises(ValueError, match="weights"):
        L.csd(b, a, mask, weights=("student", "x"))
    with pytest.raises(TypeError, match="alpha"):
        L.amid(b, a, alpha="0.5")


def test_input_validation(logits):
    b, a, mask = logits
    with pytest.raises(ValueError, match="vocabulary"):
        L.forward_kl(b, a[..., :10])
    with pytest.raises(ValueError, match="same shape"):
        L.forward_kl(b, a[:2])
    with pytest.raises(ValueError, match="mask must have shape"):
        L.forward_kl(b, a, mask[:2])
    with pytest.raises(TypeError, match="mask must be a bool"):
        L.forward_kl(b, a, mask.long())
    with pytest.raises(TypeError, match="float dtype"):
        L.forward_kl(b.long(), a)
    bad = b.clone()
    bad[0, 0, 0] = math.nan
    with pytest.raises(ValueError, match="NaN or \\+inf"):
        L.reverse_kl(bad, a)


# ----------------------------------------------------------------------------- values and gradients
@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_value_and_gradient_match_independent_reference(logits, name, options):
    b, a, mask = logits
    value, grad = _grad(getattr(L, name), b, a, mask, **options)
    ref_value, ref_grad = _grad(lambda x: reference_loss(name, x, a, mask, **options), b)
    assert value.dtype == torch.float64 and value.dim() == 0
    torch.testing.assert_close(value, ref_value, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(grad, ref_grad, rtol=1e-9, atol=1e-10)


# CSD's weights are detached by definition, so finite differences apply only to weights independent of b
FD_SETTINGS = [s for s in SETTINGS[::3] if s[0] != "csd"] + [("csd", {"weights": ("uniform", "teacher")})]


@pytest.mark.parametrize("name, options", FD_SETTINGS, ids=[f"{n}-{o}" for n, o in FD_SETTINGS])
def test_gradient_matches_finite_differences(name, options):
    g = torch.Generator().manual_seed(1)
    b = 2 * torch.randn(2, 7, generator=g, dtype=torch.float64, requires_grad=True)
    a = 2 * torch.randn(2, 7, generator=g, dtype=torch.float64)
    assert torch.autograd.gradcheck(lambda x: getattr(L, name)(x, a, **options), (b,), eps=1e-6, atol=1e-6)


@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_zero_and_zero_gradient_at_equality_and_nonnegative(logits, name, options):
    b, a, mask = logits
    value, grad = _grad(getattr(L, name), a, a, mask, **options)
    assert abs(value.item()) < 1e-12
    assert grad.abs().max().item() < 1e-12
    for seed in range(3):
        g = torch.Generator().manual_seed(seed)
        x, y = (
            4 * torch.randn(2, 4, 13, generator=g, dtype=torch.float64),
            torch.randn(2, 4, 13, dtype=torch.float64),
        )
        assert getattr(L, name)(x, y, **options).item() >= -1e-12


@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_shift_invariance(logits, name, options):
    b, a, mask = logits
    c_student, c_teacher = (
        5 * torch.randn(3, 5, 1, dtype=torch.float64),
        torch.randn(3, 5, 1, dtype=torch.float64),
    )
    v0, g0 = _grad(getattr(L, name), b, a, mask, **options)
    v1, g1 = _grad(getattr(L, name), b + c_student, a - 3 + c_teacher, mask, **options)
    torch.testing.assert_close(v1, v0, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(g1, g0, rtol=1e-9, atol=1e-10)


# ----------------------------------------------------------------------------- masking and reduction
@pytest.mark.parametrize("name", NAMES)
def test_masked_positions_change_nothing(logits, name):
    b, a, mask = logits
    v0, g0 = _grad(getattr(L, name), b, a, mask)
    b2, a2 = b.clone(), a.clone()
    b2[~mask] = 50 * torch.randn(int((~mask).sum()), 11, dtype=torch.float64)
    a2[~mask] = -7.0
    v1, g1 = _grad(getattr(L, name), b2, a2, mask)
    # the valid rows are the same tensors through the same kernels, so the result is bitwise the same
    torch.testing.assert_close(v1, v0, rtol=0, atol=0)
    assert torch.equal(g1[mask], g0[mask])
    assert torch.all(g1[~mask] == 0)


def test_token_level_reduction_not_per_sequence_mean():
    g = torch.Generator().manual_seed(3)
    b, a = (
        torch.randn(2, 4, 9, generator=g, dtype=torch.float64),
        torch.randn(2, 4, 9, generator=g, dtype=torch.float64),
    )
    mask = torch.tensor([[True, False, False, False], [True, True, True, True]])
    per_token = reference_per_token("reverse_kl", b.reshape(-1, 9), a.reshape(-1, 9)).reshape(2, 4)
    token_mean = per_token[mask].sum() / 5
    sequence_mean = (per_token[0, 0] + per_token[1].mean()) / 2
    assert abs(token_mean - sequence_mean) > 1e-3
    torch.testing.assert_close(L.reverse_kl(b, a, mask), token_mean, rtol=1e-12, atol=0)


@pytest.mark.parametrize("name", NAMES)
def test_empty_mask_gives_differentiable_zero(logits, name):
    b, a, mask = logits
    value, grad = _grad(getattr(L, name), b, a, torch.zeros_like(mask))
    assert value.item() == 0.0 and torch.all(grad == 0)


@pytest.mark.parametrize("name", NAMES)
def test_teacher_is_constant(logits, name):
    b, a, mask = logits
    teacher = torch.nn.Linear(11, 11, dtype=torch.float64)
    b = b.clone().requires_grad_(True)
    getattr(L, name)(b, teacher(a), mask).backward()
    assert teacher.weight.grad is None and b.grad is not None


# ----------------------------------------------------------------------------- numerics
@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_no_nan_with_extreme_and_masked_vocabulary_fp32(name, options):
    g = torch.Generator().manual_seed(4)
    b, a = torch.randn(4, 5, generator=g), torch.randn(4, 5, generator=g)
    b[:, 1] = a[:, 1] = -200.0  # probabilities underflow to exactly 0 in fp32
    ab_exponents = {"ab_divergence": ("alpha", "beta"), "amid": ("ab_alpha", "ab_beta")}.get(name, ())
    # AB with a negative exponent is unbounded as one probability alone -> 0, so one-sided underflow only without
    if all(options.get(k, 0) >= 0 for k in ab_exponents):
        b[0, 3], a[1, 2] = -300.0, -250.0  # one-sided underflow
    b[2:, 4] = a[2:, 4] = -math.inf  # masked vocabulary entry in both models
    value, grad = _grad(getattr(L, name), b, a, **options)
    assert torch.isfinite(value) and torch.isfinite(grad).all()
    assert torch.all(grad[2:, 4] == 0)


@pytest.mark.parametrize("name", NAMES)
def test_a_valid_position_with_no_shared_finite_entry_is_an_error(logits, name):
    b, a, mask = logits
    assert mask[0, 3] and not mask[0, 0]
    teacher_row_gone, student_row_gone, disjoint = (a.clone(), b.clone()), (a.clone(), b.clone()), (a.clone(), b.clone())
    teacher_row_gone[0][0, 3] = -math.inf
    student_row_gone[1][0, 3] = -math.inf
    disjoint[0][0, 3, :5], disjoint[1][0, 3, 5:] = -math.inf, -math.inf
    for teacher, student in (teacher_row_gone, student_row_gone, disjoint):
        with pytest.raises(ValueError, match="1 valid position.*no vocabulary entry finite in both"):
            getattr(L, name)(student, teacher, mask)
    # the same row at a masked-out position is never looked at: the valid rows, hence the result, are unchanged
    teacher = a.clone()
    teacher[0, 0] = -math.inf
    torch.testing.assert_close(getattr(L, name)(b, teacher, mask), getattr(L, name)(b, a, mask), rtol=0, atol=0)
    (hs, ws), (ht, wt) = (b[..., :4], torch.eye(11, 4, dtype=b.dtype)), (a[..., :4], torch.eye(11, 4, dtype=a.dtype))
    with pytest.raises(ValueError, match="no vocabulary entry finite in both"):
        L.chunked(name, hs, ws, ht, wt, mask, teacher_head_bias=torch.full((11,), -math.inf, dtype=a.dtype))


def _extreme_logits() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    g = torch.Generator().manual_seed(9)
    b, a = torch.randn(6, 7, generator=g), torch.randn(6, 7, generator=g)
    one_hot = b.clone()
    one_hot[0], one_hot[0, 0] = -1e4, 0.0  # student probabilities underflow to 0 on one side only
    partial_b, partial_a = b.clone(), a.clone()
    partial_b[:, :3], partial_a[:, 3:6] = -math.inf, -math.inf  # supports overlap in one entry per row
    return {
        "scale 1e4": (1e4 * b, 1e4 * a),
        "scale 1e30": (1e30 * b, 1e30 * a),
        "fp32 max": (torch.full((2, 5), 3e38), torch.full((2, 5), -3e38)),
        "one-sided underflow": (one_hot, a),
        "fp16 range": ((6e4 * b).clamp(-65504, 65504).half(), (6e4 * a).clamp(-65504, 65504).half()),
        "bf16 1e30": ((1e30 * b).bfloat16(), (1e30 * a).bfloat16()),
        "one shared entry": (partial_b, partial_a),
    }


@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_no_nan_or_inf_escapes_on_extreme_logits(name, options):
    """Each loss returns a finite value and gradient or raises a ValueError saying why; never NaN or inf."""
    for label, (b, a) in _extreme_logits().items():
        b = b.clone().requires_grad_(True)
        try:
            value = getattr(L, name)(b, a, **options)
        except ValueError as err:
            assert "on these logits" in str(err) and label != "one shared entry", label
            continue
        value.backward()
        assert torch.isfinite(value) and torch.isfinite(b.grad).all(), label


@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_shared_minus_inf_entries_equal_the_restricted_vocabulary(name, options):
    g = torch.Generator().manual_seed(5)
    b, a = (
        2 * torch.randn(3, 8, generator=g, dtype=torch.float64),
        2 * torch.randn(3, 8, generator=g, dtype=torch.float64),
    )
    b_inf, a_inf = b.clone(), a.clone()
    b_inf[:, 5:], a_inf[:, 5:] = -math.inf, -math.inf
    v_inf, g_inf = _grad(getattr(L, name), b_inf, a_inf, **options)
    v_cut, g_cut = _grad(getattr(L, name), b[:, :5], a[:, :5], **options)
    torch.testing.assert_close(v_inf, v_cut, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_inf[:, :5], g_cut, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("name, options", SETTINGS, ids=IDS)
def test_half_precision_input_is_computed_in_fp32_on_the_rounded_logits(logits, name, options):
    b, a, mask = logits
    for dtype in (torch.bfloat16, torch.float16):
        b_low, a_low = b.to(dtype), a.to(dtype)
        out = getattr(L, name)(b_low, a_low, mask, **options)
        # the float64 reference on the same rounded logits; fp32 sums of 11 terms of logits up to ~10, with AB
        # cancellations: ~11 * 2**-24 * 10 relative at worst, 1.2e-6 measured; in half precision the error would
        # be ~1e-3
        ref = reference_loss(name, b_low.double(), a_low.double(), mask, **options)
        assert out.dtype == torch.float32
        torch.testing.assert_close(out.double(), ref, rtol=1e-5, atol=1e-7)
    assert getattr(L, name)(b.float(), a.float(), mask, **options).dtype == torch.float32


# ----------------------------------------------------------------------------- AMiD identities
def test_amid_alpha_minus_one_is_the_arithmetic_mixture(logits):
    b, a, mask = logits
    pair = log_pair(b.reshape(-1, 11), a.reshape(-1, 11))
    for lam in (0.1, 0.35, 0.9):
        lr, _ = assistant_log_probs(pair, -1.0, lam)
        torch.testing.assert_close(lr.exp(), lam * pair.p + (1 - lam) * pair.q, rtol=0, atol=1e-12)
    # alpha = -1 gives the skew KL and skew reverse KL, value and gradient
    sigma = 0.1
    for amid_opts, fn, fn_opts in [
        ({"lam": sigma, "order": "pr"}, L.skew_forward_kl, {"lam": sigma}),
        ({"lam": 1 - sigma, "order": "qr"}, L.skew_reverse_kl, {"lam": sigma}),
    ]:
        v0, g0 = _grad(L.amid, b, a, mask, alpha=-1.0, divergence="kl", **amid_opts)
        v1, g1 = _grad(fn, b, a, mask, **fn_opts)
        torch.testing.assert_close(v0, v1, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(g0, g1, rtol=1e-10, atol=1e-12)


def test_amid_lambda_endpoints(logits):
    b, a, mask = logits
    for alpha in (-1.0, 0.5, 1.0, 3.0):
        kl = {"alpha": alpha, "divergence": "kl"}
        torch.testing.assert_close(L.amid(b, a, mask, lam=0.0, order="pr", **kl), L.forward_kl(b, a, mask))
        torch.testing.assert_close(L.amid(b, a, mask, lam=1.0, order="qr", **kl), L.reverse_kl(b, a, mask))
        assert abs(L.amid(b, a, mask, lam=0.0, order="qr", **kl).item()) < 1e-12
        assert abs(L.amid(b, a, mask, lam=1.0, order="pr", **kl).item()) < 1e-12
        torch.testing.assert_close(
            L.amid(b, a, mask, alpha=alpha, lam=0.0, divergence="ab", order="pr"),
            L.ab_divergence(b, a, mask, alpha=0.2, beta=0.7),
        )


def test_amid_assistant_geometric_harmonic_power_and_limits():
    g = torch.Generator().manual_seed(6)
    b, a = (
        3 * torch.randn(4, 9, generator=g, dtype=torch.float64),
        3 * torch.randn(4, 9, generator=g, dtype=torch.float64),
    )
    pair = log_pair(b, a)
    p, q = pair.p, pair.q
    for lam in (0.2, 0.6):
        geo, _ = assistant_log_probs(pair, 1.0, lam)
        torch.testing.assert_close(geo, torch.log_softmax(lam * a + (1 - lam) * b, -1), rtol=0, atol=1e-12)
        harmonic = 1 / (lam / p + (1 - lam) / q)
        torch.testing.assert_close(
            assistant_log_probs(pair, 3.0, lam)[0].exp(), harmonic / harmonic.sum(-1, keepdim=True)
        )
        quarter = (lam * p**0.25 + (1 - lam) * q**0.25) ** 4
        torch.testing.assert_close(
            assistant_log_probs(pair, 0.5, lam)[0].exp(), quarter / quarter.sum(-1, keepdim=True)
        )
        root = (lam * p.sqrt() + (1 - lam) * q.sqrt()) ** 2
        torch.testing.assert_close(
            assistant_log_probs(pair, 0.0, lam)[0].exp(), root / root.sum(-1, keepdim=True)
        )
        mini = torch.minimum(p, q)
        torch.testing.assert_close(
            assistant_log_probs(pair, 1e5, lam)[0].exp(), mini / mini.sum(-1, keepdim=True), rtol=0, atol=1e-3
        )
        # continuity at alpha = 1: roughly linear in eps and < 1e-3 at eps = 1e-4
        gaps = [
            (assistant_log_probs(pair, 1 - eps, lam)[0].exp() - geo.exp()).abs().max().item()
            for eps in (1e-2, 1e-3, 1e-4)
        ]
        assert gaps[0] > gaps[1] > gaps[2] and gaps[2] < 1e-3
        assert 3 < gaps[0] / gaps[1] < 30 and 3 < gaps[1] / gaps[2] < 30
        above = [
            (assistant_log_probs(pair, 1 + eps, lam)[0].exp() - geo.exp()).abs().max().item()
            for eps in (1e-3, 1e-6)
        ]
        assert above[1] < above[0] < 1e-2


def test_amid_analytic_gradient_formula():
    """The closed form d amid(kl, pr) / d b = w (r - p) - q sum w (r - p), w = (1-lam) q^s / (lam p^s + (1-lam) q^s)."""
    g = torch.Generator().manual_seed(7)
    b, a = (
        2 * torch.randn(3, 10, generator=g, dtype=torch.float64),
        2 * torch.randn(3, 10, generator=g, dtype=torch.float64),
    )
    p, q = torch.softmax(a, -1), torch.softmax(b, -1)
    for alpha, lam in [(-1.0, 0.1), (0.0, 0.3), (0.5, 0.5), (1.0, 0.2), (3.0, 0.4), (-5.0, 0.8)]:
        _, grad = _grad(L.amid, b, a, alpha=alpha, lam=lam, divergence="kl", order="pr")
        r = _assistant(p, q, alpha, lam)
        s = (1 - alpha) / 2
        w = torch.full_like(q, 1 - lam) if alpha == 1 else (1 - lam) * q**s / (lam * p**s + (1 - lam) * q**s)
        expected = (w * (r - p) - q * (w * (r - p)).sum(-1, keepdim=True)) / b.shape[0]
        torch.testing.assert_close(grad, expected, rtol=1e-9, atol=1e-12)


# ----------------------------------------------------------------------------- CSD identities
def test_csd_closed_form_and_gradient_equal_double_sum():
    g = torch.Generator().manual_seed(8)
    b, a = (
        3 * torch.randn(4, 11, generator=g, dtype=torch.float64),
        3 * torch.randn(4, 11, generator=g, dtype=torch.float64),
    )
    kinds = ("student", "teacher", "uniform", "mixture")
    for w1_kind, w2_kind in itertools.product(kinds, kinds):
        opts = {"weights": (w1_kind, w2_kind), "temperature": 1.3, "mix_alpha": 0.4}
        w1, w2 = (_csd_weight(k, b, a, 1.3, 0.4) for k in (w1_kind, w2_kind))
        value, grad = _grad(L.csd, b, a, **opts)
        torch.testing.assert_close(value, _csd_double_sum(b, a, w1, w2).mean(), rtol=1e-12, atol=0)
        d = b - a
        paper = w2 * (d - (w1 * d).sum(-1, keepdim=True)) + w1 * (d - (w2 * d).sum(-1, keepdim=True))
        torch.testing.assert_close(grad, paper / 4, rtol=1e-10, atol=1e-13)
        swapped = L.csd(b, a, weights=(w2_kind, w1_kind), temperature=1.3, mix_alpha=0.4)
        torch.testing.assert_close(swapped, value, rtol=1e-12, atol=0)


def test_csd_student_student_tau1_is_twice_reverse_kl_gradient(logits):
    b, a, mask = logits
    _, g_csd = _grad(L.csd, b, a, mask)
    _, g_rkl = _grad(L.reverse_kl, b, a, mask)
    torch.testing.assert_close(g_csd, 2 * g_rkl, rtol=1e-8, atol=1e-10)
    _, g_hot = _grad(L.csd, b, a, mask, temperature=1.5)
    assert (g_hot - 2 * g_rkl).abs().max() > 1e-2
    # the (S,S) true value is Var_q(d)
    q, d = torch.softmax(b[mask], -1), (b - a)[mask]
    var = (q * (d - (q * d).sum(-1, keepdim=True)) ** 2).sum(-1)
    torch.testing.assert_close(L.csd(b, a, mask), var.mean(), rtol=1e-12, atol=0)


def test_csd_zero_exactly_for_constant_residual_unlike_logit_mse(logits):
    b, a, mask = logits
    for weights in itertools.product(("student", "teacher", "uniform", "mixture"), repeat=2):
        value, grad = _grad(L.csd, a + 1.0, a, mask, weights=weights)
        assert abs(value.item()) < 1e-12 and grad.abs().max() < 1e-12
        assert L.csd(b, a, mask, weights=weights).item() > 1e-3


# ----------------------------------------------------------------------------- TRL anchor
@pytest.mark.parametrize("beta", [0.0, 0.1, 0.5, 0.9, 1.0])
def test_generalized_jsd_equals_trl_gkd(logits, beta):
    from trl.experimental.gkd import GKDTrainer

    b, a, mask = logits
    labels = torch.where(
        mask, torch.ones_like(mask, dtype=torch.long), torch.full_like(mask, -100, dtype=torch.long)
    )
    ours, g_ours = _grad(L.generalized_jsd, b, a, mask, beta=beta)
    trl, g_trl = _grad(lambda x: GKDTrainer.generalized_jsd_loss(x, a, labels=labels, beta=beta), b)
    torch.testing.assert_close(ours, trl, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(g_ours, g_trl, rtol=1e-9, atol=1e-12)


def test_amid_repo_js_distance_convention_matches_trl(logits):
    """The AMiD repo's js_distance(lam=0.1) (m = 0.9 p + 0.1 q) is TRL's beta = 0.9."""
    b, a, mask = logits
    p, q = torch.softmax(a[mask], -1), torch.softmax(b[mask], -1)
    m = 0.9 * p + 0.1 * q
    js = (0.1 * _kl(q, m) + 0.9 * _kl(p, m)).mean()
    torch.testing.assert_close(L.generalized_jsd(b, a, mask, beta=0.9), js, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------- AB special branches
def test_ab_divergence_special_cases_and_branch_continuity(logits):
    b, a, mask = logits
    fkl, rkl = L.forward_kl(b, a, mask), L.reverse_kl(b, a, mask)
    torch.testing.assert_close(L.ab_divergence(b, a, mask, alpha=1.0, beta=0.0), fkl, rtol=1e-12, atol=0)
    torch.testing.assert_close(L.ab_divergence(b, a, mask, alpha=1.0, beta=1e-5), fkl, rtol=1e-4, atol=0)
    torch.testing.assert_close(L.ab_divergence(b, a, mask, alpha=0.0, beta=1.0), rkl, rtol=1e-12, atol=0)
    torch.testing.assert_close(L.ab_divergence(b, a, mask, alpha=1e-5, beta=1.0), rkl, rtol=1e-4, atol=0)
    p, q = torch.softmax(a[mask], -1), torch.softmax(b[mask], -1)
    hellinger = 2 * ((p.sqrt() - q.sqrt()) ** 2).sum(-1).mean()
    torch.testing.assert_close(
        L.ab_divergence(b, a, mask, alpha=0.5, beta=0.5), hellinger, rtol=1e-12, atol=0
    )
    log_sq = 0.5 * ((q.log() - p.log()) ** 2).sum(-1).mean()
    torch.testing.assert_close(L.ab_divergence(b, a, mask, alpha=0.0, beta=0.0), log_sq, rtol=1e-12, atol=0)
    near = L.ab_divergence(b, a, mask, alpha=0.3, beta=-0.3 + 1e-4)
    torch.testing.assert_close(near, L.ab_divergence(b, a, mask, alpha=0.3, beta=-0.3), rtol=1e-3, atol=0)
    torch.testing.assert_close(
        L.ab_divergence(b, a, mask, alpha=1e-4, beta=0.6),
        L.ab_divergence(b, a, mask, alpha=0.0, beta=0.6),
        rtol=1e-3,
        atol=0,
    )


def test_jeffreys_and_total_variation_facts(logits):
    b, a, mask = logits
    torch.testing.assert_close(
        L.jeffreys(b, a, mask), L.forward_kl(b, a, mask) + L.reverse_kl(b, a, mask), rtol=1e-12, atol=0
    )
    tv = L.total_variation(b, a, mask)
    assert 0 <= tv.item() <= 1
    torch.testing.assert_close(tv, L.total_variation(a, b, mask), rtol=1e-12, atol=0)
