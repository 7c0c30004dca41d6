"""``python -m diffusers_plugins demo [--output-dir DIR] [--seed N] [--quick]``."""

from diffusers_plugins.testing_utils.demo import main

if __name__ == "__main__":
    main()
