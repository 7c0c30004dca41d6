"""A 2-process CPU (gloo) split of the batch gives the single-process images for the same seeds."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from diffusers import DDIMScheduler

from diffusers_plugins import DiffRSPipeline, TimeDependentDiscriminator

from .conftest import assert_equal_up_to_kernel_rounding


@pytest.mark.distributed
def test_two_process_split_matches_one_process(tmp_path, unet):
    disc = TimeDependentDiscriminator.from_unet(unet, DDIMScheduler(), norm_num_groups=4, seed=3)
    with torch.no_grad():
        disc.head.weight.mul_(8.0)
    pipe = DiffRSPipeline(unet, DDIMScheduler(), disc)
    pipe.set_progress_bar_config(disable=True)
    pipe.calibrate(num_samples=8, num_inference_steps=5, generator=torch.Generator().manual_seed(1))
    pipe.save_pretrained(tmp_path / "pipe")
    single = pipe(5, 5, torch.Generator().manual_seed(2), rejection_percentile=0.9, output_type="pt")
    assert single.rejections.sum() > 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node=2",
        str(Path(__file__).with_name("distributed_worker.py")),
        str(tmp_path / "pipe"),
        str(tmp_path / "out.pt"),
    ]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    multi = torch.load(tmp_path / "out.pt")
    assert multi["world"] == 2
    assert_equal_up_to_kernel_rounding(multi["images"], single.images)  # shards of 3 and 2 vs one of 5
    assert multi["nfe"].tolist() == single.nfe.tolist()
    assert multi["rejections"].tolist() == single.rejections.tolist()
