"""``python -m hf_plugins demo``: distil a small student from an SFT teacher with AMiD, CSD and GKD."""

import argparse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m hf_plugins")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="pydoc instruction data: SFT teacher -> AMiD / CSD / GKD students")
    demo.add_argument("--out", default="runs/hf_plugins_demo", help="output / cache directory")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    demo.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    from .distillation_demo import run_demo

    run_demo(args.out, progress=not args.quiet, threads=args.threads)


if __name__ == "__main__":
    main()
