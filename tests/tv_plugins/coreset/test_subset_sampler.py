"""WeightedSubset / LCMatSubset datasets, CoresetSampler re-selection, CoresetCallback in a real Trainer."""

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

from tv_plugins import DigitsDataset
from tv_plugins.coreset import CoresetSampler, LCMatSubset, WeightedSubset, select_coreset


def test_weighted_subset_items_weights_and_transforms(blobs):
    sub = WeightedSubset(blobs, [4, 0, 7], [1.0, 3.0, 0.0])
    assert len(sub) == 3
    x, y = sub[1]
    assert torch.equal(x, blobs[0][0]) and y == blobs[0][1]
    sub_w = WeightedSubset(blobs, [4, 0, 7], [1.0, 3.0, 0.0], return_weight=True)
    assert float(sub_w[1][2]) == 3.0
    torch.testing.assert_close(sub.loss_weights([0, 1, 2]), torch.tensor([0.75, 2.25, 0.0]))
    draws = torch.tensor(list(sub.sampler(num_samples=4000, generator=torch.Generator().manual_seed(0))))
    assert (draws != 2).all()  # weight 0 is never drawn
    assert 0.70 < (draws == 1).float().mean() < 0.80  # 3 / 4
    digits = DigitsDataset(train=True, transform=T.Compose([T.ToTensor(), T.Normalize([0.5], [0.25])]))
    sub_d = WeightedSubset(digits, [5, 9])
    expected = (torch.from_numpy(digits.data[9].numpy()).float() / 255 - 0.5) / 0.25
    torch.testing.assert_close(sub_d[1][0][0], expected)


@pytest.mark.parametrize("kwargs,match", [
    ({"indices": [0, 0]}, "distinct"), ({"indices": [99]}, r"\[0, 36\)"), ({"weights": [1.0]}, "entries"),
    ({"weights": [-1.0, 1.0]}, ">= 0"), ({"weights": [0.0, 0.0]}, "all be zero"),
])
def test_weighted_subset_rejects_bad_arguments(blobs, kwargs, match):
    args = {"indices": [0, 1], "weights": None} | kwargs
    with pytest.raises(ValueError, match=match):
        WeightedSubset(blobs, args["indices"], args["weights"])


def test_lcmat_subset_is_select_coreset_plus_wrapper(blobs, mlp):
    sub = LCMatSubset(blobs, mlp, 0.3, warmup_epochs=0, progress=False, weights="cluster_size", return_weight=True)
    sel = select_coreset(blobs, "lcmat", 0.3, mlp, warmup_epochs=0, progress=False, weights="cluster_size")
    assert torch.equal(sub.indices, sel.indices) and torch.equal(sub.weights, sel.weights)  # one process, twice
    for k in range(len(sub)):
        x, y, w = sub[k]
        assert torch.equal(x, blobs[int(sel.indices[k])][0]) and y == blobs[int(sel.indices[k])][1]
        assert w == sel.weights[k]


