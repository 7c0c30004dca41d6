import copy
import math

import pytest
import torch
from PIL import Image
from torch.utils.data import Dataset
from torchvision import transforms as T

from tv_plugins import ConvNet, DigitsDataset
from tv_plugins.condensation import (
    Checkpoint,
    DDiF,
    DistillCallback,
    DistributionMatching,
    EarlyStopping,
    FreD,
    PeriodicEvaluation,
    SyntheticDataset,
    distill,
    evaluate_synthetic,
)
from tv_plugins.condensation.evaluation import evaluation_learning_rates

TF = T.Compose([T.ToTensor(), T.Normalize([0.3], [0.35])])
SMALL_DM = {"depth": 2, "width": 8, "batch_real": 16}


@pytest.fixture(scope="module")
def digits():
    return DigitsDataset(train=True, image_size=8, transform=TF), DigitsDataset(train=False, image_size=8, transform=TF)


def _small_net():
    return ConvNet(1, 10, 8, depth=2, width=8)


@pytest.mark.parametrize("kind,kwargs", [("pixel", {}), ("fred", {"k": 16}),
                                         ("ddif", {"width": 3, "num_layers": 1, "init_steps": 20})])
def test_same_seed_same_set_and_save_load_identical(digits, kind, kwargs, tmp_path):
    train, _ = digits
    run = dict(ipc=1, iterations=3, parameterization_kwargs=kwargs, objective_kwargs=SMALL_DM, progress=False)
    a = distill(train, kind, "dm", seed=0, **run)
    b = distill(train, kind, "dm", seed=0, **run)
    c = distill(train, kind, "dm", seed=1, **run)
    ia, la = a.to_tensors()
    assert torch.equal(ia, b.to_tensors()[0]) and torch.equal(la, b.to_tensors()[1])  # same process: bitwise
    assert not torch.equal(ia, c.to_tensors()[0])
    # the budget of 64 floats per class: pixel 1 image; FreD 64 // 16 = 4 instances of 16; DDiF 4 fields of 13
    instances, floats = {"pixel": (1, 64), "fred": (4, 64), "ddif": (4, 52)}[kind]
    assert len(a) == 10 * instances and a.num_stored_floats == 10 * floats
    assert la.tolist() == [c for c in range(10) for _ in range(instances)]
    init = distill(train, kind, "dm", seed=0, **{**run, "iterations": 0})
    assert not torch.equal(init.to_tensors()[0], ia)  # the iterations changed the set
    assert len(a.metadata["losses"]) == 3 and all(math.isfinite(v) and v >= 0 for v in a.metadata["losses"])
    a.save(tmp_path / "set")
    loaded = SyntheticDataset.load(tmp_path / "set", transform=T.Lambda(lambda x: x * 2))
    saved = a.parameterization.state_dict()
    assert all(torch.equal(v, saved[k]) for k, v in loaded.parameterization.state_dict().items())  # lossless file
    # decoding the reloaded storage: fp32 ops on values ~1 agree to rounding (64 terms: 64 * 2**-24 ~ 4e-6)
    torch.testing.assert_close(loaded.to_tensors()[0], ia, rtol=1e-5, atol=1e-5)
    assert torch.equal(loaded.to_tensors()[1], la)
    assert loaded.num_stored_floats == a.num_stored_floats and len(loaded) == len(a)
    image, label = loaded[3]
    assert torch.equal(image, loaded.to_tensors()[0][3] * 2) and label == int(la[3])  # transforms honoured on access
    assert loaded.metadata["seed"] == 0 and loaded.metadata["iterations"] == 3


class _FixedNet(DistributionMatching):
    """DM with one fixed embedding network, no augmentation and every real image: no randomness left."""

    def __init__(self, net):
        super().__init__(dsa="", batch_real=10_000)
        self.net = net

    def network(self, real, generator=None):
        return self.net


