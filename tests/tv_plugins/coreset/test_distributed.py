"""Two gloo processes split the last-layer feature pass and select exactly what one process selects."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

WORKER = textwrap.dedent(
    """
    import json, os, sys
    import torch
    import torch.distributed as dist
    from torch import nn
    from tv_plugins.coreset import select_coreset

    class Data(torch.utils.data.Dataset):
        def __init__(self):
            g = torch.Generator().manual_seed(0)
            self.targets = torch.arange(40) % 4
            self.data = torch.randn(40, 6, generator=g) + self.targets[:, None].float()
        def __len__(self):
            return 40
        def __getitem__(self, i):
            return self.data[i], int(self.targets[i])

    class Counting(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.body, self.head, self.calls = nn.Linear(6, 5), nn.Linear(5, 4), 0
        def forward(self, x):
            self.calls += 1
            return self.head(torch.tanh(self.body(x)))

    rank, world, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
    if world > 1:
        dist.init_process_group("gloo", init_method="file://" + sys.argv[4], rank=rank, world_size=world)
    model = Counting()
    result = {}
    for method, opts in (("lcmat", {"eps": 0.1, "K": 8}), ("gradmatch", {}), ("glister", {})):
        sel = select_coreset(Data(), method, 0.3, model, warmup_epochs=0, batch_size=4, progress=False, **opts)
        result[method] = [sel.indices.tolist(), sel.weights.tolist()]
    result["calls"] = model.calls
    with open(out, "w") as fh:
        json.dump(result, fh)
    if world > 1:
        dist.destroy_process_group()
    """
)


@pytest.mark.distributed
def test_two_process_selection_equals_single_process(tmp_path):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    repo_root = str(Path(__file__).resolve().parents[3])  # the children import this checkout's tv_plugins
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(p for p in (repo_root, os.environ.get("PYTHONPATH")) if p))
    runs = [(0, 1), (0, 2), (1, 2)]  # the single-process reference runs concurrently with the two ranks
    procs = [
        subprocess.Popen([sys.executable, str(script), str(r), str(w), str(tmp_path / f"out{w}_{r}.json"),
                          str(tmp_path / "rendezvous")], env=env, cwd=os.getcwd())
        for r, w in runs
    ]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    single, rank0, rank1 = (json.loads((tmp_path / f"out{w}_{r}.json").read_text()) for r, w in runs)
    # indices are discrete; the weights too are equal bit for bit by construction: one machine, one thread, the
    # same fixed batches through the same kernels, and the all-reduce adds exact zeros
    for method in ("lcmat", "gradmatch", "glister"):
        assert rank0[method] == single[method] == rank1[method]
    # 10 batches of 4 per selection, 3 selections: one process runs all 30 forwards, each rank half
    assert single["calls"] == 30 and rank0["calls"] == rank1["calls"] == 15
