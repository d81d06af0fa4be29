"""The fast AR path (static KV cache, lean one-token step): same tokens, and a clean fallback."""

from __future__ import annotations

import pytest
import torch
from conftest import DECODER_ARCHS, tiny_model

from ar2diff.models.backbone import Backbone
from ar2diff.sampling import fast_ar
from ar2diff.sampling.autoregressive import ARSampling, ar_generate
from ar2diff.sampling.fast_ar import fast_decoder

PROMPTS = [[1, 5, 6, 7, 8], [1, 9], [1, 12, 13, 14]]
EOS, PAD = 2, 0
N = 16


def _hf_greedy(model, prompt, n, eos=EOS):
    out = model.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False,
                         eos_token_id=eos, pad_token_id=PAD)
    seq = out[0, len(prompt):].tolist()
    return seq[: seq.index(eos)] if eos in seq else seq


def _generic(bb, prompts, cfg):
    return ar_generate(bb, prompts, ARSampling(**{**cfg.__dict__, "fast": False}), EOS, PAD)


@pytest.mark.parametrize("arch,overrides", [(a, {}) for a in DECODER_ARCHS]
                         + [("llama", {"num_key_value_heads": 2}),
                            ("qwen2", {"num_key_value_heads": 1})])
def test_fast_greedy_equals_transformers_generate_batched_and_alone(arch, overrides):
    model = tiny_model(arch, **overrides)
    bb = Backbone(model)
    assert fast_decoder(bb, PROMPTS, PAD, "causal", N) is not None
    cfg = ARSampling(max_new_tokens=N)
    batched = ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    for prompt, got in zip(PROMPTS, batched, strict=True):
        assert got[0] == _hf_greedy(model, prompt, N)
        assert ar_generate(bb, [prompt], cfg, EOS, PAD)[0] == got


def test_fast_greedy_stops_at_eos():
    model = tiny_model("qwen2")
    bb = Backbone(model)
    first = ar_generate(bb, PROMPTS, ARSampling(max_new_tokens=8), EOS, PAD)
    eos = first[0][0][2]  # declare the third token of the first answer to be EOS
    stopped = ar_generate(bb, PROMPTS, ARSampling(max_new_tokens=8), eos, PAD)
    for prompt, full, got in zip(PROMPTS, first, stopped, strict=True):
        expected = full[0][: full[0].index(eos)] if eos in full[0] else full[0]
        assert got[0] == expected == _hf_greedy(model, prompt, 8, eos)
    assert len(stopped[0][0]) == first[0][0].index(eos) < 8


@pytest.mark.parametrize("arch", DECODER_ARCHS)
def test_fast_sampling_and_prefix_layout_equal_the_generic_path(arch):
    bb = Backbone(tiny_model(arch))
    cfg = ARSampling(strategy="sample", temperature=1.3, top_p=0.9, completions=2,
                     max_new_tokens=10, seed=7)
    assert ar_generate(bb, PROMPTS, cfg, EOS, PAD) == _generic(bb, PROMPTS, cfg)
    prefix = ARSampling(max_new_tokens=N, layout="prefix")
    assert ar_generate(bb, PROMPTS, prefix, EOS, PAD) == _generic(bb, PROMPTS, prefix)


def test_bf16_fast_path_equals_the_generic_path():
    """On a CPU bf16 weights are prepacked for oneDNN and Q/K/V fused: the tokens stay the same."""
    for arch in DECODER_ARCHS:
        bb = Backbone(tiny_model(arch).to(torch.bfloat16))
        cfg = ARSampling(max_new_tokens=N)
        assert ar_generate(bb, PROMPTS, cfg, EOS, PAD) == _generic(bb, PROMPTS, cfg)


