"""Assemble a training run from its config: model, tokenizer and example source."""

from __future__ import annotations

from pathlib import Path

from transformers import PreTrainedTokenizerBase

from ar2diff.config import RunConfig
from ar2diff.data.corpus import default_code_files, default_text_files, expand, tokenize_stream
from ar2diff.data.sources import CorpusSource, ExampleSource, task_source, toy_source
from ar2diff.models.factory import build_tokenizer, model_for_run
from ar2diff.train import TrainResult, train

CORPUS_MAX_CHARS = 8_000_000  # per stream; enough for CPU-scale pretraining


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
        return toy_source(tokenizer, config)
    if d.source == "task":
        from ar2diff.data.tasks import load_task

        return task_source(tokenizer, config, load_task(d.task, d.split, d.task_path))
    cache_dir = cache_dir or _token_cache()
    parts = corpus_files(config)  # lists the stdlib's files once
    streams = [tokenize_stream(files, tokenizer, CORPUS_MAX_CHARS, cache_dir) for files, _ in parts]
    return CorpusSource(streams, [w for _, w in parts], tokenizer, config)


def _token_cache() -> Path:
    from ar2diff.models.hub import default_cache_dir

    return default_cache_dir() / "tokens"


def tokenizer_texts(config: RunConfig):
    """Texts to train a from-scratch BPE tokenizer on (the run's corpus)."""
    from ar2diff.data.corpus import read_texts

    for files, _ in corpus_files(config):
        yield from read_texts(files, CORPUS_MAX_CHARS // 4)


def run_training(config: RunConfig, resume: bool = False) -> TrainResult:
    """Build everything the config names and train it."""
    tokenizer = None
    if not config.model.pretrained:
        texts = tokenizer_texts(config) if config.tokenizer.kind == "bpe" else None
        tokenizer = build_tokenizer(config, texts)
    model, tokenizer, meta = model_for_run(config, tokenizer)
    source = build_source(config, tokenizer)
    return train(config, model, tokenizer, meta, source, resume=resume)
