"""Two CPU processes (gloo, torchrun) train AMiDTrainer for a few steps: replicas must stay identical."""

import json
import math
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from hf_plugins import tiny_causal_lm, train_bpe_tokenizer


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.distributed
def test_two_process_amid_training_keeps_replicas_identical(tmp_path):
    tok = train_bpe_tokenizer(300)
    student = tiny_causal_lm(tok, "student", seed=0)
    initial = [float(p.detach().double().sum()) for p in student.parameters()]
    for name, model in (("student", student), ("teacher", tiny_causal_lm(tok, "teacher", seed=1))):
        model.save_pretrained(tmp_path / name)
        tok.save_pretrained(tmp_path / name)
    out = tmp_path / "out"
    out.mkdir()
    worker = Path(__file__).with_name("trainer_ddp_worker.py")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_addr", "127.0.0.1",
           "--master_port", str(_free_port()), str(worker), str(tmp_path), str(out)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    results = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    assert [r["world_size"] for r in results] == [2, 2]
    # bitwise: both ranks start from rank 0's broadcast weights and apply the same all-reduced gradients
    assert results[0]["fingerprint"] == results[1]["fingerprint"]  # DDP kept the replicas identical
    n = len(initial)
    assert results[0]["fingerprint"][:n] != pytest.approx(initial, abs=1e-6)  # and they did train
    assert len(results[0]["losses"]) == 3 and all(math.isfinite(x) for x in results[0]["losses"])
    assert torch.isfinite(torch.tensor(results[0]["fingerprint"])).all()
