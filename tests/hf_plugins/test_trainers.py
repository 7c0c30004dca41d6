"""AMiDTrainer / CSDTrainer / KDTrainer (GKD drop-ins) and the on-policy variants, on tiny Qwen2 models.

Loss values are checked against independent computations written out here (explicit per-position sums),
with the prompt/completion boundary found by tokenising the chat template ourselves.
"""

import math

import pytest
import torch
from datasets import Dataset

from hf_plugins import tiny_causal_lm, train_bpe_tokenizer
from hf_plugins.trainers import (
    AMiDConfig,
    AMiDTrainer,
    CSDConfig,
    CSDTrainer,
    KDConfig,
    KDTrainer,
    ReplayBuffer,
    StudentDataSchedule,
)

V = 300


def _models(tok, student_rows=None, teacher_rows=None):
    student = tiny_causal_lm(student_rows or tok, "student", seed=0)
    teacher = tiny_causal_lm(teacher_rows or tok, "teacher", seed=1)
    if student_rows:
        student.config.pad_token_id, student.config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    return student, teacher


def _args(cls, tmp_path, **kw):
    base = dict(
        output_dir=str(tmp_path),
        bf16=False,
        use_cpu=True,
        gradient_checkpointing=False,
        max_steps=2,
        per_device_train_batch_size=2,
        report_to="none",
        logging_steps=1,
        save_strategy="no",
        max_new_tokens=6,
        max_length=96,
        lmbda=0.0,
        disable_tqdm=True,
    )
    base.update(kw)
    return cls(**base)


def _reference_positions(tok, batch, examples):
    """Bool [B, T-1] of the shifted positions that predict a completion token, found independently."""
    ids, att = batch["input_ids"], batch["attention_mask"]
    out = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
    for b, ex in enumerate(examples):
        prompt = tok.apply_chat_template(ex["messages"][:-1], add_generation_prompt=True, tokenize=False)
        full = tok.apply_chat_template(ex["messages"], tokenize=False)
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        n_full = len(tok(full, add_special_tokens=False)["input_ids"])
        start = int((att[b] == 0).sum())  # left padding
        assert int(att[b].sum()) == n_full
        for j in range(start + n_prompt, start + n_full):  # token j is a completion token ...
            out[b, j - 1] = True  # ... predicted by the logits at j - 1
    return out


def _explicit_fkl_entropy(s, t):
    """Per-row KL(p||q) and H(q) by explicit sums over the vocabulary (float64)."""
    kls, ents = [], []
    for a_row, b_row in zip(t.double(), s.double()):
        p = [math.exp(x) for x in (a_row - torch.logsumexp(a_row, 0)).tolist()]
        lq = (b_row - torch.logsumexp(b_row, 0)).tolist()
        lp = [math.log(x) for x in p]
        kls.append(sum(pi * (lpi - lqi) for pi, lpi, lqi in zip(p, lp, lq)))
        ents.append(-sum(math.exp(x) * x for x in lq))
    return kls, ents


def _shifted_logits(trainer, batch):
    with torch.no_grad():
        s = trainer.model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
        t = trainer.teacher_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits[:, :-1]
    return s, t


def test_forward_kl_loss_and_logs_match_explicit_sums_on_completion_tokens(tok, chat_ds, tmp_path):
    student, teacher = _models(tok)
    trainer = KDTrainer(
        model=student, teacher_model=teacher, args=_args(KDConfig, tmp_path, loss="forward_kl"),
        train_dataset=chat_ds, processing_class=tok,
    )
    examples = [chat_ds[0], chat_ds[2]]  # different lengths -> left padding inside the batch
    batch = trainer.data_collator(examples)
    mask = _reference_positions(tok, batch, examples)
    assert mask.sum() > 0 and (~mask).sum() > 0
    s, t = _shifted_logits(trainer, batch)
    kls, ents = _explicit_fkl_entropy(s[mask], t[mask])
    trainer.model.train()
    trainer.teacher_model.train()  # compute_loss must switch the teacher to eval mode itself
    loss = trainer.compute_loss(trainer.model, batch)
    assert not trainer.teacher_model.training
    assert loss.item() == pytest.approx(sum(kls) / len(kls), rel=1e-4, abs=1e-7)
    logged = trainer._metrics["train"]
    assert logged["distill_loss"][-1] == pytest.approx(sum(kls) / len(kls), rel=1e-4)
    assert logged["teacher_student_kl"][-1] == pytest.approx(sum(kls) / len(kls), rel=1e-4)
    assert logged["student_entropy"][-1] == pytest.approx(sum(ents) / len(ents), rel=1e-4)
    # only the student receives gradient
    loss.backward()
    assert all(p.grad is None for p in trainer.teacher_model.parameters())
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer.model.parameters())


