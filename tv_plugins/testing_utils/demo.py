"""``python -m tv_plugins demo``: LCMat coresets and FreD / DDiF condensation on sklearn digits, offline on CPU.

Writes under ``--output-dir``: ``coreset/results.json``, ``coreset/accuracy_vs_fraction.png``, the saved synthetic
sets and ``condensation/synthetic_sets.png``. ``--quick`` runs every stage at a smaller size (about a minute).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from . import condensation_demo, coreset_demo

__all__ = ["main", "run"]


def _stage(number: int, text: str) -> None:
    print(f"\n== [{number}/4] {text}", flush=True)


def run(output_dir: str | Path = "runs/tv_plugins", seed: int = 0, quick: bool = False, progress: bool = True) -> None:
    """All four stages; ``quick`` shrinks seeds, epochs and iterations but keeps every stage."""
    out = Path(output_dir)
    seeds = (seed,) if quick else (seed, seed + 1, seed + 2)
    fractions = (0.01, 0.05, 0.1)
    epochs = 100 if quick else 200
    iterations, runs, eval_epochs, init_steps = (50, 2, 100, 500) if quick else (200, 3, 300, 1000)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread beats two contending ones on a shared CPU
    try:
        _stage(1, f"coresets: {len(coreset_demo.DEMO_METHODS)} methods x {len(fractions)} fractions x {len(seeds)} "
                  f"seed(s), a fresh MLP trained {epochs} epochs on each subset")
        results = coreset_demo.compare_methods(seeds, fractions, epochs, progress)
        _stage(2, f"coresets: results table and plot under {out / 'coreset'}")
        (out / "coreset").mkdir(parents=True, exist_ok=True)
        print(coreset_demo.results_table(results))
        print("plot:", coreset_demo.plot_accuracy(results, out / "coreset" / "accuracy_vs_fraction.png"))
        _stage(3, f"condensation: Pixel / FreD / DDiF under DM, digits 16x16 ipc 1, {iterations} iterations")
        initial, sets, seconds = condensation_demo.distill_sets(iterations, init_steps, seed, progress)
        _stage(4, f"condensation: {runs} fresh ConvNet(s) x {eval_epochs + 1} epochs per set, save / reload, grids")
        before = condensation_demo.evaluate_sets(initial, None, runs, eval_epochs, seed, progress)
        after = condensation_demo.evaluate_sets(sets, out / "condensation", runs, eval_epochs, seed, progress)
        print(condensation_demo.results_table(sets, before, after, seconds, iterations, runs, eval_epochs))
        print("grids:", condensation_demo.plot_grids(sets, out / "condensation" / "synthetic_sets.png"))
    finally:
        torch.set_num_threads(threads)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tv_plugins", formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="coreset selection (LCMat vs baselines) and condensation (Pixel/FreD/DDiF)",
                          formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    demo.add_argument("--output-dir", default="runs/tv_plugins", help="where results, plots and synthetic sets go")
    demo.add_argument("--seed", type=int, default=0, help="seed of the data split, models and distillation")
    demo.add_argument("--quick", action="store_true", help="every stage at a smaller size (about a minute)")
    args = parser.parse_args(argv)
    run(args.output_dir, args.seed, args.quick)
