"""SUNDAE's step-unrolled denoising loss L(1:n).

Given corrupted targets x1: logits1 = f(input, x1); then for k = 2..n: x_k = argmax(logits_{k-1})
with no gradient, logits_k = f(input, x_k). The loss is the mean over the n passes of the
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
) -> tuple[torch.Tensor, int]:
    """Summed L(1:unroll) token loss (averaged over passes) and the number of target tokens.

    ``fed`` holds the corrupted targets ``[B, Lt]``; ``anneal`` = (fraction, generator) opens
    only that fraction of future target links (mask annealing); ``layout`` is the diffusion
    attention layout (``diffusion`` or ``diffusion-causal-input``).
    """
    batch = batch.to(backbone.device)
    fed = fed.to(backbone.device)
    x0, mask = batch.target_ids, batch.target_mask
    total = torch.zeros((), device=backbone.device)
    for k in range(unroll):
        logits = backbone.target_logits(batch, fed, layout, shift, anneal)
        total = total + F.cross_entropy(logits[mask].float(), x0[mask], reduction="sum")
        if k + 1 < unroll:
            fed = torch.where(mask, logits.detach().argmax(-1), x0)
    return total / unroll, int(mask.sum())
