"""Session-wide test settings: offline hub access and a throw-away HF_HOME / cache.

The variables are set at import time, before any test module imports transformers/diffusers,
because those libraries read them once when first imported.
"""

import os
import shutil
import tempfile

_TMP_HOME = tempfile.mkdtemp(prefix="distill-plugins-tests-")
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["TRL_EXPERIMENTAL_SILENCE"] = "1"
os.environ["HF_HOME"] = os.path.join(_TMP_HOME, "hf_home")
os.environ["HF_MODULES_CACHE"] = os.path.join(_TMP_HOME, "hf_home", "modules")
os.environ["DISTILL_PLUGINS_CACHE"] = os.path.join(_TMP_HOME, "distill_plugins_cache")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
os.environ.setdefault("WANDB_DISABLED", "true")


def pytest_unconfigure(config):
    shutil.rmtree(_TMP_HOME, ignore_errors=True)
