"""What the demo prints: stage headers, progress bars without raw log dicts, no host-library noise."""

from __future__ import annotations

import logging
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["bars_without_log_dicts", "host_warnings_filtered", "stage"]


def stage(index: int, total: int, text: str) -> None:
    """Print a stage header such as ``== [2/6] evaluating ...``."""
    print(f"== [{index}/{total}] {text}", flush=True)


def bars_without_log_dicts(trainer) -> None:
    """Keep the trainer's progress bar but stop it printing each log dict (they stay in ``state.log_history``)."""
    from transformers.trainer_callback import PrinterCallback, ProgressCallback

    class ProgressBarOnly(ProgressCallback):
        def on_log(self, args, state, control, logs=None, **kwargs):
            pass

    trainer.remove_callback(PrinterCallback)
    if trainer.pop_callback(ProgressCallback) is not None:
        trainer.add_callback(ProgressBarOnly)


class _DropGenerationConfigNotice(logging.Filter):
    # transformers 5 logs this when TRL's GKD generation passes its generation_config with return_dict_in_generate
    def filter(self, record: logging.LogRecord) -> bool:
        return "together with generation-related arguments" not in record.getMessage()


@contextmanager
def host_warnings_filtered() -> Iterator[None]:
    """Inside the block, silence what transformers/TRL print about their own internals (and model-file bars).

    Filtered: the ``is_gradient_checkpointing`` FutureWarning (TRL's ``unwrap_model_for_generation`` reads the
    deprecated property), the generation-config notice above, and transformers' "Loading weights" / "Writing
    model shards" bars. Everything else still shows.
    """
    from transformers.utils import logging as hf_logging

    notice, generation_logger = _DropGenerationConfigNotice(), logging.getLogger("transformers.generation.utils")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    generation_logger.addFilter(notice)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", r"`is_gradient_checkpointing` is deprecated", FutureWarning)
            yield
    finally:
        generation_logger.removeFilter(notice)
        if bars:
            hf_logging.enable_progress_bar()
