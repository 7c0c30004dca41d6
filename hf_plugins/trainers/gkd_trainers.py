"""``KDTrainer``, ``AMiDTrainer``, ``CSDTrainer``: drop-in subclasses of ``trl.experimental.gkd.GKDTrainer``.

Same constructor as ``GKDTrainer``; swapping the class (and config) name in a GKD script is the migration.
Inherited unchanged: GKD's on-policy mixing (``lmbda``), ``seq_kd``, the ChatML collator, PEFT, gradient
accumulation, mixed precision and accelerate/DeepSpeed. Replaced: the loss (``compute_loss``), plus the
student-data schedules ``imitkd`` / ``distillm`` selected by ``args.student_data``.

Gradient accumulation: on dataset batches the loss is ``sum / num_items_in_batch`` (exactly as GKD); on
batches replaced by generated text transformers' ``num_items_in_batch`` counts the replaced labels, so the
local token mean divided by the accumulation steps is used instead.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch
from transformers.trainer_utils import PREFIX_CHECKPOINT_DIR, get_last_checkpoint
from trl.experimental.gkd import GKDTrainer
from trl.models.utils import _ForwardRedirection, unwrap_model_for_generation
from trl.trainer.sft_trainer import SFTTrainer

from ..losses import head_transform
from .configs import AMiDConfig, CSDConfig, KDConfig
from .data_formats import to_chatml_collator_format
from .loss_computation import LossTerms, chunked_terms, full_logit_terms
from .student_data import StudentDataSchedule
from .vocabulary import (
    check_distillation_arguments,
    check_models,
    check_vocabularies,
    trl_vocab_size_check_relaxed,
)

__all__ = ["AMiDTrainer", "CSDTrainer", "KDTrainer"]


class KDTrainer(GKDTrainer):
    """GKD's trainer with any divergence of ``hf_plugins.losses`` (``KDConfig(loss=..., loss_options=...)``).

    Args: exactly those of ``GKDTrainer`` (``model``, ``teacher_model``, ``args``, ``data_collator``,
    ``train_dataset``, ``eval_dataset``, ``processing_class``, ...). ``args`` must be a ``KDConfig`` (or
    ``AMiDConfig`` / ``CSDConfig`` for those classes); ``processing_class`` is the tokenizer shared by teacher
    and student. Datasets: ``messages`` or ``prompt``/``completion`` (see ``data_formats``).

    Logs (besides the Trainer's ``loss``): ``distill_loss``, ``teacher_student_kl``, ``student_entropy``,
    ``nll`` and, with ``sft_weight > 0``, ``sft_loss``.
    """

    _tag_names = ["trl", "gkd", "hf_plugins", "kd"]
    _name = "KD"
    _config_class = KDConfig

    def __init__(
        self,
        model=None,
        teacher_model=None,
        args=None,
        data_collator=None,
        train_dataset=None,
        eval_dataset=None,
        processing_class=None,
        compute_metrics=None,
        callbacks=None,
        optimizers=(None, None),
        preprocess_logits_for_metrics=None,
        peft_config=None,
        formatting_func=None,
    ):
        check_distillation_arguments(self._config_class, args, processing_class, teacher_model)
        if data_collator is None:
            train_dataset = to_chatml_collator_format(train_dataset, processing_class, "train_dataset")
            eval_dataset = to_chatml_collator_format(eval_dataset, processing_class, "eval_dataset")
        if args.student_data == "distillm" and (eval_dataset is None or args.eval_strategy == "no"):
            raise ValueError(
                "student_data='distillm' needs eval_dataset and an eval_strategy other than 'no': its threshold "
                "is driven by the validation NLL"
            )
        self.distillation_loss = args.distillation_loss()
        check_models(model, teacher_model, processing_class)
        with trl_vocab_size_check_relaxed(model, teacher_model):
            super().__init__(
                model=model,
                teacher_model=teacher_model,
                args=args,
                data_collator=data_collator,
                train_dataset=train_dataset,
                eval_dataset=eval_dataset,
                processing_class=processing_class,
                compute_metrics=compute_metrics,
                callbacks=callbacks,
                optimizers=optimizers,
                preprocess_logits_for_metrics=preprocess_logits_for_metrics,
                peft_config=peft_config,
                formatting_func=formatting_func,
            )
        unwrapped_teacher = self.accelerator.unwrap_model(self.teacher_model)
        self.vocab_size = check_vocabularies(self.model, unwrapped_teacher, processing_class)
        if args.loss_chunk_size is not None:  # an unknown head transform is refused before any work
            head_transform(self.model), head_transform(unwrapped_teacher)
        self._forward_redirection = _ForwardRedirection()
        self._dataset_input_ids = None
        self.student_data_schedule = None
        if args.student_data != "gkd":
            self.student_data_schedule = StudentDataSchedule(
                args.student_data,
                capacity=args.replay_capacity,
                init_threshold=args.distillm_init_threshold,
                threshold_step=args.distillm_threshold_step,
                loss_eps=args.distillm_loss_eps,
                seed=args.seed + self.accelerator.process_index,
            )

    # ------------------------------------------------------------------ loss
    def _chunked_forward(self, unwrapped, inputs):
        """Runs inside the student's wrapper (DDP/FSDP see a forward): backbones + chunked loss terms."""
        ids, att = inputs["input_ids"], inputs["attention_mask"]
        # get_decoder(): the stack under the LM head, also through a PEFT wrapper (which forwards attributes)
        hs = unwrapped.get_decoder()(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state[:, :-1]
        teacher = self.accelerator.unwrap_model(self.teacher_model)
        with torch.no_grad():
            ht = teacher.get_decoder()(input_ids=ids, attention_mask=att, use_cache=False).last_hidden_state[:, :-1]
        return chunked_terms(
            self.distillation_loss,
            hs,
            unwrapped.get_output_embeddings(),
            ht,
            teacher.get_output_embeddings(),
            inputs["labels"][:, 1:],
            self.vocab_size,
            self.args.loss_chunk_size,
            need_nll=True,
            transforms=(head_transform(unwrapped), head_transform(teacher)),
        )

    def _loss_terms(self, model, inputs) -> tuple[LossTerms, object]:
        self.teacher_model.eval()
        if self.args.loss_chunk_size is not None:
            unwrapped = self.accelerator.unwrap_model(model)
            terms = self._forward_redirection(model, unwrapped, self._chunked_forward, unwrapped, inputs)
            return terms, None
        outputs = model(input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False)
        with torch.no_grad():
            teacher_logits = self.teacher_model(
                input_ids=inputs["input_ids"], attention_mask=inputs["attention_mask"], use_cache=False
            ).logits
        need_nll = self.args.sft_weight > 0 or not model.training or self.student_data_schedule is not None
        terms = full_logit_terms(
            self.distillation_loss, outputs.logits, teacher_logits, inputs["labels"], self.vocab_size, need_nll
        )
        return terms, outputs

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        """Distillation loss on completion tokens (+ ``sft_weight`` x NLL), scaled for gradient accumulation."""
        terms, outputs = self._loss_terms(model, inputs)
        mean_loss = terms.distill
        if self.args.sft_weight > 0:
            mean_loss = mean_loss + self.args.sft_weight * terms.nll
        self._record(terms)

        loss = mean_loss
        if model.training and num_items_in_batch is not None:
            regenerated = inputs["input_ids"] is not self._dataset_input_ids
            if regenerated:
                loss = mean_loss / self.current_gradient_accumulation_steps
            else:
                if torch.is_tensor(num_items_in_batch):
                    num_items_in_batch = num_items_in_batch.to(mean_loss.device)
                loss = mean_loss * terms.n_valid / num_items_in_batch
                if self.args.average_tokens_across_devices and self.accelerator.num_processes > 1:
                    loss = loss * self.accelerator.num_processes
        return (loss, outputs) if return_outputs else loss

    def _record(self, terms: LossTerms) -> None:
        mode = "train" if self.model.training else "eval"
        gather = self.accelerator.gather_for_metrics
        n = gather(terms.n_valid.reshape(1)).sum()
        denom = n.clamp_min(1)
        m = self._metrics[mode]
        m["distill_loss"].append(gather(terms.distill.detach().float().reshape(1) * terms.n_valid).sum().item() / denom.item())
        m["teacher_student_kl"].append((gather(terms.kl_sum.reshape(1)).sum() / denom).item())
        m["student_entropy"].append((gather(terms.entropy_sum.reshape(1)).sum() / denom).item())
        if terms.nll is not None:
            nll = (gather(terms.nll.detach().float().reshape(1) * terms.n_valid).sum() / denom).item()
            m["nll"].append(nll)
            if self.args.sft_weight > 0:
                m["sft_loss"].append(nll)

    # ----------------------------------------------------------- data source
    def _generate(self, model, inputs, use_teacher: bool = False) -> None:
        source = self.teacher_model if use_teacher else model
        kwargs = {} if use_teacher else {"gradient_checkpointing_kwargs": self.args.gradient_checkpointing_kwargs}
        with unwrap_model_for_generation(
            source, self.accelerator, generation_kwargs=self.generation_kwargs, **kwargs
        ) as unwrapped:
            ids, att, labels = self.generate_on_policy_outputs(unwrapped, inputs, self.generation_config)
        inputs["input_ids"], inputs["attention_mask"], inputs["labels"] = ids, att, labels

    def training_step(self, model, inputs, num_items_in_batch=None):
        """GKD's step for ``student_data='gkd'``; the ImitKD / DistiLLM schedules otherwise."""
        self._dataset_input_ids = inputs["input_ids"]
        schedule = self.student_data_schedule
        if schedule is None:
            return super().training_step(model, inputs, num_items_in_batch)
        action = schedule.choose(self.state.global_step, self.state.max_steps)
        if action in ("generate", "generate_replay"):
            self._generate(model, inputs)
            schedule.buffer.push(inputs["input_ids"], inputs["attention_mask"], inputs["labels"])
        if action in ("replay", "generate_replay"):
            batch = schedule.buffer.sample(
                inputs["input_ids"].shape[0], self.processing_class.pad_token_id, inputs["input_ids"].device
            )
            inputs = {**inputs, **batch}
        return SFTTrainer.training_step(self, model, inputs, num_items_in_batch)

    def log(self, logs: dict[str, float], start_time: float | None = None) -> None:
        mode = "train" if self.model.training else "eval"
        vals = self._metrics["eval"].get("nll")
        if mode == "eval" and self.student_data_schedule is not None and vals:
            self.student_data_schedule.update(sum(vals) / len(vals))
        super().log(logs, start_time)
        if self.student_data_schedule is not None:
            self.state.log_history[-1]["student_data_threshold"] = self.student_data_schedule.threshold

    # ------------------------------------------------------- save / resume
    def _save_checkpoint(self, model, trial):
        super()._save_checkpoint(model, trial)
        if self.student_data_schedule is not None:
            folder = Path(self._get_output_dir(trial=trial)) / f"{PREFIX_CHECKPOINT_DIR}-{self.state.global_step}"
            rank_dir = folder / f"student_data_rank{self.accelerator.process_index}"
            self.student_data_schedule.save(rank_dir)

    def train(self, resume_from_checkpoint=None, trial=None, ignore_keys_for_eval=None, **kwargs):
        """``Trainer.train``; on resume also restores the student-data schedule and replay buffer."""
        path = resume_from_checkpoint
        if path is True:
            path = get_last_checkpoint(self.args.output_dir)
        if isinstance(path, (str, os.PathLike)) and self.student_data_schedule is not None:
            rank_dir = Path(path) / f"student_data_rank{self.accelerator.process_index}"
            if not rank_dir.is_dir():
                raise ValueError(f"checkpoint {path} has no student-data state ({rank_dir.name}) to resume from")
            self.student_data_schedule.load(rank_dir)
        return super().train(
            resume_from_checkpoint=resume_from_checkpoint, trial=trial, ignore_keys_for_eval=ignore_keys_for_eval, **kwargs
        )


class AMiDTrainer(KDTrainer):
    """``GKDTrainer`` drop-in training with AMiD (alpha-mixture assistant distribution); ``args``: ``AMiDConfig``."""

    _tag_names = ["trl", "gkd", "hf_plugins", "amid"]
    _name = "AMiD"
    _config_class = AMiDConfig


class CSDTrainer(KDTrainer):
    """``GKDTrainer`` drop-in training with CSD (concrete score distillation); ``args``: ``CSDConfig``.

    ``distill_loss`` logs the CSD value itself, not the stop-gradient surrogate the gradient comes from.
    """

    _tag_names = ["trl", "gkd", "hf_plugins", "csd"]
    _name = "CSD"
    _config_class = CSDConfig
