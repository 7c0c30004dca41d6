"""``python -m tv_plugins demo``: LCMat coresets, then FreD / DDiF condensation, on sklearn digits."""

import argparse


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m tv_plugins")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="coreset selection (LCMat vs baselines) and condensation (Pixel/FreD/DDiF)")
    demo.add_argument("--out", default="runs", help="output directory (a sub-folder per part)")
    demo.add_argument("--part", choices=("all", "coreset", "condensation"), default="all")
    demo.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.part in ("all", "coreset"):
        from .coreset.demo import run_demo as coreset_demo

        print("== coreset selection (LCMat)")
        coreset_demo(f"{args.out}/tv_coreset", progress=not args.quiet)
    if args.part in ("all", "condensation"):
        from .condensation.demo import run_demo as condensation_demo

        print("== dataset condensation (FreD, DDiF)")
        condensation_demo(f"{args.out}/tv_condensation", progress=not args.quiet)


if __name__ == "__main__":
    main()
