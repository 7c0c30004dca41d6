"""``KDOnPolicyTrainer``, ``AMiDOnPolicyTrainer``, ``CSDOnPolicyTrainer``: drop-ins for ``trl.DistillationTrainer``.

Same constructor and data as ``trl.DistillationTrainer`` (a prompt-only dataset, tokenizer padded on the
left; the student generates every completion). Only the divergence changes: the trainer's private
``_compute_loss`` is replaced by ``hf_plugins.losses.chunked`` over the final hidden states and the two
``lm_head`` weights (cut to ``len(tokenizer)`` rows), so the ``[B, T, V]`` logits are never built. Each model's
own head transform (Gemma's final-logit soft-capping, Cohere's / Granite's logit scale: ``head_transform``)
is applied to its chunks, so the loss is the one on the models' own logits.

Differences from ``DistillationTrainer`` to know: ``temperature`` is the sampling temperature only (the loss
uses the models' logits untempered; CSD's own ``csd_temperature`` tempers its weights); ``beta`` is unused; a
config with a head transform ``head_transform`` does not know is rejected at construction.
"""

from __future__ import annotations

import torch
from trl import DistillationTrainer

from ..losses import head_transform
from .configs import AMiDOnPolicyConfig, CSDOnPolicyConfig, KDOnPolicyConfig
from .loss_computation import chunked_terms
from .vocabulary import (
    check_distillation_arguments,
    check_models,
    check_vocabularies,
    trl_vocab_size_check_relaxed,
)

__all__ = ["AMiDOnPolicyTrainer", "CSDOnPolicyTrainer", "KDOnPolicyTrainer"]

def _check_head_transform(model, role: str) -> None:
    head_transform(model)


class KDOnPolicyTrainer(DistillationTrainer):
    """``trl.DistillationTrainer`` with any ``hf_plugins.losses`` divergence (``KDOnPolicyConfig``).

    Logs, besides DistillationTrainer's ``entropy`` and completion statistics: ``distill_loss`` (the loss value
    itself), ``teacher_student_kl`` and ``student_entropy`` (nats/token on the generated completions).
    """

    _tag_names = ["trl", "distillation", "hf_plugins", "kd"]
    _name = "KD on-policy"
    _config_class = KDOnPolicyConfig

    def __init__(
        self,
        model,
        teacher_model=None,
        args=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        callbacks=None,
        optimizers=(None, None),
        quantization_config=None,
        peft_config=None,
        tools=None,
    ):
        check_distillation_arguments(self._config_class, args, processing_class, teacher_model)
        for name, ds in (("train_dataset", train_dataset), ("eval_dataset", eval_dataset)):
            if ds is not None and hasattr(ds, "column_names") and "prompt" not in ds.column_names:
                raise ValueError(
                    f"{name} has columns {sorted(ds.column_names)}; the on-policy trainers expect a prompt-only "
                    "dataset with a 'prompt' column (string or message list)"
                )
        self.distillation_loss = args.distillation_loss()
        check_models(model, teacher_model, processing_class, check_model=_check_head_transform)
        with trl_vocab_size_check_relaxed(model, teacher_model):
            super().__init__(
                model=model,
                teacher_model=teacher_model,
                args=args,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                callbacks=callbacks,
                optimizers=optimizers,
                quantization_config=quantization_config,
                peft_config=peft_config,
                tools=tools,
            )
        teacher = self.accelerator.unwrap_model(self.teacher_model)
        _check_head_transform(self.model, "student")
        _check_head_transform(teacher, "teacher")
        self.vocab_size = check_vocabularies(self.model, teacher, processing_class)
        self._pending_metrics: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []

    def _compute_loss(self, unwrapped_student, inputs, num_items_in_batch):
        """``(loss, entropy_sum, n_valid)`` as ``DistillationTrainer._compute_loss`` returns, with our divergence."""
        input_ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], dim=1)
        attention_mask = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], dim=1)
        loss_mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            loss_mask = loss_mask * inputs["tool_mask"]
        keep = inputs["completion_ids"].size(1)
        hs = self._get_last_hidden_state(unwrapped_student, input_ids, attention_mask, keep)
        self.teacher_model.eval()
        teacher = self.accelerator.unwrap_model(self.teacher_model)
        with torch.no_grad():
            ht = self._forward_redirection(
                self.teacher_model, teacher, self._get_last_hidden_state, teacher, input_ids, attention_mask, keep
            )
        labels = inputs["completion_ids"].masked_fill(loss_mask == 0, -100)
        terms = chunked_terms(
            self.distillation_loss,
            hs,
            unwrapped_student.get_output_embeddings(),
            ht,
            teacher.get_output_embeddings(),
            labels,
            self.vocab_size,
            self.args.loss_chunk_size,
            need_nll=False,
            transforms=(head_transform(unwrapped_student), head_transform(teacher)),
        )
        loss = terms.distill
        if num_items_in_batch is not None:
            if torch.is_tensor(num_items_in_batch):
                num_items_in_batch = num_items_in_batch.to(loss.device)
            loss = loss * terms.n_valid / num_items_in_batch
        self._pending_metrics.append((terms.distill.detach() * terms.n_valid, terms.kl_sum, terms.n_valid))
        return loss, terms.entropy_sum.detach(), terms.n_valid.long()

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        out = super().compute_loss(model, inputs, return_outputs, num_items_in_batch)
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        for loss_sum, kl_sum, n in self._pending_metrics:
            n_all = gather(n.reshape(1)).sum().clamp_min(1)
            self._metrics[mode]["distill_loss"].append((gather(loss_sum.reshape(1)).sum() / n_all).item())
            self._metrics[mode]["teacher_student_kl"].append((gather(kl_sum.reshape(1)).sum() / n_all).item())
        if self._metrics[mode].get("entropy"):
            self._metrics[mode]["student_entropy"].append(self._metrics[mode]["entropy"][-1])
        self._pending_metrics.clear()
        return out


class AMiDOnPolicyTrainer(KDOnPolicyTrainer):
    """``trl.DistillationTrainer`` drop-in with the AMiD loss (chunked); ``args``: ``AMiDOnPolicyConfig``."""

    _tag_names = ["trl", "distillation", "hf_plugins", "amid"]
    _name = "AMiD on-policy"
    _config_class = AMiDOnPolicyConfig


class CSDOnPolicyTrainer(KDOnPolicyTrainer):
    """``trl.DistillationTrainer`` drop-in with the CSD loss (chunked); ``args``: ``CSDOnPolicyConfig``."""

    _tag_names = ["trl", "distillation", "hf_plugins", "csd"]
    _name = "CSD on-policy"
    _config_class = CSDOnPolicyConfig
