"""``python -m tv_plugins demo [--output-dir DIR] [--seed N] [--quick]``."""

from .testing_utils.demo import main

if __name__ == "__main__":
    main()
