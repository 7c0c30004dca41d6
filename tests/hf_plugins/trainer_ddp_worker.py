"""Worker for test_trainer_distributed.py: a few AMiDTrainer steps in one of several gloo processes.

Usage (via torchrun): trainer_ddp_worker.py MODELS_DIR OUT_DIR. Loads tokenizer/student/teacher saved by
the test with ``from_pretrained``, trains, and writes ``rank<k>.json`` with the logged losses and a float64
fingerprint of every student parameter.
"""

import json
import os
import sys

import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from hf_plugins.trainers import AMiDConfig, AMiDTrainer


def main(models_dir: str, out_dir: str) -> None:
    torch.set_num_threads(1)
    tok = AutoTokenizer.from_pretrained(os.path.join(models_dir, "student"))
    student = AutoModelForCausalLM.from_pretrained(os.path.join(models_dir, "student"))
    teacher = AutoModelForCausalLM.from_pretrained(os.path.join(models_dir, "teacher"))
    rows = [
        {"messages": [{"role": "user", "content": f"Question {i}?"},
                      {"role": "assistant", "content": "Answer " * (i % 3 + 1) + str(i)}]}
        for i in range(16)
    ]
    args = AMiDConfig(
        output_dir=os.path.join(out_dir, "run"), bf16=False, use_cpu=True, ddp_backend="gloo",
        gradient_checkpointing=False, max_steps=3, per_device_train_batch_size=2, report_to="none",
        logging_steps=1, save_strategy="no", max_new_tokens=4, max_length=64, lmbda=0.5, learning_rate=1e-2,
        disable_tqdm=True, seed=0,
    )
    trainer = AMiDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=Dataset.from_list(rows),
                          processing_class=tok)
    trainer.train()
    rank = trainer.accelerator.process_index
    params = [p.detach().double() for p in trainer.accelerator.unwrap_model(trainer.model).parameters()]
    result = {
        "rank": rank,
        "world_size": trainer.accelerator.num_processes,
        "losses": [h["loss"] for h in trainer.state.log_history if "loss" in h],
        "fingerprint": [float(p.sum()) for p in params] + [float((p * p).sum()) for p in params],
    }
    with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
