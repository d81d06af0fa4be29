"""Shared fixtures: tiny random models of each family and a toy tokenizer (no network)."""

from __future__ import annotations

import pytest
import torch

from ar2diff.data.toy import toy_vocabulary
from ar2diff.models.presets import build_model
from ar2diff.paths import shared_data_dir
from ar2diff.tokenization import special_ids, word_level

DECODER_ARCHS = ("llama", "qwen2", "gpt2")
ALL_ARCHS = (*DECODER_ARCHS, "t5")
SPECIAL = {"pad": 0, "bos": 1, "eos": 2}
DATA = shared_data_dir()
needs_data = pytest.mark.skipif(DATA is None, reason="shared data folder (../shared/data) absent")


def tiny_model(arch: str, vocab: int = 40, seed: int = 0, **overrides):
    torch.manual_seed(seed)
    return build_model(arch, "nano", vocab, SPECIAL, max_positions=256,
                       overrides=overrides).eval()


@pytest.fixture
def toy_tokenizer():
    return word_level(toy_vocabulary(), n_sentinels=4)


@pytest.fixture
def toy_ids(toy_tokenizer):
    return special_ids(toy_tokenizer)


CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }} : {{ m['content'] }} {% endfor %}"
                 "{% if add_generation_prompt %}assistant :{% endif %}")


def save_tiny_model_folder(path, steps: int = 4, candidates: int = 2, length: int = 8):
    """A tiny random Llama with a toy tokenizer (and a chat template) saved as an ar2diff model
    folder for masked diffusion; AR decoding of it works too."""
    from ar2diff.decoding import DecodingDefaults
    from ar2diff.models.checkpoint import save_model
    from ar2diff.models.meta import ModelMeta
    from ar2diff.noise.mask import MaskNoise

    tokenizer = word_level(toy_vocabulary(), n_sentinels=4)
    tokenizer.chat_template = CHAT_TEMPLATE
    model = tiny_model("llama", vocab=len(tokenizer))
    meta = ModelMeta(mode="diffusion", layout="diffusion", shift=True, noise="mask",
                     target_length=length,
                     decoding=DecodingDefaults(steps=steps, candidates=candidates, max_new_tokens=length,
                                               temperature=1.0))
    meta = MaskNoise.prepare(model, tokenizer, meta)
    return save_model(path, model, tokenizer, meta)