def test_csd_logs_the_true_value_not_the_surrogate(tok, chat_ds, tmp_path):
    student, teacher = _models(tok)
    trainer = CSDTrainer(
        model=student, teacher_model=teacher, args=_args(CSDConfig, tmp_path), train_dataset=chat_ds,
        processing_class=tok,
    )
    examples = [chat_ds[1], chat_ds[3]]
    batch = trainer.data_collator(examples)
    mask = _reference_positions(tok, batch, examples)
    s, t = _shifted_logits(trainer, batch)
    values = []
    for b_row, a_row in zip(s[mask].double(), t[mask].double()):  # 1/2 sum_xy w(y) w(x) (d_x - d_y)^2, (S,S)
        d = b_row - a_row
        w = torch.softmax(b_row, 0)
        values.append(0.5 * (w[:, None] * w[None, :] * (d[None, :] - d[:, None]) ** 2).sum().item())
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    expected = sum(values) / len(values)
    assert loss.item() == pytest.approx(expected, rel=1e-4)
    assert trainer._metrics["train"]["distill_loss"][-1] == pytest.approx(expected, rel=1e-4)


def test_amid_trainer_wires_config_options_into_the_loss(tok, chat_ds, tmp_path):
    from hf_plugins import losses

    student, teacher = _models(tok)
    args = _args(AMiDConfig, tmp_path, amid_alpha=-1.0, amid_lambda=0.3, amid_divergence="kl", amid_order="qr")
    trainer = AMiDTrainer(model=student, teacher_model=teacher, args=args, train_dataset=chat_ds, processing_class=tok)
    examples = [chat_ds[4], chat_ds[5]]
    batch = trainer.data_collator(examples)
    mask = _reference_positions(tok, batch, examples)
    s, t = _shifted_logits(trainer, batch)
    # alpha=-1, order qr: KL(q || lam p + (1-lam) q), the DistiLLM skew reverse KL, written out here
    vals = []
    for b_row, a_row in zip(s[mask].double(), t[mask].double()):
        q, p = torch.softmax(b_row, 0), torch.softmax(a_row, 0)
        r = 0.3 * p + 0.7 * q
        vals.append((q * (q.log() - r.log())).sum().item())
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(sum(vals) / len(vals), rel=1e-4)
    assert loss.item() == pytest.approx(
        losses.amid(s, t, mask, alpha=-1.0, lam=0.3, divergence="kl", order="qr").item(), rel=1e-5
    )


def test_sft_weight_adds_the_completion_cross_entropy(tok, chat_ds, tmp_path):
    student, teacher = _models(tok)
    trainer = KDTrainer(
        model=student, teacher_model=teacher, args=_args(KDConfig, tmp_path, loss="reverse_kl", sft_weight=0.5),
        train_dataset=chat_ds, processing_class=tok,
    )
    examples = [chat_ds[0], chat_ds[1]]
    batch = trainer.data_collator(examples)
    mask = _reference_positions(tok, batch, examples)
    s, t = _shifted_logits(trainer, batch)
    targets = batch["input_ids"][:, 1:][mask]
    rows_s, rows_t = s[mask].double(), t[mask].double()
    ce = [-(r[y] - torch.logsumexp(r, 0)).item() for r, y in zip(rows_s, targets)]
    rkl = [
        (torch.softmax(b, 0) * (torch.log_softmax(b, 0) - torch.log_softmax(a, 0))).sum().item()
        for b, a in zip(rows_s, rows_t)
    ]
    trainer.model.train()
    loss = trainer.compute_loss(trainer.model, batch)
    assert loss.item() == pytest.approx(sum(rkl) / len(rkl) + 0.5 * sum(ce) / len(ce), rel=1e-4)
    assert trainer._metrics["train"]["sft_loss"][-1] == pytest.approx(sum(ce) / len(ce), rel=1e-4)


