"""DiffRS calibrations: saved on their own, refused with the differing settings, corrupt files named."""

import hashlib
import json

import pytest
import torch
from diffusers import DDIMScheduler

from diffusers_plugins import DiffRSCalibration, DiffRSPipeline, TimeDependentDiscriminator

N = 4


def calibrated_pipeline(unet, scheduler=None):
    disc = TimeDependentDiscriminator.from_unet(unet, DDIMScheduler(), norm_num_groups=4, seed=3)
    pipe = DiffRSPipeline(unet, scheduler or DDIMScheduler(), disc)
    pipe.set_progress_bar_config(disable=True)
    pipe.calibrate(num_samples=4, num_inference_steps=N, generator=torch.Generator().manual_seed(1))
    return pipe


def test_calibration_saves_and_loads_on_its_own(tmp_path, unet):
    pipe = calibrated_pipeline(unet)
    pipe.calibration.save_pretrained(tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {"calibration.json"}
    loaded = DiffRSCalibration.from_pretrained(tmp_path)
    assert loaded.entries == pipe.config.calibration  # JSON floats round-trip losslessly
    again = DiffRSPipeline(pipe.unet, DDIMScheduler(), pipe.discriminator, calibration=loaded)
    for a, b in zip(again.thresholds(N, 0.9), pipe.thresholds(N, 0.9)):
        assert torch.equal(a, b)


def test_a_mismatched_calibration_names_each_differing_setting(unet):
    pipe = calibrated_pipeline(unet)
    with pytest.raises(ValueError, match=r"num_inference_steps 4 \(stored\) vs 7"):
        pipe.thresholds(7)
    trailing = DiffRSPipeline(
        pipe.unet,
        DDIMScheduler(timestep_spacing="trailing"),
        pipe.discriminator,
        calibration=pipe.calibration,
    )
    with pytest.raises(ValueError, match=r"timestep_spacing='leading' \(stored\) vs 'trailing'") as err:
        trailing.thresholds(N)
    assert (
        "scheduler config" in str(err.value) and "discriminator" not in str(err.value).split("differs in")[1]
    )
    with torch.no_grad():
        pipe.discriminator.head.bias.add_(1.0)
    with pytest.raises(
        ValueError, match=r"differs in: discriminator weights [0-9a-f]{12} \(stored\) vs [0-9a-f]{12}"
    ):
        pipe.thresholds(N)


@pytest.mark.parametrize("damage", ["truncated", "emptied", "missing"])
def test_incomplete_or_corrupt_calibration_names_the_file(tmp_path, unet, damage):
    calibrated_pipeline(unet).calibration.save_pretrained(tmp_path)
    saved = tmp_path / "calibration.json"
    if damage == "truncated":
        saved.write_text(saved.read_text()[:-30])
    elif damage == "emptied":
        saved.write_text("")
    else:
        saved.unlink()
    name = "calibration.json"
    with pytest.raises(
        ValueError, match=rf"{name} is (missing|incomplete or corrupt).*DiffRSCalibration\.save_pretrained"
    ):
        DiffRSCalibration.from_pretrained(tmp_path)


def test_corrupt_pipeline_index_names_the_file(tmp_path, unet):
    calibrated_pipeline(unet).save_pretrained(tmp_path)
    index = tmp_path / "model_index.json"
    index.write_text(index.read_text()[: len(index.read_text()) // 2])
    with pytest.raises(
        ValueError, match=r"model_index\.json is incomplete or corrupt.*DiffRSPipeline\.save_pretrained"
    ):
        DiffRSPipeline.from_pretrained(tmp_path)


def test_calibrations_saved_by_earlier_versions_still_match(unet):
    """Keys keep the earlier format (recomputed here independently); entries without the stored
    scheduler config still give thresholds and mismatch messages."""
    pipe = calibrated_pipeline(unet)
    config = {k: v for k, v in dict(pipe.scheduler.config).items() if not k.startswith("_")}
    weights = hashlib.sha256()
    for name, tensor in sorted(pipe.discriminator.state_dict().items()):
        weights.update(name.encode())
        weights.update(tensor.detach().contiguous().view(torch.uint8).numpy().tobytes())
    scheduler_hash = hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:12]
    key = f"DDIMScheduler/steps={N}/scheduler={scheduler_hash}/discriminator={weights.hexdigest()[:12]}"
    assert list(pipe.config.calibration) == [key]
    legacy = {
        k: {f: v for f, v in e.items() if f != "scheduler_config"} for k, e in pipe.config.calibration.items()
    }
    old = DiffRSPipeline(pipe.unet, DDIMScheduler(), pipe.discriminator, calibration=legacy)
    for a, b in zip(old.thresholds(N, 0.9), pipe.thresholds(N, 0.9)):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"num_inference_steps 4 \(stored\) vs 5"):
        old.thresholds(5)
