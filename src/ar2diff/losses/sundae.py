"""SUNDAE's step-unrolled denoising loss L(1:n).

Given corrupted targets x1: logits1 = f(input, x1); then for k = 2..n: x_k = argmax(logits_{k-1})
(or, as in the original SUNDAE, a sample from softmax(logits_{k-1})) with no gradient,
logits_k = f(input, x_k). The loss is the mean over the n passes of the
cross-entropy against x0 at every target position — padding included, so that the length is
learned.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ar2diff.data.batching import Batch
from ar2diff.models.backbone import Backbone


def sundae_loss(
    backbone: Backbone,
    batch: Batch,
    fed: torch.Tensor,
    unroll: int = 2,
    shift: bool = False,
    anneal: tuple[float, torch.Generator] | None = None,
    layout: str = "diffusion",
    unroll_input: str = "argmax",
    generators: list[torch.Generator] | None = None,
) -> tuple[torch.Tensor, int]:
    """Summed L(1:unroll) token loss (averaged over passes) and the number of target tokens.

    ``fed`` holds the corrupted targets ``[B, Lt]``; ``anneal`` = (fraction, generator) opens
    only that fraction of future target links (mask annealing); ``layout`` is the diffusion
    attention layout (``diffusion`` or ``diffusion-causal-input``). ``unroll_input``: what the
    next pass is fed, ``argmax`` or ``sample`` (drawn with each row's generator).
    """
    batch = batch.to(backbone.device)
    fed = fed.to(backbone.device)
    x0, mask = batch.target_ids, batch.target_mask
    total = torch.zeros((), device=backbone.device)
    for k in range(unroll):
        logits = backbone.target_logits(batch, fed, layout, shift, anneal)
        total = total + F.cross_entropy(logits[mask].float(), x0[mask], reduction="sum")
        if k + 1 < unroll:
            fed = torch.where(mask, _unroll_tokens(logits.detach(), unroll_input, generators), x0)
    return total / unroll, int(mask.sum())


def _unroll_tokens(logits: torch.Tensor, how: str,
                   generators: list[torch.Generator] | None) -> torch.Tensor:
    """The tokens the next unrolled pass is fed: argmax, or a sample per position drawn by
    inverse CDF from one uniform per position of each row's generator (batch-independent)."""
    if how == "argmax":
        return logits.argmax(-1)
    if generators is None:
        raise ValueError("unroll_input='sample' needs one generator per row")
    u = torch.stack([torch.rand(logits.shape[1], generator=g) for g in generators]).to(logits.device)
    cdf = logits.float().softmax(-1).cumsum(-1)
    picked = torch.searchsorted(cdf, (u * cdf[..., -1]).unsqueeze(-1).contiguous())[..., 0]
    return picked.clamp(max=logits.shape[-1] - 1)
