"""Diffusion sampling: SUNDAE (uniform noise) and masked (absorbing mask token).

SUNDAE: start from uniformly random target tokens; T times, denoise all target positions at
once with x ~ softmax(logits / tau). Masked: start from all mask tokens; at each of T steps draw
a token for every masked position and keep the most confident ones (probability of the drawn
token), revealing an equal share of the remaining positions per step, as in LLaDA and Dream
(optionally block by block, left to right). N samples per input run in parallel; the one the
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
from ar2diff.models.backbone import Backbone
from ar2diff.noise import example_generator, uniform_tokens
from ar2diff.sampling.autoregressive import prompt_key


@dataclass
class DiffusionSampling:
    """The paper's defaults: T = 10 steps, tau = 0.2, N = 8 samples.

    ``early_stop`` (SUNDAE): stop denoising an input once a step leaves its N samples unchanged;
    masked sampling always stops once every position is revealed (at most T steps).
    ``repetition_penalty``: > 1 divides the probability of tokens found at other positions of
    the same sample by this factor (before the temperature); 1 turns it off.
    ``block_length`` (masked): LLaDA's semi-autoregressive order, the T steps shared out over
    blocks revealed left to right (each block gets at least one step, at most one per position).
    """

    steps: int = 10
    temperature: float = 0.2
    samples: int = 8
    target_length: int = 32
    shift: bool = False
    seed: int = 0
    early_stop: bool = False
    mode: str = "diffusion"  # or diffusion-causal-input: the mask the model was trained with
    repetition_penalty: float = 1.0
    mask_id: int | None = None  # set for masked diffusion: its noise token, never sampled
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


def _step(backbone: Backbone, state, x: torch.Tensor, cfg: DiffusionSampling,
          gens: list[torch.Generator], active: list[bool]) -> tuple[torch.Tensor, torch.Tensor]:
    """One denoising step: new tokens ``[B*N, L]`` and their log-probabilities (at tau = 1).

    The output projection runs in chunks of positions so that at most ``LOGITS_BUDGET`` logits
    exist at once; inputs that are no longer active keep their tokens.
    """
    n, length = cfg.samples, x.shape[1]
    if backbone.is_encoder_decoder:  # its decoder returns logits already
        hidden, head = backbone.logits_from_prefix(state, x, cfg.mode, cfg.shift), None
    else:
        hidden = backbone.hidden_from_prefix(state, x, cfg.mode, cfg.shift)
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
            if cfg.mask_id is not None:
                logits[..., cfg.mask_id] = -math.inf
            if penalize:
                logits = penalize_repeats(logits, x[rows, lo:lo + chunk], counts,
                                          cfg.repetition_penalty)
            tokens = _draw(logits, cfg.temperature, u[:, lo:lo + chunk])
            new[rows, lo:lo + chunk] = tokens
            logp[rows, lo:lo + chunk] = (
                logits.gather(-1, tokens[..., None])[..., 0] - logits.logsumexp(-1)
            )
    return new, logp


def reveal_plan(length: int, steps: int, block: int) -> list[tuple[int, int, int]]:
    """Masked sampling schedule: per step, the block ``[lo, hi)`` being revealed and how many
    steps it has left (this one included)."""
    block = block or length
    bounds = [(lo, min(lo + block, length)) for lo in range(0, length, block)]
    plan = []
    for b, (lo, hi) in enumerate(bounds):
        budget = min(hi - lo, max(1, steps // len(bounds) + (b < steps % len(bounds))))
        plan += [(lo, hi, budget - k) for k in range(budget)]
    return plan


def _reveal(x: torch.Tensor, drawn: torch.Tensor, drawn_logp: torch.Tensor, logp: torch.Tensor,
            mask_id: int, block: tuple[int, int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked diffusion: keep the ``1 / steps_left`` share of the masked positions of the block
    ``(lo, hi, steps_left)`` whose drawn tokens have the highest log-probability; the others
    stay masked, revealed tokens stay fixed.

    ``x`` ``[n, L]`` the current tokens; returns the new tokens and their log-probabilities.
    """
    lo, hi, steps_left = block
    masked = x == mask_id
    masked[:, :lo] = False
    masked[:, hi:] = False
    count = math.ceil(int(masked[0].sum()) / steps_left)  # every sample has as many masked
    # rounded, ties to the leftmost: float noise of batching must not reorder near-equal ones
    confidence = (drawn_logp * 1e4).round().masked_fill(~masked, -math.inf)
    order = confidence.sort(dim=1, descending=True, stable=True).indices
    keep = torch.zeros_like(masked).scatter(1, order[:, :count], True)
    keep &= masked
    return torch.where(keep, drawn, x), torch.where(keep, drawn_logp, logp)


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
    noise_vocab: int,
    pad_id: int,
    eos_id: int,
) -> list[DiffusionResult]:
    """Denoise ``cfg.samples`` targets per input for ``cfg.steps`` steps; best sample per input.

    The score of a sample is the mean log-probability of its tokens under the logits of the
    step that produced them.
    """
    n, length = cfg.samples, cfg.target_length
    batch = collate([Example(tuple(x), ()) for x in inputs], pad_id)
    state = backbone.encode_prefix(batch.input_ids, batch.input_mask, cfg.mode)
    state = state.repeat_interleave(n)
    gens = [example_generator(cfg.seed, prompt_key(x)) for x in inputs]
    if cfg.mask_id is None:
        x = torch.cat([uniform_tokens((n, length), noise_vocab, g) for g in gens])
    else:
        x = torch.full((len(inputs) * n, length), cfg.mask_id)
    logp = torch.zeros(x.shape)
    active = [True] * len(inputs)
    steps_run = [0] * len(inputs)
    plan = None if cfg.mask_id is None else reveal_plan(length, cfg.steps, cfg.block_length)
    for step in range(cfg.steps if plan is None else len(plan)):
        new, new_logp = _step(backbone, state, x, cfg, gens, active)
        for i in range(len(inputs)):
            if not active[i]:
                continue
            rows = slice(i * n, (i + 1) * n)
            steps_run[i] += 1
            if plan is not None:
                new[rows], new_logp[rows] = _reveal(x[rows], new[rows], new_logp[rows],
                                                    logp[rows], cfg.mask_id, plan[step])
                active[i] = bool((new[rows] == cfg.mask_id).any())
            elif cfg.early_stop and torch.equal(new[rows], x[rows]):
                active[i] = False
            logp[rows] = new_logp[rows]
        x = new
        if not any(active):
            break
    scores = logp.mean(-1)
    stop = {pad_id, eos_id}
    results = []
    for i in range(len(inputs)):
        rows, row_scores = x[i * n:(i + 1) * n], scores[i * n:(i + 1) * n]
        best = int(row_scores.argmax())
        results.append(DiffusionResult(
            tokens=cut(rows[best].tolist(), stop), score=float(row_scores[best]),
            all_samples=[cut(r.tolist(), stop) for r in rows], all_scores=row_scores.tolist(),
            steps=steps_run[i],
        ))
    return results
