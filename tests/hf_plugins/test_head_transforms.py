"""Chunked losses on models whose heads transform their output (Gemma-2 soft-capping, Cohere / Granite scales)
equal the loss on the model's own ``model(...).logits``, in value and gradient; an unknown transform is refused."""

import pytest
import torch
from transformers import (
    CohereConfig,
    CohereForCausalLM,
    Gemma2Config,
    Gemma2ForCausalLM,
    GraniteConfig,
    GraniteForCausalLM,
    Qwen2Config,
)

import hf_plugins.losses as L

_SMALL = dict(vocab_size=40, hidden_size=16, intermediate_size=32, num_hidden_layers=1, num_attention_heads=2,
              num_key_value_heads=1, max_position_embeddings=32)
MODELS = {
    "gemma2": (Gemma2ForCausalLM, Gemma2Config, dict(final_logit_softcapping=3.0, head_dim=8)),
    "cohere": (CohereForCausalLM, CohereConfig, dict(logit_scale=0.25)),
    "granite": (GraniteForCausalLM, GraniteConfig, dict(logits_scaling=0.3)),
}


def _model(arch, seed):
    cls, cfg_cls, extra = MODELS[arch]
    torch.manual_seed(seed)
    return cls(cfg_cls(**_SMALL, **extra, tie_word_embeddings=False)).double().eval()


@pytest.mark.parametrize("arch", sorted(MODELS))
@pytest.mark.parametrize("name, options", [("amid", {}), ("generalized_jsd", {"beta": 0.5}), ("csd", {})])
def test_chunked_equals_loss_on_model_logits(arch, name, options):
    student, teacher = _model(arch, 0), _model(arch, 1)
    # random-init heads give small logits; enlarge them so the soft-cap / scale matters
    with torch.no_grad():
        for m in (student, teacher):
            m.lm_head.weight.mul_(40.0)
    ids = torch.randint(0, 40, (2, 7), generator=torch.Generator().manual_seed(2))
    mask = torch.ones(2, 7, dtype=torch.bool)
    mask[1, :3] = False
    with torch.no_grad():
        t_logits = teacher(input_ids=ids).logits
        ht = teacher.model(input_ids=ids).last_hidden_state
    ref = L.get(name, **options)(student(input_ids=ids).logits, t_logits, mask)
    ref.backward()
    ref_grad = student.lm_head.weight.grad.clone()
    student.zero_grad()
    hs = student.model(input_ids=ids).last_hidden_state
    out = L.chunked(name, hs, student.lm_head.weight, ht, teacher.lm_head.weight, mask, chunk_size=3,
                    student_head_transform=L.head_transform(student),
                    teacher_head_transform=L.head_transform(teacher), **options)
    out.backward()
    plain = L.chunked(name, hs.detach(), student.lm_head.weight.detach(), ht, teacher.lm_head.weight, mask, 3,
                      **options)
    # fp64 throughout: differences are summation-order rounding, ~1e-15 relative
    torch.testing.assert_close(out, ref, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(student.lm_head.weight.grad, ref_grad, rtol=1e-9, atol=1e-12)
    assert abs(float(plain) - float(ref.detach())) > 1e-3  # the transform changes the objective: the test can fail


def test_unknown_head_transform_is_an_error():
    cfg = Qwen2Config(**_SMALL)
    cfg.output_multiplier = 2.0
    with pytest.raises(ValueError, match="output_multiplier"):
        L.head_transform(cfg)
    cfg = Qwen2Config(**_SMALL)
    cfg.logits_scaling = 4.0  # Granite's field on another architecture: direction unknown
    with pytest.raises(ValueError, match="logits_scaling"):
        L.head_transform(cfg)
    assert L.head_transform(Qwen2Config(**_SMALL)).identity
