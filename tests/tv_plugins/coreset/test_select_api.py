"""select_coreset contract: budgets, balance, determinism, fraction 1.0, save/load, input validation."""

import math

import pytest
import torch
from torch import nn

from tv_plugins.coreset import METHODS, CoresetSelection, per_class_budgets, register, select_coreset

ALL_METHODS = sorted(METHODS)


def _run(blobs, mlp, method, fraction=0.3, **kw):
    kw.setdefault("warmup_epochs", 2 if method == "forgetting" else 0)
    return select_coreset(blobs, method, fraction, model=mlp, progress=False, batch_size=8, **kw)


def test_registry_holds_every_method_of_the_issue():
    assert set(METHODS) == {"lcmat", "uniform", "herding", "kcenter_greedy", "forgetting", "grand", "el2n",
                            "uncertainty", "craig", "gradmatch", "glister", "submodular"}


def test_a_method_sees_one_group_and_select_coreset_does_budgets_and_order(blobs, monkeypatch):
    monkeypatch.setattr(METHODS, "_entries", dict(METHODS._entries))  # the registration ends with the test
    seen = []

    @register("last_k", needs_model=False)
    def last_k(group, k, generator, offset=0):
        seen.append((group.label, group.indices.clone(), k, group.outputs))
        picks = torch.arange(len(group) - k - offset, len(group) - offset).flip(0)  # greedy order: last first
        return picks, torch.arange(k, dtype=torch.float64)  # weight = greedy rank

    sel = select_coreset(blobs, "last_k", 0.3, progress=False)
    labels = blobs.targets
    expected_indices, expected_weights = [], []
    for c, (label, indices, k, outputs) in enumerate(seen):
        assert label == c and outputs is None
        assert torch.equal(indices, torch.nonzero(labels == c).flatten())
        assert k == max(1, math.floor(0.3 * len(indices) + 0.5))
        expected_indices += indices[-k:].tolist()
        expected_weights += list(range(k - 1, -1, -1))  # ascending indices: the last pick (rank k-1) first
    assert sel.indices.tolist() == expected_indices
    assert sel.weights.tolist() == expected_weights
    with pytest.raises(TypeError, match=r"accepted options: \['offset'\]"):
        select_coreset(blobs, "last_k", 0.3, progress=False, shift=1)
    with pytest.raises(RuntimeError, match="invalid selection"):
        select_coreset(blobs, "last_k", 1.0, progress=False, offset=1)  # k picks of n - 1 positions: out of range


def test_per_class_budgets_round_half_up_with_at_least_one():
    labels = torch.tensor([0] * 5 + [1] * 150 + [3] * 30)
    # 0.01: 0.05 -> 1 (min 1), 1.5 -> 2 (half up, banker's would give 2 too), 0.3 -> 1
    assert per_class_budgets(labels, 0.01) == {0: 1, 1: 2, 3: 1}
    # 0.05 * 30 = 1.5 -> 2 (banker's rounding would give 2), 0.05 * 150 = 7.5 -> 8 (banker's: 8), 0.25 -> 1
    assert per_class_budgets(labels, 0.05) == {0: 1, 1: 8, 3: 2}
    # 0.5 * 5 = 2.5 -> 3 (banker's rounding would give 2)
    assert per_class_budgets(labels, 0.5)[0] == 3
    for f in (0.013, 0.2, 0.77, 1.0):
        expected = {c: max(1, math.floor(f * n + 0.5)) for c, n in ((0, 5), (1, 150), (3, 30))}
        assert per_class_budgets(labels, f) == expected


