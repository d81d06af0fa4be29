"""Absorbing-mask noise (MDLM, DiffuLLaMA, Dream, LLaDA).

Per example draw a rate t ~ U(``min_rate``, 1) and replace each target token with probability t
by a dedicated mask token, so the model knows which positions are unknown; the loss is the
1/t-weighted cross-entropy at the masked positions. Sampling starts from all masks; at each
step a token is drawn at every masked position and the most confident share of them is kept
(revealed tokens never change), optionally block by block, left to right (LLaDA's
semi-autoregressive order), or every position whose confidence passes a threshold (Fast-dLLM);
with ``order: left-to-right`` the leftmost masked positions go first (with a threshold, the
leftmost and then each next one while it passes); once an end token is revealed, the positions
after it are settled.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from ar2diff.data.batching import Batch
from ar2diff.errors import Ar2DiffError
from ar2diff.losses.masked_diffusion import masked_diffusion_loss, masked_elbo_terms
from ar2diff.models.backbone import Backbone
from ar2diff.models.meta import ModelMeta
from ar2diff.noise.base import Block, NoiseProcess, StepRule, end_seen

MASK_TOKEN = "<|mask|>"
PLAIN = StepRule()  # the T-step schedule, no end tokens


def mask_corrupt(
    targets: torch.Tensor, mask_id: int, generators: list[torch.Generator], min_rate: float = 1e-3,
    max_rate: float = 1.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absorbing corruption of ``targets`` ``[B, L]``: ``(corrupted, rate per row)``.

    The rate is drawn from U(``min_rate``, ``max_rate``): a minimum keeps the ELBO weight
    1 / rate finite; a narrower range (BD3-LM's clipped schedule) lowers the variance of the
    loss, which block diffusion with small blocks needs.
    """
    rows, rates = [], []
    for row, gen in zip(targets, generators, strict=True):
        rate = min_rate + (max_rate - min_rate) * torch.rand((), generator=gen)
        masked = torch.rand(row.shape, generator=gen) < rate
        rows.append(torch.where(masked, torch.full_like(row, mask_id), row))
        rates.append(rate)
    return torch.stack(rows), torch.stack(rates)


def add_mask_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> int:
    """The id of the tokenizer's mask token, added (with an embedding row) if it has none.

    Its embedding row (input and, if untied, output) starts as the mean of the rows before it;
    the other rows, and so every other token's logits, are unchanged.
    """
    if tokenizer.mask_token_id is not None:
        return tokenizer.mask_token_id
    tokenizer.add_special_tokens({"mask_token": MASK_TOKEN})
    mask_id = tokenizer.mask_token_id
    if mask_id >= model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(mask_id + 1, mean_resizing=False)
    with torch.no_grad():
        for emb in {model.get_input_embeddings(), model.get_output_embeddings()} - {None}:
            emb.weight[mask_id] = emb.weight[:mask_id].mean(0)
    return mask_id


