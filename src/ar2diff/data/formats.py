"""Example formats: how a segment of text tokens becomes an (input, target) example.

* causal LM: the whole segment is the target (AR only);
* prefix LM: cut at a random point, the first part is the input, the rest the target;
* T5 span corruption: ~15 % of tokens, in spans of mean length 3, are replaced by sentinels; the
  input keeps the other tokens with one sentinel per dropped span, the target lists each sentinel
  followed by its span (Raffel et al. 2020, the ``random_spans_noise_mask`` recipe).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ar2diff.data.batching import Example


def causal_lm_example(segment: Sequence[int], bos_id: int) -> Example:
    """The whole segment is the target; the input is a lone BOS that predicts its first token."""
    return Example(input_ids=(bos_id,), target_ids=tuple(segment))


def prefix_lm_example(segment: Sequence[int], gen: torch.Generator) -> Example:
    """Cut uniformly so that input and target each get at least one token."""
    if len(segment) < 2:
        raise ValueError("a prefix-LM segment needs at least 2 tokens")
    cut = int(torch.randint(1, len(segment), (), generator=gen))
    return Example(input_ids=tuple(segment[:cut]), target_ids=tuple(segment[cut:]))


def _random_partition(total: int, parts: int, gen: torch.Generator) -> list[int]:
    """Split ``total`` into ``parts`` positive integers uniformly at random."""
    cuts = (torch.randperm(total - 1, generator=gen)[: parts - 1] + 1).sort().values.tolist()
    bounds = [0, *cuts, total]
    return [b - a for a, b in zip(bounds[:-1], bounds[1:], strict=True)]


def noise_mask(length: int, gen: torch.Generator, density: float = 0.15,
               mean_span: float = 3.0) -> list[bool]:
    """Which of ``length`` positions are noise: alternating kept / noise spans, noise first."""
    n_noise = min(max(int(round(length * density)), 1), length - 1)
    n_spans = max(int(round(n_noise / mean_span)), 1)
    n_spans = min(n_spans, n_noise, length - n_noise)
    noise_lens = _random_partition(n_noise, n_spans, gen)
    keep_lens = _random_partition(length - n_noise, n_spans, gen)
    mask: list[bool] = []
    for keep, noise in zip(keep_lens, noise_lens, strict=True):
        mask += [False] * keep + [True] * noise
    return mask


def span_corruption_example(
    segment: Sequence[int], sentinels: Sequence[int], gen: torch.Generator,
    density: float = 0.15, mean_span: float = 3.0,
) -> Example:
    """Input: kept tokens and a sentinel per span. Target: each sentinel then its span."""
    if len(segment) < 2:
        raise ValueError("span corruption needs a segment of at least 2 tokens")
    mask = noise_mask(len(segment), gen, density, mean_span)
    inputs: list[int] = []
    targets: list[int] = []
    span = -1
    for i, (token, noisy) in enumerate(zip(segment, mask, strict=True)):
        if not noisy:
            inputs.append(token)
            continue
        if i == 0 or not mask[i - 1]:
            span += 1
            if span >= len(sentinels):
                raise ValueError(f"span corruption needs more than {len(sentinels)} sentinels")
            inputs.append(sentinels[span])
            targets.append(sentinels[span])
        targets.append(token)
    return Example(input_ids=tuple(inputs), target_ids=tuple(targets))
