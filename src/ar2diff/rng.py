"""Random streams keyed by integers, so that results do not depend on batching.

Every random draw of a run comes from a generator keyed by ``(seed, *keys)``: the index of an
example, a hash of a prompt, and a *stream* naming what the draw is for. Keying by example
rather than by batch makes results independent of how examples are grouped; keying by stream
keeps draws for different purposes independent of each other.
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence

import torch

# Stream keys (the last key of a training draw). Their values are part of every stored result:
# changing one changes what a seed means.
STREAM_CORRUPTION = 3  # noise applied to the targets of training example i
STREAM_ANNEAL = 5  # which future links attention-mask annealing opens at a step
STREAM_TASK_ORDER = 7  # the shuffled order of task examples in an epoch
STREAM_SEGMENT = 11  # which corpus stream, segment and cut an example uses


def example_generator(seed: int, *keys: int) -> torch.Generator:
    """A generator for one example, keyed by integers (e.g. seed, example index, stream)."""
    mixed = seed & 0xFFFFFFFF
    for key in keys:
        mixed = (mixed * 6364136223846793005 + (key & 0xFFFFFFFFFFFF) + 1442695040888963407) % (
            1 << 63
        )
    return torch.Generator().manual_seed(mixed)


def prompt_key(ids: Sequence[int]) -> int:
    """A stable integer key of a token sequence (seeds per-input randomness when decoding)."""
    return zlib.crc32(torch.tensor(list(ids), dtype=torch.int64).numpy().tobytes())
