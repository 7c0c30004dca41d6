"""The chunked loss paths: GKD-based trainers with ``loss_chunk_size`` and the DistillationTrainer drop-ins."""


import pytest
import torch
from datasets import Dataset

from hf_plugins import tiny_causal_lm, train_bpe_tokenizer
from hf_plugins.trainers import AMiDConfig, AMiDOnPolicyConfig, AMiDOnPolicyTrainer, AMiDTrainer

V = 300


def _models(tok):
    return tiny_causal_lm(tok, "student", seed=0), tiny_causal_lm(tok, "teacher", seed=1)


def _args(cls, tmp_path, **kw):
    base = dict(output_dir=str(tmp_path), bf16=False, use_cpu=True, gradient_checkpointing=False, max_steps=2,
                per_device_train_batch_size=2, report_to="none", logging_steps=1, save_strategy="no",
                max_new_tokens=6, max_length=96, lmbda=0.0, disable_tqdm=True)
    base.update(kw)
    return cls(**base)


def _record_reference_values(trainer, lam):
    """Wrap the trainer's loss so that each generated batch also gets (AMiD, KL(p||q), n) recomputed in float64.

    The recomputation uses the model's full forward logits and explicit probability-space formulas (AB divergence
    0.2/0.7 against the alpha = 0.5 mixture), sharing no code with the chunked loss.
    """
    seen, original = [], trainer._compute_loss

    def spy(unwrapped, inputs, num_items_in_batch):
        prompt_len = inputs["prompt_ids"].shape[1]
        ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
        att = torch.cat([inputs["prompt_mask"], inputs["completion_mask"]], 1)
        with torch.no_grad():
            s = unwrapped(input_ids=ids, attention_mask=att).logits[:, prompt_len - 1 : -1].double()
            t = trainer.teacher_model(input_ids=ids, attention_mask=att).logits[:, prompt_len - 1 : -1].double()
        mask = inputs["completion_mask"].bool()
        p, q = torch.softmax(t[mask], -1), torch.softmax(s[mask], -1)
        r = (lam * p**0.25 + (1 - lam) * q**0.25) ** 4
        r = r / r.sum(-1, keepdim=True)
        ab = -(p**0.2 * r**0.7 - 0.2 / 0.9 * p**0.9 - 0.7 / 0.9 * r**0.9).sum(-1) / (0.2 * 0.7)
        kl = (p * (p.log() - q.log())).sum(-1)
        seen.append((ab.mean().item(), kl.mean().item(), int(mask.sum())))
        return original(unwrapped, inputs, num_items_in_batch)

    trainer._compute_loss = spy
    return seen


