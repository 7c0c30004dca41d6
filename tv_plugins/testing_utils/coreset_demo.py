"""Coreset demo on sklearn digits (embedded data, CPU): select 1/5/10 % per class with LCMat and baselines from
an early-trained MLP, train a fresh MLP on each subset and compare test accuracy.

``run_demo()`` returns the results table (markdown) and writes ``results.json`` and ``accuracy_vs_fraction.png``
under ``out_dir``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ..accuracy import evaluate_accuracy
from ..coreset import select_coreset
from ..coreset.warmup import warm_up
from .training import digits_mlp, digits_tensors, train_classifier

__all__ = ["DEMO_METHODS", "compare_methods", "plot_accuracy", "results_table", "run_demo"]

# (row label, method, options)
DEMO_METHODS = [
    ("uniform", "uniform", {}),
    ("herding", "herding", {}),
    ("craig", "craig", {}),
    ("gradmatch", "gradmatch", {}),
    ("lcmat (eps 0.01)", "lcmat", {"eps": 0.01}),
    ("lcmat + cluster weights", "lcmat", {"eps": 0.01, "weights": "cluster_size"}),
]


def compare_methods(seeds: tuple[int, ...] = (0, 1, 2), fractions: tuple[float, ...] = (0.01, 0.05, 0.1),
                    epochs: int = 200, progress: bool = True) -> dict:
    """``{label: {str(fraction): {"accuracy": [per seed], "seconds": [per seed]}}}`` (test accuracy in %)."""
    results: dict = {label: {str(f): {"accuracy": [], "seconds": []} for f in fractions} for label, _, _ in DEMO_METHODS}
    bar = tqdm(total=len(seeds) * len(DEMO_METHODS) * len(fractions), desc="coresets", disable=not progress)
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
                model = train_classifier(digits_mlp(seed + 10_000), train.images[sel.indices],
                                         train.labels[sel.indices], sel.weights if weighted else None, epochs=epochs,
                                         seed=seed)
                results[label][str(f)]["accuracy"].append(evaluate_accuracy(model, test.images, test.labels))
                results[label][str(f)]["seconds"].append(seconds)
                bar.update(1)
    bar.close()
    return results


def results_table(results: dict) -> str:
    """Markdown: test accuracy mean ± sd over seeds per fraction, and the median selection time at the largest."""
    fractions = list(next(iter(results.values())))
    head = "| method | " + " | ".join(f"{100 * float(f):g} %" for f in fractions) + \
        f" | selection s ({100 * float(fractions[-1]):g} %) |"
    lines = [head, "|" + "---|" * (len(fractions) + 2)]
    for label, per_fraction in results.items():
        cells = []
        for f in fractions:
            accs = torch.tensor(per_fraction[f]["accuracy"])
            cells.append(f"{accs.mean():.1f} ± {accs.std() if len(accs) > 1 else 0:.1f}")
        secs = torch.tensor(per_fraction[fractions[-1]]["seconds"]).median()
        lines.append(f"| {label} | " + " | ".join(cells) + f" | {secs:.3f} |")
    return "\n".join(lines)


def plot_accuracy(results: dict, path: str | Path, title: str = "sklearn digits: coreset selection") -> Path:
    """Accuracy vs fraction, one line per method with mean ± sd error bars over seeds (PNG)."""
    from matplotlib.figure import Figure  # no pyplot state: works headless and in notebooks

    fractions = list(next(iter(results.values())))
    xs = [100 * float(f) for f in fractions]
    styles = ["-", "--", "-.", ":"]
    markers = ["o", "s", "^", "D", "v", "P", "X", "*"]
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    for i, (label, per_fraction) in enumerate(results.items()):
        accs = [torch.tensor(per_fraction[f]["accuracy"]) for f in fractions]
        ax.errorbar(xs, [float(a.mean()) for a in accs], yerr=[float(a.std()) if len(a) > 1 else 0.0 for a in accs],
                    label=label, marker=markers[i % len(markers)], linestyle=styles[i % len(styles)], capsize=3,
                    linewidth=1.5, markersize=6)
    ax.set_xscale("log")
    ax.set_xticks(xs, [f"{x:g} %" for x in xs])
    ax.minorticks_off()
    ax.set_xlabel("fraction of each class kept")
    ax.set_ylabel("test accuracy (%), mean ± sd over seeds")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    return path


def run_demo(out_dir: str = "runs/tv_plugins/coreset", progress: bool = True, seeds: tuple[int, ...] = (0, 1, 2),
             fractions: tuple[float, ...] = (0.01, 0.05, 0.1), epochs: int = 200) -> str:
    """Run the comparison, write ``results.json`` and ``accuracy_vs_fraction.png``; return the markdown table."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny MLPs: one thread is ~10x faster than two contending ones
    try:
        results = compare_methods(seeds, fractions, epochs, progress)
    finally:
        torch.set_num_threads(threads)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps({"seeds": list(seeds), "fractions": list(fractions),
                                                  "epochs": epochs, "results": results}, indent=1))
    plot_accuracy(results, out / "accuracy_vs_fraction.png")
    return results_table(results)
