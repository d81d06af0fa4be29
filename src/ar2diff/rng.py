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
STREAM_LIKELIHOOD = 13  # which target tokens one Monte-Carlo sample of a likelihood bound masks
STREAM_HELD_OUT = 17  # which task examples are held out for the evaluation loss


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


# ---- counter-based uniforms (any device) ---------------------------------------------------

_M32 = 0xFFFFFFFF
_GOLDEN = 0x61C88647  # below 2**31, so that a 32-bit value times it fits in int64


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (xor-shift-multiply) of ``x`` in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    x = x ^ (x >> 16)
    x = (x * 0x45D9F3B) & _M32
    return x ^ (x >> 16)


def keyed_uniform(seed: int, *keys: torch.Tensor | int) -> torch.Tensor:
    """Uniforms in [0, 1) that are a pure function of ``(seed, *keys)``, elementwise.

    ``keys`` are integer tensors (or ints) broadcast together, e.g. input key ``[B, 1, 1]``,
    candidate ``[1, N, 1]`` and position ``[1, 1, L]``; the result has their broadcast shape
    and lives on their device. Each draw depends only on its own keys, never on how many others
    are drawn with it: results do not depend on batching or chunking, on any device.
    """
    tensors = [k for k in keys if isinstance(k, torch.Tensor)]
    device = tensors[0].device if tensors else None
    h = torch.tensor(seed & _M32, dtype=torch.int64, device=device)
    for key in keys:
        key = torch.as_tensor(key, dtype=torch.int64, device=device) & _M32
        h = _mix32((h * _GOLDEN + key) & _M32)
    return (h >> 8).to(torch.float32) / float(1 << 24)
