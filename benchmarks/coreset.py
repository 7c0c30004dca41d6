"""Coreset benchmark: test accuracy of a fresh model trained on subsets chosen by LCMat and every baseline.

Datasets: sklearn digits (standardised 64-d pixels, MLP 64-64-10) and Fashion-MNIST (ConvNet-3, instance
norm). Per seed: one data split/pool, one warm-up ("early") model shared by every method (paired design:
same warm model, same fresh-model init and data order across methods), fractions 0.5/1/5/10 % per class,
test accuracy of the fresh model after training on the (weighted, where the method returns weights)
subset, and selection wall time (selection only, on the warm model; forgetting includes its own warm-up).
Configurations: all registered methods (uncertainty x 3 scores, submodular x 2 functions), LCMat
eps in {0, 0.01, 0.1, 1} (absolute), and LCMat eps 0.01 with cluster-size weights.

Peak memory: one selection per configuration at 10 % in a fresh subprocess (resource max RSS minus the
RSS before selecting), Fashion-MNIST pool.

Usage: ``python benchmarks/coreset.py --json benchmarks/results/coreset.json [--datasets digits fashion]
[--seeds 10] [--fashion-seeds 5]``. Results are rewritten after every seed, so a partial run is usable.
The markdown table goes next to the JSON (``.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from tv_plugins import ConvNet, load_fashion_mnist
from tv_plugins.accuracy import evaluate_accuracy
from tv_plugins.coreset import select_coreset
from tv_plugins.coreset.warmup import warm_up
from tv_plugins.data import LabeledTensors
from tv_plugins.testing_utils import digits_mlp, digits_tensors, train_classifier

FRACTIONS = (0.005, 0.01, 0.05, 0.1)
# label -> (method, options, train weighted)
CONFIGS: dict[str, tuple[str, dict, bool]] = {
    "uniform": ("uniform", {}, False),
    "herding": ("herding", {}, False),
    "kcenter_greedy": ("kcenter_greedy", {}, False),
    "forgetting": ("forgetting", {}, False),
    "grand": ("grand", {}, False),
    "el2n": ("el2n", {}, False),
    "uncertainty-entropy": ("uncertainty", {"score": "entropy"}, False),
    "uncertainty-margin": ("uncertainty", {"score": "margin"}, False),
    "uncertainty-lc": ("uncertainty", {"score": "least_confidence"}, False),
    "craig": ("craig", {}, True),
    "gradmatch": ("gradmatch", {}, True),
    "glister": ("glister", {}, False),
    "submodular-fl": ("submodular", {"function": "facility_location"}, False),
    "submodular-gc": ("submodular", {"function": "graph_cut"}, False),
    "lcmat eps=0 (gradient only)": ("lcmat", {"eps": 0.0}, False),
    "lcmat eps=0.01": ("lcmat", {"eps": 0.01}, False),
    "lcmat eps=0.1": ("lcmat", {"eps": 0.1}, False),
    "lcmat eps=1": ("lcmat", {"eps": 1.0}, False),
    "lcmat eps=0.01 + cluster weights": ("lcmat", {"eps": 0.01, "weights": "cluster_size"}, True),
}
LCMAT = "lcmat eps=0.01"


def digits_setup(seed: int, warmup_epochs: int = 1) -> dict:
    train, test = digits_tensors(seed)
    return {
        "train": train, "test": test, "fresh": lambda: digits_mlp(seed + 10_000), "new_selector": lambda: digits_mlp(seed),
        "warmup": {"epochs": warmup_epochs, "lr": 0.01, "batch_size": 32}, "train_kwargs": {"epochs": 200, "lr": 0.1},
    }


def fashion_setup(seed: int, pool: int, test_size: int, steps: int, width: int, warmup_epochs: int = 2) -> dict:
    mean, std = 0.2860, 0.3530
    train_set, test_set = load_fashion_mnist(train=True), load_fashion_mnist(train=False)
    g = torch.Generator().manual_seed(seed)
    keep = torch.cat([torch.nonzero(train_set.targets == c).flatten()[
        torch.randperm(int((train_set.targets == c).sum()), generator=g)[: pool // 10]] for c in range(10)]).sort().values
    x_train = (train_set.data[keep].float()[:, None] / 255 - mean) / std
    test_keep = torch.randperm(len(test_set), generator=g)[:test_size]
    x_test = (test_set.data[test_keep].float()[:, None] / 255 - mean) / std

    def net(s: int) -> torch.nn.Module:
        torch.manual_seed(s)
        return ConvNet(1, 10, 28, depth=3, width=width, norm="instance")

    return {
        "train": LabeledTensors(x_train, train_set.targets[keep], 10),
        "test": LabeledTensors(x_test, test_set.targets[test_keep], 10),
        "fresh": lambda: net(seed + 10_000), "new_selector": lambda: net(seed),
        "warmup": {"epochs": warmup_epochs, "lr": 0.01, "batch_size": 32},
        "train_kwargs": {"epochs": 10_000, "max_steps": steps, "lr": 0.01},
    }


def run_seed(setup: dict, seed: int, configs: dict) -> dict:
    train, test = setup["train"], setup["test"]
    wu = setup["warmup"]
    warm = warm_up(setup["new_selector"](), train, train.targets, epochs=wu["epochs"], lr=wu["lr"],
                   batch_size=wu["batch_size"], seed=seed, progress=False).model
    out = {}
    for label, (method, options, weighted) in configs.items():
        out[label] = {}
        for f in FRACTIONS:
            start = time.perf_counter()
            if method == "forgetting":  # its own seeded warm-up (>= 2 epochs) to count forgetting events
                sel = select_coreset(train, method, f, setup["new_selector"](), warmup_epochs=max(2, wu["epochs"]),
                                     warmup_lr=wu["lr"], batch_size=wu["batch_size"], seed=seed, progress=False)
            else:
                sel = select_coreset(train, method, f, warm, warmup_epochs=0, seed=seed, progress=False, **options)
            seconds = time.perf_counter() - start
            model = train_classifier(setup["fresh"](), train.images[sel.indices], train.labels[sel.indices],
                                     sel.weights if weighted else None, seed=seed, **setup["train_kwargs"])
            out[label][str(f)] = {"accuracy": evaluate_accuracy(model, test.images, test.labels), "seconds": seconds,
                                  "size": len(sel)}
    return out


def _ci95(diffs: np.ndarray) -> tuple[float, float]:
    from scipy import stats

    if len(diffs) < 2:
        return float(diffs.mean()), float("nan")
    half = stats.t.ppf(0.975, len(diffs) - 1) * diffs.std(ddof=1) / math.sqrt(len(diffs))
    return float(diffs.mean()), float(half)


def summarise(per_seed: list[dict]) -> dict:
    summary: dict = {"accuracy": {}, "seconds_median": {}, "paired": {}}
    for label in per_seed[0]:
        summary["accuracy"][label] = {}
        summary["seconds_median"][label] = {}
        for f in FRACTIONS:
            accs = np.array([s[label][str(f)]["accuracy"] for s in per_seed])
            summary["accuracy"][label][str(f)] = [float(accs.mean()), float(accs.std(ddof=1)) if len(accs) > 1 else 0.0]
            summary["seconds_median"][label][str(f)] = float(np.median([s[label][str(f)]["seconds"] for s in per_seed]))
    for other in ("uniform", "gradmatch", "craig", "lcmat eps=0 (gradient only)"):
        if other not in per_seed[0] or LCMAT not in per_seed[0]:
            continue
        summary["paired"][f"{LCMAT} - {other}"] = {
            str(f): _ci95(np.array([s[LCMAT][str(f)]["accuracy"] - s[other][str(f)]["accuracy"] for s in per_seed]))
            for f in FRACTIONS}
    if "gradmatch" in per_seed[0] and LCMAT in per_seed[0]:
        summary["time_ratio_lcmat_over_gradmatch"] = {
            str(f): summary["seconds_median"][LCMAT][str(f)] / max(summary["seconds_median"]["gradmatch"][str(f)], 1e-9)
            for f in FRACTIONS}
    return summary


def markdown(results: dict) -> str:
    lines = []
    for name, data in results["datasets"].items():
        if not data["per_seed"]:
            continue
        s, n = data["summary"], len(data["per_seed"])
        lines.append(f"#### {name} ({n} seeds; {data['setting']})\n")
        lines.append("| method | " + " | ".join(f"{100 * f:g} %" for f in FRACTIONS) + " | selection s (10 %, median) |")
        lines.append("|" + "---|" * (len(FRACTIONS) + 2))
        for label, per_f in s["accuracy"].items():
            cells = " | ".join(f"{m:.1f} ± {sd:.1f}" for m, sd in (per_f[str(f)] for f in FRACTIONS))
            lines.append(f"| {label} | {cells} | {s['seconds_median'][label][str(FRACTIONS[-1])]:.3f} |")
        lines.append("\nPaired differences (points, mean ± 95 % CI half-width over seeds):\n")
        lines.append("| comparison | " + " | ".join(f"{100 * f:g} %" for f in FRACTIONS) + " |")
        lines.append("|" + "---|" * (len(FRACTIONS) + 1))
        for comp, per_f in s["paired"].items():
            lines.append(f"| {comp} | " + " | ".join(f"{m:+.1f} ± {h:.1f}" for m, h in (per_f[str(f)] for f in FRACTIONS)) + " |")
        if "time_ratio_lcmat_over_gradmatch" in s:
            ratios = ", ".join(f"{100 * float(f):g} %: {r:.2f}" for f, r in s["time_ratio_lcmat_over_gradmatch"].items())
            lines.append(f"\nSelection time LCMat / GradMatch (median): {ratios}\n")
        if data.get("peak_memory_mb"):
            mem = ", ".join(f"{k}: {v:.0f} MB" for k, v in data["peak_memory_mb"].items())
            lines.append(f"Peak RSS increase of one selection at 10 % (fresh subprocess): {mem}\n")
    return "\n".join(lines)


def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise KeyError(field)


def memory_probe(args: argparse.Namespace) -> None:
    """Child mode: build the seed-0 Fashion pool and selection model, then measure one selection's peak RSS
    above the RSS before it (Linux: the peak is reset through /proc/self/clear_refs; elsewhere the
    process-lifetime ``ru_maxrss`` is used, which can only over-report the baseline)."""
    import gc

    setup = fashion_setup(0, args.fashion_pool, args.fashion_test, args.fashion_steps, args.fashion_width)
    model = setup["new_selector"]()
    method, options, _ = CONFIGS[args.memory_probe]
    gc.collect()
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM (peak RSS) to the current RSS
        before, reset = _status_kb("VmRSS"), True
    except OSError:
        before, reset = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, False
    select_coreset(setup["train"], method, 0.1, model, warmup_epochs=2 if method == "forgetting" else 0,
                   warmup_lr=0.01, batch_size=32, progress=False, **options)
    after = _status_kb("VmHWM") if reset else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(json.dumps({"delta_mb": (after - before) / 1024, "peak_reset": reset}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", default="benchmarks/results/coreset.json")
    parser.add_argument("--datasets", nargs="+", default=["digits", "fashion"], choices=["digits", "fashion"])
    parser.add_argument("--seeds", type=int, default=10, help="digits seeds")
    parser.add_argument("--digits-warmup-epochs", type=int, default=1,
                        help="warm-up of the shared selection MLP (the spec's pilot: 1 epoch; later models' "
                             "per-sample gradients vanish); forgetting always uses >= 2")
    parser.add_argument("--fashion-seeds", type=int, default=5)
    parser.add_argument("--fashion-pool", type=int, default=5000, help="training pool (stratified sample of the 60k)")
    parser.add_argument("--fashion-test", type=int, default=2000)
    parser.add_argument("--fashion-steps", type=int, default=150, help="SGD steps (batch 32) on each subset")
    parser.add_argument("--fashion-width", type=int, default=16)
    parser.add_argument("--memory", action="store_true", help="measure peak memory per configuration (Fashion)")
    parser.add_argument("--memory-probe", help=argparse.SUPPRESS)
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.memory_probe:
        memory_probe(args)
        return
    path = Path(args.json)
    path.parent.mkdir(parents=True, exist_ok=True)
    results = {
        "machine": {"python": sys.version.split()[0], "platform": platform.platform(), "processor": platform.processor(),
                    "torch": torch.__version__, "numpy": np.__version__, "threads": 1, "cpus": os.cpu_count()},
        "settings": {"fractions": FRACTIONS, "configs": {k: [m, o, w] for k, (m, o, w) in CONFIGS.items()},
                     "argv": sys.argv[1:]},
        "datasets": {},
    }
    for name in args.datasets:
        if name == "digits":
            seeds = range(args.seeds)
            setting = (f"~1205/592 split per seed (test 33 %), MLP 64-64-10, warm-up {args.digits_warmup_epochs} "
                       "epoch(s) SGD lr 0.01 batch 32 (forgetting: its own 2-epoch warm-up), fresh MLP 200 epochs "
                       "batch 32 SGD lr 0.1 nesterov cosine, final test accuracy")

            def make(seed: int) -> dict:
                return digits_setup(seed, args.digits_warmup_epochs)
        else:
            seeds = range(args.fashion_seeds)
            setting = (f"pool of {args.fashion_pool} training images (stratified, per seed), {args.fashion_test} test "
                       f"images, ConvNet-3 width {args.fashion_width} instance norm, warm-up 2 epochs SGD lr 0.01 "
                       f"batch 32, fresh ConvNet {args.fashion_steps} steps batch 32 SGD lr 0.01 nesterov cosine")

            def make(seed: int) -> dict:
                return fashion_setup(seed, args.fashion_pool, args.fashion_test, args.fashion_steps, args.fashion_width)

        entry = {"setting": setting, "per_seed": [], "summary": None}
        results["datasets"][name] = entry
        for seed in seeds:
            t0 = time.perf_counter()
            entry["per_seed"].append(run_seed(make(seed), seed, CONFIGS))
            entry["summary"] = summarise(entry["per_seed"])
            path.write_text(json.dumps(results, indent=1))
            path.with_suffix(".md").write_text(markdown(results))
            print(f"{name} seed {seed} done in {time.perf_counter() - t0:.0f} s", flush=True)
        if name == "fashion" and args.memory:
            entry["peak_memory_mb"] = {}
            for label in ("uniform", "gradmatch", "craig", LCMAT, "glister"):
                cmd = [sys.executable, __file__, "--memory-probe", label, "--fashion-pool", str(args.fashion_pool),
                       "--fashion-width", str(args.fashion_width)]
                line = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1]
                entry["peak_memory_mb"][label] = json.loads(line)["delta_mb"]
            path.write_text(json.dumps(results, indent=1))
            path.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


if __name__ == "__main__":
    main()
