"""Worker for test_distributed.py: each process samples its share of the batch (launched by torchrun)."""

import sys

import torch
from accelerate import PartialState

from diffusers_plugins import DiffRSPipeline

if __name__ == "__main__":
    state = PartialState(cpu=True)  # joins the gloo process group that torchrun describes in the environment
    torch.set_num_threads(1)
    pipe = DiffRSPipeline.from_pretrained(sys.argv[1])
    pipe.set_progress_bar_config(disable=True)
    out = pipe(5, 5, torch.Generator().manual_seed(2), rejection_percentile=0.9, output_type="pt")
    if state.is_main_process:
        torch.save(
            {
                "images": out.images,
                "nfe": torch.from_numpy(out.nfe),
                "rejections": torch.from_numpy(out.rejections),
                "world": torch.distributed.get_world_size(),
            },
            sys.argv[2],
        )
    state.wait_for_everyone()
