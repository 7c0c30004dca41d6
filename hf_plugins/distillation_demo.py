"""End-to-end distillation demo on the pydoc corpus: SFT teacher -> AMiD / CSD / GKD students.

``python -m hf_plugins demo`` runs ``run_demo()``:

1. an instruction-style split of the pydoc corpus (prompt = topic heading + opening words, completion = the
   continuation; held-out topics for evaluation);
2. an SFT teacher and an SFT-initialised smaller student (both cached under ``runs/``, keyed by settings);
3. AMiD (AB divergence, lambda 0.1), CSD ((S,S), tau 1) and GKD (JSD beta 0.5) distillation from the same
   student initialisation with identical settings (GKD's lmbda = 0.5 on-/off-policy mix for all three);
4. a table of held-out ROUGE-L (sampled completions), teacher-student KL and NLL, and loss curves saved as
   ``runs/hf_plugins_demo/loss_curves.png`` (+ ``results.json``).

Sizes are CPU-scale: the teacher is ``tiny_causal_lm(..., "student-base")`` (0.3M parameters) and the
student ``tiny_causal_lm(..., "student")``; torch runs single-threaded (the machine is shared).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

__all__ = ["DEMO_SETTINGS", "distill", "prepare_models", "run_demo"]

DEMO_SETTINGS = {
    "vocab_size": 512,
    "teacher_size": "student-base",
    "student_size": "student",
    "teacher_sft_steps": 300,
    "student_sft_steps": 100,
    "distill_steps": 150,
    "batch_size": 16,
    "learning_rate": 1e-3,
    "lmbda": 0.5,
    "max_new_tokens": 24,
    "eval_examples": 64,
    "eval_max_new_tokens": 40,
}


def _load_or_train(path: Path, key: dict, build, train):
    from transformers import AutoModelForCausalLM

    meta = path / "settings.json"
    if meta.exists() and json.loads(meta.read_text()) == key:
        return AutoModelForCausalLM.from_pretrained(path)
    model = build()
    train(model)
    model.save_pretrained(path)
    meta.write_text(json.dumps(key))
    return model


def prepare_models(root: str | os.PathLike, settings: dict = DEMO_SETTINGS, progress: bool = True, seed: int = 0):
    """Tokenizer, data split, SFT teacher and SFT-initialised student (cached under ``root``).

    Returns ``(tokenizer, split, teacher, student_init_path)``; load the student with
    ``AutoModelForCausalLM.from_pretrained(student_init_path)`` for each run.
    """
    from hf_plugins import tiny_causal_lm, train_bpe_tokenizer

    from .trainers.instruction_data import pydoc_instruction_split
    from .trainers.supervised import supervised_finetune

    root = Path(root)
    tok = train_bpe_tokenizer(settings["vocab_size"])
    split = pydoc_instruction_split()
    common = {k: settings[k] for k in ("vocab_size", "batch_size", "learning_rate")}
    t_key = {**common, "size": settings["teacher_size"], "steps": settings["teacher_sft_steps"], "seed": 0}
    teacher = _load_or_train(
        root / "teacher", t_key, lambda: tiny_causal_lm(tok, settings["teacher_size"], seed=0),
        lambda m: supervised_finetune(m, tok, split["train"], str(root / "tmp"), settings["teacher_sft_steps"],
                                      settings["learning_rate"], settings["batch_size"], seed=0, progress=progress),
    )
    s_key = {**common, "size": settings["student_size"], "steps": settings["student_sft_steps"], "seed": seed}
    s_path = root / f"student_init_seed{seed}"
    _load_or_train(
        s_path, s_key, lambda: tiny_causal_lm(tok, settings["student_size"], seed=seed),
        lambda m: supervised_finetune(m, tok, split["train"], str(root / "tmp"), settings["student_sft_steps"],
                                      settings["learning_rate"], settings["batch_size"], seed=seed, progress=progress),
    )
    tok.save_pretrained(s_path)
    return tok, split, teacher, s_path


def distill(method: str, config_kwargs: dict, tok, split, teacher, student_path, output_dir: str, settings: dict,
            seed: int = 0, progress: bool = True):
    """Distil the student at ``student_path`` with trainer ``method`` ("amid", "csd", "kd"); returns (model, history, s/step)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from .trainers import AMiDConfig, AMiDTrainer, CSDConfig, CSDTrainer, KDConfig, KDTrainer

    trainer_cls, config_cls = {"amid": (AMiDTrainer, AMiDConfig), "csd": (CSDTrainer, CSDConfig),
                               "kd": (KDTrainer, KDConfig)}[method]
    base = dict(
        output_dir=output_dir, bf16=False, use_cpu=True, gradient_checkpointing=False, report_to="none",
        save_strategy="no", max_steps=settings["distill_steps"], per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"], lr_scheduler_type="cosine", max_grad_norm=1.0, weight_decay=0.01,
        logging_steps=max(1, settings["distill_steps"] // 30), max_new_tokens=settings["max_new_tokens"],
        temperature=1.0, lmbda=settings["lmbda"], max_length=256, seed=seed, data_seed=seed,
        disable_tqdm=not progress,
    )
    base.update(config_kwargs)
    student = AutoModelForCausalLM.from_pretrained(student_path)
    trainer = trainer_cls(
        model=student, teacher_model=teacher, args=config_cls(**base),
        train_dataset=Dataset.from_list([{"messages": e["messages"]} for e in split["train"]]), processing_class=tok,
    )
    start = time.perf_counter()
    trainer.train()
    per_step = (time.perf_counter() - start) / settings["distill_steps"]
    return trainer.model, trainer.state.log_history, per_step


DEMO_METHODS = {
    "AMiD (AB, lambda=0.1)": ("amid", {"amid_divergence": "ab", "amid_lambda": 0.1, "amid_alpha": 0.5}),
    "CSD (S,S), tau=1": ("csd", {"csd_weights": ("S", "S"), "csd_temperature": 1.0}),
    "GKD (JSD beta=0.5)": ("kd", {"loss": "generalized_jsd", "loss_options": {"beta": 0.5}}),
}


def run_demo(out_dir: str | os.PathLike = "runs/hf_plugins_demo", settings: dict | None = None,
             progress: bool = True, threads: int = 1) -> dict:
    """Run the demo; returns ``{method: metrics}`` and writes ``results.json`` and ``loss_curves.png``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from .trainers.evaluation import evaluate_student

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    torch.set_num_threads(threads)
    settings = {**DEMO_SETTINGS, **(settings or {})}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    tok, split, teacher, s_path = prepare_models(out, settings, progress)
    held_out = split["validation"][: settings["eval_examples"]]
    ev = dict(max_new_tokens=settings["eval_max_new_tokens"], progress=progress)
    from transformers import AutoModelForCausalLM

    results = {
        "teacher (SFT)": evaluate_student(teacher, teacher, tok, held_out, **ev),
        "student (SFT init)": evaluate_student(AutoModelForCausalLM.from_pretrained(s_path), teacher, tok, held_out, **ev),
    }
    curves = {}
    for label, (method, kw) in DEMO_METHODS.items():
        model, history, per_step = distill(method, kw, tok, split, teacher, s_path, str(out / "runs" / method),
                                           settings, progress=progress)
        results[label] = {**evaluate_student(model, teacher, tok, held_out, **ev), "s_per_step": per_step}
        curves[label] = [(h["step"], h["distill_loss"], h["teacher_student_kl"]) for h in history if "distill_loss" in h]

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, pts in curves.items():
        steps, loss, kl = zip(*pts)
        axes[0].plot(steps, loss, label=label)
        axes[1].plot(steps, kl, label=label)
    axes[0].set(title="training loss (each method's own divergence)", xlabel="step", yscale="log")
    axes[1].set(title="teacher-student KL on the training batch (nats/token)", xlabel="step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(out / "loss_curves.png", dpi=120)
    plt.close(fig)
    (out / "results.json").write_text(json.dumps({"settings": settings, "results": results, "curves": curves}, indent=1))

    print(f"\nHeld-out pydoc topics ({len(held_out)} prompts), sampled completions (T=1, top-k 0):")
    print(f"{'model':<26}{'ROUGE-L':>9}{'KL(T||S)':>10}{'NLL':>8}")
    for label, m in results.items():
        print(f"{label:<26}{m['rouge_l']:>9.2f}{m['kl']:>10.3f}{m['nll']:>8.3f}")
    print(f"loss curves: {out / 'loss_curves.png'}   total time {time.perf_counter() - t0:.0f} s")
    return results