def test_one_dm_iteration_is_one_sgd_step_on_the_explicit_loss(digits):
    train, _ = digits
    torch.manual_seed(0)
    net = ConvNet(1, 10, 8, depth=2, width=8)
    init = distill(train, "pixel", "dm", ipc=2, iterations=0, progress=False)
    after = distill(train, copy.deepcopy(init.parameterization), _FixedNet(net), ipc=None, iterations=1, lr=0.5,
                    progress=False)
    real = torch.stack([train[i][0] for i in range(len(train))]).double()
    labels = torch.tensor([train[i][1] for i in range(len(train))])
    net64 = copy.deepcopy(net).double().requires_grad_(False)
    synthetic = init.to_tensors()[0].double().requires_grad_(True)
    loss = sum((net64.embed(real[labels == c]).mean(0) - net64.embed(synthetic[2 * c:2 * c + 2]).mean(0)).pow(2).sum()
               for c in range(10))
    (grad,) = torch.autograd.grad(loss, synthetic)
    expected = synthetic.detach() - 0.5 * grad  # SGD's first step (momentum buffer = the gradient)
    assert after.metadata["losses"][0] == pytest.approx(float(loss.detach()), rel=1e-4)  # fp32 vs fp64 forward passes
    # fp32 loop vs fp64 reference: embeddings summed over ~140 images per class, gradients ~0.1, pixels ~1:
    # relative rounding ~1e-6 of the step, far below 1e-5 (the step itself moves pixels by up to 0.06)
    torch.testing.assert_close(after.to_tensors()[0].double(), expected, rtol=1e-5, atol=1e-5)


