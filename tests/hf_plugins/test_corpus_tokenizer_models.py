import pytest
import torch

from hf_plugins import load_pydoc_corpus, tiny_causal_lm, train_bpe_tokenizer


def test_corpus_split_is_disjoint_complete_and_seeded():
    from pydoc_data.topics import topics

    split = load_pydoc_corpus(validation_fraction=0.1, seed=0)
    assert set(split.train_topics).isdisjoint(split.validation_topics)
    assert sorted(split.train_topics + split.validation_topics) == sorted(topics)
    assert len(split.validation) == round(0.1 * len(topics))
    assert split.train[0] == topics[split.train_topics[0]]
    assert load_pydoc_corpus(seed=0) == split
    assert load_pydoc_corpus(seed=1).validation_topics != split.validation_topics


@pytest.mark.parametrize("bad", [0, 1, -0.5, 1.5, "x"])
def test_corpus_rejects_bad_fraction(bad):
    with pytest.raises(ValueError, match="validation_fraction"):
        load_pydoc_corpus(validation_fraction=bad)


@pytest.fixture(scope="module")
def tokenizer():
    return train_bpe_tokenizer(vocab_size=512)


def test_tokenizer_round_trips_text_and_has_special_tokens(tokenizer):
    assert len(tokenizer) == 512
    text = "The assert statement inserts debugging assertions into a program."
    ids = tokenizer(text)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert len(ids) < 0.6 * len(text)  # BPE merges learned from the corpus compress English prose
    assert tokenizer.pad_token == "<pad>" and tokenizer.eos_token == "<|im_end|>"
    assert tokenizer.pad_token_id != tokenizer.eos_token_id


def test_tokenizer_chat_template(tokenizer):
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]
    rendered = tokenizer.apply_chat_template(messages, tokenize=False)
    assert rendered == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\nhello<|im_end|>\n"
    prompt = tokenizer.apply_chat_template(messages[:1], tokenize=False, add_generation_prompt=True)
    assert prompt.endswith("<|im_start|>assistant\n")
    assert tokenizer.convert_tokens_to_ids("<|im_start|>") < len(tokenizer)
    assert len(tokenizer("<|im_start|>")["input_ids"]) == 1


def test_tokenizer_is_cached_and_reloads_identically(tokenizer):
    from hf_plugins.testing_utils.tokenizer import cache_dir

    assert (cache_dir() / "tokenizers" / "bpe-512" / "tokenizer.json").exists()
    again = train_bpe_tokenizer(vocab_size=512)
    text = "Assignment statements are used to (re)bind names to values."
    assert again(text)["input_ids"] == tokenizer(text)["input_ids"]
    assert again.chat_template == tokenizer.chat_template


def test_tokenizer_rejects_tiny_vocab():
    with pytest.raises(ValueError, match="vocab_size"):
        train_bpe_tokenizer(vocab_size=10)


@pytest.mark.parametrize("arch", ["qwen2", "gpt2"])
def test_tiny_models_share_vocab_teacher_larger_and_reload(tmp_path, tokenizer, arch):
    from transformers import AutoModelForCausalLM

    student = tiny_causal_lm(tokenizer, "student", arch=arch)
    teacher = tiny_causal_lm(tokenizer, "teacher", arch=arch)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(teacher) > n(student)
    ids = torch.tensor([tokenizer("def f(x): return x")["input_ids"]])
    assert student(ids).logits.shape[-1] == teacher(ids).logits.shape[-1] == len(tokenizer)
    assert student.config.pad_token_id == tokenizer.pad_token_id
    student.save_pretrained(tmp_path / "s")
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "s")
    # reloaded weights are the same bits but not 64-byte aligned, so some CPU kernels round differently: logits ~1
    # after 2-3 fp32 layers of width <= 128 carry ~1e-6 of rounding, so 1e-5 is ten times that
    torch.testing.assert_close(reloaded(ids).logits, student.eval()(ids).logits, rtol=1e-5, atol=1e-5)


def test_tiny_models_are_seeded():
    a, b, c = (tiny_causal_lm(300, seed=s) for s in (0, 0, 1))
    pa, pb, pc = (torch.cat([p.flatten() for p in m.parameters()]) for m in (a, b, c))
    assert torch.equal(pa, pb) and not torch.equal(pa, pc)  # same seed, same process, same init code: bitwise


def test_tiny_models_reject_bad_arguments():
    with pytest.raises(ValueError, match="size"):
        tiny_causal_lm(300, "huge")
    with pytest.raises(ValueError, match="arch"):
        tiny_causal_lm(300, arch="llama9")


def test_tiny_models_leave_the_callers_global_rng_alone():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    tiny_causal_lm(300, seed=5)
    assert torch.equal(torch.get_rng_state(), state)  # a byte tensor: exact by construction


def test_sampling_is_seeded_and_leaves_the_callers_global_rng_alone(tokenizer):
    from hf_plugins.testing_utils.evaluation import sample_completions

    model = tiny_causal_lm(tokenizer, seed=0)
    prompts = [[{"role": "user", "content": "Explain the assert statement."}]] * 3
    torch.manual_seed(321)
    state = torch.get_rng_state()
    first = sample_completions(model, tokenizer, prompts, max_new_tokens=6, seed=4, progress=False)
    assert torch.equal(torch.get_rng_state(), state)
    assert sample_completions(model, tokenizer, prompts, max_new_tokens=6, seed=4, progress=False) == first
    assert sample_completions(model, tokenizer, prompts, max_new_tokens=6, seed=5, progress=False) != first
    assert len(set(first)) > 1  # sampled, not greedy: the three identical prompts get different completions
