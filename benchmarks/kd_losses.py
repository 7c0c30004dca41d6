"""Benchmark: distillation losses from hidden states, forward + backward, time and peak memory on CPU.

For each vocabulary size V (N valid positions, hidden size H, fp32) every configuration runs in a fresh
subprocess: it builds the student/teacher hidden states and LM heads, then times ``repeats`` forward+backward
passes (after one warm-up) of

* anchors: TRL GKD ``generalized_jsd_loss`` on full logits, TRL's chunked distillation loss
  (``trl.trainer.distillation_trainer._chunked_divergence_loss``);
* ours: ``amid``, ``csd``, ``generalized_jsd`` on full logits, and ``chunked(...)`` of each.

Full-logit configurations include the projections ``h @ W.T`` (both models) and their backward, so every
configuration starts from the same inputs and produces gradients for the student's hidden states and head.
Peak memory is the growth of the process's max RSS over the RSS once the inputs exist.

    python benchmarks/kd_losses.py --json benchmarks/results/kd_losses.json
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

METHODS = [
    "trl_gkd_full",
    "trl_chunked",
    "amid_full",
    "csd_full",
    "generalized_jsd_full",
    "amid_chunked",
    "csd_chunked",
    "generalized_jsd_chunked",
]
ANCHOR_TIME, ANCHOR_MEMORY = "trl_gkd_full", "trl_chunked"
BETA = 0.5  # generalized JSD mixture weight, the same convention in TRL GKD, TRL chunked and ours


def _rss_gb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e9


def _reset_peak_rss() -> None:
    """Reset the kernel's high-water RSS mark (VmHWM) of this process (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def _peak_rss_gb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1e6
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _available_gb() -> float:
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1e6
    return float("nan")


def _make_step(method: str, h_s, w_s, h_t, w_t, chunk_size: int):
    """A closure running one forward+backward of ``method``; returns the loss value."""
    import torch

    from hf_plugins import losses

    def full(loss_fn):
        def step():
            with torch.no_grad():
                teacher_logits = h_t @ w_t.T
            loss = loss_fn(h_s @ w_s.T, teacher_logits)
            loss.backward()
            return loss.item()

        return step

    if method == "trl_gkd_full":
        os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
        from trl.experimental.gkd import GKDTrainer

        return full(lambda s, t: GKDTrainer.generalized_jsd_loss(s, t, beta=BETA))
    if method == "trl_chunked":
        from trl.trainer.distillation_trainer import _chunked_divergence_loss

        mask = torch.ones(1, h_s.shape[0], dtype=torch.long)

        def step():
            loss, _, _ = _chunked_divergence_loss(
                h_s.unsqueeze(0), h_t.unsqueeze(0), w_s, w_t, mask, beta=BETA
            )
            loss.backward()
            return loss.item()

        return step
    name, path = method.rsplit("_", 1)
    options = {"beta": BETA} if name == "generalized_jsd" else {}
    if path == "full":
        return full(lambda s, t: losses.get(name, **options)(s, t))

    def step():
        loss = losses.chunked(name, h_s, w_s, h_t, w_t, chunk_size=chunk_size, **options)
        loss.backward()
        return loss.item()

    return step


def worker(method: str, vocab: int, n: int, hidden: int, repeats: int, chunk_size: int, threads: int) -> dict:
    import torch

    torch.set_num_threads(threads)
    g = torch.Generator().manual_seed(0)
    h_s = torch.randn(n, hidden, generator=g).requires_grad_(True)
    w_s = (torch.randn(vocab, hidden, generator=g) / hidden**0.5).requires_grad_(True)
    h_t = torch.randn(n, hidden, generator=g)
    w_t = torch.randn(vocab, hidden, generator=g) * (1.5 / hidden**0.5)
    step = _make_step(method, h_s, w_s, h_t, w_t, chunk_size)
    base_rss = _rss_gb()
    _reset_peak_rss()
    times, value = [], float("nan")
    for i in range(repeats + 1):  # the first run is a warm-up
        h_s.grad = w_s.grad = None
        start = time.perf_counter()
        value = step()
        if i:
            times.append(time.perf_counter() - start)
    peak = _peak_rss_gb()
    return {
        "method": method,
        "vocab": vocab,
        "times_s": times,
        "median_s": statistics.median(times),
        "peak_rss_growth_gb": peak - base_rss,
        "loss": value,
        "grad_norm_w": float(w_s.grad.norm()),
    }


