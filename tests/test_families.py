"""Attention families beyond full attention: sliding windows exact in AR mode, the rest refused.

Tiny random models built from configs (no network). The table of families lives in
docs/architecture.md ("Model families").
"""

from __future__ import annotations

import pytest
import torch
import transformers as T

from ar2diff.data.batching import Example, collate
from ar2diff.errors import Ar2DiffError
from ar2diff.models.backbone import Backbone, attention_window
from ar2diff.sampling.autoregressive import ARSampling, ar_generate

SMALL = dict(vocab_size=40, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
             pad_token_id=0, bos_token_id=1, eos_token_id=2)
PROMPT = [5, 6, 7, 8, 9, 10, 11, 12, 13, 14]  # longer than the window


def _model(config_cls, model_cls, **extra):
    torch.manual_seed(0)
    return model_cls(config_cls(**SMALL, **extra)).eval()


SLIDING = {
    "mistral": lambda: _model(T.MistralConfig, T.MistralForCausalLM, sliding_window=4),
    "starcoder2": lambda: _model(T.Starcoder2Config, T.Starcoder2ForCausalLM, sliding_window=4,
                                 residual_dropout=0.0, embedding_dropout=0.0),
}


@pytest.mark.parametrize("family", list(SLIDING))
@pytest.mark.parametrize("fast", [True, False])
def test_sliding_window_ar_greedy_equals_transformers(family, fast):
    model = SLIDING[family]()
    assert Backbone(model).window == 4
    with torch.no_grad():
        ref = model.generate(torch.tensor([PROMPT]), max_new_tokens=10, do_sample=False,
                             pad_token_id=0, eos_token_id=None)[0, len(PROMPT):].tolist()
    out = ar_generate(Backbone(model), [PROMPT], ARSampling(max_new_tokens=10, fast=fast),
                      eos_id=-1, pad_id=0)
    assert out[0][0] == ref


@pytest.mark.parametrize("family", list(SLIDING))
def test_sliding_window_causal_logits_equal_the_original_beyond_the_window(family):
    model = SLIDING[family]()
    batch = collate([Example(tuple(PROMPT[:3]), tuple(PROMPT[3:]))], pad_id=0)
    fed = batch.target_ids
    with torch.no_grad():
        ours = Backbone(model).target_logits(batch, fed, "causal", shift=True)
        theirs = model(torch.tensor([PROMPT])).logits[:, 2:-1]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-4)


def test_sliding_window_diffusion_sees_only_the_window():
    torch.manual_seed(0)
    model = T.MistralForCausalLM(T.MistralConfig(**{**SMALL, "num_hidden_layers": 1},
                                                 sliding_window=4)).eval()
    bb = Backbone(model)
    batch = collate([Example(tuple(PROMPT[:3]), tuple(PROMPT[3:]))], pad_id=0)
    fed = batch.target_ids.clone()
    with torch.no_grad():
        base = bb.target_logits(batch, fed, "diffusion", shift=False)
        fed[0, 4] = 30  # target 4: 4 columns after target 0, 1 column after target 3
        changed = bb.target_logits(batch, fed, "diffusion", shift=False)
    assert torch.equal(base[0, 0], changed[0, 0])  # beyond the window on both sides
    assert not torch.equal(base[0, 3], changed[0, 3])  # within it


REFUSED = {
    "gemma2": (lambda: T.Gemma2Config(**SMALL, sliding_window=4, head_dim=8), "mix"),
    "gemma3_text": (lambda: T.Gemma3TextConfig(**{**SMALL, "num_hidden_layers": 6},
                                               sliding_window=4, head_dim=8), "mix"),
    "qwen2_window_layers": (lambda: T.Qwen2Config(**SMALL, use_sliding_window=True,
                                                   sliding_window=4, max_window_layers=1), "mix"),
    "bloom": (lambda: T.BloomConfig(vocab_size=40, hidden_size=32, n_layer=2, n_head=4), "ALiBi"),
}


@pytest.mark.parametrize("family", list(REFUSED))
def test_attention_the_layouts_cannot_express_is_refused_in_one_line(family):
    make, words = REFUSED[family]
    with pytest.raises(Ar2DiffError, match=words) as info:
        attention_window(make())
    assert "\n" not in str(info.value) and family.split("_")[0] in str(info.value)


@pytest.mark.parametrize("config", [
    T.LlamaConfig(**SMALL), T.Qwen2Config(**SMALL), T.Qwen2Config(**SMALL, sliding_window=4),
    T.GPT2Config(vocab_size=40, n_embd=32, n_layer=2, n_head=4), T.PhiConfig(**SMALL),
], ids=["llama", "qwen2", "qwen2_window_unused", "gpt2", "phi"])
def test_full_attention_families_have_no_window(config):
    assert attention_window(config) is None