def test_padded_lm_heads_are_sliced_to_the_tokenizer_vocabulary(tok, chat_ds, tmp_path):
    student, teacher = _models(tok, student_rows=320, teacher_rows=384)
    teacher.config.pad_token_id, teacher.config.eos_token_id = tok.pad_token_id, tok.eos_token_id
    trainer = KDTrainer(
        model=student, teacher_model=teacher, args=_args(KDConfig, tmp_path), train_dataset=chat_ds,
        processing_class=tok,
    )
    assert trainer.vocab_size == V and teacher.config.vocab_size == 384  # config restored after GKD's check
    examples = [chat_ds[0], chat_ds[2]]
    batch = trainer.data_collator(examples)
    mask = _reference_positions(tok, batch, examples)
    s, t = _shifted_logits(trainer, batch)
    kls, _ = _explicit_fkl_entropy(s[mask][:, :V], t[mask][:, :V])
    trainer.model.train()
    assert trainer.compute_loss(trainer.model, batch).item() == pytest.approx(sum(kls) / len(kls), rel=1e-4)


def test_vocabulary_mismatch_is_a_clear_error_naming_both_sizes(tok, chat_ds, tmp_path):
    student, _ = _models(tok)
    small_teacher = tiny_causal_lm(280, "teacher")
    with pytest.raises(ValueError, match=r"300 tokens.*300 rows.*280 rows"):
        KDTrainer(model=student, teacher_model=small_teacher, args=_args(KDConfig, tmp_path),
                  train_dataset=chat_ds, processing_class=tok)
    # a teacher saved with another tokenizer (same size) is rejected too
    other_tok = train_bpe_tokenizer(V, texts=["completely different text " * 50, "zebra quark " * 40], use_cache=False)
    teacher = tiny_causal_lm(other_tok, "teacher")
    path = tmp_path / "other_teacher"
    teacher.save_pretrained(path)
    other_tok.save_pretrained(path)
    with pytest.raises(ValueError, match="different tokenizer"):
        KDTrainer(model=student, teacher_model=str(path), args=_args(KDConfig, tmp_path / "o"),
                  train_dataset=chat_ds, processing_class=tok)


def test_teacher_loaded_from_a_saved_path_gives_the_same_loss(tok, chat_ds, tmp_path):
    student, teacher = _models(tok)
    teacher.save_pretrained(tmp_path / "teacher")
    tok.save_pretrained(tmp_path / "teacher")
    a = KDTrainer(model=student, teacher_model=teacher, args=_args(KDConfig, tmp_path / "a"),
                  train_dataset=chat_ds, processing_class=tok)
    b = KDTrainer(model=student, teacher_model=str(tmp_path / "teacher"), args=_args(KDConfig, tmp_path / "b"),
                  train_dataset=chat_ds, processing_class=tok)
    batch = a.data_collator([chat_ds[0], chat_ds[1]])
    # the same weights, but loaded ones are not 64-byte aligned and may round differently in some CPU kernels:
    # an fp32 loss summed over ~40 tokens x V = 300 then carries ~1e-6 relative rounding, hence 1e-5
    assert a.compute_loss(a.model, batch).item() == pytest.approx(b.compute_loss(b.model, batch).item(), rel=1e-5)


def test_dataset_formats_give_identical_batches_and_bad_columns_fail(tok, conversations, tmp_path):
    msgs = conversations[:4]
    conv_pc = Dataset.from_list([{"prompt": m[:-1], "completion": m[-1:]} for m in msgs])
    chat = Dataset.from_list([{"messages": m} for m in msgs])
    prompts = [tok.apply_chat_template(m[:-1], add_generation_prompt=True, tokenize=False) for m in msgs]
    completions = [m[-1]["content"] for m in msgs]
    std_pc = Dataset.from_list([{"prompt": p, "completion": c} for p, c in zip(prompts, completions)])
    student, teacher = _models(tok)
    batches = []
    for ds in (chat, conv_pc, std_pc):
        tr = KDTrainer(model=student, teacher_model=teacher, args=_args(KDConfig, tmp_path), train_dataset=ds,
                       processing_class=tok)
        batches.append(tr.data_collator([tr.train_dataset[i] for i in range(2)]))
    for key in ("input_ids", "attention_mask", "labels"):
        assert torch.equal(batches[0][key], batches[1][key])
    # the string form ends the completion with EOS instead of the template's trailing newline
    lab0, lab2 = batches[0]["labels"], batches[2]["labels"]
    assert (lab2 == tok.eos_token_id).sum(1).tolist() == [1, 1]
    assert ((lab0 != -100).sum(1) - (lab2 != -100).sum(1)).abs().max() <= 1
    bad = Dataset.from_list([{"text": "hello"}])
    with pytest.raises(ValueError, match=r"expected 'messages'.*'prompt' and 'completion'"):
        KDTrainer(model=student, teacher_model=teacher, args=_args(KDConfig, tmp_path), train_dataset=bad,
                  processing_class=tok)


