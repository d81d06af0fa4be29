"""Diffusion decoding of several requests in shared forward passes (the server's batching).

:func:`ar2diff.sampling.diffusion.diffusion_generate` runs each input in passes of its own,
because padding prompts to a common width changes attention's rounding. Requests whose prompts
have the same number of tokens need no padding: their rows (N candidates each) are stacked into
one pass per step, and every row keeps its own keyed draws (its request's seed and prompt key).
Only the number of rows of each matrix product changes; with at least :data:`MIN_ROWS` rows
per input that leaves every row's result bit for bit as it is alone on the CPU
(``tests/test_diffusion_group.py`` checks samples and scores in float32 and bfloat16; on a GPU
the kernels a row count selects may round differently, which the same test would show there).
Block diffusion models share passes the same way, a block at a time
(:func:`~ar2diff.sampling.block_diffusion.denoise_blocks`). The several completions of one
prompt (seeds ``seed``, ``seed + 1``, …) are such a group.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import torch

from ar2diff.models.backbone import Backbone, PrefixState
from ar2diff.noise.base import NoiseProcess
from ar2diff.sampling.block_diffusion import denoise_blocks, sampler_for
from ar2diff.sampling.diffusion import (
    DiffusionResult,
    DiffusionSampling,
    StepHook,
    denoise_group,
    encode,
)

MIN_ROWS = 16  # fewer rows than this per input: CPU matrix kernels round them by the row count
BLOCK_MIN_ROWS = 4  # the same for block diffusion's passes (a block's positions per input)


def can_share(cfg: DiffusionSampling, block_size: int = 0) -> bool:
    """Whether inputs decoded with ``cfg`` may share passes: not with fewer than
    :data:`MIN_ROWS` target positions per input (:data:`BLOCK_MIN_ROWS` for a block
    diffusion model's block) — products of a few rows round differently with more rows beside
    them. Inputs that finish early ride along unchanged."""
    if block_size:
        return cfg.candidates * block_size >= BLOCK_MIN_ROWS
    return cfg.candidates * cfg.target_length >= MIN_ROWS


@torch.no_grad()
def diffusion_generate_group(
    backbone: Backbone,
    inputs: Sequence[Sequence[int]],
    seeds: Sequence[int],
    cfg: DiffusionSampling,
    noise: NoiseProcess,
    pad_id: int,
    eos_id: int,
    on_step: StepHook | None = None,
) -> list[DiffusionResult]:
    """Denoise ``inputs`` (all of one length) together, input ``i`` with seed ``seeds[i]``.

    The same results as :func:`diffusion_generate` gives each input alone with its seed.
    ``on_step(i, step, canvas [N, L])`` sees each input's canvas after every step. Inputs of
    different lengths, or options that end inputs apart, are decoded one after another.
    Raising from ``on_step`` ends decoding.
    """
    if (len({len(x) for x in inputs}) > 1 or not can_share(cfg, backbone.block_size)
            or backbone.is_encoder_decoder):
        return _one_by_one(backbone, inputs, seeds, cfg, noise, pad_id, eos_id, on_step)
    state = stack_states([encode(backbone, x, cfg.layout, pad_id) for x in inputs])
    denoise = denoise_blocks if backbone.block_size else denoise_group
    return denoise(backbone, inputs, seeds, state, cfg, noise, pad_id, eos_id, on_step)


def stack_states(states: list[PrefixState]) -> PrefixState:
    """Decoder-only prefix states of one width, stacked along the batch (their caches too)."""
    first = states[0]
    for i, layer in enumerate(first.cache.layers):
        layer.keys = torch.cat([s.cache.layers[i].keys for s in states])
        layer.values = torch.cat([s.cache.layers[i].values for s in states])
    return PrefixState(
        input_mask=torch.cat([s.input_mask for s in states]), cache=first.cache,
        roles=torch.cat([s.roles for s in states]),
        last_hidden=torch.cat([s.last_hidden for s in states]),
    )


def _one_by_one(backbone, inputs, seeds, cfg, noise, pad_id, eos_id, on_step):
    out = []
    for i, (x, seed) in enumerate(zip(inputs, seeds, strict=True)):
        hook = None if on_step is None else (lambda _, s, c, i=i: on_step(i, s, c))
        out += sampler_for(backbone)(backbone, [x], replace(cfg, seed=seed), noise, pad_id, eos_id, hook)
    return out
