"""Prefix LM: cut a segment at a random point; the first part is the input, the rest the target."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ar2diff.data.batching import Example


def prefix_lm_example(segment: Sequence[int], gen: torch.Generator) -> Example:
    """Cut uniformly so that input and target each get at least one token."""
    if len(segment) < 2:
        raise ValueError("a prefix-LM segment needs at least 2 tokens")
    cut = int(torch.randint(1, len(segment), (), generator=gen))
    return Example(input_ids=tuple(segment[:cut]), target_ids=tuple(segment[cut:]))