@pytest.mark.parametrize(
    ("cls", "kw", "match"),
    [
        (AMiDConfig, {"amid_lambda": 1.5}, "amid_lambda"),
        (AMiDConfig, {"amid_order": "pq"}, "amid_order"),
        (AMiDConfig, {"amid_divergence": "js"}, "amid_divergence"),
        (CSDConfig, {"csd_weights": ("S", "X")}, "csd_weights"),
        (CSDConfig, {"csd_temperature": 0.0}, "csd_temperature"),
        (KDConfig, {"loss": "wasserstein"}, "wasserstein"),
        (KDConfig, {"sft_weight": -1.0}, "sft_weight"),
        (KDConfig, {"loss_chunk_size": 0}, "loss_chunk_size"),
        (KDConfig, {"student_data": "always"}, "student_data"),
        (KDConfig, {"replay_capacity": 0}, "replay_capacity"),
    ],
)
def test_configs_reject_bad_options_before_work(tmp_path, cls, kw, match):
    with pytest.raises(ValueError, match=match):
        _args(cls, tmp_path, **kw)


def test_configs_reject_unknown_loss_options_with_a_type_error(tmp_path):
    with pytest.raises(TypeError, match="bogus.*valid options: lam"):
        _args(KDConfig, tmp_path, loss="skew_forward_kl", loss_options={"bogus": 1})


@pytest.mark.parametrize(
    ("cls", "argv", "expected"),
    [
        (CSDConfig, ["--csd_weights", "TS", "--csd_temperature", "1.5"],
         ("csd", {"weights": ("teacher", "student"), "temperature": 1.5, "mix_alpha": 0.15})),
        (AMiDConfig, ["--amid_lambda", "0.3", "--amid_order", "qr"],
         ("amid", {"alpha": 0.5, "lam": 0.3, "divergence": "ab", "order": "qr", "ab_alpha": 0.2, "ab_beta": 0.7})),
        (KDConfig, ["--loss", "skew_forward_kl", "--loss_options", '{"lam": 0.3}'], ("skew_forward_kl", {"lam": 0.3})),
    ],
)
def test_configs_parse_from_the_command_line(tmp_path, cls, argv, expected):
    from transformers import HfArgumentParser

    base = ["--output_dir", str(tmp_path), "--use_cpu", "True", "--bf16", "False"]
    (cfg,) = HfArgumentParser(cls).parse_args_into_dataclasses(base + argv)
    assert cfg.loss_spec() == expected


def test_csd_weight_letters_map_to_loss_names(tmp_path):
    cfg = _args(CSDConfig, tmp_path, csd_weights="TS", csd_temperature=1.5)
    assert cfg.loss_spec() == ("csd", {"weights": ("teacher", "student"), "temperature": 1.5, "mix_alpha": 0.15})


def test_trainer_rejects_wrong_config_type_and_distillm_without_eval(tok, chat_ds, tmp_path):
    student, teacher = _models(tok)
    with pytest.raises(TypeError, match="AMiDConfig"):
        AMiDTrainer(model=student, teacher_model=teacher, args=_args(CSDConfig, tmp_path), train_dataset=chat_ds,
                    processing_class=tok)
    with pytest.raises(ValueError, match="eval_dataset"):
        KDTrainer(model=student, teacher_model=teacher, args=_args(KDConfig, tmp_path, student_data="distillm"),
                  train_dataset=chat_ds, processing_class=tok)


