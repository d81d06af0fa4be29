"""Causal LM: next-token prediction over the whole segment (AR only)."""

from __future__ import annotations

from collections.abc import Sequence

from ar2diff.data.batching import Example


def causal_lm_example(segment: Sequence[int], bos_id: int) -> Example:
    """The whole segment is the target; the input is a lone BOS that predicts its first token."""
    return Example(input_ids=(bos_id,), target_ids=tuple(segment))
