"""Diffusion sampling under any noise process (:mod:`ar2diff.noise`), on the model's device.

Start from the process's initial canvas (SUNDAE: uniformly random tokens; masked: all masks); at
each step draw x ~ softmax(logits / tau) at every target position and let the process turn the
drawn tokens into the next canvas (SUNDAE keeps them all; masked keeps the most confident share
of the masked positions, optionally block by block). N candidates per input run in parallel;
the one the model scores best (mean log-probability of its tokens when last drawn) is returned,
cut at the first pad / EOS. An optional repetition penalty divides, at each position, the
probability of every token that stands at another position of the same sample, which counters
the repeated words of parallel decoding.

Everything — canvas, draws, sampling, scores and the best-of-N pick — stays on the model's
device; the host sees one flag per step only when early stopping can end the loop, and the
result at the end. The input's keys and values are computed once (it never attends to the
target). Every draw is a counter-based uniform keyed by (seed, input, step, candidate,
position) (:func:`ar2diff.rng.keyed_uniform`), and every input runs in forward passes of its
own, so a request gives each input the same result as that input alone, in every dtype.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch

from ar2diff.data.batching import Example, collate
from ar2diff.decoding import (
    CONFIDENCES,
    DEFAULT_CANDIDATES,
    DEFAULT_STEPS,
    DEFAULT_TARGET_LENGTH,
    DEFAULT_TEMPERATURE,
    ORDERS,
)
from ar2diff.models.backbone import Backbone, PrefixState
from ar2diff.noise.base import NoiseProcess, StepRule, end_seen
from ar2diff.rng import keyed_uniform, prompt_key
from ar2diff.sampling.fast_blocks import block_cache
from ar2diff.sampling.freeze import freeze_step

CANVAS, DRAW = 1, 2  # purposes of keyed draws: the initial canvas, the draw of a step


@dataclass
class DiffusionSampling:
    """How to denoise (defaults in :mod:`ar2diff.decoding`: the paper's T = 10, tau = 0.2, N = 8).

    ``early_stop`` (SUNDAE): stop denoising an input once a step leaves its N samples unchanged;
    masked sampling always stops once every position is revealed (at most T steps).
    ``repetition_penalty``: > 1 divides the probability of tokens found at other positions of
    the same sample by this factor (before the temperature); 1 turns it off.
    ``block_length`` (masked): LLaDA's semi-autoregressive order, the T steps shared out over
    blocks revealed left to right (each block gets at least one step, at most one per position).
    ``threshold`` / ``factor`` (masked): Fast-dLLM's parallel decoding, each step reveals every
    position whose ``confidence`` passes the threshold (or as many as the factor rule allows),
    at least one, so a block takes the steps it needs and T no longer applies.
    ``eos_stop`` (masked): once a pad / EOS is revealed, the positions after it are settled, and
    the sample is done when every position before it is; its score covers the kept tokens.
    ``order`` (masked): ``left-to-right`` reveals the leftmost masked positions of the block
    instead of the most confident ones; with a threshold or factor, the leftmost one and each
    next one while the rule holds (a confident run ahead).
    ``freeze`` (SUNDAE): a position whose token a step draws again with at least this
    probability keeps it for good; an input is done once all its positions are frozen (or lie
    after a frozen end token, with ``eos_stop``) — :mod:`ar2diff.sampling.freeze`.
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
    threshold: float = 0.0  # masked: reveal every position this confident (0 = the schedule)
    factor: float = 0.0  # masked: Fast-dLLM's factor rule (0 = off)
    confidence: str = "probability"  # probability | margin | entropy
    eos_stop: bool = False  # masked: a sample ends at its first revealed pad / EOS
    eos_penalty: float = 1.0  # > 1 divides the probability of pad / EOS (damps early ends)
    order: str = "confidence"  # masked: reveal the most confident positions, or left-to-right
    freeze: float = 0.0  # SUNDAE: freeze stable positions this confident (0 = off)
    fast: bool = True  # the lean step over the target (sampling/fast_blocks.py) where it applies


@dataclass
class DiffusionResult:
    """The chosen sample (cut at pad / EOS), its score, all N samples, steps and passes run."""

    tokens: list[int]
    score: float
    all_samples: list[list[int]]
    all_scores: list[float]
    steps: int
    passes: int = 0  # forward passes over the target (steps, plus block diffusion's cache passes)
    token_logprobs: list[float] = field(default_factory=list)  # each kept token's, when it was drawn


StepHook = Callable[[int, int, torch.Tensor], None]
"""Called after every denoising step with (input index, step index, canvas ``[N, L]``)."""

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


def confidence_of(logits: torch.Tensor, drawn_logp: torch.Tensor, kind: str) -> torch.Tensor:
    """Log-confidence of each position from its float logits ``[..., V]`` (at tau = 1): of the
    drawn token's probability, of the margin between the two likeliest tokens, or of
    exp(-entropy)."""
    if kind == "probability":
        return drawn_logp
    logp = logits.log_softmax(-1)
    if kind == "margin":
        top = logp.topk(2, dim=-1).values.exp()
        return (top[..., 0] - top[..., 1]).log()
    return (logp.exp() * logp).nan_to_num().sum(-1)  # -entropy


def _step(backbone: Backbone, state: PrefixState, x: torch.Tensor, u: torch.Tensor,
          cfg: DiffusionSampling, noise: NoiseProcess, end_ids: tuple[int, ...],
          hidden: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One denoising step: tokens drawn at every position ``[R, L]`` (from the uniforms ``u``),
    their log-probabilities (at tau = 1) and log-confidences; ``hidden``: the final hidden
    states of ``x`` when a pass already computed them (decoder-only).

    The output projection runs in chunks of positions so that at most ``LOGITS_BUDGET`` logits
    exist at once.
    """
    head = None if backbone.is_encoder_decoder else backbone.head
    if hidden is None:  # an encoder-decoder's decoder returns logits already
        forward = (backbone.logits_from_prefix if backbone.is_encoder_decoder
                   else backbone.hidden_from_prefix)
        hidden = forward(state, x, cfg.layout, cfg.shift)
    rows, length = x.shape
    vocab = backbone.vocab_size
    chunk = max(1, LOGITS_BUDGET // (rows * vocab))
    penalize = cfg.repetition_penalty != 1
    if penalize:  # token counts of each sample
        counts = torch.zeros((rows, vocab), dtype=torch.long, device=x.device)
        counts.scatter_add_(1, x, torch.ones_like(x))
    drawn, logp = torch.empty_like(x), torch.empty(x.shape, device=x.device)
    conf = logp if cfg.confidence == "probability" else torch.empty_like(logp)
    banned = list(noise.banned_ids)
    for lo in range(0, length, chunk):
        part = hidden[:, lo:lo + chunk]
        logits = (part if head is None else head(part)).float()
        if banned:
            logits[..., banned] = -math.inf
        if cfg.eos_penalty != 1 and end_ids:
            logits[..., list(end_ids)] -= math.log(cfg.eos_penalty)
        if penalize:
            logits = penalize_repeats(logits, x[:, lo:lo + chunk], counts, cfg.repetition_penalty)
        tokens = _draw(logits, cfg.temperature, u[:, lo:lo + chunk])
        drawn[:, lo:lo + chunk] = tokens
        logp[:, lo:lo + chunk] = logits.gather(-1, tokens[..., None])[..., 0] - logits.logsumexp(-1)
        if conf is not logp:
            conf[:, lo:lo + chunk] = confidence_of(logits, logp[:, lo:lo + chunk], cfg.confidence)
    return drawn, logp, conf


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
    on_step: StepHook | None = None,
) -> list[DiffusionResult]:
    """Denoise ``cfg.candidates`` targets per input along ``noise``'s schedule; best per input.

    The score of a sample is the mean log-probability of its tokens under the logits of the
    step that produced them. Each input runs in its own forward passes (its N candidates
    together): the tensor shapes, and so the arithmetic, never depend on the other inputs of a
    request. Batching inputs would pad their prompt caches to a common width, which changes
    the rounding of attention and, in bfloat16, the tokens drawn (``docs/speed.md``).
    ``on_step`` sees the canvas after every step (it costs a host read per step when given).
    """
    if backbone.block_size:
        raise ValueError("a block-diffusion model decodes with "
                         "ar2diff.sampling.block_diffusion.block_generate")
    return [denoise_group(backbone, [x], [cfg.seed], encode(backbone, x, cfg.layout, pad_id), cfg,
                          noise, pad_id, eos_id,
                          None if on_step is None else (lambda _, s, c, i=i: on_step(i, s, c)))[0]
            for i, x in enumerate(inputs)]


def encode(backbone: Backbone, prompt: Sequence[int], layout: str, pad_id: int) -> PrefixState:
    """One prompt's prefix state, computed alone."""
    batch = collate([Example(tuple(prompt), ())], pad_id)
    return backbone.encode_prefix(batch.input_ids, batch.input_mask, layout)


def denoise_group(backbone: Backbone, prompts: Sequence[Sequence[int]], seeds: Sequence[int],
                  state: PrefixState, cfg: DiffusionSampling, noise: NoiseProcess, pad_id: int,
                  eos_id: int, on_step: StepHook | None = None) -> list[DiffusionResult]:
    """The N candidates of each prompt (seed ``seeds[i]``), denoised on the model's device in
    shared forward passes over the prompts' stacked ``state`` (one row per prompt).

    Each prompt moves through the schedule on its own — its blocks, its steps, its stop — and
    keeps its own keyed draws; a finished prompt's rows ride along unchanged until all are done.
    """
    n, length, device = cfg.candidates, cfg.target_length, backbone.device
    state = state.repeat_interleave(n)
    keys = [prompt_key(p) for p in prompts]
    cand = torch.arange(n, device=device)[:, None]
    pos = torch.arange(length, device=device)[None, :]

    def draws(purpose: int, steps: Sequence[int]) -> torch.Tensor:
        return torch.cat([keyed_uniform(seed, key, purpose, s, cand, pos)
                          for seed, key, s in zip(seeds, keys, steps, strict=True)])

    x = noise.initial_canvas(draws(CANVAS, [0] * len(prompts)))
    logp = torch.zeros(x.shape, device=device)
    end_ids = (pad_id, eos_id)
    rule = _rule(cfg, noise, end_ids, pad_id)
    plan = noise.schedule(cfg.steps, length, cfg.block_length)
    at = [(0, 0)] * len(prompts)  # per prompt: block index, steps taken in it
    steps = [0] * len(prompts)
    active = list(range(len(prompts)))
    frozen = _frozen_start(cfg, noise, x)
    freeze_ends = end_ids if cfg.eos_stop else ()
    fast = block_cache(backbone, state, length) if cfg.fast else None
    while active:
        hidden = None if fast is None else fast.hidden(x, cfg.shift)
        drawn, drawn_logp, conf = _step(backbone, state, x, draws(DRAW, steps), cfg, noise,
                                        end_ids, hidden)
        for i in list(active):
            rows = slice(i * n, (i + 1) * n)
            (b, k), (lo, hi, budget) = at[i], plan[at[i][0]]
            new, new_logp = noise.update(x[rows], drawn[rows], drawn_logp[rows], conf[rows],
                                         logp[rows], (lo, hi, budget - k), rule)
            done = None
            if frozen is not None and steps[i]:  # the start canvas was not drawn by the model
                new, new_logp, frozen[rows], done = freeze_step(
                    x[rows], new, new_logp, logp[rows], frozen[rows], cfg.freeze, freeze_ends)
            flags = _stop_flags(noise, x[rows], new, cfg, rule, lo, hi)
            if done is not None:
                flags = torch.stack([done, done]) if flags is None else flags | done
            x[rows], logp[rows] = new, new_logp
            steps[i] += 1
            if on_step is not None:
                on_step(i, steps[i] - 1, x[rows])
            # the one host round trip per step, only when this step may end something
            all_done, block_done = (False, False) if flags is None else flags.tolist()
            b, k = (b + 1, 0) if block_done or k + 1 == (hi - lo if rule.dynamic else budget) \
                else (b, k + 1)
            at[i] = (b, k)
            if all_done or b == len(plan):
                active.remove(i)
    return [_result(x[i * n:(i + 1) * n], logp[i * n:(i + 1) * n], steps[i], set(end_ids),
                    rule.end_ids) for i in range(len(prompts))]


def _rule(cfg: DiffusionSampling, noise: NoiseProcess, end_ids: tuple[int, ...],
          pad_id: int) -> StepRule:
    """The step rule ``cfg`` asks of ``noise`` (a process that follows no rule gets none)."""
    if cfg.confidence not in CONFIDENCES:
        raise ValueError(f"confidence={cfg.confidence!r}: choose one of {', '.join(CONFIDENCES)}")
    if cfg.order not in ORDERS:
        raise ValueError(f"order={cfg.order!r}: choose one of {', '.join(ORDERS)}")
    in_order = cfg.order == "left-to-right"
    if not noise.follows_rules:
        if cfg.threshold > 0 or cfg.factor > 0 or in_order:
            raise ValueError(f"threshold / factor / order decoding needs masked noise, not "
                             f"{noise.name!r}")
        return StepRule()
    return StepRule(cfg.threshold, cfg.factor, end_ids if cfg.eos_stop else (), pad_id, in_order)


def _frozen_start(cfg: DiffusionSampling, noise: NoiseProcess,
                  x: torch.Tensor) -> torch.Tensor | None:
    """No position frozen yet, when ``cfg`` freezes (a process without masks only)."""
    if not cfg.freeze:
        return None
    if not 0 < cfg.freeze < 1:
        raise ValueError(f"freeze={cfg.freeze}: use a probability in (0, 1), 0 = off")
    if noise.follows_rules:
        raise ValueError(f"freeze settles positions of SUNDAE sampling; {noise.name!r} noise "
                         "settles its own (use threshold)")
    return torch.zeros(x.shape, dtype=torch.bool, device=x.device)


def _stop_flags(noise: NoiseProcess, before: torch.Tensor, after: torch.Tensor,
                cfg: DiffusionSampling, rule: StepRule, lo: int, hi: int) -> torch.Tensor | None:
    """``[all done, block done]`` on the device when this step's outcome can end the loop (early
    stop, a confidence rule or end tokens), else None: a fixed schedule needs no host read."""
    done = noise.finished(before, after, cfg.early_stop)
    if not (rule.dynamic or rule.end_ids):
        return None if done is None else torch.stack([done, done])
    block = noise.settled(after, lo, hi)
    if block is None:
        return None if done is None else torch.stack([done, done])
    whole = noise.settled(after, 0, after.shape[1])
    done = whole if done is None else done | whole
    return torch.stack([done, block])


def _result(x: torch.Tensor, logp: torch.Tensor, steps: int, stop: set[int],
            end_ids: tuple[int, ...] = ()) -> DiffusionResult:
    """The candidate with the highest mean log-probability (with ``end_ids``: over the tokens
    up to its first end token), and all of them."""
    if end_ids:
        kept = ~end_seen(x, end_ids).roll(1, dims=1)
        kept[:, 0] = True
        scores = (logp * kept).sum(-1) / kept.sum(-1)
    else:
        scores = logp.mean(-1)
    best = scores.argmax()
    x, scores, best = x.cpu(), scores.cpu(), int(best.cpu())
    tokens = cut(x[best].tolist(), stop)
    return DiffusionResult(
        tokens=tokens, score=float(scores[best]),
        all_samples=[cut(r.tolist(), stop) for r in x], all_scores=scores.tolist(), steps=steps,
        passes=steps, token_logprobs=logp[best, :len(tokens)].tolist(),
    )