def test_on_policy_amid_trainer_matches_full_logit_loss(tok, conversations, tmp_path):
    from hf_plugins import losses

    tok_left = train_bpe_tokenizer(V)
    tok_left.padding_side = "left"
    prompts = Dataset.from_list([{"prompt": m[:-1]} for m in conversations[:4]])
    student, teacher = (m.double() for m in _models(tok_left))  # float64: no rounding noise in the AB cancellations
    args = AMiDOnPolicyConfig(
        output_dir=str(tmp_path), bf16=False, use_cpu=True, gradient_checkpointing=False, max_steps=2,
        per_device_train_batch_size=2, report_to="none", logging_steps=1, save_strategy="no",
        max_completion_length=6, loss_chunk_size=3, disable_tqdm=True, amid_lambda=0.2,
    )
    trainer = AMiDOnPolicyTrainer(model=student, teacher_model=teacher, args=args, train_dataset=prompts,
                                  processing_class=tok_left)
    expected = _record_reference_values(trainer, lam=0.2)
    trainer.train()
    logs = [h for h in trainer.state.log_history if "distill_loss" in h]
    assert len(logs) == 2 and len(expected) == 2  # one micro-batch per step
    for log, (amid_value, kl, n_completion_tokens) in zip(logs, expected):
        assert n_completion_tokens > 0
        # float64 throughout: chunked vs full projection and log-space vs probability space agree to ~1e-12
        assert log["distill_loss"] == pytest.approx(amid_value, rel=1e-9)
        # the logged KL is computed in float32 by design: sums of V = 300 terms, 300 * 2**-24 ~ 2e-5 relative at most
        assert log["teacher_student_kl"] == pytest.approx(kl, rel=2e-5)
    # the chunked loss on a fixed generated batch equals the full-logit AMiD loss
    g = torch.Generator().manual_seed(0)
    inputs = {
        "prompt_ids": torch.randint(3, V, (2, 5), generator=g),
        "prompt_mask": torch.ones(2, 5, dtype=torch.long),
        "completion_ids": torch.randint(3, V, (2, 4), generator=g),
        "completion_mask": torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]]),
    }
    model = trainer.model.double()  # float64: the AB divergence's cancellations then leave no rounding noise
    trainer.teacher_model.double()
    loss, entropy_sum, n = trainer._compute_loss(model, inputs, None)
    ids = torch.cat([inputs["prompt_ids"], inputs["completion_ids"]], 1)
    with torch.no_grad():
        s = model(ids).logits[:, 4:-1]
        t = trainer.teacher_model(ids).logits[:, 4:-1]
    mask = inputs["completion_mask"].bool()
    assert n.item() == 7
    assert loss.item() == pytest.approx(losses.amid(s, t, mask, lam=0.2).item(), rel=1e-9)
    q = torch.log_softmax(s[mask].double(), -1)
    assert entropy_sum.item() == pytest.approx(-(q.exp() * q).sum().item(), rel=1e-6)
    with pytest.raises(ValueError, match="'prompt' column"):
        AMiDOnPolicyTrainer(model=student, teacher_model=teacher, args=args,
                            train_dataset=Dataset.from_list([{"messages": conversations[0]}]), processing_class=tok_left)


def test_chunked_gkd_path_equals_full_logits(tok, chat_ds, tmp_path):
    student, teacher = _models(tok)
    student, teacher = student.double(), teacher.double()  # float64: compare without fp32 rounding noise
    full = AMiDTrainer(model=student, teacher_model=teacher, args=_args(AMiDConfig, tmp_path / "f"),
                       train_dataset=chat_ds, processing_class=tok)
    chunked = AMiDTrainer(model=student, teacher_model=teacher, args=_args(AMiDConfig, tmp_path / "c", loss_chunk_size=5),
                          train_dataset=chat_ds, processing_class=tok)
    batch = full.data_collator([chat_ds[0], chat_ds[2]])
    full.model.train()
    a = full.compute_loss(full.model, batch)
    a.backward()
    ga = [p.grad.clone() for p in full.model.parameters()]
    full.model.zero_grad()
    b = chunked.compute_loss(chunked.model, batch)
    b.backward()
    assert b.item() == pytest.approx(a.item(), rel=1e-10)
    for x, p in zip(ga, chunked.model.parameters()):
        torch.testing.assert_close(p.grad, x, rtol=1e-8, atol=1e-12)
    assert chunked._metrics["train"]["teacher_student_kl"][-1] == pytest.approx(
        full._metrics["train"]["teacher_student_kl"][-1], rel=1e-5
    )


def test_on_policy_configs_fix_their_loss_and_check_its_fields(tmp_path):
    from hf_plugins.trainers import CSDOnPolicyConfig

    base = dict(output_dir=str(tmp_path), bf16=False, use_cpu=True)
    with pytest.raises(ValueError, match="fixes loss='amid'"):
        AMiDOnPolicyConfig(**base, loss="csd")
    with pytest.raises(ValueError, match="amid_lambda must lie in"):
        AMiDOnPolicyConfig(**base, amid_lambda=1.5)
    assert CSDOnPolicyConfig(**base, csd_weights="TS").distillation_loss().weights == ("teacher", "student")
