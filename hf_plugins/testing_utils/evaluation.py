"""Held-out evaluation of a distilled student: ROUGE-L of sampled completions, teacher-forced KL and NLL.

* ROUGE-L F-measure (``rouge-score``, Porter stemming, max over the references of an example), x100, of
  completions sampled from the student (top-k 0, top-p 1, temperature 1, as in the papers' protocol), with
  its standard error over the prompts (``rouge_l_se``).
* ``kl``: teacher-forced ``KL(p_teacher || q_student)`` per completion token (nats), on the reference data.
* ``nll``: the student's cross-entropy of the reference completion tokens (nats/token).
"""

from __future__ import annotations

import statistics

import torch
from tqdm.auto import tqdm

from ..trainers.batch_metrics import kl_entropy_sums
from .rng import seeded_global_rng

__all__ = ["evaluate_student", "rouge_l", "rouge_l_scores", "sample_completions", "teacher_forced_metrics"]


def rouge_l_scores(predictions: list[str], references: list[list[str]] | list[str]) -> list[float]:
    """ROUGE-L F1 x100 with stemming of each prediction against its best reference."""
    from rouge_score import rouge_scorer

    if len(predictions) != len(references):
        raise ValueError(f"got {len(predictions)} predictions for {len(references)} reference sets")
    if not predictions:
        raise ValueError("predictions is empty")
    scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=True)
    refs = [[r] if isinstance(r, str) else r for r in references]
    return [100.0 * max(scorer.score(r, pred)["rougeL"].fmeasure for r in rs) for pred, rs in zip(predictions, refs)]


def rouge_l(predictions: list[str], references: list[list[str]] | list[str]) -> float:
    """Mean ROUGE-L F1 x100 with stemming, each prediction scored against its best reference."""
    return statistics.fmean(rouge_l_scores(predictions, references))


@torch.no_grad()
def sample_completions(
    model,
    tokenizer,
    prompts: list[list[dict]],
    max_new_tokens: int = 48,
    temperature: float = 1.0,
    seed: int = 0,
    batch_size: int = 16,
    progress: bool = True,
) -> list[str]:
    """Sample one completion per chat prompt (list of messages) with top-k 0 / top-p 1; returns the texts.

    ``seed`` fixes the samples; the caller's global RNG state is left unchanged.
    """
    model.eval()
    texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False) for p in prompts]
    side, tokenizer.padding_side = tokenizer.padding_side, "left"
    out: list[str] = []
    try:
        with seeded_global_rng(seed, model.device):
            for i in tqdm(range(0, len(texts), batch_size), desc="sampling", disable=not progress, leave=False):
                enc = tokenizer(texts[i : i + batch_size], return_tensors="pt", padding=True, add_special_tokens=False)
                enc = {k: v.to(model.device) for k, v in enc.items()}
                gen = model.generate(
                    **enc, do_sample=True, top_k=0, top_p=1.0, temperature=temperature, max_new_tokens=max_new_tokens,
                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                )
                out += tokenizer.batch_decode(gen[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
    finally:
        tokenizer.padding_side = side
    return [t.strip() for t in out]


@torch.no_grad()
def teacher_forced_metrics(
    student, teacher, tokenizer, examples: list[dict], max_length: int = 256, batch_size: int = 16
) -> dict[str, float]:
    """Token-mean ``kl`` (teacher || student) and student ``nll`` on the reference completions of ``examples``."""
    from trl.experimental.utils import DataCollatorForChatML

    collator = DataCollatorForChatML(tokenizer=tokenizer, max_length=max_length)
    v = len(tokenizer)
    kl = nll = n = 0.0
    student.eval()
    teacher.eval()
    for i in range(0, len(examples), batch_size):
        batch = collator([{"messages": e["messages"]} for e in examples[i : i + batch_size]])
        ids, att = batch["input_ids"].to(student.device), batch["attention_mask"].to(student.device)
        s = student(input_ids=ids, attention_mask=att).logits[:, :-1, :v]
        t = teacher(input_ids=ids, attention_mask=att).logits[:, :-1, :v]
        labels = batch["labels"][:, 1:].to(s.device)
        mask = labels != -100
        k, _, cnt = kl_entropy_sums(s, t, mask)
        nll += torch.nn.functional.cross_entropy(s[mask].float(), labels[mask], reduction="sum").item()
        kl, n = kl + k.item(), n + cnt.item()
    return {"kl": kl / max(n, 1), "nll": nll / max(n, 1)}


def evaluate_student(
    student, teacher, tokenizer, examples: list[dict], max_new_tokens: int = 48, seed: int = 0, progress: bool = True
) -> dict[str, float]:
    """ROUGE-L (x100) of sampled completions against ``example["reference"]`` and its standard error over the
    prompts, plus teacher-forced KL and NLL."""
    prompts = [e["messages"][:-1] for e in examples]
    preds = sample_completions(student, tokenizer, prompts, max_new_tokens=max_new_tokens, seed=seed, progress=progress)
    scores = rouge_l_scores(preds, [e["reference"] for e in examples])
    se = statistics.stdev(scores) / len(scores) ** 0.5 if len(scores) > 1 else float("nan")
    metrics = {"rouge_l": statistics.fmean(scores), "rouge_l_se": se}
    metrics.update(teacher_forced_metrics(student, teacher, tokenizer, examples))
    return metrics