def test_replay_buffer_strips_padding_samples_uniformly_and_round_trips(tmp_path):
    buf = ReplayBuffer(capacity=3, seed=0)
    ids = torch.tensor([[0, 0, 5, 6, 7], [8, 9, 10, 11, 0]])
    att = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 0]])
    lab = torch.tensor([[-100, -100, -100, 6, 7], [-100, -100, 10, 11, -100]])
    buf.push(ids, att, lab)
    buf.push(ids[:1] + 100, att[:1], lab[:1])
    buf.push(ids[1:] + 200, att[1:], lab[1:])  # capacity 3: the first row is dropped
    assert len(buf) == 3 and buf.full
    batch = buf.sample(3, pad_token_id=1)
    rows = sorted(tuple(r[a.bool()].tolist()) for r, a in zip(batch["input_ids"], batch["attention_mask"]))
    assert rows == sorted([(8, 9, 10, 11), (105, 106, 107), (208, 209, 210, 211)])
    assert (batch["labels"][batch["attention_mask"] == 0] == -100).all()
    buf.save(tmp_path)
    other = ReplayBuffer(capacity=3, seed=123)
    other.load(tmp_path)
    a, b = buf.sample(2, 1), other.sample(2, 1)
    assert all(torch.equal(a[k], b[k]) for k in a)
    # uniform: over many draws each of the 3 rows appears about 2/3 of the time in a sample of 2
    counts = torch.zeros(3)
    first = {int(r[0]) for r in [x for x, _ in buf._items]}
    for _ in range(600):
        s = buf.sample(2, 1)["input_ids"][:, 0].tolist()
        for j, f in enumerate(sorted(first)):
            counts[j] += s.count(f)
    assert torch.allclose(counts / 600, torch.full((3,), 2 / 3), atol=0.07)


def test_student_data_resume_refuses_other_settings_and_corrupt_files(tmp_path):
    sch = StudentDataSchedule("distillm", capacity=2, threshold_step=0.1, seed=0)
    sch.buffer.push(torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long), torch.ones(1, 3, dtype=torch.long))
    sch.save(tmp_path)
    StudentDataSchedule("distillm", capacity=2, threshold_step=0.1, seed=0).load(tmp_path)  # same settings: fine
    with pytest.raises(ValueError, match=r"threshold_step: 0.1 in the checkpoint vs 0.2 now"):
        StudentDataSchedule("distillm", capacity=2, threshold_step=0.2, seed=0).load(tmp_path)
    with pytest.raises(ValueError, match=r"mode: 'distillm' in the checkpoint vs 'imitkd' now.*capacity: 2.*vs 3"):
        StudentDataSchedule("imitkd", capacity=3, seed=0).load(tmp_path)
    tensors = tmp_path / "replay_buffer.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:40])
    with pytest.raises(ValueError, match=r"replay_buffer.safetensors is missing, incomplete or corrupt"):
        StudentDataSchedule("distillm", capacity=2, threshold_step=0.1, seed=0).load(tmp_path)
    state = tmp_path / "student_data.json"
    state.write_text(state.read_text()[:25])
    with pytest.raises(ValueError, match=r"student_data.json is missing, incomplete or corrupt.*KDTrainer checkpoint"):
        StudentDataSchedule("distillm", capacity=2, threshold_step=0.1, seed=0).load(tmp_path)


def test_distillm_schedule_follows_threshold_rules():
    sch = StudentDataSchedule("distillm", capacity=2, init_threshold=0.0, threshold_step=0.1, loss_eps=0.1, seed=0)
    assert {sch.choose(s, 100) for s in range(50)} == {"dataset"}  # threshold 0: never student data
    sch.update(2.0)  # first evaluation sets the reference
    sch.update(2.05)  # rise < eps: unchanged
    assert sch.threshold == 0.0 and sch.reference == 2.0
    sch.update(2.1)
    assert sch.threshold == pytest.approx(0.1) and sch.reference == 2.1
    for _ in range(20):
        sch.reference = -1e9
        sch.update(0.0)
    assert sch.threshold == 1.0  # capped
    # threshold 1, buffer not full -> always generate; once full, step 0 -> generate (decreasing ratio = 1)
    assert sch.choose(50, 100) == "generate"
    sch.buffer.push(torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), torch.ones(2, 3, dtype=torch.long))
    choices = [sch.choose(50, 100) for _ in range(2000)]  # P(generate) = 0.5, else replay
    assert set(choices) == {"generate", "replay"}
    assert choices.count("generate") / 2000 == pytest.approx(0.5, abs=0.05)
    imit = StudentDataSchedule("imitkd", seed=0)
    assert imit.choose(0, 10) == "generate_replay"


