"""Failures that used to be silent or misdiagnosed: resuming under other settings, corrupt saved files, non-finite
and PIL images, comparing selections."""

import pytest
import torch
from torch import nn
from torchvision import transforms as T

from tv_plugins import ConvNet, DigitsDataset
from tv_plugins.condensation import (
    Checkpoint,
    ExpertTrajectories,
    SyntheticDataset,
    distill,
    train_expert_trajectories,
)
from tv_plugins.coreset import CoresetSampler, CoresetSelection, select_coreset

pytestmark = pytest.mark.usefixtures("single_thread")

DM = {"depth": 1, "width": 4, "batch_real": 4}


def _mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))


def _distill(directory, data, kind="pixel", iterations=2, **kw):
    kw.setdefault("objective_kwargs", DM)
    return distill(data, kind, "dm", ipc=2, iterations=iterations, progress=False,
                   callbacks=[Checkpoint(directory, every=1)], **kw)


def test_resume_is_refused_when_a_setting_differs_and_names_each_difference(tmp_path, tiny_images):
    ddif = {"num_layers": 1, "init_steps": 2}
    _distill(tmp_path / "ddif", tiny_images, kind="ddif", parameterization_kwargs={"width": 16, **ddif})
    with pytest.raises(ValueError, match=r"parameterization\.width: 16 \(saved\) vs 24 \(now\)"):
        _distill(tmp_path / "ddif", tiny_images, kind="ddif", parameterization_kwargs={"width": 24, **ddif})
    first = _distill(tmp_path / "pixel", tiny_images)
    with pytest.raises(ValueError, match=r"objective\.batch_real: 4 \(saved\) vs 8 \(now\)"):
        _distill(tmp_path / "pixel", tiny_images, objective_kwargs={**DM, "batch_real": 8})
    with pytest.raises(ValueError, match=r"optimizer\.lr: 1\.0 \(saved\) vs 2\.0 \(now\)"):
        _distill(tmp_path / "pixel", tiny_images, lr=2.0)
    with pytest.raises(ValueError, match=r"dataset\.pixels") as err:
        _distill(tmp_path / "pixel", (tiny_images[0].flip(-1), tiny_images[1]))
    assert "dataset.labels" not in str(err.value)  # only what differs is named
    with pytest.raises(ValueError, match=r"dataset\.size: 40 \(saved\) vs 36 \(now\)"):
        _distill(tmp_path / "pixel", (tiny_images[0][4:], tiny_images[1][4:]))
    # the same settings resume: the finished 2-iteration run is returned as it was saved
    again = _distill(tmp_path / "pixel", tiny_images)
    assert torch.equal(again.to_tensors()[0], first.to_tensors()[0]) and again.metadata["losses"] == first.metadata["losses"]


def test_a_damaged_checkpoint_is_named_not_unpickled(tmp_path, tiny_images):
    _distill(tmp_path, tiny_images)
    path = tmp_path / Checkpoint.FILE
    path.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match=r"checkpoint\.pt is incomplete or corrupt .* written by tv_plugins"):
        _distill(tmp_path, tiny_images)


def test_coreset_sampler_state_is_refused_under_other_settings(points):
    sampler = CoresetSampler(points(), 0.3, _mlp(), progress=False)
    list(sampler)
    state = sampler.state_dict()
    CoresetSampler(points(), 0.3, _mlp(), progress=False).load_state_dict(state)  # same settings: fine
    with pytest.raises(ValueError, match=r"fraction: 0\.3 \(saved\) vs 0\.5 \(now\)"):
        CoresetSampler(points(), 0.5, _mlp(), progress=False).load_state_dict(state)
    with pytest.raises(ValueError, match=r"method: 'lcmat' \(saved\) vs 'craig' \(now\)"):
        CoresetSampler(points(), 0.3, _mlp(), method="craig", progress=False).load_state_dict(state)


def _truncate(path):
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])