def reveal_plan(length: int, steps: int, block: int) -> list[Block]:
    """Masked sampling schedule: blocks ``[lo, hi)`` of ``block`` positions (0: one block),
    revealed left to right, sharing the ``steps`` (each at least one, at most one per position)."""
    block = block or length
    bounds = [(lo, min(lo + block, length)) for lo in range(0, length, block)]
    n = len(bounds)
    return [(lo, hi, min(hi - lo, max(1, steps // n + (b < steps % n))))
            for b, (lo, hi) in enumerate(bounds)]


def rule_counts(confidence: torch.Tensor, rule: StepRule) -> torch.Tensor:
    """Per row, how many of the positions (log-confidences in reveal order ``[n, L]``: high to
    low, or left to right with ``rule.in_order``; ``-inf`` for those not eligible) ``rule``'s
    threshold or factor settles: the leading run that passes it, at least one."""
    if rule.threshold > 0:
        passes = confidence >= math.log(rule.threshold)
    else:  # factor: (n + 1) * (1 - c_n) < factor for the n-th position
        n = torch.arange(1, confidence.shape[1] + 1, device=confidence.device)
        passes = (n + 1) * (1 - confidence.exp()) < rule.factor
    return passes.long().cumprod(1).sum(1).clamp(min=1)


def reveal(x: torch.Tensor, drawn: torch.Tensor, drawn_logp: torch.Tensor, confidence: torch.Tensor,
           logp: torch.Tensor, mask_id: int, block: Block,
           rule: StepRule = PLAIN) -> tuple[torch.Tensor, torch.Tensor]:
    """Reveal the most confident masked positions of the block ``(lo, hi, steps_left)``: the
    ``1 / steps_left`` share of each row's masked positions there, or as many as ``rule``'s
    threshold or factor allows; the others stay masked, revealed tokens stay fixed.

    ``x`` ``[n, L]`` the current tokens; returns the new tokens and their log-probabilities.
    """
    lo, hi, steps_left = block
    masked = x == mask_id
    masked[:, :lo] = False
    masked[:, hi:] = False
    left = masked.sum(1)
    # rounded, ties to the leftmost: float noise of batching must not reorder near-equal ones
    conf = (confidence * 1e4).round().masked_fill(~masked, -math.inf)
    if rule.in_order:  # masked positions left to right, then the others
        order = (~masked).byte().sort(dim=1, stable=True).indices
        ranked = conf.gather(1, order)
    else:
        ranked, order = conf.sort(dim=1, descending=True, stable=True)
    count = rule_counts(ranked / 1e4, rule) if rule.dynamic else (left + steps_left - 1) // steps_left
    rank = torch.arange(x.shape[1], device=x.device)[None].expand_as(x)
    keep = torch.zeros_like(masked).scatter(1, order, rank < count[:, None]) & masked
    new, new_logp = torch.where(keep, drawn, x), torch.where(keep, drawn_logp, logp)
    if rule.end_ids:
        new, new_logp = fill_after_end(new, new_logp, mask_id, rule)
    return new, new_logp


def fill_after_end(x: torch.Tensor, logp: torch.Tensor, mask_id: int,
                   rule: StepRule) -> tuple[torch.Tensor, torch.Tensor]:
    """Fill the masked positions after each row's first revealed end token with ``fill_id``:
    the sample ends there, so they need no steps (log-probability 0, not scored)."""
    after = end_seen(x, rule.end_ids).roll(1, dims=1)
    after[:, 0] = False
    fill = after & (x == mask_id)
    return torch.where(fill, rule.fill_id, x), logp.masked_fill(fill, 0.0)


class MaskNoise(NoiseProcess):
    """Absorbing noise into the token ``mask_id``."""

    name = "mask"
    follows_rules = True

    def __init__(self, mask_id: int, rates: tuple[float, float] = (1e-3, 1.0)):
        self.mask_id, self.rates = mask_id, rates
        self.banned_ids = (mask_id,)

    @classmethod
    def prepare(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                meta: ModelMeta) -> ModelMeta:
        return dataclasses.replace(meta, mask_id=add_mask_token(model, tokenizer))

    @classmethod
    def from_meta(cls, meta: ModelMeta, vocab_size: int, unroll: int = 1,
                  unroll_input: str = "argmax",
                  mask_rates: tuple[float, float] = (1e-3, 1.0)) -> MaskNoise:
        if meta.mask_id is None:
            raise Ar2DiffError("this model uses mask noise but its ar2diff.json names no mask_id; "
                               "re-save it with ar2diff or set the mask token's id there")
        return cls(meta.mask_id, mask_rates)

    def loss(self, backbone: Backbone, batch: Batch, generators: list[torch.Generator],
             shift: bool, layout: str,
             anneal: tuple[float, torch.Generator] | None = None) -> tuple[torch.Tensor, int]:
        fed, rates = mask_corrupt(batch.target_ids, self.mask_id, generators, *self.rates)
        return masked_diffusion_loss(backbone, batch, fed, rates, self.mask_id, shift, anneal,
                                     layout)

    def initial_canvas(self, uniforms: torch.Tensor) -> torch.Tensor:
        return torch.full(uniforms.shape, self.mask_id, device=uniforms.device)

    def schedule(self, steps: int, length: int, block_length: int) -> list[Block]:
        """Blocks left to right, the steps shared among them (see :func:`reveal_plan`)."""
        return reveal_plan(length, steps, block_length)

    def update(self, canvas: torch.Tensor, drawn: torch.Tensor, drawn_logp: torch.Tensor,
               confidence: torch.Tensor, logp: torch.Tensor, block: Block,
               rule: StepRule) -> tuple[torch.Tensor, torch.Tensor]:
        return reveal(canvas, drawn, drawn_logp, confidence, logp, self.mask_id, block, rule)

    def settled(self, canvas: torch.Tensor, lo: int, hi: int) -> torch.Tensor:
        """Whether no position of ``[lo, hi)`` is still masked."""
        return ~(canvas[:, lo:hi] == self.mask_id).any()

    def elbo_terms(self, backbone: Backbone, batch: Batch, generators: list[torch.Generator],
                   shift: bool, layout: str) -> torch.Tensor:
        """LLaDA's lower-variance form of the masked-diffusion ELBO: mask exactly l of the L
        target tokens (l uniform in 1..L, positions uniform) and weight the masked tokens'
        log-probabilities by L / l; in expectation this equals MDLM's bound (rate t ~ U(0, 1),
        weight 1 / t)."""
        if backbone.block_size:
            raise Ar2DiffError("no likelihood bound for block-diffusion models yet (their blocks "
                               "need a noise level each); score it with mode=ar or a masked model")
        fed, weights = mask_exactly(batch.target_ids, batch.target_mask, self.mask_id, generators)
        return masked_elbo_terms(backbone, batch, fed, weights, self.mask_id, shift, layout)


def mask_exactly(targets: torch.Tensor, real: torch.Tensor, mask_id: int,
                 generators: list[torch.Generator]) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row of ``targets`` ``[B, L]`` with ``real`` positions a prefix: mask l of its L real
    tokens, l uniform in 1..L; returns the masked targets and the weights L / l ``[B]``."""
    fed, weights = targets.clone(), torch.zeros(len(targets))
    for row, gen in enumerate(generators):
        n = int(real[row].sum())
        if n == 0:
            continue
        count = int(torch.randint(1, n + 1, (), generator=gen))
        fed[row, torch.randperm(n, generator=gen)[:count].to(fed.device)] = mask_id
        weights[row] = n / count
    return fed, weights
