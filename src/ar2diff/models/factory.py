"""Model and tokenizer for a run: built from a config, or loaded from a checkpoint or hub."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ar2diff.config import RunConfig
from ar2diff.data.toy import toy_vocabulary
from ar2diff.errors import Ar2DiffError
from ar2diff.models.checkpoint import is_ar2diff_folder, load_model
from ar2diff.models.presets import build_model
from ar2diff.tokenization import special_ids, word_level


def load_any(spec: str, dtype: torch.dtype | None = None
             ) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """An ar2diff model folder, or any pretrained causal LM spec (folder, .gguf, hub id, alias).

    Returns ``(model, tokenizer, meta)``; a plain pretrained LM gets AR metadata.
    """
    if is_ar2diff_folder(spec):
        return load_model(spec, dtype)
    from ar2diff.models.hub import load_pretrained

    model, tokenizer = load_pretrained(spec, dtype or torch.float32)
    meta = {"kind": "ar", "attention": "causal", "shift": True, "encoder_decoder": False,
            "noise_vocab": len(tokenizer), "source": spec}
    return model.eval(), tokenizer, meta


def build_tokenizer(config: RunConfig, corpus_texts=None) -> PreTrainedTokenizerBase:
    """The tokenizer a from-scratch run asks for."""
    kind = config.tokenizer.kind
    if kind == "toy":
        return word_level(toy_vocabulary(), config.tokenizer.sentinels)
    if kind == "bpe":
        if corpus_texts is None:
            raise Ar2DiffError("tokenizer.kind=bpe needs a corpus (data.source=corpus) to train on; "
                               "use tokenizer.kind=toy for toy tasks or a tokenizer folder")
        return _cached_bpe(config, corpus_texts)
    if not Path(kind).is_dir():
        raise Ar2DiffError(f"tokenizer.kind={kind!r}: not bpe, toy or an existing tokenizer folder")
    return AutoTokenizer.from_pretrained(kind)


def _cached_bpe(config: RunConfig, corpus_texts) -> PreTrainedTokenizerBase:
    """Train a BPE tokenizer on the run's corpus once; later runs with the same corpus reuse it."""
    from ar2diff.models.hub import default_cache_dir
    from ar2diff.tokenization import train_bpe

    key = hashlib.sha256(json.dumps([config.data.corpus, config.data.code_fraction,
                                     config.tokenizer.vocab_size,
                                     config.tokenizer.sentinels]).encode()).hexdigest()[:16]
    folder = default_cache_dir() / "tokenizers" / f"bpe-{key}"
    if (folder / "tokenizer.json").is_file():
        return AutoTokenizer.from_pretrained(folder)
    tokenizer = train_bpe(corpus_texts, config.tokenizer.vocab_size, config.tokenizer.sentinels)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    tokenizer.save_pretrained(tmp)
    try:
        tmp.replace(folder)
    except OSError:  # another run saved it first
        shutil.rmtree(tmp, ignore_errors=True)
    return tokenizer


def model_for_run(config: RunConfig, tokenizer: PreTrainedTokenizerBase | None = None,
                  corpus_texts=None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, dict]:
    """``(model, tokenizer, meta)`` for a run: pretrained if ``model.pretrained`` is set."""
    m = config.model
    if m.pretrained:
        model, tokenizer, meta = load_any(m.pretrained)
    else:
        tokenizer = tokenizer or build_tokenizer(config, corpus_texts)
        torch.manual_seed(config.train.seed)  # the initial weights follow the run's seed
        model = build_model(m.arch, m.size, len(tokenizer), special_ids(tokenizer),
                            m.max_positions, m.overrides)
        meta = {"kind": config.objective.kind, "encoder_decoder": m.arch == "t5",
                "noise_vocab": len(tokenizer)}
    if config.objective.kind == "diffusion" and config.objective.noise == "mask":
        meta["mask_id"] = add_mask_token(model, tokenizer)
    return model, tokenizer, meta


MASK_TOKEN = "<|mask|>"


def add_mask_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The id of the tokenizer's mask token, added (with an embedding row) if it has none.

    Its embedding row (input and, if untied, output) starts as the mean of the rows before it;
    the other rows, and so every other token's logits, are unchanged.
    """
    if tokenizer.mask_token_id is not None:
        return tokenizer.mask_token_id
    tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    mask_id = tokenizer.mask_token_id
    if mask_id >= model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(mask_id + 1, mean_resizing=False)
    with torch.no_grad():
        for emb in {model.get_input_embeddings(), model.get_output_embeddings()} - {None}:
            emb.weight[mask_id] = emb.weight[:mask_id].mean(0)
    return mask_id