def _losses_of(trainer, after_step=0):
    return [h["loss"] for h in trainer.state.log_history if "loss" in h and h["step"] > after_step]


@pytest.mark.parametrize("student_data", ["imitkd", "gkd"])
def test_save_and_resume_continue_with_identical_losses(tok, chat_ds, tmp_path, student_data):
    kw = dict(max_steps=4, save_strategy="steps", save_steps=2, learning_rate=5e-3, student_data=student_data,
              lmbda=0.5, seed=3, replay_capacity=3)
    s1, t1 = _models(tok)
    full = AMiDTrainer(model=s1, teacher_model=t1, args=_args(AMiDConfig, tmp_path / "a", **kw),
                       train_dataset=chat_ds, processing_class=tok)
    full.train()
    s2, t2 = _models(tok)
    resumed = AMiDTrainer(model=s2, teacher_model=t2, args=_args(AMiDConfig, tmp_path / "a", **kw),
                          train_dataset=chat_ds, processing_class=tok)
    resumed.train(resume_from_checkpoint=str(tmp_path / "a" / "checkpoint-2"))
    a, b = _losses_of(full), _losses_of(resumed, after_step=2)  # steps 1-2 come from the checkpoint
    assert len(a) == 4 and len(b) == 2 and all(math.isfinite(x) for x in a)
    # the resumed run computes with weights reloaded from safetensors (not 64-byte aligned: some CPU kernels round
    # differently), so losses ~0.03 summed in fp32 over ~40 tokens x V = 300 agree to ~1e-6 relative, not bitwise
    assert b == pytest.approx(a[2:], rel=1e-5, abs=1e-9)
    assert len(set(a)) > 1
    # the final students agree: weights ~0.02 moved by two Adam steps of <= lr = 5e-3, each perturbed by ~1e-6
    # relative rounding; and the saved checkpoint reloads with from_pretrained (logits ~1, the same rounding)
    for p, q in zip(full.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    from transformers import AutoModelForCausalLM

    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "a" / "checkpoint-4")
    x = torch.tensor([[5, 6, 7, 8]])
    torch.testing.assert_close(reloaded(x).logits, full.model(x).logits, rtol=1e-5, atol=1e-5)
    if student_data == "imitkd":
        assert len(resumed.student_data_schedule.buffer) == 3


def test_same_seed_same_training_run(tok, chat_ds, tmp_path):
    runs = []
    for k in range(2):
        s, t = _models(tok)
        tr = CSDTrainer(model=s, teacher_model=t, args=_args(CSDConfig, tmp_path / str(k), lmbda=0.5, max_steps=3,
                                                             learning_rate=1e-3, seed=7),
                        train_dataset=chat_ds, processing_class=tok)
        tr.train()
        runs.append(_losses_of(tr))
    assert runs[0] == runs[1]  # same seed, same process, weights built in-process, same kernels: bitwise


def test_distillm_schedule_reacts_to_validation_nll_during_training(tok, chat_ds, tmp_path):
    s, t = _models(tok)
    args = _args(KDConfig, tmp_path, student_data="distillm", eval_strategy="steps", eval_steps=1, max_steps=3,
                 distillm_loss_eps=0.0, distillm_threshold_step=0.5, learning_rate=5e-2,
                 per_device_eval_batch_size=4)
    tr = KDTrainer(model=s, teacher_model=t, args=args, train_dataset=chat_ds, eval_dataset=chat_ds,
                   processing_class=tok)
    tr.train()
    evals = [h["eval_nll"] for h in tr.state.log_history if "eval_nll" in h]
    assert len(evals) == 3
    # replay the rule on the logged NLLs (eps 0: every non-decrease raises tau by 0.5)
    ref, tau = None, 0.0
    for v in evals:
        if ref is None:
            ref = v
        elif v >= ref:
            tau, ref = min(1.0, tau + 0.5), v
    assert tr.student_data_schedule.threshold == pytest.approx(tau)


