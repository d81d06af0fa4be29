"""Log-likelihoods of continuations given contexts: exact under AR decoding, and under diffusion a
seeded Monte-Carlo estimate of a lower bound (the noise process's ELBO, see
:meth:`ar2diff.noise.base.NoiseProcess.elbo_terms`).

A *pair* is ``(context ids, continuation ids)``; every function returns one result per pair, in
order. Each Monte-Carlo draw is keyed by the pair's tokens, the seed and the draw's index, so a
bound does not depend on which pairs are scored together.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from ar2diff.data.batching import Batch, Example, collate
from ar2diff.errors import Ar2DiffError
from ar2diff.models.backbone import Backbone
from ar2diff.noise.base import NoiseProcess
from ar2diff.rng import STREAM_LIKELIHOOD, example_generator, prompt_key

Pair = tuple[Sequence[int], Sequence[int]]


@dataclass(frozen=True)
class Bound:
    """A Monte-Carlo estimate of a lower bound on log p(continuation | context), in nats."""

    mean: float  # the estimate: the mean of the draws
    variance: float  # the sample variance of one draw
    samples: int  # the number of draws

    @property
    def stderr(self) -> float:
        """The standard error of :attr:`mean`."""
        return math.sqrt(self.variance / self.samples)


def truncate_pair(context: Sequence[int], continuation: Sequence[int],
                  max_length: int) -> tuple[list[int], list[int]]:
    """Keep the last ``max_length + 1`` tokens of context + continuation (the model sees all but
    the last), at least one of them context, as lm-eval's ``hf`` model does."""
    whole = [*context, *continuation][-(max_length + 1):]
    cut = min(len(continuation), len(whole) - 1)
    return whole[:len(whole) - cut], whole[len(whole) - cut:]


def document_pairs(tokens: Sequence[int], prefix_id: int, window: int,
                   max_context: int) -> list[tuple[list[int], list[int]]]:
    """A document as consecutive pieces of ``window`` tokens, each with the (at most
    ``max_context``) tokens before it as context, ``prefix_id`` first: the sum of their
    log-likelihoods is the document's."""
    if window < 1:
        raise Ar2DiffError(f"window={window}: score pieces of at least one token")
    head = [prefix_id, *tokens]
    return [(head[max(0, start + 1 - max_context):start + 1], list(tokens[start:start + window]))
            for start in range(0, len(tokens), window)]


def ar_log_likelihoods(backbone: Backbone, pairs: Sequence[Pair], layout: str = "causal",
                       batch_size: int = 8) -> list[tuple[float, bool]]:
    """Per pair: log p(continuation | context) under left-to-right prediction, and whether the
    continuation is the greedy one (every token the most likely)."""
    out: list[tuple[float, bool]] = []
    for batch in _batches(pairs, batch_size):
        with torch.no_grad():
            logits = backbone.target_logits(batch, batch.target_ids, layout, shift=True).float()
        batch = batch.to(backbone.device)
        logp = torch.log_softmax(logits, -1).gather(-1, batch.target_ids[..., None])[..., 0]
        real = batch.target_mask
        greedy = ((logits.argmax(-1) == batch.target_ids) | ~real).all(1)
        sums = torch.where(real, logp, 0.0).sum(1)
        out += [(float(s), bool(g)) for s, g in zip(sums.tolist(), greedy.tolist(), strict=True)]
    return out


TokenLogprob = tuple[float, list[tuple[int, float]]]


def ar_token_logprobs(backbone: Backbone, context: Sequence[int], continuation: Sequence[int],
                      layout: str = "causal", top: int = 0) -> list[TokenLogprob]:
    """Per continuation token: its log-probability given everything before it (temperature 1),
    and the ``top`` most likely tokens at that position with theirs."""
    if not continuation:
        return []
    batch = _collate([(context, continuation)])
    with torch.no_grad():
        logits = backbone.target_logits(batch, batch.target_ids, layout, shift=True).float()
    logp = torch.log_softmax(logits[0, :len(continuation)], -1).cpu()
    chosen = logp.gather(-1, torch.tensor(continuation)[:, None])[:, 0].tolist()
    if top <= 0:
        return [(lp, []) for lp in chosen]
    values, ids = logp.topk(top, -1)
    return [(lp, list(zip(i, v, strict=True)))
            for lp, i, v in zip(chosen, ids.tolist(), values.tolist(), strict=True)]


def diffusion_bounds(backbone: Backbone, noise: NoiseProcess, pairs: Sequence[Pair], samples: int,
                     seed: int = 0, shift: bool = False, layout: str = "diffusion",
                     batch_size: int = 8) -> list[Bound]:
    """Per pair: ``samples`` draws of the noise process's ELBO on log p(continuation | context)
    summarised as a :class:`Bound`."""
    if samples < 2:
        raise Ar2DiffError(f"samples={samples}: draw at least 2 samples (the variance needs two)")
    jobs = [(i, k) for i in range(len(pairs)) for k in range(samples)]
    draws = torch.zeros(len(pairs), samples, dtype=torch.float64)
    for lo in range(0, len(jobs), batch_size):
        chunk = jobs[lo:lo + batch_size]
        rows = [pairs[i] for i, _ in chunk]
        gens = [example_generator(seed, prompt_key(ctx), prompt_key(cont), k, STREAM_LIKELIHOOD)
                for (i, k), (ctx, cont) in zip(chunk, rows, strict=True)]
        with torch.no_grad():
            terms = noise.elbo_terms(backbone, _collate(rows), gens, shift, layout)
        for (i, k), term in zip(chunk, terms.tolist(), strict=True):
            draws[i, k] = term
    return [Bound(float(d.mean()), float(d.var()), samples) for d in draws]


def _collate(pairs: Sequence[Pair]) -> Batch:
    return collate([Example(tuple(ctx), tuple(cont)) for ctx, cont in pairs], pad_id=0)


def _batches(pairs: Sequence[Pair], batch_size: int) -> Iterator[Batch]:
    for lo in range(0, len(pairs), batch_size):
        yield _collate(pairs[lo:lo + batch_size])
