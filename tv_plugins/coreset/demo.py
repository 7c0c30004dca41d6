"""Coreset demo on sklearn digits (embedded data, CPU, well under 5 minutes): select 1/5/10 % per class with
LCMat and baselines from an early-trained MLP, train a fresh MLP on each subset and compare test accuracy.

``run_demo()`` prints and returns the results table, and writes ``results.json`` and
``accuracy_vs_fraction.png`` under ``out_dir``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from ..datasets import DigitsDataset
from .select import select_coreset
from .training import TensorDataset, evaluate_accuracy, train_classifier
from .warmup import warm_up

__all__ = ["DEMO_METHODS", "digits_mlp", "digits_tensors", "run_demo"]

# (row label, method, options)
DEMO_METHODS = [
    ("uniform", "uniform", {}),
    ("herding", "herding", {}),
    ("craig", "craig", {}),
    ("gradmatch", "gradmatch", {}),
    ("lcmat (eps 0.01)", "lcmat", {"eps": 0.01}),
    ("lcmat + cluster weights", "lcmat", {"eps": 0.01, "weights": "cluster_size"}),
]


def digits_tensors(seed: int = 0, test_fraction: float = 0.33) -> tuple[TensorDataset, TensorDataset]:
    """Train/test digits as flat 64-d features standardised with the train statistics (the spec's pilot setup)."""
    train, test = (DigitsDataset(train=t, test_fraction=test_fraction, seed=seed) for t in (True, False))
    x_train, x_test = (d.data.reshape(len(d), -1).float() / 255.0 for d in (train, test))
    mean, std = x_train.mean(0), x_train.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    return TensorDataset((x_train - mean) / std, train.targets), TensorDataset((x_test - mean) / std, test.targets)


def digits_mlp(seed: int, hidden: int = 64) -> nn.Module:
    """MLP 64 -> hidden (ReLU) -> 10 with He/LeCun normal init and zero biases (the spec's pilot model)."""
    g = torch.Generator().manual_seed(seed)
    model = nn.Sequential(nn.Linear(64, hidden), nn.ReLU(), nn.Linear(hidden, 10))
    with torch.no_grad():
        model[0].weight.copy_(torch.randn(hidden, 64, generator=g) * (2 / 64) ** 0.5)
        model[2].weight.copy_(torch.randn(10, hidden, generator=g) * (1 / hidden) ** 0.5)
        model[0].bias.zero_()
        model[2].bias.zero_()
    return model


def _table(results: dict, fractions: list[float]) -> str:
    head = "| method | " + " | ".join(f"{100 * f:g} %" for f in fractions) + " | selection s (10 %) |"
    lines = [head, "|" + "---|" * (len(fractions) + 2)]
    for label, per_fraction in results.items():
        cells = []
        for f in fractions:
            accs = torch.tensor(per_fraction[str(f)]["accuracy"])
            cells.append(f"{accs.mean():.1f} ± {accs.std() if len(accs) > 1 else 0:.1f}")
        secs = torch.tensor(per_fraction[str(fractions[-1])]["seconds"]).median()
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {secs:.3f} |")
    return "\n".join(lines)


def run_demo(out_dir: str = "runs/tv_coreset", progress: bool = True, seeds: tuple[int, ...] = (0, 1, 2),
             fractions: tuple[float, ...] = (0.01, 0.05, 0.1), epochs: int = 200) -> str:
    """Run the comparison and return the printed markdown table (test accuracy %, mean ± std over seeds)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: one thread is ~10x faster than two contending ones
    try:
        return _run(Path(out_dir), progress, seeds, fractions, epochs)
    finally:
        torch.set_num_threads(threads)


def _run(out: Path, progress: bool, seeds: tuple[int, ...], fractions: tuple[float, ...], epochs: int) -> str:
    out.mkdir(parents=True, exist_ok=True)
    results: dict = {label: {str(f): {"accuracy": [], "seconds": []} for f in fractions} for label, _, _ in DEMO_METHODS}
    bar = tqdm(total=len(seeds) * len(DEMO_METHODS) * len(fractions), desc="coreset demo", disable=not progress)
    for seed in seeds:
        train, test = digits_tensors(seed)
        # an early model (1 epoch, lr 0.01): later models have vanishing per-sample gradients
        warm = warm_up(digits_mlp(seed), train, train.targets, epochs=1, lr=0.01, batch_size=32, seed=seed,
                       progress=False).model
        for label, method, options in DEMO_METHODS:
            for f in fractions:
                start = time.perf_counter()
                sel = select_coreset(train, method, f, warm, warmup_epochs=0, seed=seed, progress=False, **options)
                seconds = time.perf_counter() - start
                weighted = options.get("weights") is not None or method in ("craig", "gradmatch")
                model = train_classifier(digits_mlp(seed + 10_000), train.data[sel.indices], train.targets[sel.indices],
                                         sel.weights if weighted else None, epochs=epochs, seed=seed)
                results[label][str(f)]["accuracy"].append(evaluate_accuracy(model, test.data, test.targets))
                results[label][str(f)]["seconds"].append(seconds)
                bar.update(1)
    bar.close()
    table = _table(results, list(fractions))
    (out / "results.json").write_text(json.dumps({"seeds": list(seeds), "fractions": list(fractions),
                                                  "epochs": epochs, "results": results}, indent=1))
    _plot(results, list(fractions), out / "accuracy_vs_fraction.png")
    print(table)
    return table


def _plot(results: dict, fractions: list[float], path: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:  # matplotlib is a dev extra; the table and JSON are written regardless
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, per_fraction in results.items():
        means = [float(torch.tensor(per_fraction[str(f)]["accuracy"]).mean()) for f in fractions]
        ax.plot([100 * f for f in fractions], means, marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel("fraction of the training set (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("sklearn digits: coreset selection")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
