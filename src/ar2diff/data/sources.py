"""Example sources: example ``i`` of a run is a pure function of (config, seed, i).

Training reads examples ``step * batch_size + j``; held-out examples come from a separate index
range. Because nothing depends on how examples are grouped, results do not depend on the micro
batch size, and a resumed run sees exactly the examples an uninterrupted one would.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import torch
from transformers import PreTrainedTokenizerBase

from ar2diff.config import RunConfig
from ar2diff.data.batching import Example
from ar2diff.data.corpus import TokenStream
from ar2diff.data.formats import causal_lm_example, prefix_lm_example, span_corruption_example
from ar2diff.data.toy import toy_pair
from ar2diff.errors import Ar2DiffError
from ar2diff.rng import STREAM_SEGMENT, STREAM_TASK_ORDER, example_generator
from ar2diff.tokenization import sentinel_ids, special_ids

HELD_OUT = 1 << 40  # held-out examples use indices from here on


class ExampleSource(Protocol):
    def example(self, index: int) -> Example: ...


def encode_input(tokenizer: PreTrainedTokenizerBase, text: str, max_len: int) -> tuple[int, ...]:
    """Input text to ids, keeping the last ``max_len`` tokens."""
    ids = tokenizer.encode(text, add_special_tokens=False)
    return tuple(ids[-max_len:]) if max_len > 0 else tuple(ids)


def encode_target(tokenizer: PreTrainedTokenizerBase, text: str, kind: str, length: int) -> tuple[int, ...]:
    """Target text to ids + EOS; for diffusion truncated / padded with pad to ``length``."""
    ids = special_ids(tokenizer)
    tokens = tokenizer.encode(text, add_special_tokens=False) + [ids["eos"]]
    if kind == "diffusion":
        tokens = tokens[:length] + [ids["pad"]] * max(0, length - len(tokens))
    return tuple(tokens)


class PairSource:
    """Examples from (input text, target text) pairs: a toy task or an evaluation task."""

    def __init__(self, pairs, tokenizer: PreTrainedTokenizerBase, config: RunConfig):
        self.pairs, self.tok, self.cfg = pairs, tokenizer, config

    def example(self, index: int) -> Example:
        src, tgt = self.pairs(index)
        d = self.cfg.data
        return Example(encode_input(self.tok, src, d.input_length),
                       encode_target(self.tok, tgt, self.cfg.objective.kind, d.target_length))


def toy_source(tokenizer: PreTrainedTokenizerBase, config: RunConfig) -> PairSource:
    d = config.data
    return PairSource(
        lambda i: toy_pair(d.toy_task, i, config.train.seed, d.toy_min_len, d.toy_max_len),
        tokenizer, config,
    )


def task_source(tokenizer: PreTrainedTokenizerBase, config: RunConfig, examples: Sequence) -> PairSource:
    """Cycle through task examples in an order shuffled per epoch by the run's seed."""
    n = len(examples)
    if n == 0:
        raise ValueError("the task has no examples")

    def pair(i: int) -> tuple[str, str]:
        epoch, pos = divmod(i % HELD_OUT, n)
        gen = example_generator(config.train.seed, epoch, STREAM_TASK_ORDER)
        order = torch.randperm(n, generator=gen)
        ex = examples[int(order[pos])]
        return ex.input, ex.target

    return PairSource(pair, tokenizer, config)


class CorpusSource:
    """Segments of tokenised corpora made into examples by the objective's format.

    Each example picks a stream with probability proportional to its weight (e.g. 80 % books,
    20 % code), then a random segment of ``data.segment_length`` tokens from it; held-out
    indices read the streams' held-out parts.
    """

    def __init__(self, streams: list[TokenStream], weights: list[float],
                 tokenizer: PreTrainedTokenizerBase, config: RunConfig):
        seg = config.data.segment_length
        kept = [(s, w) for s, w in zip(streams, weights, strict=True)
                if w > 0 and len(s.held_out) > seg + 1]
        if not kept:
            raise Ar2DiffError(f"the corpus is shorter than one segment of {seg} tokens "
                               "(held-out part included); add text or lower data.segment_length")
        self.streams = [s for s, _ in kept]
        self.cum = torch.tensor([w for _, w in kept], dtype=torch.float64).cumsum(0)
        self.cum /= self.cum[-1].clone()
        self.cfg = config
        self.ids = special_ids(tokenizer)
        self.sentinels = sentinel_ids(tokenizer, 100) if config.objective.format == "span" else []

    def example(self, index: int) -> Example:
        gen = example_generator(self.cfg.train.seed, index, STREAM_SEGMENT)
        which = int(torch.searchsorted(self.cum, torch.rand((), generator=gen, dtype=torch.float64)))
        stream = self.streams[min(which, len(self.streams) - 1)]
        data = stream.held_out if index >= HELD_OUT else stream.train
        seg_len = self.cfg.data.segment_length
        start = int(torch.randint(0, len(data) - seg_len, (), generator=gen))
        segment = data[start:start + seg_len].tolist()
        fmt = self.cfg.objective.format
        if fmt == "causal":
            return causal_lm_example(segment, self.ids["bos"])
        if fmt == "span":
            return span_corruption_example(segment, self.sentinels, gen)
        return prefix_lm_example(segment, gen)
