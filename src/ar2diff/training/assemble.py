"""Assemble a training run from its config: tokenizer, model, metadata and example source."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from ar2diff.config import RunConfig
from ar2diff.data.corpus import (
    default_code_files,
    default_text_files,
    describe_stream,
    expand,
    tokenize_stream,
)
from ar2diff.data.sources import (
    CorpusSource,
    ExampleSource,
    split_held_out,
    task_source,
    toy_source,
)
from ar2diff.data.toy import toy_vocabulary
from ar2diff.errors import Ar2DiffError
from ar2diff.models.hub import load_any
from ar2diff.models.meta import ModelMeta
from ar2diff.models.presets import build_model
from ar2diff.noise import noise_class
from ar2diff.paths import default_cache_dir
from ar2diff.tokenization import special_ids, train_bpe, word_level
from ar2diff.training.loop import TrainResult, train
from ar2diff.training.rundir import claim


def corpus_files(config: RunConfig) -> list[tuple[list[Path], float]]:
    """(files, weight) per stream: the configured corpus, or books 80 % + stdlib code 20 %."""
    if config.data.corpus:
        return [(expand(config.data.corpus), 1.0)]
    books = default_text_files()
    if not books:
        print("warning: the shared data folder (books) was not found (set AR2DIFF_DATA); "
              "using only the Python standard library's source as the corpus")
        return [(default_code_files(), 1.0)]
    f = config.data.code_fraction
    return [(books, 1.0 - f), (default_code_files(), f)]


def build_source(config: RunConfig, tokenizer: PreTrainedTokenizerBase,
                 cache_dir: Path | None = None) -> ExampleSource:
    """The example source a run's ``data.source`` asks for."""
    d = config.data
    if d.source == "toy":
        print(f"data: toy task {d.toy_task} (lengths {d.toy_min_len}-{d.toy_max_len}), "
              "held-out examples drawn apart")
        return toy_source(tokenizer, config)
    if d.source == "task":
        return _task_source(config, tokenizer)
    cache_dir = cache_dir or _token_cache()
    parts = corpus_files(config)  # lists the stdlib's files once
    streams = [tokenize_stream(files, tokenizer, d.max_chars, cache_dir, d.held_out)
               for files, _ in parts]
    for (files, weight), stream in zip(parts, streams, strict=True):
        print(f"data: corpus stream ({weight:.0%} of examples, from {files[0].parent}): "
              f"{describe_stream(stream, d.max_chars, d.segment_length)}")
    return CorpusSource(streams, [w for _, w in parts], tokenizer, config)


def _task_source(config: RunConfig, tokenizer: PreTrainedTokenizerBase) -> ExampleSource:
    """A task's training examples, and those its evaluation loss reads: the split
    ``data.eval_split``, else a ``data.held_out`` fraction kept out of training (only when the
    run evaluates: with ``train.eval_every=0`` every example trains)."""
    from ar2diff.data.tasks import load_task

    d = config.data
    examples = load_task(d.task, d.split, d.task_path)
    held: list = []
    if d.eval_split:
        held = load_task(d.task, d.eval_split, d.task_path)
        how = f"evaluation loss on split {d.eval_split}: {len(held)}"
    elif config.train.eval_every and d.held_out > 0:
        examples, held = split_held_out(examples, d.held_out, config.train.seed)
        how = f"held out for the evaluation loss (data.held_out={d.held_out}): {len(held)}"
    else:
        how = "none held out (no evaluation loss)"
    print(f"data: task {d.task} ({d.task_path or 'default data'}, split {d.split}): "
          f"{len(examples)} training examples; {how}")
    return task_source(tokenizer, config, examples, held)


def _token_cache() -> Path:
    return default_cache_dir() / "tokens"


def tokenizer_texts(config: RunConfig):
    """Texts to train a from-scratch BPE tokenizer on (the run's corpus)."""
    from ar2diff.data.corpus import read_texts

    for files, _ in corpus_files(config):
        yield from read_texts(files, config.data.max_chars // 4)


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
                  corpus_texts=None) -> tuple[PreTrainedModel, PreTrainedTokenizerBase, ModelMeta]:
    """``(model, tokenizer, meta)`` for a run: pretrained if ``model.pretrained`` is set.

    A diffusion run's noise process prepares the model (e.g. adds a mask token) here, once.
    """
    m = config.model
    if m.pretrained:
        model, tokenizer, meta = load_any(m.pretrained)
    else:
        tokenizer = tokenizer or build_tokenizer(config, corpus_texts)
        torch.manual_seed(config.train.seed)  # the initial weights follow the run's seed
        model = build_model(m.arch, m.size, len(tokenizer), special_ids(tokenizer),
                            m.max_positions, m.overrides)
        meta = ModelMeta(mode=config.objective.kind, encoder_decoder=m.arch == "t5",
                         noise_vocab=len(tokenizer))
    if config.objective.kind == "diffusion":
        meta = noise_class(config.objective.noise).prepare(model, tokenizer, meta)
    return model, tokenizer, meta


def run_training(config: RunConfig, resume: bool = False, overwrite: bool = False,
                 force: bool = False) -> TrainResult:
    """Build everything the config names and train it in its claimed run folder.

    A folder holding a run is refused unless ``resume`` (same config, or ``force``) or
    ``overwrite`` (its checkpoints, model and logs are deleted first) says what to do with it.
    """
    with claim(config, resume, overwrite, force, rank=int(os.environ.get("RANK", "0"))):
        tokenizer = None
        if not config.model.pretrained:
            texts = tokenizer_texts(config) if config.tokenizer.kind == "bpe" else None
            tokenizer = build_tokenizer(config, texts)
        model, tokenizer, meta = model_for_run(config, tokenizer)
        source = build_source(config, tokenizer)
        return train(config, model, tokenizer, meta, source, resume=resume)
