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

Draws are keyed as in :mod:`ar2diff.sampling.diffusion` (by target position and step), and
:func:`block_generate` runs each input alone, so results do not depend on the batch. Several
runs — prompts of any length on the lean pass, and each prompt's completions with their own
seeds — may share passes (:func:`denoise_blocks`, through
:func:`ar2diff.sampling.diffusion_group.diffusion_generate_group`) with the same results.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ar2diff.models.backbone import Backbone, PrefixState
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
    encode,
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
    return [denoise_blocks(backbone, [x], [cfg.seed], [encode(backbone, x, cfg.layout, pad_id)],
                           cfg, noise, pad_id, eos_id,
                           None if on_step is None else (lambda _, s, c, i=i: on_step(i, s, c)))[0]
            for i, x in enumerate(inputs)]


def denoise_blocks(backbone: Backbone, prompts: Sequence[Sequence[int]], seeds: Sequence[int],
                   states: Sequence[PrefixState], cfg: DiffusionSampling, noise: NoiseProcess,
                   pad_id: int, eos_id: int,
                   on_step: StepHook | None = None) -> list[DiffusionResult]:
    """The N candidates of each prompt (seed ``seeds[i]``, prefix state ``states[i]``), block
    by block with an exact cache of finished blocks, in shared forward passes.

    All prompts move through the blocks together; within a block each takes its own steps
    (keyed by its own step count) and one that settles early rides along unchanged; one whose
    candidates have all ended leaves the passes at the next block (on the lean pass; through
    the model's forward it rides along). So each gets the tokens it gets alone wherever a
    pass's rows are computed as they are alone (:mod:`ar2diff.sampling.diffusion_group`).
    Through the lean pass (:func:`~ar2diff.sampling.fast_blocks.block_cache`) prompts may
    differ in length: each keeps its own cache and attends alone; the model's forward needs
    them of one length.
    """
    n, size, device = cfg.candidates, backbone.block_size, backbone.device
    groups = len(prompts)
    length = -(-cfg.target_length // size) * size  # whole blocks; cut to target_length at the end
    states = [s.repeat_interleave(n) for s in states]
    fast = block_cache(backbone, states, length) if cfg.fast else None
    state = PrefixState.stack(states) if fast is None else None
    keys, end_ids = [prompt_key(p) for p in prompts], (pad_id, eos_id)
    rule = _rule(cfg, noise, end_ids, pad_id)
    cand = torch.arange(n, device=device)[:, None]
    pos = torch.arange(length, device=device)[None, :]

    def draws(purpose: int, which: Sequence[int], lo: int, hi: int) -> torch.Tensor:
        return torch.cat([keyed_uniform(seeds[g], keys[g], purpose, steps[g], cand, pos[:, lo:hi])
                          for g in which])

    steps, live = [0] * groups, list(range(groups))
    x = noise.initial_canvas(draws(CANVAS, live, 0, length))
    logp = torch.zeros(x.shape, device=device)
    ended = torch.zeros(groups * n, dtype=torch.bool, device=device)
    work = list(live)  # the prompts in the passes, in row order
    finished = None  # the last settled block of the prompts in work, not yet in the cache
    for lo, hi, budget in noise.schedule(cfg.steps * length // cfg.target_length, length, size):
        if fast is not None and len(live) < len(work):  # ended prompts leave the passes
            kept = [work.index(g) for g in live]
            fast.keep(kept)
            finished = None if finished is None else finished[_row_index(kept, n, device)]
            work = list(live)
        idx, slot = _row_index(work, n, device), {g: j for j, g in enumerate(work)}
        xb = torch.where(ended[idx, None], pad_id, x[idx, lo:hi])  # ended samples: nothing to reveal
        lb = logp[idx, lo:hi]
        active = list(live)
        rows = _rows([slot[g] for g in active], n, len(work) * n, device)[:, None]
        for k in range(hi - lo if rule.dynamic else budget):
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
            drawn, drawn_logp, conf = _step(backbone, state, xb, draws(DRAW, work, lo, hi), cfg,
                                            noise, end_ids, hidden)
            new, new_lb = noise.update(xb, drawn, drawn_logp, conf, lb, (0, hi - lo, budget - k),
                                       rule)
            xb, lb = torch.where(rows, new, xb), torch.where(rows, new_lb, lb)
            x[idx, lo:hi] = torch.where(rows, xb, x[idx, lo:hi])  # an ended prompt's canvas stays
            logp[idx, lo:hi] = torch.where(rows, lb, logp[idx, lo:hi])
            for g in active:
                steps[g] += 1
                if on_step is not None:
                    on_step(g, steps[g] - 1, x[g * n:(g + 1) * n])
            if rule.dynamic or rule.end_ids:
                still = _unsettled(noise, xb, active, slot, n, hi - lo)
                if not still:
                    break
                if len(still) < len(active):  # the row mask changes only when a prompt settles
                    active = still
                    rows = _rows([slot[g] for g in active], n, len(work) * n, device)[:, None]
        finished = xb
        if rule.end_ids:
            ended = end_seen(x[:, :hi], rule.end_ids)[:, -1]
            done = ended.view(groups, n).all(1).tolist()
            live = [g for g in live if not done[g]]
            if not live:
                break
    out = []
    for i in range(groups):
        res = _result(x[i * n:(i + 1) * n, :cfg.target_length],
                      logp[i * n:(i + 1) * n, :cfg.target_length], steps[i], set(end_ids),
                      rule.end_ids)
        res.passes = steps[i]  # every cache pass shared a denoising step's; the last block none
        out.append(res)
    return out


def _rows(slots: list[int], n: int, total: int, device: torch.device) -> torch.Tensor:
    """A row mask of the prompts at ``slots`` of a pass (N rows each)."""
    rows = torch.zeros(total, dtype=torch.bool)
    for j in slots:
        rows[j * n:(j + 1) * n] = True
    return rows.to(device)


def _row_index(slots: list[int], n: int, device: torch.device) -> torch.Tensor:
    """The rows of the prompts at ``slots`` (N rows each), in order."""
    return torch.tensor([j * n + c for j in slots for c in range(n)], dtype=torch.long,
                        device=device)


def _unsettled(noise: NoiseProcess, xb: torch.Tensor, active: list[int], slot: dict[int, int],
               n: int, width: int) -> list[int]:
    """The prompts of ``active`` whose block (rows of the pass at ``slot``) still has a position
    to reveal (one host read); all of them when ``noise`` cannot tell."""
    flags = [noise.settled(xb[slot[g] * n:(slot[g] + 1) * n], 0, width) for g in active]
    if any(f is None for f in flags):
        return active
    return [g for g, s in zip(active, torch.stack(flags).tolist(), strict=True) if not s]