@pytest.mark.parametrize("method", ALL_METHODS)
def test_every_method_is_balanced_budgeted_deterministic_and_complete_at_fraction_one(blobs, mlp, method):
    sel = _run(blobs, mlp, method)
    budgets = per_class_budgets(blobs.targets, 0.3)
    assert sel.per_class_counts == budgets
    labels = blobs.targets[sel.indices]
    for c, k in budgets.items():
        chosen = sel.indices[labels == c]
        assert len(chosen) == k and torch.equal(chosen, chosen.sort().values)  # ascending within class
    assert torch.equal(labels, labels.sort(stable=True).values)  # class-major
    assert len(torch.unique(sel.indices)) == len(sel.indices)
    assert torch.isfinite(sel.weights).all() and (sel.weights >= 0).all()
    again = _run(blobs, mlp, method)
    assert torch.equal(sel.indices, again.indices) and torch.equal(sel.weights, again.weights)  # one process, twice
    everything = _run(blobs, mlp, method, fraction=1.0)
    assert torch.equal(everything.indices.sort().values, torch.arange(len(blobs)))


def test_cluster_size_weights_are_one_at_fraction_one(blobs, mlp):
    sel = _run(blobs, mlp, "lcmat", fraction=1.0, weights="cluster_size")
    assert torch.equal(sel.weights, torch.ones(len(blobs)))


def test_uniform_depends_on_the_seed_only(blobs, mlp):
    a = select_coreset(blobs, "uniform", 0.3, seed=1, progress=False)
    b = select_coreset(blobs, "uniform", 0.3, model=mlp, seed=1, progress=False)
    c = select_coreset(blobs, "uniform", 0.3, seed=2, progress=False)
    assert torch.equal(a.indices, b.indices) and not torch.equal(a.indices, c.indices)


def test_warmup_trains_a_copy_and_is_seeded(blobs, mlp):
    before = {k: v.clone() for k, v in mlp.state_dict().items()}
    a = select_coreset(blobs, "lcmat", 0.3, mlp, warmup_epochs=3, warmup_lr=0.05, batch_size=8, progress=False)
    b = select_coreset(blobs, "lcmat", 0.3, mlp, warmup_epochs=3, warmup_lr=0.05, batch_size=8, progress=False)
    cold = _run(blobs, mlp, "lcmat")
    assert all(torch.equal(before[k], v) for k, v in mlp.state_dict().items())
    assert torch.equal(a.indices, b.indices)
    assert not torch.equal(a.indices, cold.indices)


def test_model_modes_are_restored(blobs):
    model = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3))
    model.train()
    model[1].eval()
    _run(blobs, model, "lcmat")
    assert model.training and not model[1].training and model[3].training


def test_save_load_roundtrip_is_identical(blobs, mlp, tmp_path):
    sel = _run(blobs, mlp, "gradmatch", fraction=0.5)
    sel.save(tmp_path / "sel.safetensors")
    back = CoresetSelection.load(tmp_path / "sel.safetensors")
    assert torch.equal(back.indices, sel.indices) and torch.equal(back.weights, sel.weights)  # the stored bytes
    assert back.per_class_counts == sel.per_class_counts and back.method == "gradmatch"
    assert back.options == sel.options


def test_default_model_is_the_documented_mlp_initialised_under_the_seed_and_warmed_up(blobs):
    sel = select_coreset(blobs, "lcmat", 0.3, warmup_epochs=1, batch_size=16, seed=2, progress=False)
    torch.manual_seed(2)  # flat [D] inputs: Linear(D, 128) -> ReLU -> Linear(128, classes), initialised under seed
    explicit = nn.Sequential(nn.Linear(6, 128), nn.ReLU(), nn.Linear(128, 3))
    same = select_coreset(blobs, "lcmat", 0.3, explicit, warmup_epochs=1, batch_size=16, seed=2, progress=False)
    assert sel == same  # the same computation in one process: indices and weights bit for bit
    cold = select_coreset(blobs, "lcmat", 0.3, explicit, warmup_epochs=0, progress=False)
    assert not torch.equal(cold.indices, sel.indices)  # the selection model was warmed up first


@pytest.mark.parametrize("fraction", [0.0, -0.1, 1.01, float("nan")])
def test_fraction_outside_unit_interval_raises(blobs, mlp, fraction):
    with pytest.raises((ValueError, TypeError), match="fraction"):
        _run(blobs, mlp, "lcmat", fraction=fraction)