def test_prepared_weights_follow_in_place_updates():
    """Prepacked copies (bf16 on a CPU) are remade once a weight changes in place."""
    model = tiny_model("llama").to(torch.bfloat16)
    bb = Backbone(model)
    cfg = ARSampling(max_new_tokens=N)
    before = ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    with torch.no_grad():
        gen = torch.Generator().manual_seed(1)
        for layer in model.model.layers:
            w = layer.mlp.down_proj.weight
            w.copy_(torch.randn(w.shape, generator=gen).to(w.dtype))
    after = ar_generate(bb, PROMPTS, cfg, EOS, PAD)
    assert after == _generic(bb, PROMPTS, cfg) != before


def test_falls_back_where_it_does_not_apply():
    t5 = Backbone(tiny_model("t5"))
    assert fast_decoder(t5, PROMPTS, PAD, "causal", N) is None
    llama = tiny_model("llama")
    bb = Backbone(llama)
    llama.train()
    assert fast_decoder(bb, PROMPTS, PAD, "causal", N) is None
    llama.eval()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert fast_decoder(bb, PROMPTS, PAD, "causal", N) is None
    dynamic = tiny_model("llama", rope_parameters={"rope_type": "dynamic", "factor": 2.0,
                                                   "rope_theta": 10000.0})
    dyn = Backbone(dynamic)
    assert fast_decoder(dyn, PROMPTS, PAD, "causal", N) is None
    got = ar_generate(dyn, PROMPTS, ARSampling(max_new_tokens=N), EOS, PAD)
    assert [g[0] for g in got] == [_hf_greedy(dynamic, p, N) for p in PROMPTS]


def test_beam_search_and_fast_false_keep_the_generic_path(monkeypatch):
    bb = Backbone(tiny_model("llama"))
    expected = ar_generate(bb, PROMPTS, ARSampling(strategy="beam", max_new_tokens=6), EOS, PAD)

    def refuse(*args, **kwargs):
        raise AssertionError("the fast path was taken")

    monkeypatch.setattr("ar2diff.sampling.autoregressive.fast_decoder", refuse)
    assert ar_generate(bb, PROMPTS, ARSampling(strategy="beam", max_new_tokens=6), EOS,
                       PAD) == expected
    assert ar_generate(bb, PROMPTS, ARSampling(max_new_tokens=6, fast=False), EOS, PAD)


@pytest.mark.parametrize("failure", ["compile", "run"])
def test_a_failing_compilation_falls_back_to_the_eager_step(monkeypatch, failure):
    """``compile=True``: whatever the compiler does, the tokens are the eager step's."""
    model = tiny_model("gpt2")
    bb = Backbone(model)
    expected = ar_generate(bb, PROMPTS, ARSampling(max_new_tokens=N), EOS, PAD)

    def broken_compile(fn, **kwargs):
        if failure == "compile":
            raise RuntimeError("no compiler here")

        def run(*args):
            raise RuntimeError("compiled code failed")
        return run

    monkeypatch.setattr(torch, "compile", broken_compile)
    cfg = ARSampling(max_new_tokens=N, compile=True)
    assert ar_generate(bb, PROMPTS, cfg, EOS, PAD) == expected
    assert fast_ar._PREPARED[model].compiled is False
    assert ar_generate(bb, PROMPTS, cfg, EOS, PAD) == expected  # and stays off


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_compiled_step_gives_the_eager_tokens(arch):
    """A real ``torch.compile`` (inductor on the CPU): compiled or fallen back, the same tokens."""
    bb = Backbone(tiny_model(arch))
    expected = ar_generate(bb, PROMPTS, ARSampling(max_new_tokens=N), EOS, PAD)
    cfg = ARSampling(max_new_tokens=N, compile=True)
    assert ar_generate(bb, PROMPTS, cfg, EOS, PAD) == expected
    assert ar_generate(bb, PROMPTS, cfg, EOS, PAD) == expected  # reusing the compiled step
    assert ar_generate(bb, PROMPTS[:1], cfg, EOS, PAD) == expected[:1]  # another batch shape