def test_rouge_l_matches_hand_computed_lcs_and_takes_best_reference():
    from hf_plugins.testing_utils.evaluation import rouge_l

    # LCS("the cat sat", "the cat sat on the mat") = 3: P = 3/3, R = 3/6, F = 2PR/(P+R) = 2/3
    assert rouge_l(["the cat sat"], ["the cat sat on the mat"]) == pytest.approx(200 / 3)
    # stemming: "cats"/"cat" and "sitting"/"sit" match; best of two references is taken
    assert rouge_l(["cats sitting"], [["dogs", "cat sit"]]) == pytest.approx(100.0)
    with pytest.raises(ValueError, match="predictions"):
        rouge_l(["a"], ["a", "b"])


def test_instruction_split_is_topic_disjoint_and_prompt_continues_into_completion():
    from pydoc_data.topics import topics

    from hf_plugins.testing_utils.instruction_data import pydoc_instruction_split

    split = pydoc_instruction_split(prompt_words=8, completion_words=12)
    assert len(split["train"]) > 500 and len(split["validation"]) > 30
    train_prompts = {e["messages"][0]["content"].split(":")[0] for e in split["train"]}
    val_prompts = {e["messages"][0]["content"].split(":")[0] for e in split["validation"]}
    assert len(train_prompts & val_prompts) < 3  # headings, not topics, could coincide; topics are disjoint
    ex = split["validation"][0]
    assert len(ex["reference"].split()) == 12 and ex["messages"][1]["content"] == ex["reference"]
    joined = " ".join(" ".join(v.split()) for v in topics.values())
    tail = ex["messages"][0]["content"].split(": ", 1)[1].split()[-3:]
    assert " ".join(tail + ex["reference"].split()[:3]) in joined  # the completion continues the prompt text


def test_gradient_accumulation_micro_batches_sum_to_the_full_batch_token_mean(tok, chat_ds, tmp_path):
    """One optimizer step over two micro-batches of unequal length, through Trainer.train / training_step."""
    from transformers import TrainerCallback

    examples = [chat_ds[0], chat_ds[2]]
    student, teacher = _models(tok)
    trainer = KDTrainer(model=student, teacher_model=teacher,
                        args=_args(KDConfig, tmp_path, gradient_accumulation_steps=2, per_device_train_batch_size=1,
                                   max_steps=1, max_grad_norm=0.0),
                        train_dataset=Dataset.from_list(examples), processing_class=tok)
    micro = [trainer.data_collator([e]) for e in examples]
    masks = [_reference_positions(tok, b, [e]) for b, e in zip(micro, examples)]
    assert masks[0].sum() != masks[1].sum()  # unequal lengths: a mean of micro-batch means would differ
    # the full-batch token mean of KL(p||q) and its gradient, by autograd on a copy of the initial student
    reference = tiny_causal_lm(tok, "student", seed=0).double()
    kls = []
    for b, m in zip(micro, masks):
        s = reference(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1][m]
        with torch.no_grad():
            t = trainer.teacher_model(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits[:, :-1][m]
        p = torch.softmax(t.double(), -1)
        kls.append((p * (p.log() - torch.log_softmax(s, -1))).sum(-1))
    full_mean = torch.cat(kls).mean()
    full_mean.backward()

    class GradientsBeforeTheStep(TrainerCallback):
        def on_pre_optimizer_step(self, args, state, control, **kwargs):
            self.grads = [p.grad.detach().double().clone() for p in trainer.model.parameters()]

    recorder = GradientsBeforeTheStep()
    trainer.add_callback(recorder)
    trainer.train()
    # fp32 loss over ~20 tokens x V = 300 vs the float64 reference: ~1e-6 relative (a mean of means is off by 2e-3)
    assert trainer.state.log_history[0]["loss"] == pytest.approx(full_mean.item(), rel=1e-5)
    # fp32 trainer vs float64 reference: per-entry gradients ~1e-3, summed over ~20 tokens and V = 300
    for got, (name, want) in zip(recorder.grads, reference.named_parameters()):
        torch.testing.assert_close(got, want.grad, rtol=1e-4, atol=1e-7, msg=name)


def test_importing_hf_plugins_stays_lazy_and_exports_the_trainers():
    import subprocess
    import sys

    code = "import sys, hf_plugins; assert 'trl' not in sys.modules and 'torch' not in sys.modules"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    from trl.experimental.gkd import GKDTrainer

    import hf_plugins

    assert issubclass(hf_plugins.CSDTrainer, GKDTrainer) and hf_plugins.AMiDTrainer.__name__ == "AMiDTrainer"
