"""Supervised fine-tuning on completion tokens: the teacher SFT and the student SFT-initialisation.

A plain ``transformers.Trainer`` with GKD's ChatML collator (prompt tokens labelled -100), so the SFT and the
distillation runs see identically tokenised data.
"""

from __future__ import annotations

from .console import bars_without_log_dicts

__all__ = ["supervised_finetune"]


class _LabelledBatches:
    """DataCollatorForChatML reduced to what a causal LM's forward takes (ids, mask, labels)."""

    def __init__(self, tokenizer, max_length: int):
        from trl.experimental.utils import DataCollatorForChatML

        self.inner = DataCollatorForChatML(tokenizer=tokenizer, max_length=max_length)

    def __call__(self, examples):
        batch = self.inner([{"messages": e["messages"]} for e in examples])
        return {k: batch[k] for k in ("input_ids", "attention_mask", "labels")}


def supervised_finetune(
    model,
    tokenizer,
    examples: list[dict],
    output_dir: str,
    max_steps: int,
    learning_rate: float = 1e-3,
    batch_size: int = 16,
    max_length: int = 256,
    seed: int = 0,
    progress: bool = True,
    **training_args,
):
    """Fine-tune ``model`` in place on ``examples`` (``{"messages": ...}``) for ``max_steps``; returns the log history.

    The progress bar (``progress``) shows no per-step log dicts: they are in the returned history.

    AdamW, cosine schedule, 5% warm-up, grad-clip 1.0. The loss is the token-mean cross-entropy of the
    completion (prompt tokens excluded). ``training_args`` are further ``transformers.TrainingArguments``
    (e.g. ``use_cpu=True``, ``bf16=True``); they override the settings above. The device is the
    ``TrainingArguments`` default unless given.
    """
    from datasets import Dataset
    from transformers import Trainer, TrainingArguments

    settings = dict(
        output_dir=output_dir,
        max_steps=max_steps,
        per_device_train_batch_size=batch_size,
        learning_rate=learning_rate,
        lr_scheduler_type="cosine",
        warmup_steps=max(1, max_steps // 20),
        weight_decay=0.01,
        max_grad_norm=1.0,
        logging_steps=max(1, max_steps // 20),
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        remove_unused_columns=False,
        disable_tqdm=not progress,
    )
    args = TrainingArguments(**{**settings, **training_args})
    trainer = Trainer(
        model=model,
        args=args,
        train_dataset=Dataset.from_list([{"messages": e["messages"]} for e in examples]),
        data_collator=_LabelledBatches(tokenizer, max_length),
    )
    bars_without_log_dicts(trainer)
    trainer.train()
    return trainer.state.log_history
