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
from ar2diff.rng import STREAM_HELD_OUT, STREAM_SEGMENT, STREAM_TASK_ORDER, example_generator
from ar2diff.tokenization import encode_prompt_text, sentinel_ids, special_ids

HELD_OUT = 1 << 40  # held-out examples use indices from here on


class ExampleSource(Protocol):
    def example(self, index: int) -> Example: ...


def encode_input(tokenizer: PreTrainedTokenizerBase, text: str, max_len: int,
                 prompt_format: str = "raw") -> tuple[int, ...]:
    """Input text to ids in ``prompt_format``, keeping the last ``max_len`` tokens."""
    ids = encode_prompt_text(tokenizer, text, prompt_format)
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
        return Example(encode_input(self.tok, src, d.input_length, d.prompt_format),
                       encode_target(self.tok, tgt, self.cfg.objective.kind, d.target_length))


def toy_source(tokenizer: PreTrainedTokenizerBase, config: RunConfig) -> PairSource:
    d = config.data
    return PairSource(
        lambda i: toy_pair(d.toy_task, i, config.train.seed, d.toy_min_len, d.toy_max_len),
        tokenizer, config,
    )


def split_held_out(examples: Sequence, fraction: float, seed: int) -> tuple[list, list]:
    """(training, held-out) examples: ``fraction`` of them (at least one) drawn by ``seed``."""
    n = len(examples)
    n_held = max(1, round(n * fraction))
    if n - n_held < 1:
        raise Ar2DiffError(f"{n} example(s) cannot spare {n_held} for the evaluation loss; add "
                           "examples, set data.eval_split, or turn evaluation off "
                           "(train.eval_every=0)")
    order = torch.randperm(n, generator=example_generator(seed, 0, STREAM_HELD_OUT)).tolist()
    held = set(order[:n_held])
    return ([ex for i, ex in enumerate(examples) if i not in held],
            [ex for i, ex in enumerate(examples) if i in held])


def task_source(tokenizer: PreTrainedTokenizerBase, config: RunConfig, examples: Sequence,
                held_out: Sequence = ()) -> PairSource:
    """Cycle through task examples in an order shuffled per epoch by the run's seed; held-out
    indices (from :data:`HELD_OUT`) read ``held_out``, which training never sees."""
    n = len(examples)
    if n == 0:
        raise ValueError("the task has no examples")

    def pair(i: int) -> tuple[str, str]:
        if i >= HELD_OUT:
            if not held_out:
                raise Ar2DiffError("this run has no held-out examples for the evaluation loss; "
                                   "set data.held_out or data.eval_split")
            ex = held_out[(i - HELD_OUT) % len(held_out)]
            return ex.input, ex.target
        epoch, pos = divmod(i, n)
        gen = example_generator(config.train.seed, epoch, STREAM_TASK_ORDER)
        order = torch.randperm(n, generator=gen)
        ex = examples[int(order[pos])]
        return ex.input, ex.target

    return PairSource(pair, tokenizer, config)


def _too_short(stream: TokenStream, seg: int, held_out: float) -> str:
    """Why a stream cannot give segments of ``seg`` tokens, and what to change."""
    n_train, n_held = len(stream.train), len(stream.held_out)
    return (f"{n_train} training and {n_held} held-out tokens (data.held_out={held_out} of "
            f"{n_train + n_held}), and each part needs more than {seg + 1} for segments of "
            f"data.segment_length={seg}; lower data.segment_length to under {min(n_train, n_held) - 1}"
            f", raise data.held_out, or add text")


class CorpusSource:
    """Segments of tokenised corpora made into examples by the objective's format.

    Each example picks a stream with probability proportional to its weight (e.g. 80 % books,
    20 % code), then a random segment of ``data.segment_length`` tokens from it; held-out
    indices read the streams' held-out parts.
    """

    def __init__(self, streams: list[TokenStream], weights: list[float],
                 tokenizer: PreTrainedTokenizerBase, config: RunConfig):
        seg = config.data.segment_length
        used = [(s, w) for s, w in zip(streams, weights, strict=True) if w > 0]
        kept = [(s, w) for s, w in used if min(len(s.held_out), len(s.train)) > seg + 1]
        for s in {id(s): s for s, _ in used if all(s is not k for k, _ in kept)}.values():
            print(f"warning: a corpus stream of {len(s.train) + len(s.held_out)} tokens is "
                      f"left out: {_too_short(s, seg, config.data.held_out)}")
        if not kept:
            s = max((s for s, _ in used), key=lambda s: len(s.held_out), default=streams[0])
            raise Ar2DiffError(f"the corpus is too short: {_too_short(s, seg, config.data.held_out)}")
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
