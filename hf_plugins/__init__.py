"""hf_plugins: LLM knowledge distillation (AMiD, CSD and baseline divergences) for transformers/TRL.

The plugin: ``hf_plugins.losses`` (the divergences) and ``hf_plugins.trainers`` (TRL trainer drop-ins).
Offline fixtures (pydoc corpus, BPE tokenizer, tiny models) and the demo live in ``hf_plugins.testing_utils``.

Public names are imported lazily, so ``import hf_plugins`` stays cheap and pulls in transformers/TRL
only when a name that needs them is used.
"""

from __future__ import annotations

import importlib
from importlib.metadata import version as _distribution_version
from typing import Any

__version__ = _distribution_version("distill-plugins")

# public name -> submodule that defines it
_EXPORTS: dict[str, str] = {
    "CorpusSplit": "testing_utils.corpus",
    "load_pydoc_corpus": "testing_utils.corpus",
    "TINY_SIZES": "testing_utils.tiny_models",
    "tiny_causal_lm": "testing_utils.tiny_models",
    "train_bpe_tokenizer": "testing_utils.tokenizer",
    **dict.fromkeys(
        ["AMiDConfig", "AMiDTrainer", "CSDConfig", "CSDTrainer", "KDConfig", "KDTrainer", "AMiDOnPolicyConfig",
         "AMiDOnPolicyTrainer", "CSDOnPolicyConfig", "CSDOnPolicyTrainer", "KDOnPolicyConfig", "KDOnPolicyTrainer"],
        "trainers",
    ),
}

__all__ = sorted(_EXPORTS)

# the distributions the `hf` extra installs, by import name
_HF_EXTRA_MODULES = frozenset({"transformers", "trl", "datasets", "accelerate", "tokenizers", "rouge_score"})


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        try:
            module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
        except ModuleNotFoundError as err:
            if (err.name or "").partition(".")[0] not in _HF_EXTRA_MODULES:
                raise
            raise ImportError(
                f"hf_plugins.{name} needs {err.name!r}, which is not installed; "
                "install the hf extra: pip install 'distill-plugins[hf]'"
            ) from err
        value = getattr(module, name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