def _markdown(results: dict) -> str:
    settings = results["settings"]
    lines = [
        f"# KD losses: forward+backward from hidden states (N={settings['n']}, H={settings['hidden']}, fp32, "
        f"CPU, {settings['threads']} threads, median of {settings['repeats']})",
        "",
        f"Machine: {results['machine']['cpu']}; torch {results['versions']['torch']}, "
        f"trl {results['versions']['trl']}. Time ratio vs TRL GKD full logits, memory ratio vs TRL chunked.",
        "",
        "| V | method | median time (s) | time / TRL GKD full | peak RSS growth (GB) | memory / TRL chunked | loss |",
        "|---|---|---|---|---|---|---|",
    ]
    for vocab, rows in results["runs"].items():
        by = {r["method"]: r for r in rows}
        t_ref = by.get(ANCHOR_TIME, {}).get("median_s")
        m_ref = by.get(ANCHOR_MEMORY, {}).get("peak_rss_growth_gb")
        for r in rows:
            if "skipped" in r:
                lines.append(f"| {vocab} | {r['method']} | skipped: {r['skipped']} | | | | |")
                continue
            t_ratio = f"{r['median_s'] / t_ref:.2f}" if t_ref else "n/a"
            m_ratio = f"{r['peak_rss_growth_gb'] / m_ref:.2f}" if m_ref else "n/a"
            lines.append(
                f"| {vocab} | {r['method']} | {r['median_s']:.2f} | {t_ratio} | {r['peak_rss_growth_gb']:.2f} | "
                f"{m_ratio} | {r['loss']:.5f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/kd_losses.json"))
    parser.add_argument("--vocab", type=int, nargs="+", default=[32000, 128000])
    parser.add_argument("--methods", nargs="+", default=METHODS, choices=METHODS)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="chunked(...) chunk size (library default)"
    )
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()

    from hf_plugins.losses import default_chunk_size

    if args.worker:
        chunk_size = args.chunk_size or default_chunk_size(args.vocab[0])
        out = worker(args.worker, args.vocab[0], args.n, args.hidden, args.repeats, chunk_size, args.threads)
        print("RESULT " + json.dumps(out))
        return

    import torch
    import trl

    runs: dict[str, list] = {}
    for vocab in args.vocab:
        runs[str(vocab)] = []
        for method in args.methods:
            # full [N, V] fp32 logits of two models plus their gradients and temporaries: ~8 copies for TRL
            need = (
                9 if "full" in method else 3
            ) * args.n * vocab * 4 / 1e9 + 2 * vocab * args.hidden * 4 / 1e9
            available = _available_gb()
            if available < need + 1.0:
                row = {
                    "method": method,
                    "vocab": vocab,
                    "skipped": f"{available:.1f} GB available < {need:.1f}",
                }
                print(json.dumps(row), flush=True)
                runs[str(vocab)].append(row)
                continue
            cmd = [sys.executable, __file__, "--worker", method, "--vocab", str(vocab), "--n", str(args.n)]
            cmd += [
                "--hidden",
                str(args.hidden),
                "--repeats",
                str(args.repeats),
                "--threads",
                str(args.threads),
            ]
            if args.chunk_size:
                cmd += ["--chunk-size", str(args.chunk_size)]
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
            lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                row = {"method": method, "vocab": vocab, "skipped": f"worker failed: {proc.stderr[-300:]}"}
            else:
                row = json.loads(lines[-1][len("RESULT ") :])
                row["available_gb_before"] = round(available, 1)
                row["load_avg_after"] = os.getloadavg()
            print(json.dumps(row), flush=True)
            runs[str(vocab)].append(row)

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    results = {
        "settings": {
            "n": args.n,
            "hidden": args.hidden,
            "dtype": "float32",
            "device": "cpu",
            "repeats": args.repeats,
            "warmup": 1,
            "threads": args.threads,
            "chunk_size": {str(v): args.chunk_size or default_chunk_size(v) for v in args.vocab},
            "beta": BETA,
            "amid": "defaults (alpha=0.5, lam=0.1, ab divergence 0.2/0.7, order pr)",
            "csd": "defaults (weights student/student, temperature 1)",
            "memory": "peak RSS (VmHWM, reset after the inputs were built) minus the RSS then; fresh process each",
        },
        "machine": {
            "cpu": cpu,
            "cpu_count": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
            "load_avg_at_end": os.getloadavg(),
        },
        "versions": {"torch": torch.__version__, "trl": trl.__version__},
        "runs": runs,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(results, indent=2))
    args.json.with_suffix(".md").write_text(_markdown(results))
    print(_markdown(results))


if __name__ == "__main__":
    main()
