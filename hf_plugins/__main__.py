"""``python -m hf_plugins demo``: distil a small student from an SFT teacher with AMiD, CSD and GKD."""

import argparse


def main(argv: list[str] | None = None) -> None:
    formatter = argparse.ArgumentDefaultsHelpFormatter
    parser = argparse.ArgumentParser(prog="python -m hf_plugins", formatter_class=formatter)
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", formatter_class=formatter,
                          help="pydoc instruction data: SFT teacher -> AMiD / CSD / GKD students")
    demo.add_argument("--output-dir", default="runs/hf_plugins", help="models, results.json and loss_curves.png")
    demo.add_argument("--seed", type=int, default=0, help="seed of the student, the data order and the sampling")
    demo.add_argument("--quick", action="store_true", help="fewer steps and prompts (about a minute on 2 cores)")
    args = parser.parse_args(argv)
    from .testing_utils.demo import run_demo

    run_demo(args.output_dir, seed=args.seed, quick=args.quick)


if __name__ == "__main__":
    main()
