"""Block diffusion sampling (BD3-LM) for models trained with ``objective.block_size``.

The target is produced one block at a time, left to right. A block starts fully masked and is
denoised by the masked process's rules (a share of T per step, or a confidence threshold) while
it sees the input, the finished blocks and itself; once settled, it runs once more as clean
tokens and its keys and values join the cache — exactly what training showed the model
(:func:`ar2diff.models.attention.block_diffusion_keys`). That cache pass shares the forward pass
of the next block's first step (:meth:`~ar2diff.models.backbone.Backbone.extend_and_hidden`:
the clean block does not see the next one), and the last block needs none, so there is one
forward pass per denoising step. Forward passes cost a block's width or two, not the whole
target's, and run through the lean step of :mod:`ar2diff.sampling.fast_blocks` where it
applies, and decoding ends at the block where every candidate has revealed an end
token, so length follows the content up to ``target_length``.

Draws are keyed as in :mod:`ar2diff.sampling.diffusion` (by target position and step), and each
input runs alone, so results do not depend on the batch.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ar2diff.data.batching import Example, collate
from ar2diff.models.backbone import Backbone
from ar2diff.noise.base import NoiseProcess, end_seen
from ar2diff.rng import keyed_uniform, prompt_key
from ar2diff.sampling.diffusion import (
    CANVAS,
    DRAW,
    DiffusionResult,
    DiffusionSampling,
    StepHook,
    _result,
    _rule,
    _step,
    diffusion_generate,
)
from ar2diff.sampling.fast_blocks import block_cache


def sampler_for(backbone: Backbone) -> Callable[..., list[DiffusionResult]]:
    """The diffusion sampler a backbone decodes with: block by block when it has a block size,
    else :func:`~ar2diff.sampling.diffusion.diffusion_generate` (same arguments)."""
    return block_generate if backbone.block_size else diffusion_generate


@torch.no_grad()
def block_generate(backbone: Backbone, inputs: Sequence[Sequence[int]], cfg: DiffusionSampling,
                   noise: NoiseProcess, pad_id: int, eos_id: int,
                   on_step: StepHook | None = None) -> list[DiffusionResult]:
    """Denoise ``cfg.candidates`` targets per input block by block (``backbone.block_size``);
    the best per input, as :func:`~ar2diff.sampling.diffusion.diffusion_generate`."""
    if not backbone.block_size:
        raise ValueError("block_generate needs a backbone with block_size > 0")
    return [_denoise_blocks(backbone, x, cfg, noise, pad_id, eos_id,
                            None if on_step is None else (lambda s, c, i=i: on_step(i, s, c)))
            for i, x in enumerate(inputs)]


def _denoise_blocks(backbone: Backbone, prompt: Sequence[int], cfg: DiffusionSampling,
                    noise: NoiseProcess, pad_id: int, eos_id: int, on_step) -> DiffusionResult:
    """The N candidates of one input, block by block, with an exact cache of finished blocks."""
    n, size, device = cfg.candidates, backbone.block_size, backbone.device
    length = -(-cfg.target_length // size) * size  # whole blocks; cut to target_length at the end
    batch = collate([Example(tuple(prompt), ())], pad_id)
    state = backbone.encode_prefix(batch.input_ids, batch.input_mask, cfg.layout).repeat_interleave(n)
    key, end_ids = prompt_key(prompt), (pad_id, eos_id)
    rule = _rule(cfg, noise, end_ids, pad_id)
    cand = torch.arange(n, device=device)[:, None]
    pos = torch.arange(length, device=device)[None, :]
    x = noise.initial_canvas(keyed_uniform(cfg.seed, key, CANVAS, 0, cand, pos))
    logp = torch.zeros(x.shape, device=device)
    ended = torch.zeros(n, dtype=torch.bool, device=device)
    steps, finished = 0, None  # finished: the last settled block, not yet in the cache
    fast = block_cache(backbone, state, length) if cfg.fast else None
    for lo, hi, budget in noise.schedule(cfg.steps * length // cfg.target_length, length, size):
        xb = torch.where(ended[:, None], pad_id, x[:, lo:hi])  # ended samples: nothing to reveal
        lb = logp[:, lo:hi]
        for k in range(hi - lo if rule.dynamic else budget):
            u = keyed_uniform(cfg.seed, key, DRAW, steps, cand, pos[:, lo:hi])
            hidden = None
            if finished is not None:  # its cache pass rides with this block's first step
                if fast is not None:
                    hidden = fast.extend_and_hidden(finished, xb, cfg.shift)
                else:
                    state, hidden = backbone.extend_and_hidden(state, finished, xb, cfg.layout,
                                                               cfg.shift)
                finished = None
            elif fast is not None:
                hidden = fast.hidden(xb, cfg.shift)
            drawn, drawn_logp, conf = _step(backbone, state, xb, u, cfg, noise, end_ids, hidden)
            xb, lb = noise.update(xb, drawn, drawn_logp, conf, lb, (0, hi - lo, budget - k), rule)
            steps += 1
            x[:, lo:hi], logp[:, lo:hi] = xb, lb
            if on_step is not None:
                on_step(steps - 1, x)
            if (rule.dynamic or rule.end_ids) and bool(noise.settled(xb, 0, hi - lo)):
                break
        finished = xb
        if rule.end_ids:
            ended = end_seen(x[:, :hi], rule.end_ids)[:, -1]
            if bool(ended.all()):
                break
    res = _result(x[:, :cfg.target_length], logp[:, :cfg.target_length], steps, set(end_ids),
                  rule.end_ids)
    res.passes = steps  # every cache pass shared a denoising step's; the last block needs none
    return res
