"""Dataset condensation benchmark: Pixel vs FreD vs DDiF under DM / DC / TM at an equal float budget.

Datasets: Fashion-MNIST 28 x 28 (Debian package ``dataset-fashion-mnist``: ``apt-get install
dataset-fashion-mnist``; loaded with ``tv_plugins.load_fashion_mnist``) at ipc 1 and 10, and sklearn digits
upsampled to 16 x 16 at ipc 1. Anchors, in the same run: random real images (ipc per class) and the full-data
upper bound. Every configuration runs in a fresh subprocess (peak RSS measured there) and reports test
accuracy mean +- population std over ``--eval-runs`` fresh ConvNets plus distillation seconds per iteration.

CPU scale (documented, far below the papers): ConvNet depth 3 (Fashion-MNIST) / 2 (digits), width 16 (Fashion-MNIST)
/ 32 (digits), instance norm, DSA everywhere; DM ``--dm-iterations`` at ipc 1 and ``--dm-iterations-ipc10`` at ipc 10
(papers 20000), DC ``--dc-iterations`` with
(outer, inner) loops (1, 1) at ipc 1 and (2, 5) at ipc 10 (papers 1000 iterations with (10, 50)), TM only at ipc 1
with a reduced expert buffer (``--experts`` experts x ``--expert-epochs`` epochs, syn_steps 10, max_start_epoch 2,
papers: 100 x 50, syn_steps 50); evaluation ``--eval-epochs`` epochs (papers 1000).

Usage: ``python benchmarks/condensation.py --json benchmarks/results/condensation.json`` (writes the JSON and
``condensation.md`` beside it, plus grid images under ``condensation_grids/``). ``--quick`` shrinks everything
to a smoke run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch

MEAN = {"fmnist": 0.286, "digits16": 0.3}
STD = {"fmnist": 0.353, "digits16": 0.35}
# per-dataset parameterization settings at ~equal float budget (ipc * C * H * W floats per class)
FRED_K = {"fmnist": 196, "digits16": 64}  # H*W/4: 4 instances per unit of ipc
DDIF = {"fmnist": {"width": 8, "num_layers": 2}, "digits16": {"width": 4, "num_layers": 2}}  # P = 105 / 37
NET = {"fmnist": {"depth": 3, "width": 16}, "digits16": {"depth": 2, "width": 32}}
LR = {("ddif", "dm"): 1e-3, ("ddif", "dc"): 1e-3, ("ddif", "tm"): 1e-3}


def _data_cache(cache: Path) -> dict[str, Path]:
    """Convert each dataset once through its torchvision transform pipeline and cache the tensors."""
    from torchvision import transforms as T

    from tv_plugins import DigitsDataset, load_fashion_mnist
    from tv_plugins.data import as_labeled_tensors

    cache.mkdir(parents=True, exist_ok=True)
    paths = {}
    for name in ("digits16", "fmnist"):
        path = cache / f"{name}.pt"
        paths[name] = path
        if path.exists():
            continue
        tf = T.Compose([T.ToTensor(), T.Normalize([MEAN[name]], [STD[name]])])
        if name == "fmnist":
            train, test = load_fashion_mnist(train=True, transform=tf), load_fashion_mnist(train=False, transform=tf)
        else:
            train = DigitsDataset(train=True, image_size=16, transform=tf)
            test = DigitsDataset(train=False, image_size=16, transform=tf)
        tr, te = as_labeled_tensors(train), as_labeled_tensors(test)
        torch.save({"train": (tr.images, tr.labels), "test": (te.images, te.labels)}, path)
    return paths


def _expert_buffer(dataset: str, args) -> Path:
    """Train (once) and cache the reduced expert buffer of ``dataset``; returns its directory."""
    from tv_plugins.condensation import train_expert_trajectories

    buffer = args.data_dir / f"experts_{dataset}_{args.experts}x{args.expert_epochs}"
    if not (buffer / "config.json").exists():
        torch.set_num_threads(1)
        train = torch.load(args.data_dir / f"{dataset}.pt", weights_only=True)["train"]
        sub = torch.randperm(len(train[1]), generator=torch.Generator().manual_seed(0))[: args.expert_subset]
        experts = train_expert_trajectories((train[0][sub], train[1][sub]), num_experts=args.experts,
                                            epochs=args.expert_epochs, progress=False, **NET[dataset])
        experts.save_pretrained(buffer)
    return buffer


def configurations(quick: bool) -> list[dict]:
    configs = []
    for dataset, ipc in (("digits16", 1), ("fmnist", 1), ("fmnist", 10)):
        configs.append({"dataset": dataset, "ipc": ipc, "method": "random", "objective": "-"})
        for method in ("pixel", "fred", "ddif"):
            configs.append({"dataset": dataset, "ipc": ipc, "method": method, "objective": "dm"})
    for dataset, ipc in (("digits16", 1), ("fmnist", 1), ("fmnist", 10)):
        for method in ("pixel", "fred", "ddif"):
            configs.append({"dataset": dataset, "ipc": ipc, "method": method, "objective": "dc"})
    for dataset in ("digits16", "fmnist"):
        for method in ("pixel", "fred", "ddif"):
            configs.append({"dataset": dataset, "ipc": 1, "method": method, "objective": "tm"})
    for dataset in ("digits16", "fmnist"):
        configs.append({"dataset": dataset, "ipc": 0, "method": "full", "objective": "-"})
    return configs[:6] + configs[-1:] if quick else configs


def run_one(config: dict, args) -> dict:
    """Run one configuration in this (fresh) process; returns the result record."""
    torch.set_num_threads(1)
    from tv_plugins import ConvNet
    from tv_plugins.condensation import (
        ExpertTrajectories,
        SyntheticDataset,
        TrajectoryMatching,
        distill,
        evaluate_synthetic,
    )
    from tv_plugins.testing_utils.condensation_demo import save_grid

    data = torch.load(args.data_dir / f"{config['dataset']}.pt", weights_only=True)
    train, test = data["train"], data["test"]
    side = train[0].shape[-1]
    net_cfg = NET[config["dataset"]]

    def model():
        return ConvNet(1, 10, side, **net_cfg)

    record = dict(config)
    evaluate = dict(model=model, runs=args.eval_runs, epochs=args.eval_epochs, progress=False)
    if config["method"] == "full":
        start = time.perf_counter()
        result = evaluate_synthetic(train, test, **{**evaluate, "epochs": args.full_epochs, "runs": args.full_runs})
        record.update(accuracy=result, seconds=time.perf_counter() - start, stored_floats=int(train[0].numel()))
        return record
    method = "pixel" if config["method"] == "random" else config["method"]
    kwargs = {"fred": {"k": FRED_K[config["dataset"]]}, "pixel": {},
              "ddif": {**DDIF[config["dataset"]], "init_steps": args.ddif_init_steps, "init_lr": 1e-3}}[method]
    objective = config["objective"]
    iterations = 0
    obj = None
    if config["method"] != "random":
        if objective == "dm":
            iterations = args.dm_iterations if config["ipc"] == 1 else args.dm_iterations_ipc10
            obj = "dm"
            obj_kwargs = {**net_cfg, "batch_real": 64}
        elif objective == "dc":
            iterations = args.dc_iterations
            obj = "dc"
            loops = (1, 1) if config["ipc"] == 1 else (2, 5)
            obj_kwargs = {**net_cfg, "batch_real": 64, "outer_loop": loops[0], "inner_loop": loops[1]}
        else:
            iterations = args.tm_iterations
            experts = ExpertTrajectories.from_pretrained(_expert_buffer(config["dataset"], args))
            obj = TrajectoryMatching(experts, syn_steps=10, expert_epochs=2, max_start_epoch=2, lr_lr=1e-5)
            obj_kwargs = None
    lr = LR.get((method, objective))
    if (method, objective) == ("fred", "tm"):  # pixel-equivalent 100 (as the pixel default), reference DCT units
        lr = 100.0 * 4 * side * side
    start = time.perf_counter()
    synthetic = distill(train, method, obj or "dm", ipc=config["ipc"], iterations=iterations, seed=0, lr=lr,
                        parameterization_kwargs=kwargs, objective_kwargs=obj_kwargs if obj else None,
                        progress=False)
    seconds = time.perf_counter() - start
    init_seconds = 0.0
    if iterations:
        start = time.perf_counter()
        distill(train, method, "dm", ipc=config["ipc"], iterations=0, parameterization_kwargs=kwargs, progress=False)
        init_seconds = time.perf_counter() - start
    result = evaluate_synthetic(synthetic, test, **evaluate)
    name = f"{config['dataset']}_ipc{config['ipc']}_{config['method']}_{objective.replace('-', 'init')}"
    grid = save_grid(synthetic, args.grid_dir / f"{name}.png")
    assert isinstance(synthetic, SyntheticDataset)
    record.update(accuracy=result, iterations=iterations, instances=len(synthetic),
                  stored_floats=synthetic.num_stored_floats, budget_floats=10 * config["ipc"] * side * side,
                  seconds_per_iteration=(seconds - init_seconds) / iterations if iterations else None,
                  init_seconds=init_seconds if iterations else seconds, grid=os.path.relpath(grid, args.root),
                  learned_lr=synthetic.metadata.get("learned_lr"), settings={"parameterization": kwargs, "lr": lr})
    return record


def _markdown(results: list[dict], meta: dict) -> str:
    lines = ["# Dataset condensation benchmark (CPU, reduced scale)", "",
             f"Machine: {meta['machine']}; torch {meta['torch']}; settings: `{json.dumps(meta['settings'])}`.",
             "Accuracy: % on the real test set, mean +- population std over fresh ConvNets trained on each set.", "",
             "| dataset | ipc | method | objective | instances | stored floats / budget | test acc (%) | s / iteration | peak RSS (MB) |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['dataset']} | {r['ipc']} | {r['method']} | {r['objective']} | | | error: {r['error']} | | |")
            continue
        acc = r["accuracy"]
        spi = f"{r['seconds_per_iteration']:.3f}" if r.get("seconds_per_iteration") else "-"
        floats = f"{r['stored_floats']} / {r.get('budget_floats', '-')}"
        lines.append(f"| {r['dataset']} | {r['ipc'] or 'all'} | {r['method']} | {r['objective']} | "
                     f"{r.get('instances', '-')} | {floats} | {acc['mean']:.1f} +- {acc['std']:.1f} | {spi} | "
                     f"{r['peak_rss_mb']:.0f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results/condensation.json"))
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--dm-iterations", type=int, default=100)
    parser.add_argument("--dm-iterations-ipc10", type=int, default=40)
    parser.add_argument("--dc-iterations", type=int, default=20)
    parser.add_argument("--tm-iterations", type=int, default=20)
    parser.add_argument("--experts", type=int, default=3)
    parser.add_argument("--expert-epochs", type=int, default=4)
    parser.add_argument("--expert-subset", type=int, default=10000)
    parser.add_argument("--ddif-init-steps", type=int, default=1000)
    parser.add_argument("--eval-runs", type=int, default=3)
    parser.add_argument("--eval-epochs", type=int, default=150)
    parser.add_argument("--full-epochs", type=int, default=2)
    parser.add_argument("--full-runs", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--only", default="", help="comma-separated dataset:ipc:method:objective filters")
    parser.add_argument("--run-one", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data-dir", type=Path, default=Path("runs/condensation_bench"))
    args = parser.parse_args()
    args.root = Path(__file__).resolve().parent.parent
    args.data_dir = args.data_dir.resolve()
    args.grid_dir = args.json.resolve().parent / "condensation_grids"
    if args.quick:
        args.dm_iterations, args.dm_iterations_ipc10, args.dc_iterations, args.tm_iterations = 5, 2, 2, 2
        args.eval_runs, args.eval_epochs, args.full_epochs, args.ddif_init_steps = 1, 5, 1, 20
        args.experts, args.expert_epochs, args.expert_subset = 1, 3, 500
    if args.run_one is not None:
        record = run_one(json.loads(args.run_one), args)
        record["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        print("RESULT " + json.dumps(record))
        return
    _data_cache(args.data_dir)
    configs = configurations(args.quick)
    if args.only:
        wanted = [f.split(":") for f in args.only.split(",")]
        configs = [c for c in configs if any(all(v in ("", "*", str(c[k])) for k, v in
                                                 zip(("dataset", "ipc", "method", "objective"), w)) for w in wanted)]
    settings = {k: v for k, v in vars(args).items()
                if k not in ("run_one", "root", "json", "data_dir", "grid_dir", "workers")}
    meta = {"machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.platform()}", "python": sys.version.split()[0],
            "torch": torch.__version__, "numpy": np.__version__, "threads_per_run": 1, "settings": settings,
            "fred_k": FRED_K, "ddif": DDIF, "network": NET, "lr_overrides": {f"{k[0]}/{k[1]}": v for k, v in LR.items()}}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    for dataset in sorted({c["dataset"] for c in configs if c["objective"] == "tm"}):
        start = time.perf_counter()
        _expert_buffer(dataset, args)
        meta[f"expert_seconds_{dataset}"] = time.perf_counter() - start
    forwarded = list(sys.argv[1:])
    results: list[dict | None] = [None] * len(configs)

    def launch(i: int) -> None:
        config = configs[i]
        proc = subprocess.run([sys.executable, __file__, *forwarded, "--run-one", json.dumps(config)],
                              capture_output=True, text=True)
        line = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
        if proc.returncode != 0 or not line:
            results[i] = {**config, "error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
        else:
            results[i] = json.loads(line[0][7:])
        print(json.dumps(results[i])[:300], flush=True)
        done = [r for r in results if r is not None]
        args.json.write_text(json.dumps({"meta": meta, "results": done}, indent=2))
        args.json.with_suffix(".md").write_text(_markdown(done, meta))

    # configurations are independent single-threaded processes: run ``--workers`` at a time
    with ThreadPoolExecutor(max_workers=args.workers) as pool:
        list(pool.map(launch, range(len(configs))))


if __name__ == "__main__":
    main()
