"""``python -m diffusers_plugins demo [--output-dir DIR] [--quiet]``."""

import argparse

from diffusers_plugins.testing_utils.demo import DemoConfig, run_demo


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(prog="python -m diffusers_plugins")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("demo", help="train/load a digits UNet and discriminator, compare base vs DiffRS")
    demo.add_argument("--output-dir", default=DemoConfig.output_dir)
    demo.add_argument("--quiet", action="store_true", help="hide progress bars")
    args = parser.parse_args(argv)
    run_demo(DemoConfig(output_dir=args.output_dir, show_progress=not args.quiet))


if __name__ == "__main__":
    main()
