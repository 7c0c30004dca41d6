"""Distillation quality at CPU scale: SFT teacher -> SFT-initialised student, 14 objectives, identical settings.

Protocol (the AMiD/CSD/DistiLLM papers' recipe, shrunk to CPU): pydoc instruction split (held-out topics),
an SFT teacher and an SFT-initialised smaller student (``hf_plugins.testing_utils.demo.prepare_models``),
then each objective trains the same student initialisation for the same number of steps with the same
optimiser, batch and data order. All objectives are off-policy (dataset completions) except GKD, which
uses its lmbda = 0.5 on-/off-policy mix as published. Metrics on held-out prompts: ROUGE-L (rouge-score,
stemming, max over references) of sampled completions (T = 1, top-k 0), teacher-forced KL(teacher||student)
and student NLL; time per training step relative to GKD; peak RSS of each configuration's own process.

Every configuration runs in a fresh subprocess (all its seeds); results are the mean and std over seeds.

    python benchmarks/kd_quality.py --json benchmarks/results/kd_quality.json --seeds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

# name -> (trainer kind, config options)
METHODS = {
    "SFT only": ("sft", {}),
    "KD (forward KL)": ("kd", {"loss": "forward_kl"}),
    "RKL": ("kd", {"loss": "reverse_kl"}),
    "SKL (DistiLLM, 0.1)": ("kd", {"loss": "skew_forward_kl", "loss_options": {"lam": 0.1}}),
    "SRKL (DistiLLM, 0.1)": ("kd", {"loss": "skew_reverse_kl", "loss_options": {"lam": 0.1}}),
    "GKD JSD(0.5), lmbda=0.5": ("kd", {"loss": "generalized_jsd", "loss_options": {"beta": 0.5}, "lmbda": 0.5}),
    "AB (0.2, 0.7)": ("kd", {"loss": "ab_divergence", "loss_options": {"alpha": 0.2, "beta": 0.7}}),
    "AMiD AB lam=0.1 alpha=0.5": ("amid", {"amid_alpha": 0.5, "amid_lambda": 0.1}),
    "AMiD AB lam=0.1 alpha=0": ("amid", {"amid_alpha": 0.0, "amid_lambda": 0.1}),
    "AMiD AB lam=0.1 alpha=-3": ("amid", {"amid_alpha": -3.0, "amid_lambda": 0.1}),
    "CSD (S,S) tau=1": ("csd", {"csd_weights": "SS", "csd_temperature": 1.0}),
    "CSD (S,S) tau=1.5": ("csd", {"csd_weights": "SS", "csd_temperature": 1.5}),
    "CSD (T,S)": ("csd", {"csd_weights": "TS"}),
    "CSD (U,S)": ("csd", {"csd_weights": "US"}),
}
ANCHOR = "GKD JSD(0.5), lmbda=0.5"

ROOT = Path(__file__).resolve().parent.parent
CACHE = ROOT / "runs" / "hf_plugins"  # shares the demo's cached teacher / student inits


def _settings(args) -> dict:
    from hf_plugins.testing_utils.demo import DEMO_SETTINGS

    return {**DEMO_SETTINGS, "distill_steps": args.steps, "eval_examples": args.eval_examples, "lmbda": 0.0}


def run_worker(args) -> None:
    """One configuration, all seeds, in this (fresh) process; writes a JSON list to ``args.out``."""
    import torch
    from transformers import AutoModelForCausalLM

    from hf_plugins.testing_utils.demo import distill, prepare_models
    from hf_plugins.testing_utils.evaluation import evaluate_student
    from hf_plugins.testing_utils.supervised import supervised_finetune

    torch.set_num_threads(1)
    settings = _settings(args)
    kind, options = METHODS[args.worker]
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    out = []
    for seed in range(args.seeds):
        tok, split, teacher, s_path = prepare_models(CACHE, settings, progress=False, seed=seed)
        held_out = split["validation"][: settings["eval_examples"]]
        run_dir = str(ROOT / "runs" / "kd_quality" / f"{kind}-{seed}")
        if kind == "sft":
            model = AutoModelForCausalLM.from_pretrained(s_path)
            start = time.perf_counter()
            supervised_finetune(model, tok, split["train"], run_dir, settings["distill_steps"],
                                settings["learning_rate"], settings["batch_size"], seed=seed, progress=False,
                                use_cpu=True)
            per_step = (time.perf_counter() - start) / settings["distill_steps"]
        else:
            model, _, per_step = distill(kind, dict(options), tok, split, teacher, s_path, run_dir, settings,
                                         seed=seed, progress=False)
        metrics = evaluate_student(model, teacher, tok, held_out, max_new_tokens=settings["eval_max_new_tokens"],
                                   seed=seed, progress=False)
        out.append({"seed": seed, "s_per_step": per_step, **metrics})
        print(f"  {args.worker} seed {seed}: {metrics} {per_step:.3f} s/step", flush=True)
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    Path(args.out).write_text(json.dumps({"runs": out, "peak_rss_mib": peak_kib / 1024, "rss_at_start_mib": rss0 / 1024}))


def _mean_std(values):
    return statistics.fmean(values), (statistics.stdev(values) if len(values) > 1 else 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", default=str(ROOT / "benchmarks" / "results" / "kd_quality.json"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=100, help="distillation steps per run")
    parser.add_argument("--eval-examples", type=int, default=64, help="held-out prompts per evaluation")
    parser.add_argument("--methods", nargs="*", default=list(METHODS), help="subset of the method names")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.seeds < 1 or args.steps < 1 or args.eval_examples < 1:
        parser.error("--seeds, --steps and --eval-examples must be >= 1")
    unknown = [m for m in args.methods if m not in METHODS]
    if unknown:
        parser.error(f"unknown methods {unknown}; choose from {list(METHODS)}")
    if args.worker:
        run_worker(args)
        return

    import torch
    import transformers
    import trl

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
    from hf_plugins.testing_utils.demo import prepare_models

    torch.set_num_threads(1)  # tiny models on a shared CPU: one thread per process is fastest
    settings = _settings(args)
    t0 = time.perf_counter()
    for seed in range(args.seeds):  # build the cached teacher / student inits once, outside the timed workers
        prepare_models(CACHE, settings, progress=True, seed=seed)
    results = {}
    tmp = ROOT / "runs" / "kd_quality"
    tmp.mkdir(parents=True, exist_ok=True)
    for name in args.methods:
        print(f"== {name}", flush=True)
        out = tmp / f"worker-{abs(hash(name))}.json"
        cmd = [sys.executable, __file__, "--worker", name, "--out", str(out), "--seeds", str(args.seeds),
               "--steps", str(args.steps), "--eval-examples", str(args.eval_examples)]
        subprocess.run(cmd, check=True, env={**os.environ, "TRL_EXPERIMENTAL_SILENCE": "1"})
        results[name] = json.loads(out.read_text())

    anchor = statistics.median(r["s_per_step"] for r in results[ANCHOR]["runs"]) if ANCHOR in results else None
    summary = {}
    for name, res in results.items():
        runs = res["runs"]
        row = {k: _mean_std([r[k] for r in runs]) for k in ("rouge_l", "kl", "nll")}
        med = statistics.median(r["s_per_step"] for r in runs)
        row["s_per_step_median"] = med
        row["time_vs_gkd"] = med / anchor if anchor else None
        row["peak_rss_mib"] = res["peak_rss_mib"]
        summary[name] = row
    record = {
        "benchmark": "kd_quality",
        "settings": {**settings, "seeds": args.seeds, "anchor": ANCHOR, "off_policy_except_gkd": True,
                     "torch_threads": 1, "methods": {k: METHODS[k] for k in args.methods}},
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count(),
                    "python": platform.python_version()},
        "versions": {"torch": torch.__version__, "transformers": transformers.__version__, "trl": trl.__version__},
        "wall_seconds": time.perf_counter() - t0,
        "summary": summary,
        "runs": results,
    }
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1))
    lines = [
        f"Held-out pydoc prompts ({settings['eval_examples']}), {args.seeds} seeds (mean ± std), "
        f"{settings['distill_steps']} steps, batch {settings['batch_size']}; teacher {settings['teacher_size']}, "
        f"student {settings['student_size']}.",
        "",
        "| method | ROUGE-L | KL(teacher‖student) | NLL | time/step vs GKD | peak RSS (MiB) |",
        "|---|---|---|---|---|---|",
    ]
    for name, row in summary.items():
        ratio = f"{row['time_vs_gkd']:.2f}" if row["time_vs_gkd"] is not None else "n/a"
        lines.append(
            f"| {name} | {row['rouge_l'][0]:.2f} ± {row['rouge_l'][1]:.2f} | {row['kl'][0]:.3f} ± {row['kl'][1]:.3f} "
            f"| {row['nll'][0]:.3f} ± {row['nll'][1]:.3f} | {ratio} | {row['peak_rss_mib']:.0f} |"
        )
    path.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