def test_sampler_reselects_every_k_epochs_from_the_live_model(blobs, mlp):
    sampler = CoresetSampler(blobs, 0.3, mlp, every_k_epochs=2, progress=False)
    assert len(sampler) == 4 + 3 + 5
    optimizer = torch.optim.SGD(mlp.parameters(), lr=0.5)
    seen = []
    for epoch in range(5):
        sampler.set_epoch(epoch)
        batch = list(sampler)
        seen.append(sorted(batch))
        assert sorted(batch) == sorted(sampler.selection.indices.tolist())
        loss = nn.functional.cross_entropy(mlp(blobs.data), blobs.targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert [h["epoch"] for h in sampler.history] == [0, 2, 4]
    assert seen[0] == seen[1] and seen[2] == seen[3]
    # the selection at epoch 2 is the one of the model as trained at that point
    assert sampler.history[1]["indices"] != sampler.history[0]["indices"]


def test_sampler_with_frozen_model_repeats_selection_and_state_roundtrip(blobs, mlp):
    sampler = CoresetSampler(blobs, 0.3, mlp, every_k_epochs=1, progress=False)
    first, second = list(sampler), list(sampler)  # no set_epoch: each iteration advances the epoch
    assert [h["epoch"] for h in sampler.history] == [0, 1]
    assert sampler.history[0]["indices"] == sampler.history[1]["indices"]
    assert sorted(first) == sorted(second) and first != second  # reshuffled each epoch
    state = sampler.state_dict()
    fresh = CoresetSampler(blobs, 0.3, None, every_k_epochs=1, progress=False)
    fresh.load_state_dict(state)
    assert torch.equal(fresh.selection.indices, sampler.selection.indices)
    assert fresh.history == sampler.history and fresh.epoch == sampler.epoch
    torch.testing.assert_close(fresh.weight_of(torch.arange(len(blobs))), sampler.weight_of(torch.arange(len(blobs))))
    with pytest.raises(ValueError, match="every_k_epochs"):
        CoresetSampler(blobs, 0.3, mlp, every_k_epochs=0)
    with pytest.raises(TypeError, match="accepted options"):
        CoresetSampler(blobs, 0.3, mlp, rho=1.0)


class _DictView(Dataset):
    """The Trainer's view of the blobs: dict items; records which indices each epoch touched."""

    def __init__(self, base):
        self.base, self.accessed = base, []

    def __len__(self):
        return len(self.base)

    def __getitem__(self, i):
        self.accessed.append(i)
        x, y = self.base[i]
        return {"pixel_values": x, "labels": torch.tensor(y)}


class _Classifier(nn.Module):
    def __init__(self, mlp):
        super().__init__()
        self.net = mlp

    def forward(self, pixel_values, labels=None):
        logits = self.net(pixel_values)
        out = {"logits": logits}
        if labels is not None:
            out["loss"] = nn.functional.cross_entropy(logits, labels)
        return out


def test_callback_reselects_inside_trainer_train(blobs, mlp, tmp_path):
    from transformers import Trainer, TrainingArguments

    from tv_plugins.coreset import CoresetCallback

    model = _Classifier(mlp)
    view = _DictView(blobs)
    sampler = CoresetSampler(blobs, 0.3, every_k_epochs=2, progress=False)
    args = TrainingArguments(output_dir=str(tmp_path), num_train_epochs=4, per_device_train_batch_size=4,
                             learning_rate=0.5, save_strategy="no", report_to=[], use_cpu=True,
                             logging_steps=1, disable_tqdm=True, dataloader_num_workers=0)
    trainer = Trainer(model=model, args=args, train_dataset=view)
    with pytest.raises(RuntimeError, match="attach"):
        trainer.add_callback(CoresetCallback(sampler))
        trainer.train()
    trainer.pop_callback(CoresetCallback)
    view.accessed.clear()
    CoresetCallback(sampler).attach(trainer)
    trainer.train()
    assert [h["epoch"] for h in sampler.history] == [0, 2]
    per_epoch = len(sampler)
    assert len(view.accessed) == 4 * per_epoch  # the Trainer iterated the coreset, not the full set
    for epoch in range(4):
        touched = sorted(view.accessed[epoch * per_epoch : (epoch + 1) * per_epoch])
        assert touched == sorted(sampler.history[epoch // 2]["indices"])
    assert sampler.history[0]["indices"] != sampler.history[1]["indices"]  # the model changed in between
    assert model.training  # train/eval mode restored after each selection


def test_weighted_sampling_in_a_plain_dataloader_draws_in_proportion_to_the_weights(blobs, mlp):
    from scipy.stats import chi2

    sampler = CoresetSampler(blobs, 0.5, mlp, method="craig", weighted_sampling=True, every_k_epochs=1000,
                             progress=False)  # one selection (epoch 0), then 400 epochs of draws from it
    loader = DataLoader(blobs, batch_size=5, sampler=sampler)
    labels = torch.cat([y for _, y in loader])
    assert len(labels) == len(sampler) == 6 + 5 + 8
    draws = []
    for epoch in range(1, 401):
        sampler.set_epoch(epoch)
        draws += list(sampler)
    indices, weights = sampler.selection.indices, sampler.selection.weights.double()
    assert [h["epoch"] for h in sampler.history] == [0] and set(draws) <= set(indices.tolist())
    observed = torch.tensor([draws.count(i) for i in indices.tolist()], dtype=torch.float64)
    assert weights.max() >= 2 * weights.min()  # CRAIG cluster sizes differ, so the test has power

    def statistic(p):
        expected = len(draws) * p
        return float(((observed - expected) ** 2 / expected).sum())

    # fixed seeds make this deterministic; under correct sampling it exceeds the 0.999 quantile with p = 0.001
    threshold = chi2.ppf(0.999, df=len(indices) - 1)
    assert statistic(weights / weights.sum()) < threshold
    assert statistic(torch.full_like(weights, 1 / len(weights))) > threshold  # weight-blind sampling is rejected
