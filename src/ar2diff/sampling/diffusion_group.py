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
from ar2diff.sampling.fast_blocks import lean_blocks

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
    """Denoise ``inputs`` together, input ``i`` with seed ``seeds[i]``.

    The same results as :func:`diffusion_generate` gives each input alone with its seed.
    ``on_step(i, step, canvas [N, L])`` sees each input's canvas after every step. Inputs of
    one length share passes; so do inputs of any lengths of a block-diffusion model through
    its lean pass; otherwise each length is a group of its own. With too few rows per input
    (:func:`can_share`) inputs are decoded one after another. Raising from ``on_step`` ends
    decoding.
    """
    if not can_share(cfg, backbone.block_size) or backbone.is_encoder_decoder:
        return _one_by_one(backbone, inputs, seeds, cfg, noise, pad_id, eos_id, on_step)
    if len({len(x) for x in inputs}) > 1 and not mixes_lengths(backbone, cfg):
        return _by_length(backbone, inputs, seeds, cfg, noise, pad_id, eos_id, on_step)
    states = [encode(backbone, x, cfg.layout, pad_id) for x in inputs]
    if backbone.block_size:
        return denoise_blocks(backbone, inputs, seeds, states, cfg, noise, pad_id, eos_id, on_step)
    return denoise_group(backbone, inputs, seeds, PrefixState.stack(states), cfg, noise, pad_id,
                         eos_id, on_step)


def mixes_lengths(backbone: Backbone, cfg: DiffusionSampling) -> bool:
    """Whether prompts of different lengths may share passes: block diffusion through the lean
    pass, where each prompt keeps its own cache and attends alone (no padding)."""
    return bool(backbone.block_size) and cfg.fast and lean_blocks(backbone)


def _by_length(backbone, inputs, seeds, cfg, noise, pad_id, eos_id, on_step):
    """One group per prompt length, results in the order of ``inputs``."""
    out: list[DiffusionResult | None] = [None] * len(inputs)
    for width in dict.fromkeys(len(x) for x in inputs):
        idx = [i for i, x in enumerate(inputs) if len(x) == width]
        hook = None if on_step is None else (lambda j, s, c, idx=idx: on_step(idx[j], s, c))
        for i, res in zip(idx, diffusion_generate_group(
                backbone, [inputs[i] for i in idx], [seeds[i] for i in idx], cfg, noise, pad_id,
                eos_id, hook), strict=True):
            out[i] = res
    return out


def _one_by_one(backbone, inputs, seeds, cfg, noise, pad_id, eos_id, on_step):
    out = []
    for i, (x, seed) in enumerate(zip(inputs, seeds, strict=True)):
        hook = None if on_step is None else (lambda _, s, c, i=i: on_step(i, s, c))
        out += sampler_for(backbone)(backbone, [x], replace(cfg, seed=seed), noise, pad_id, eos_id, hook)
    return out
