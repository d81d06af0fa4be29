"""Backbones built from configs: Llama-family decoders and T5-style encoder–decoders of any size.

Named sizes make CPU runs easy (``tiny`` trains in minutes on 2 cores); ``base`` is GPU-sized
and close to the paper's Base scale. Any field of the Hugging Face config can be overridden.
"""

from __future__ import annotations

from typing import Any

from transformers import (
    GPT2Config,
    GPT2LMHeadModel,
    LlamaConfig,
    LlamaForCausalLM,
    PreTrainedModel,
    Qwen2Config,
    Qwen2ForCausalLM,
    T5Config,
    T5ForConditionalGeneration,
)

from ar2diff.errors import Ar2DiffError

# hidden size, layers, heads, feed-forward size
SIZES: dict[str, tuple[int, int, int, int]] = {
    "nano": (64, 2, 4, 256),
    "tiny": (128, 2, 4, 512),
    "small": (256, 4, 4, 1024),
    "medium": (384, 6, 6, 1536),
    "base": (768, 12, 12, 3072),
    "large": (1024, 24, 16, 4096),
}

ARCHS = ("llama", "qwen2", "gpt2", "t5")


def build_model(
    arch: str,
    size: str,
    vocab_size: int,
    special_ids: dict[str, int],
    max_positions: int = 2048,
    overrides: dict[str, Any] | None = None,
) -> PreTrainedModel:
    """A randomly initialised backbone of a named size.

    ``special_ids`` holds ``pad``, ``bos`` and ``eos`` token ids; ``overrides`` sets any field of
    the Hugging Face config (e.g. ``{"num_hidden_layers": 3}``).
    """
    if arch not in ARCHS:
        raise Ar2DiffError(f"unknown model.arch {arch!r}; choose one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise Ar2DiffError(f"unknown model.size {size!r}; choose one of {', '.join(SIZES)}")
    hidden, layers, heads, ffn = SIZES[size]
    pad, bos, eos = special_ids["pad"], special_ids["bos"], special_ids["eos"]
    common = dict(vocab_size=vocab_size, pad_token_id=pad, bos_token_id=bos, eos_token_id=eos,
                  tie_word_embeddings=True)
    if arch == "t5":
        config = T5Config(d_model=hidden, num_layers=layers, num_decoder_layers=layers,
                          num_heads=heads, d_kv=hidden // heads, d_ff=ffn,
                          decoder_start_token_id=pad, feed_forward_proj="gated-gelu",
                          dropout_rate=0.0, **common)
        model_cls = T5ForConditionalGeneration
    elif arch == "gpt2":
        config = GPT2Config(n_embd=hidden, n_layer=layers, n_head=heads, n_inner=ffn,
                            n_positions=max_positions, resid_pdrop=0.0, embd_pdrop=0.0,
                            attn_pdrop=0.0, **common)
        model_cls = GPT2LMHeadModel
    else:
        cfg_cls, model_cls = {"llama": (LlamaConfig, LlamaForCausalLM),
                              "qwen2": (Qwen2Config, Qwen2ForCausalLM)}[arch]
        config = cfg_cls(hidden_size=hidden, num_hidden_layers=layers, num_attention_heads=heads,
                         num_key_value_heads=heads, intermediate_size=ffn,
                         max_position_embeddings=max_positions, **common)
    for key, value in (overrides or {}).items():
        if not hasattr(config, key):
            raise Ar2DiffError(f"model.overrides: {type(config).__name__} has no field {key!r}")
        setattr(config, key, value)
    config._attn_implementation = "sdpa"
    return model_cls(config)
