"""End-to-end distillation demo on the pydoc corpus: SFT teacher -> AMiD / CSD / GKD students.

``python -m hf_plugins demo [--output-dir DIR] [--seed N] [--quick]`` runs ``run_demo()``:

1. an instruction-style split of the pydoc corpus (prompt = topic heading + opening words, completion = the
   continuation; held-out topics for evaluation) and a BPE tokenizer trained on it;
2. an SFT teacher and an SFT-initialised smaller student (both cached under the output directory, keyed by
   their settings);
3. AMiD (AB divergence, lambda 0.1), CSD ((S,S), tau 1) and GKD (JSD beta 0.5) distillation from the same
   student initialisation with identical settings (GKD's lmbda = 0.5 on-/off-policy mix for all three);
4. held-out ROUGE-L (sampled completions, with its standard error over the prompts), teacher-student KL and
   NLL, printed as a table and saved with the loss curves (``results.json``, ``loss_curves.png``).

Sizes are CPU-scale: the teacher is ``tiny_causal_lm(..., "student-base")`` (0.3M parameters) and the
student ``tiny_causal_lm(..., "student")`` (60k); torch runs single-threaded. At this scale, with one seed,
the three methods are not told apart: the comparison is a check that the pipeline runs, not a ranking.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from .console import bars_without_log_dicts, host_warnings_filtered, stage

__all__ = ["DEMO_METHODS", "DEMO_SETTINGS", "QUICK_SETTINGS", "distill", "prepare_models", "run_demo"]

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
# --quick: every stage still runs, about a minute on 2 cores
QUICK_SETTINGS = {**DEMO_SETTINGS, "teacher_sft_steps": 120, "student_sft_steps": 40, "distill_steps": 30,
                  "eval_examples": 32, "eval_max_new_tokens": 24}
# tiny models train fastest on the CPU, in fp32, without activation checkpointing
_DEVICE = {"use_cpu": True, "bf16": False, "activation_checkpointing": False}

DEMO_METHODS = {
    "AMiD (AB, lambda=0.1)": ("amid", {"amid_divergence": "ab", "amid_lambda": 0.1, "amid_alpha": 0.5}),
    "CSD (S,S), tau=1": ("csd", {"csd_weights": ("S", "S"), "csd_temperature": 1.0}),
    "GKD (JSD beta=0.5)": ("kd", {"loss": "generalized_jsd", "loss_options": {"beta": 0.5}}),
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


def _sft_model(root: Path, role: str, tok, split, settings: dict, seed: int, progress: bool):
    """The SFT ``role`` ("teacher" or "student") model, trained once and cached under ``root``."""
    from .supervised import supervised_finetune
    from .tiny_models import tiny_causal_lm

    size, steps = settings[f"{role}_size"], settings[f"{role}_sft_steps"]
    key = {**{k: settings[k] for k in ("vocab_size", "batch_size", "learning_rate")}, "size": size,
           "steps": steps, "seed": seed}
    path = root / ("teacher" if role == "teacher" else f"student_init_seed{seed}")
    model = _load_or_train(
        path, key, lambda: tiny_causal_lm(tok, size, seed=seed),
        lambda m: supervised_finetune(m, tok, split["train"], str(root / "tmp"), steps, settings["learning_rate"],
                                      settings["batch_size"], seed=seed, progress=progress, **_DEVICE),
    )
    return model, path


def prepare_models(root: str | os.PathLike, settings: dict = DEMO_SETTINGS, progress: bool = True, seed: int = 0):
    """Tokenizer, data split, SFT teacher (seed 0) and SFT-initialised student (``seed``), cached under ``root``.

    Returns ``(tokenizer, split, teacher, student_init_path)``; load the student with
    ``AutoModelForCausalLM.from_pretrained(student_init_path)`` for each run.
    """
    from .instruction_data import pydoc_instruction_split
    from .tokenizer import train_bpe_tokenizer

    root = Path(root)
    tok = train_bpe_tokenizer(settings["vocab_size"])
    split = pydoc_instruction_split()
    teacher, _ = _sft_model(root, "teacher", tok, split, settings, 0, progress)
    _, s_path = _sft_model(root, "student", tok, split, settings, seed, progress)
    tok.save_pretrained(s_path)
    return tok, split, teacher, s_path


def distill(method: str, config_kwargs: dict, tok, split, teacher, student_path, output_dir: str, settings: dict,
            seed: int = 0, progress: bool = True):
    """Distil the student at ``student_path`` with trainer ``method`` ("amid", "csd", "kd"); returns (model, history, s/step)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from ..trainers import AMiDConfig, AMiDTrainer, CSDConfig, CSDTrainer, KDConfig, KDTrainer

    trainer_cls, config_cls = {"amid": (AMiDTrainer, AMiDConfig), "csd": (CSDTrainer, CSDConfig),
                               "kd": (KDTrainer, KDConfig)}[method]
    base = dict(
        output_dir=output_dir, **_DEVICE, report_to="none",
        save_strategy="no", max_steps=settings["distill_steps"], per_device_train_batch_size=settings["batch_size"],
        learning_rate=settings["learning_rate"], lr_scheduler_type="cosine", max_grad_norm=1.0, weight_decay=0.01,
        logging_steps=max(1, settings["distill_steps"] // 30), max_new_tokens=settings["max_new_tokens"],
        temperature=1.0, lmbda=settings["lmbda"], max_length=256, seed=seed, data_seed=seed,
        disable_tqdm=not progress,
    )
    student = AutoModelForCausalLM.from_pretrained(student_path)
    trainer = trainer_cls(
        model=student, teacher_model=teacher, args=config_cls(**{**base, **config_kwargs}),
        train_dataset=Dataset.from_list([{"messages": e["messages"]} for e in split["train"]]), processing_class=tok,
    )
    bars_without_log_dicts(trainer)
    start = time.perf_counter()
    trainer.train()
    per_step = (time.perf_counter() - start) / settings["distill_steps"]
    return trainer.model, trainer.state.log_history, per_step


def _plot_curves(curves: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
    for label, pts in curves.items():
        steps, loss, kl = zip(*pts)
        axes[0].plot(steps, loss, label=label)
        axes[1].plot(steps, kl, label=label)
    axes[0].set(title="training loss (each method's own divergence)", xlabel="step", yscale="log")
    axes[1].set(title="teacher-student KL on the training batch (nats/token)", xlabel="step")
    axes[1].legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _print_results(results: dict, n_prompts: int, settings: dict, seed: int) -> None:
    print(f"\nHeld-out pydoc topics ({n_prompts} prompts), sampled completions (T=1, top-k 0), seed {seed}:")
    print(f"{'model':<26}{'ROUGE-L':>9}{'± s.e.':>8}{'KL(T||S)':>10}{'NLL':>8}")
    for label, m in results.items():
        print(f"{label:<26}{m['rouge_l']:>9.2f}{m['rouge_l_se']:>8.2f}{m['kl']:>10.3f}{m['nll']:>8.3f}")
    distilled = [results[label] for label in DEMO_METHODS]
    spread = max(m["rouge_l"] for m in distilled) - min(m["rouge_l"] for m in distilled)
    noise = 2 * max(m["rouge_l_se"] for m in distilled)
    verdict = "within" if spread <= noise else "larger than"
    print(f"\nTiny models (teacher 0.3M, student 60k parameters), {settings['distill_steps']} distillation steps, "
          f"one seed: the distilled students' ROUGE-L differ by {spread:.2f}, {verdict} two standard errors "
          f"({noise:.2f}). This shows the pipeline working; it does not rank the methods (see "
          "benchmarks/kd_quality.py for a multi-seed comparison).")


def run_demo(output_dir: str | os.PathLike = "runs/hf_plugins", seed: int = 0, quick: bool = False,
             progress: bool = True, settings: dict | None = None) -> dict:
    """Run the demo; returns ``{model: metrics}`` and writes ``results.json`` and ``loss_curves.png``."""
    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # before TRL is imported
    import torch
    from transformers import AutoModelForCausalLM

    from .evaluation import evaluate_student

    torch.set_num_threads(1)  # tiny models on a shared CPU: one thread is fastest
    settings = {**(QUICK_SETTINGS if quick else DEMO_SETTINGS), **(settings or {})}
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    n_stages = 3 + len(DEMO_METHODS)
    with host_warnings_filtered():
        stage(1, n_stages, f"tokenizer, data, SFT teacher ({settings['teacher_sft_steps']} steps) and student "
                           f"({settings['student_sft_steps']} steps), cached in {out}")
        tok, split, teacher, s_path = prepare_models(out, settings, progress, seed=seed)
        held_out = split["validation"][: settings["eval_examples"]]
        ev = dict(max_new_tokens=settings["eval_max_new_tokens"], seed=seed, progress=progress)
        stage(2, n_stages, f"evaluating the SFT teacher and student on {len(held_out)} held-out prompts")
        results = {
            "teacher (SFT)": evaluate_student(teacher, teacher, tok, held_out, **ev),
            "student (SFT init)": evaluate_student(AutoModelForCausalLM.from_pretrained(s_path), teacher, tok,
                                                   held_out, **ev),
        }
        curves = {}
        for i, (label, (method, kw)) in enumerate(DEMO_METHODS.items(), start=3):
            stage(i, n_stages, f"distilling with {label} ({settings['distill_steps']} steps), then evaluating")
            model, history, per_step = distill(method, kw, tok, split, teacher, s_path, str(out / "runs" / method),
                                               settings, seed=seed, progress=progress)
            results[label] = {**evaluate_student(model, teacher, tok, held_out, **ev), "s_per_step": per_step}
            curves[label] = [(h["step"], h["distill_loss"], h["teacher_student_kl"]) for h in history
                             if "distill_loss" in h]
    stage(n_stages, n_stages, "results")
    _plot_curves(curves, out / "loss_curves.png")
    (out / "results.json").write_text(json.dumps({"settings": settings, "seed": seed, "results": results,
                                                  "curves": curves}, indent=1))
    _print_results(results, len(held_out), settings, seed)
    print(f"loss curves: {out / 'loss_curves.png'}   total time {time.perf_counter() - t0:.0f} s")
    return results
