"""Absorbing-mask noise (MDLM, DiffuLLaMA, Dream, LLaDA).

Per example draw a rate t ~ U(``min_rate``, 1) and replace each target token with probability t
by a dedicated mask token, so the model knows which positions are unknown; the loss is the
1/t-weighted cross-entropy at the masked positions. Sampling starts from all masks; at each
step a token is drawn at every masked position and the most confident share of them is kept
(revealed tokens never change), optionally block by block, left to right (LLaDA's
semi-autoregressive order).
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
from ar2diff.noise.base import NoiseProcess

MASK_TOKEN = "<|mask|>"


def mask_corrupt(
    targets: torch.Tensor, mask_id: int, generators: list[torch.Generator], min_rate: float = 1e-3
) -> tuple[torch.Tensor, torch.Tensor]:
    """Absorbing corruption of ``targets`` ``[B, L]``: ``(corrupted, rate per row)``.

    The rate is drawn from U(``min_rate``, 1) so that the ELBO weight 1 / rate stays finite.
    """
    rows, rates = [], []
    for row, gen in zip(targets, generators, strict=True):
        rate = min_rate + (1 - min_rate) * torch.rand((), generator=gen)
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


def reveal_counts(plan: list[tuple[int, int, int]]) -> list[int]:
    """How many positions each step of ``plan`` reveals: ``ceil(masked / steps_left)`` of its
    block, known in advance because every row starts fully masked."""
    counts, left = [], {}
    for lo, hi, steps_left in plan:
        masked = left.get(lo, hi - lo)
        counts.append(math.ceil(masked / steps_left))
        left[lo] = masked - counts[-1]
    return counts


def reveal(x: torch.Tensor, drawn: torch.Tensor, drawn_logp: torch.Tensor, logp: torch.Tensor,
           mask_id: int, block: tuple[int, int, int],
           count: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Keep the ``1 / steps_left`` share (or ``count``) of the masked positions of the block
    ``(lo, hi, steps_left)`` whose drawn tokens have the highest log-probability; the others
    stay masked, revealed tokens stay fixed.

    ``x`` ``[n, L]`` the current tokens (every row with as many masked positions); returns the
    new tokens and their log-probabilities.
    """
    lo, hi, steps_left = block
    masked = x == mask_id
    masked[:, :lo] = False
    masked[:, hi:] = False
    if count is None:
        count = math.ceil(int(masked[0].sum()) / steps_left)
    # rounded, ties to the leftmost: float noise of batching must not reorder near-equal ones
    confidence = (drawn_logp * 1e4).round().masked_fill(~masked, -math.inf)
    order = confidence.sort(dim=1, descending=True, stable=True).indices
    keep = torch.zeros_like(masked).scatter(1, order[:, :count], True)
    keep &= masked
    return torch.where(keep, drawn, x), torch.where(keep, drawn_logp, logp)


class MaskNoise(NoiseProcess):
    """Absorbing noise into the token ``mask_id``."""

    name = "mask"

    def __init__(self, mask_id: int):
        self.mask_id = mask_id
        self.banned_ids = (mask_id,)

    @classmethod
    def prepare(cls, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase,
                meta: ModelMeta) -> ModelMeta:
        return dataclasses.replace(meta, mask_id=add_mask_token(model, tokenizer))

    @classmethod
    def from_meta(cls, meta: ModelMeta, vocab_size: int, unroll: int = 1) -> MaskNoise:
        if meta.mask_id is None:
            raise Ar2DiffError("this model uses mask noise but its ar2diff.json names no mask_id; "
                               "re-save it with ar2diff or set the mask token's id there")
        return cls(meta.mask_id)

    def loss(self, backbone: Backbone, batch: Batch, generators: list[torch.Generator],
             shift: bool, layout: str,
             anneal: tuple[float, torch.Generator] | None = None) -> tuple[torch.Tensor, int]:
        fed, rates = mask_corrupt(batch.target_ids, self.mask_id, generators)
        return masked_diffusion_loss(backbone, batch, fed, rates, self.mask_id, shift, anneal,
                                     layout)

    def initial_canvas(self, uniforms: torch.Tensor) -> torch.Tensor:
        return torch.full(uniforms.shape, self.mask_id, device=uniforms.device)

    def schedule(self, steps: int, length: int,
                 block_length: int) -> list[tuple[tuple[int, int, int], int]]:
        """Per step: the block ``(lo, hi, steps_left)`` and how many positions it reveals (every
        position is revealed by the last step)."""
        plan = reveal_plan(length, steps, block_length)
        return list(zip(plan, reveal_counts(plan), strict=True))

    def update(self, canvas: torch.Tensor, drawn: torch.Tensor, drawn_logp: torch.Tensor,
               logp: torch.Tensor,
               step: tuple[tuple[int, int, int], int]) -> tuple[torch.Tensor, torch.Tensor]:
        block, count = step
        return reveal(canvas, drawn, drawn_logp, logp, self.mask_id, block, count)

    def elbo_terms(self, backbone: Backbone, batch: Batch, generators: list[torch.Generator],
                   shift: bool, layout: str) -> torch.Tensor:
        """LLaDA's lower-variance form of the masked-diffusion ELBO: mask exactly l of the L
        target tokens (l uniform in 1..L, positions uniform) and weight the masked tokens'
        log-probabilities by L / l; in expectation this equals MDLM's bound (rate t ~ U(0, 1),
        weight 1 / t)."""
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