def test_shortcuts_and_gradient_matching(digits):
    train, _ = digits
    fred = FreD.distill(train, ipc=1, objective="dc", iterations=1, k=16, progress=False,
                        objective_kwargs={"depth": 2, "width": 8, "batch_real": 8, "outer_loop": 2, "inner_loop": 1})
    assert len(fred) == 40 and fred.parameterization.kind == "fred" and fred.metadata["objective"] == "dc"
    init = FreD.distill(train, ipc=1, iterations=0, k=16, progress=False)
    assert not torch.equal(init.to_tensors()[0], fred.to_tensors()[0])
    ddif = DDiF.distill(train, ipc=1, objective=DistributionMatching(**SMALL_DM), iterations=1, width=3,
                        num_layers=1, init_steps=5, progress=False)
    assert ddif.parameterization.kind == "ddif" and len(ddif) == 10 * (64 // 13)


def test_resume_from_checkpoint_matches_an_uninterrupted_run(digits, tmp_path):
    train, _ = digits
    run = dict(ipc=1, parameterization_kwargs={"k": 16}, objective_kwargs=SMALL_DM, progress=False, seed=4)
    full = distill(train, "fred", "dm", iterations=4, **run)
    distill(train, "fred", "dm", iterations=2, callbacks=[Checkpoint(tmp_path, every=2)], **run)
    resumed = distill(train, "fred", "dm", iterations=4, callbacks=[Checkpoint(tmp_path, every=2)], **run)
    # one process: the resumed run repeats the uninterrupted one's operations on restored bytes, so bitwise
    assert torch.equal(full.to_tensors()[0], resumed.to_tensors()[0])
    assert resumed.metadata["losses"] == full.metadata["losses"]
    with pytest.raises(ValueError, match="seed"):
        distill(train, "fred", "dm", iterations=4, callbacks=[Checkpoint(tmp_path)], **{**run, "seed": 5})


class Recorder(DistillCallback):
    def __init__(self):
        self.events = []

    def on_distill_begin(self, state):
        self.events.append("begin")

    def on_iteration_end(self, state):
        self.events.append(f"it{state.iteration}")

    def on_evaluate(self, state, metrics):
        self.events.append(f"eval{state.iteration}:{metrics['mean']:.0f}")

    def on_distill_end(self, state):
        self.events.append("end")


def test_callbacks_evaluation_and_early_stopping(digits):
    train, test = digits
    recorder = Recorder()
    evaluation = PeriodicEvaluation(test, every=2, runs=1, epochs=2, model=_small_net)
    out = distill(train, "pixel", "dm", ipc=1, iterations=4, objective_kwargs=SMALL_DM, progress=False,
                  callbacks=[evaluation, recorder])
    assert recorder.events[0] == "begin" and recorder.events[-1] == "end"
    assert [e.split(":")[0] for e in recorder.events if e.startswith("eval")] == ["eval2", "eval4"]
    assert [e["iteration"] for e in out.metadata["evaluations"]] == [2, 4]
    run = dict(ipc=1, iterations=12, objective_kwargs=SMALL_DM, progress=False)
    losses = distill(train, "pixel", "dm", **run).metadata["losses"]
    for patience, min_delta in ((1, 0.0), (2, 0.0), (2, 0.05 * losses[0]), (1, 1e9)):
        best, bad, expected = None, 0, len(losses)  # the rule, applied to the uninterrupted run's losses
        for i, value in enumerate(losses, start=1):
            if best is None or value < best - min_delta:
                best, bad = value, 0
            else:
                bad += 1
                if bad >= patience:
                    expected = i
                    break
        stopped = distill(train, "pixel", "dm", **run, callbacks=[EarlyStopping(patience, min_delta, "loss")])
        assert stopped.metadata["iterations"] == expected and stopped.metadata["losses"] == losses[:expected]
        assert expected < len(losses)  # every case stops early on these losses, so the rule is exercised


def test_evaluation_protocol(digits):
    train, test = digits
    lrs = evaluation_learning_rates(0.01, 10)
    assert len(lrs) == 11 and lrs[:7] == [0.01] * 7 and lrs[7:] == pytest.approx([0.001] * 4)
    synthetic = distill(train, "pixel", "dm", ipc=2, iterations=0, progress=False)
    result = evaluate_synthetic(synthetic, test, model=_small_net, runs=2, epochs=20, progress=False)
    assert set(result) == {"mean", "std", "runs"} and len(result["runs"]) == 2
    assert result["mean"] == pytest.approx(sum(result["runs"]) / 2)
    assert result["std"] == pytest.approx(abs(result["runs"][0] - result["runs"][1]) / 2)  # population std
    assert result["mean"] > 20  # 20 real digits beat chance (10 %) even after 21 tiny epochs
    again = evaluate_synthetic(synthetic, test, model=_small_net(), runs=2, epochs=20, progress=False)
    assert again["runs"] == result["runs"]  # an nn.Module is re-initialised per run with the run's seed


class _Unlabeled(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return torch.zeros(1, 8, 8)


class _Mixed(Dataset):
    def __len__(self):
        return 4

    def __getitem__(self, i):
        return Image.new("L", (8 + i, 8)), 0


def test_clear_errors_before_work(digits):
    train, _ = digits
    few = (torch.randn(12, 1, 8, 8), torch.tensor([0] * 10 + [1] * 2))
    with pytest.raises(ValueError, match="class 1 has 2 real images"):
        distill(few, "pixel", "dm", ipc=3, iterations=1, progress=False)
    with pytest.raises(ValueError, match="ipc"):
        distill(train, "pixel", "dm", ipc=0, iterations=1, progress=False)
    with pytest.raises(ValueError, match="budget too small"):
        distill(train, "ddif", "dm", ipc=1, iterations=1, progress=False)  # default field (151 floats) > 64
    with pytest.raises(ValueError, match="mismatched image sizes"):
        distill(_Mixed(), "pixel", "dm", ipc=1, iterations=1, progress=False)
    with pytest.raises(ValueError, match="unlabeled"):
        distill(_Unlabeled(), "pixel", "dm", ipc=1, iterations=1, progress=False)
    with pytest.raises(ValueError, match="objective"):
        distill(train, "pixel", "kd", ipc=1, iterations=1, progress=False)
    with pytest.raises(ValueError, match="parameterization"):
        distill(train, "wavelet", "dm", ipc=1, iterations=1, progress=False)
    with pytest.raises(RuntimeError, match="lower lr"):
        distill(train, "pixel", "dm", ipc=1, iterations=3, lr=1e30, objective_kwargs=SMALL_DM, progress=False)
