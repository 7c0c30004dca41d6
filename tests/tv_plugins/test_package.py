"""Package-level contracts: what `import tv_plugins` needs, the demo CLI shape, the scaffolding's home."""

import subprocess
import sys

import pytest


def test_import_needs_no_transformers_and_the_callback_names_the_missing_package():
    code = (
        "import sys\n"
        "import tv_plugins, tv_plugins.coreset\n"
        "print('imported transformers:', 'transformers' in sys.modules)\n"
        "sys.modules['transformers'] = None  # as if it were not installed\n"
        "try:\n"
        "    tv_plugins.coreset.CoresetCallback\n"
        "except ImportError as err:\n"
        "    print('error:', err)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True).stdout
    assert "imported transformers: False" in out
    assert "error:" in out and "pip install transformers" in out


def test_demo_cli_shape_and_defaults(capsys):
    from tv_plugins.testing_utils.demo import main

    with pytest.raises(SystemExit) as exit_info:
        main(["demo", "--help"])
    assert exit_info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    for flag, default in (("--output-dir", "runs/tv_plugins"), ("--seed", "0")):
        assert flag in text and f"(default: {default})" in text
    assert "--quick" in text


def test_offline_fixtures_live_in_testing_utils_and_stay_importable_from_the_top():
    import tv_plugins
    from tv_plugins import testing_utils

    for name in ("DigitsDataset", "load_fashion_mnist", "DEBIAN_FASHION_MNIST_DIR"):
        assert getattr(tv_plugins, name) is getattr(testing_utils, name)
    assert tv_plugins.ConvNet.__module__ == "tv_plugins.networks"  # a model, kept apart from the datasets
