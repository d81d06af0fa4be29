"""Diffusion sampling under any noise process (:mod:`ar2diff.noise`).

Start from the process's initial canvas (SUNDAE: uniformly random tokens; masked: all masks); at
each step draw x ~ softmax(logits / tau) at every target position and let the process turn the
drawn tokens into the next canvas (SUNDAE keeps them all; masked keeps the most confident share
of the masked positions, optionally block by block). N candidates per input run in parallel; the one the
model scores best (mean log-probability of its tokens when last drawn) is returned, cut at the
first pad / EOS. An optional repetition penalty divides, at each position, the probability of every
token that stands at another position of the same sample, which counters the repeated words of
parallel decoding. The input's keys and values are computed once per request (it never attends
to the target), and every input draws from its own generator, so a batch gives the same results
as each input alone.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ar2diff.data.batching import Example, collate
from ar2diff.decoding import DEFAULT_CANDIDATES, DEFAULT_STEPS, DEFAULT_TARGET_LENGTH, DEFAULT_TEMPERATURE
from ar2diff.models.backbone import Backbone
from ar2diff.noise.base import NoiseProcess
from ar2diff.rng import example_generator, prompt_key


@dataclass
class DiffusionSampling:
    """How to denoise (defaults in :mod:`ar2diff.decoding`: the paper's T = 10, tau = 0.2, N = 8).

    ``early_stop`` (SUNDAE): stop denoising an input once a step leaves its N samples unchanged;
    masked sampling always stops once every position is revealed (at most T steps).
    ``repetition_penalty``: > 1 divides the probability of tokens found at other positions of
    the same sample by this factor (before the temperature); 1 turns it off.
    ``block_length`` (masked): LLaDA's semi-autoregressive order, the T steps shared out over
    blocks revealed left to right (each block gets at least one step, at most one per position).
    """

    steps: int = DEFAULT_STEPS
    temperature: float = DEFAULT_TEMPERATURE
    candidates: int = DEFAULT_CANDIDATES
    target_length: int = DEFAULT_TARGET_LENGTH
    shift: bool = False
    seed: int = 0
    early_stop: bool = False
    layout: str = "diffusion"  # or diffusion-causal-input: the layout the model was trained with
    repetition_penalty: float = 1.0
    block_length: int = 0  # masked: reveal blocks of this many positions left to right (0 = one)


@dataclass
class DiffusionResult:
    """The chosen sample (cut at pad / EOS), its score, all N raw samples, and steps run."""

    tokens: list[int]
    score: float
    all_samples: list[list[int]]
    all_scores: list[float]
    steps: int


LOGITS_BUDGET = 1 << 24  # floats of logits held at once (64 MB in fp32)


def _draw(logits: torch.Tensor, temperature: float, u: torch.Tensor) -> torch.Tensor:
    """Sample ``[..., L]`` tokens from ``[..., L, V]`` logits at ``temperature`` (0 = argmax).

    Inverse-CDF sampling with one uniform ``u`` per position, drawn beforehand: the result does
    not depend on how positions are chunked.
    """
    if temperature == 0:
        return logits.argmax(-1)
    cdf = (logits.float() / temperature).softmax(-1).cumsum(-1)
    picked = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1).contiguous())[..., 0]
    return picked.clamp(max=logits.shape[-1] - 1)


def penalize_repeats(logits: torch.Tensor, current: torch.Tensor, counts: torch.Tensor,
                     penalty: float) -> torch.Tensor:
    """Penalise, at each position, the tokens that stand at another position of the sample.

    ``logits`` ``[n, c, V]`` for positions holding ``current`` ``[n, c]``; ``counts`` ``[n, V]``
    counts every token of each whole sample.
    """
    present = counts[:, None, :].expand_as(logits) > 0
    own = current[..., None]
    present = present.scatter(-1, own, counts.gather(-1, current)[..., None] > 1)
    return logits - present * math.log(penalty)


def _step(backbone: Backbone, state, x: torch.Tensor, cfg: DiffusionSampling, noise: NoiseProcess,
          gens: list[torch.Generator], active: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """One denoising step: new tokens ``[B*N, L]`` and their log-probabilities (at tau = 1).

    The output projection runs in chunks of positions so that at most ``LOGITS_BUDGET`` logits
    exist at once; inputs that are no longer active keep their tokens.
    """
    n, length = cfg.candidates, x.shape[1]
    if backbone.is_encoder_decoder:  # its decoder returns logits already
        hidden, head = backbone.logits_from_prefix(state, x, cfg.layout, cfg.shift), None
    else:
        hidden = backbone.hidden_from_prefix(state, x, cfg.layout, cfg.shift)
        head = backbone.head
    chunk = max(1, LOGITS_BUDGET // (n * backbone.vocab_size))
    new, logp = x.clone(), torch.zeros(x.shape)
    for i, gen in enumerate(gens):
        if not active[i]:
            continue
        rows = slice(i * n, (i + 1) * n)
        u = torch.rand((n, length), generator=gen)
        penalize = cfg.repetition_penalty != 1
        if penalize:  # token counts of each sample (x lives on the CPU)
            counts = torch.zeros((n, backbone.vocab_size), dtype=torch.long)
            counts.scatter_add_(1, x[rows], torch.ones((n, length), dtype=torch.long))
        for lo in range(0, length, chunk):
            part = hidden[rows, lo:lo + chunk]
            logits = (part if head is None else head(part)).float().cpu()
            if noise.banned_ids:
                logits[..., list(noise.banned_ids)] = -math.inf
            if penalize:
                logits = penalize_repeats(logits, x[rows, lo:lo + chunk], counts,
                                          cfg.repetition_penalty)
            tokens = _draw(logits, cfg.temperature, u[:, lo:lo + chunk])
            new[rows, lo:lo + chunk] = tokens
            logp[rows, lo:lo + chunk] = (
                logits.gather(-1, tokens[..., None])[..., 0] - logits.logsumexp(-1)
            )
    return new, logp


def cut(tokens: list[int], stop_ids: set[int]) -> list[int]:
    """Tokens before the first stop token (pad or EOS)."""
    for i, tok in enumerate(tokens):
        if tok in stop_ids:
            return tokens[:i]
    return tokens


@torch.no_grad()
def diffusion_generate(
    backbone: Backbone,
    inputs: Sequence[Sequence[int]],
    cfg: DiffusionSampling,
    noise: NoiseProcess,
    pad_id: int,
    eos_id: int,
) -> list[DiffusionResult]:
    """Denoise ``cfg.candidates`` targets per input along ``noise``'s schedule; best per input.

    The score of a sample is the mean log-probability of its tokens under the logits of the
    step that produced them.
    """
    n, length = cfg.candidates, cfg.target_length
    batch = collate([Example(tuple(x), ()) for x in inputs], pad_id)
    state = backbone.encode_prefix(batch.input_ids, batch.input_mask, cfg.layout)
    state = state.repeat_interleave(n)
    gens = [example_generator(cfg.seed, prompt_key(x)) for x in inputs]
    x = torch.cat([noise.initial_canvas(n, length, g) for g in gens])
    logp = torch.zeros(x.shape)
    active = [True] * len(inputs)
    steps_run = [0] * len(inputs)
    for step in noise.schedule(cfg.steps, length, cfg.block_length):
        new, new_logp = _step(backbone, state, x, cfg, noise, gens, active)
        for i in range(len(inputs)):
            if not active[i]:
                continue
            rows = slice(i * n, (i + 1) * n)
            steps_run[i] += 1
            new[rows], new_logp[rows] = noise.update(x[rows], new[rows], new_logp[rows],
                                                     logp[rows], step)
            active[i] = not noise.finished(x[rows], new[rows], cfg.early_stop)
            logp[rows] = new_logp[rows]
        x = new
        if not any(active):
            break
    return [_best(x[i * n:(i + 1) * n], logp[i * n:(i + 1) * n], steps_run[i], {pad_id, eos_id})
            for i in range(len(inputs))]


def _best(rows: torch.Tensor, logp: torch.Tensor, steps: int, stop: set[int]) -> DiffusionResult:
    """The candidate with the highest mean log-probability, and all of them, cut at a stop."""
    scores = logp.mean(-1)
    best = int(scores.argmax())
    return DiffusionResult(
        tokens=cut(rows[best].tolist(), stop), score=float(scores[best]),
        all_samples=[cut(r.tolist(), stop) for r in rows], all_scores=scores.tolist(), steps=steps,
    )