def test_clear_errors_for_bad_inputs(blobs, mlp):
    with pytest.raises(ValueError, match="method must be one of"):
        _run(blobs, mlp, "lcmat-s")
    with pytest.raises(TypeError, match="accepted options"):
        _run(blobs, mlp, "lcmat", rho=0.1)
    with pytest.raises(ValueError, match="eps_mode"):
        _run(blobs, mlp, "lcmat", eps_mode="ratio")
    with pytest.raises(ValueError, match="weights"):
        _run(blobs, mlp, "lcmat", weights="uniform")
    with pytest.raises(ValueError, match="score"):
        _run(blobs, mlp, "uncertainty", score="bald")
    with pytest.raises(ValueError, match="warmup_epochs >= 2"):
        _run(blobs, mlp, "forgetting", warmup_epochs=1)
    with pytest.raises(ValueError, match="move the model first"):
        _run(blobs, mlp, "lcmat", device="meta")
    empty = torch.utils.data.Subset(blobs, [])
    with pytest.raises(ValueError, match="empty"):
        _run(empty, mlp, "lcmat")


def test_labels_out_of_range_raise(blobs, mlp):
    blobs.targets = blobs.targets.clone()
    blobs.targets[0] = 3  # the head has 3 outputs
    with pytest.raises(ValueError, match=r"labels must be in \[0, 3\)"):
        _run(blobs, mlp, "lcmat")
    blobs.targets[0] = -1
    with pytest.raises(ValueError, match="labels must be >= 0"):
        _run(blobs, mlp, "uniform")


class _NoLinear(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv1d(1, 3, 6)

    def forward(self, x):
        return self.conv(x[:, None]).flatten(1)


class _LinearThenScale(nn.Module):
    def __init__(self):
        super().__init__()
        self.body = nn.Linear(6, 4)
        self.head = nn.Linear(4, 3)
        self.aux = nn.Linear(3, 3)  # registered last, but not the output layer

    def forward(self, x):
        return self.head(torch.relu(self.body(x)))


def test_model_without_final_linear_layer_and_explicit_last_layer(blobs):
    with pytest.raises(ValueError, match="no nn.Linear"):
        _run(blobs, _NoLinear(), "lcmat")
    model = _LinearThenScale()
    with pytest.raises(ValueError, match="last_layer="):
        _run(blobs, model, "lcmat")
    by_name = _run(blobs, model, "lcmat", last_layer="head")
    by_module = _run(blobs, model, "lcmat", last_layer=model.head)
    assert torch.equal(by_name.indices, by_module.indices)
    with pytest.raises(ValueError, match="last_layer="):
        _run(blobs, model, "lcmat", last_layer="body")  # a linear layer, but not the one producing the output
    with pytest.raises(ValueError, match="must be an nn.Linear"):
        _run(blobs, _NoLinear(), "lcmat", last_layer="conv")
    with pytest.raises(ValueError, match="not a submodule"):
        _run(blobs, model, "lcmat", last_layer=nn.Linear(4, 3))
    with pytest.raises(TypeError, match="model must be"):
        _run(blobs, "resnet18", "lcmat")


def test_selection_transform_keeps_augmentation_out_of_selection():
    from torchvision import transforms as T

    from tv_plugins import DigitsDataset

    flat = T.Compose([T.ToTensor(), T.Lambda(lambda x: x.flatten())])
    noisy = T.Compose([flat, T.Lambda(lambda x: x + torch.randn_like(x))])  # a stand-in for augmentation
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 8), nn.ReLU(), nn.Linear(8, 10))
    clean = DigitsDataset(transform=flat, test_fraction=0.8)  # ~360 training images keep the test quick
    augmented = DigitsDataset(transform=noisy, test_fraction=0.8)
    kw = {"model": model, "warmup_epochs": 0, "progress": False, "fraction": 0.05}
    expected = select_coreset(clean, "lcmat", **kw)
    got = select_coreset(augmented, "lcmat", selection_transform=flat, **kw)
    assert torch.equal(got.indices, expected.indices)
    assert augmented.transform is noisy  # the user's dataset is not modified
    assert not torch.equal(select_coreset(augmented, "lcmat", **kw).indices, expected.indices)
