"""Condensation demo on embedded data (sklearn digits at 16 x 16): Pixel vs FreD vs DDiF under DM at ipc 1.

``run_demo()`` distils the budget three ways, trains fresh ConvNets on each synthetic set, checks that a saved set
reloads to the same images, writes one labelled grid figure of all sets and returns the accuracy table.
"""

from __future__ import annotations

import copy
import time
from pathlib import Path

import torch
from torchvision import transforms as T

from ..condensation import SyntheticDataset, distill, evaluate_synthetic
from ..data import as_labeled_tensors
from ..networks import ConvNet
from .datasets import DigitsDataset

__all__ = ["LRS", "SETTINGS", "distill_sets", "evaluate_sets", "plot_grids", "run_demo", "save_grid"]

MEAN, STD = 0.3, 0.35
SETTINGS = {
    "pixel": {},
    "fred": {"k": 64},  # 16 x 16 / 4 coefficients -> 4 instances per class
    "ddif": {"width": 4, "num_layers": 2, "init_steps": 1000, "init_lr": 1e-3},  # 37 floats -> 6 fields per class
}
#: storage learning rates (None = the parameterization's default); tiny 37-float fields need Adam 1e-3, not 1e-4
LRS = {"pixel": None, "fred": None, "ddif": 1e-3}
OBJECTIVE = {"depth": 2, "width": 32, "batch_real": 64}


def _class_rows(synthetic: SyntheticDataset, per_row: int) -> torch.Tensor:
    """``[classes * H, per_row * W]`` grayscale grid (channel mean), each image min-max scaled to [0, 1] for
    display, white where a class has fewer instances."""
    images, labels = synthetic.to_tensors()
    images = images.mean(1)  # [N, H, W]
    low = images.flatten(1).min(1).values[:, None, None]
    high = images.flatten(1).max(1).values[:, None, None]
    images = (images - low) / (high - low).clamp_min(1e-12)
    rows = []
    for c in range(int(labels.max()) + 1):
        row = images[labels == c][:per_row]
        row = torch.cat([row, torch.ones(per_row - len(row), *row.shape[1:])])
        rows.append(torch.cat(list(row), dim=-1))
    return torch.cat(rows, dim=-2)