def test_truncated_saved_files_name_the_file_and_its_writer(tmp_path, points, tiny_images):
    sel = select_coreset(points(), "gradmatch", 0.3, _mlp(), warmup_epochs=0, progress=False)
    synthetic = distill(tiny_images, "fred", "dm", ipc=1, iterations=0, progress=False)
    experts = train_expert_trajectories(tiny_images, num_experts=1, epochs=1, depth=1, width=4, progress=False)
    cases = [(sel, CoresetSelection, ("coreset.json", "coreset.safetensors")),
             (synthetic, SyntheticDataset, ("synthetic.json", "synthetic.safetensors")),
             (experts, ExpertTrajectories, ("config.json", "trajectories.safetensors"))]
    for artifact, cls, files in cases:
        for name in files:
            directory = tmp_path / f"{cls.__name__}_{name}"
            artifact.save_pretrained(directory)
            _truncate(directory / name)
            with pytest.raises(ValueError, match=rf"{name} is incomplete or corrupt .* {cls.__name__}\.save_pretrained"):
                cls.from_pretrained(directory)
    directory = tmp_path / "keys"
    sel.save_pretrained(directory)
    (directory / "coreset.json").write_text('{"method": "lcmat"}')
    with pytest.raises(ValueError, match="incomplete or corrupt"):
        CoresetSelection.from_pretrained(directory)


def test_documented_save_and_load_names_are_aliases_of_the_pretrained_ones(tmp_path):
    for cls in (CoresetSelection, SyntheticDataset, ExpertTrajectories):
        assert cls.save is cls.save_pretrained and cls.load.__func__ is cls.from_pretrained.__func__


def test_coreset_selection_equality_is_defined(tmp_path, points):
    sel = select_coreset(points(), "gradmatch", 0.3, _mlp(), warmup_epochs=0, progress=False)
    sel.save_pretrained(tmp_path)
    back = CoresetSelection.from_pretrained(tmp_path)
    assert back == sel and not back != sel  # safetensors stores the bytes: a reload is equal bit for bit
    nudged = CoresetSelection(sel.indices, sel.weights.nextafter(torch.tensor(1e9)), sel.per_class_counts,
                              sel.method, sel.options)
    assert nudged != sel  # weights are compared exactly
    moved = CoresetSelection(sel.indices.flip(0), sel.weights, sel.per_class_counts, sel.method, sel.options)
    assert moved != sel and sel != "a selection"
    with pytest.raises(TypeError):
        hash(sel)


def test_a_nan_image_is_reported_as_such(points, tiny_images):
    with pytest.raises(ValueError, match=r"item 7 has non-finite pixel values"):
        select_coreset(points(nan_at=7), "lcmat", 0.3, _mlp(), warmup_epochs=0, progress=False)
    images = tiny_images[0].clone()
    images[3, 0, 2, 2] = float("inf")
    with pytest.raises(ValueError, match="NaN or inf"):
        distill((images, tiny_images[1]), "pixel", "dm", ipc=1, iterations=1, progress=False)
    diverged = _mlp()
    with torch.no_grad():
        diverged[2].weight.fill_(3e38)  # finite weights whose logits overflow to inf
    with pytest.raises(FloatingPointError, match="non-finite features or logits for dataset items"):
        select_coreset(points(), "lcmat", 0.3, diverged, warmup_epochs=0, progress=False)


def test_pil_items_are_read_as_to_tensor_reads_them_in_selection_and_condensation():
    pil = DigitsDataset(test_fraction=0.8)  # items (PIL image, label), no transform
    tensors = DigitsDataset(test_fraction=0.8, transform=T.ToTensor())
    torch.manual_seed(0)
    model = ConvNet(1, 10, 8, depth=1, width=4)
    kw = {"warmup_epochs": 1, "batch_size": 64, "progress": False}
    assert select_coreset(pil, "lcmat", 0.05, model, **kw) == select_coreset(tensors, "lcmat", 0.05, model, **kw)
    a = distill(pil, "pixel", "dm", ipc=1, iterations=1, objective_kwargs=DM, progress=False)
    b = distill(tensors, "pixel", "dm", ipc=1, iterations=1, objective_kwargs=DM, progress=False)
    assert torch.equal(a.to_tensors()[0], b.to_tensors()[0])  # identical input tensors, same process
    with pytest.raises(TypeError, match=r"add a transform that returns one"):
        select_coreset([("not an image", 0)], "lcmat", 1.0, _mlp(), warmup_epochs=0, progress=False)