def plot_grids(sets: dict[str, SyntheticDataset], path: str | Path, max_per_class: int = 6) -> Path:
    """One panel per synthetic set (titled by its key and size), one row per class (labelled with the class),
    up to ``max_per_class`` instances per row, pixels upscaled without smoothing (PNG)."""
    from matplotlib.figure import Figure  # no pyplot state: works headless and in notebooks

    per_row = {name: min(max_per_class, int(torch.bincount(s.to_tensors()[1]).max())) for name, s in sets.items()}
    widths = [0.55 * n + 1.0 for n in per_row.values()]  # inches: the images (10 rows in 5.5 in) plus the labels
    fig = Figure(figsize=(sum(widths), 6.4))
    axes = fig.subplots(1, len(sets), squeeze=False, gridspec_kw={"width_ratios": widths})
    for ax, (name, synthetic) in zip(axes[0], sets.items()):
        grid = _class_rows(synthetic, per_row[name])
        ax.imshow(grid.numpy(), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        height, classes = synthetic.to_tensors()[0].shape[-2], synthetic.num_classes
        ax.set_yticks([height * (c + 0.5) for c in range(classes)], [f"class {c}" for c in range(classes)])
        ax.set_xticks([])
        ax.set_title(f"{name}\n{len(synthetic)} instances", fontsize=10)
    fig.suptitle("synthetic sets (each image min-max scaled for display)", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=150)
    return path


def save_grid(synthetic: SyntheticDataset, path: str | Path, max_per_class: int = 10, title: str | None = None) -> Path:
    """:func:`plot_grids` of a single set (titled ``title``, default the file name)."""
    return plot_grids({title or Path(path).stem: synthetic}, path, max_per_class)


def _digits(split: bool):
    transform = T.Compose([T.ToTensor(), T.Normalize([MEAN], [STD])])
    return as_labeled_tensors(DigitsDataset(train=split, image_size=16, transform=transform))


def distill_sets(iterations: int = 200, init_steps: int = 1000, seed: int = 0, progress: bool = True
                 ) -> tuple[dict[str, SyntheticDataset], dict[str, SyntheticDataset], dict[str, float]]:
    """Distil digits 16 x 16 at ipc 1 with each parameterization under DM.

    Returns ``(initial sets, distilled sets, seconds per parameterization)``; each distillation continues from a
    copy of its initial set (real images, or fields fitted to real images).
    """
    train = _digits(True)
    initial, sets, seconds = {}, {}, {}
    for kind, kwargs in SETTINGS.items():
        kwargs = {**kwargs, "init_steps": init_steps} if kind == "ddif" else kwargs
        start = time.perf_counter()
        initial[kind] = distill(train, kind, "dm", ipc=1, iterations=0, seed=seed, parameterization_kwargs=kwargs,
                                progress=False)
        sets[kind] = distill(train, copy.deepcopy(initial[kind].parameterization), "dm", ipc=None,
                             iterations=iterations, seed=seed, lr=LRS[kind], objective_kwargs=OBJECTIVE,
                             progress=progress)
        seconds[kind] = time.perf_counter() - start
    return initial, sets, seconds


def evaluate_sets(sets: dict[str, SyntheticDataset], out: Path | None, runs: int = 3, epochs: int = 300,
                  seed: int = 0, progress: bool = True) -> dict[str, dict]:
    """Test accuracy of every set; with ``out``, saves each set there and checks it reloads to the same images
    (same process: the stored tensors are loaded byte for byte and decoded by the same kernels)."""
    test = _digits(False)
    results = {}
    for kind, synthetic in sets.items():
        results[kind] = evaluate_synthetic(synthetic, test, model=lambda: ConvNet(1, 10, 16, depth=2, width=32),
                                           runs=runs, epochs=epochs, seed=seed, progress=progress)
        if out is None:
            continue
        synthetic.save_pretrained(out / kind)
        reloaded = SyntheticDataset.from_pretrained(out / kind)
        if not torch.equal(reloaded.to_tensors()[0], synthetic.to_tensors()[0]):
            raise RuntimeError(f"the {kind} set changed when saved and reloaded")
    return results


def results_table(sets: dict[str, SyntheticDataset], before: dict[str, dict], after: dict[str, dict],
                  seconds: dict[str, float], iterations: int, runs: int, epochs: int) -> str:
    lines = [f"digits 16x16, ipc 1 (budget 256 floats per class), DM, ConvNet-2 width 32, {iterations} iterations, "
             f"{runs} evaluation runs x {epochs + 1} epochs",
             "| parameterization | instances | stored floats | initial set acc (%) | DM acc (%) | distill + init time (s) |",
             "|---|---|---|---|---|---|"]
    for kind, synthetic in sets.items():
        b, a = before[kind], after[kind]
        lines.append(f"| {kind} | {len(synthetic)} | {synthetic.num_stored_floats} | {b['mean']:.1f} ± {b['std']:.1f} "
                     f"| {a['mean']:.1f} ± {a['std']:.1f} | {seconds[kind]:.0f} |")
    return "\n".join(lines)


def run_demo(out_dir: str = "runs/tv_plugins/condensation", progress: bool = True, iterations: int = 200,
             eval_runs: int = 3, eval_epochs: int = 300, init_steps: int = 1000, seed: int = 0) -> str:
    """Distil, evaluate (initial and distilled sets), save / reload and plot; returns the markdown table."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny networks: one thread is faster than two on a shared 2-core machine
    try:
        initial, sets, seconds = distill_sets(iterations, init_steps, seed, progress)
        before = evaluate_sets(initial, None, eval_runs, eval_epochs, seed, progress)
        after = evaluate_sets(sets, Path(out_dir), eval_runs, eval_epochs, seed, progress)
    finally:
        torch.set_num_threads(threads)
    plot_grids(sets, Path(out_dir) / "synthetic_sets.png")
    return results_table(sets, before, after, seconds, iterations, eval_runs, eval_epochs)
