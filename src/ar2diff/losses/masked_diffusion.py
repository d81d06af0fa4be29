"""Absorbing-state ("masked") diffusion loss, the objective of MDLM, DiffuLLaMA and Dream.

Given targets where each token was replaced by the mask token with probability t (one rate per
example), predict the original tokens at the masked positions in one pass. Weighting each
cross-entropy by 1 / t makes the mean over target tokens the ELBO bound on their NLL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ar2diff.data.batching import Batch
from ar2diff.models.backbone import Backbone


def masked_diffusion_loss(
    backbone: Backbone,
    batch: Batch,
    fed: torch.Tensor,
    rates: torch.Tensor,
    mask_id: int,
    shift: bool = False,
    anneal: tuple[float, torch.Generator] | None = None,
    layout: str = "diffusion",
) -> tuple[torch.Tensor, int]:
    """Summed 1/t-weighted loss over the masked target tokens, and the number of target tokens.

    ``fed`` ``[B, Lt]`` the masked targets, ``rates`` ``[B]`` the masking rate of each row;
    other arguments as for :func:`~ar2diff.losses.sundae.sundae_loss`. Padding positions count
    as targets, so that the length is learned.
    """
    batch = batch.to(backbone.device)
    fed, rates = fed.to(backbone.device), rates.to(backbone.device)
    x0, mask = batch.target_ids, batch.target_mask
    logits = backbone.target_logits(batch, fed, layout, shift, anneal)
    picked = mask & (fed == mask_id)
    weights = (1 / rates)[:, None].expand_as(x0)[picked]
    ce = F.cross_entropy(logits[picked].float(), x0[picked], reduction="none")
    return (ce * weights).sum(), int(mask.sum())


def masked_elbo_terms(
    backbone: Backbone,
    batch: Batch,
    fed: torch.Tensor,
    weights: torch.Tensor,
    mask_id: int,
    shift: bool = False,
    layout: str = "diffusion",
) -> torch.Tensor:
    """Per row ``[B]``: minus the ``weights``-weighted cross-entropy summed over the masked real
    target positions of ``fed``, a draw of the ELBO on log p(target | input) in nats."""
    batch = batch.to(backbone.device)
    fed, weights = fed.to(backbone.device), weights.to(backbone.device)
    logits = backbone.target_logits(batch, fed, layout, shift)
    picked = batch.target_mask & (fed == mask_id)
    logp = torch.log_softmax(logits.float(), -1).gather(-1, batch.target_ids[..., None])[..., 0]
    return (torch.where(picked, logp, 0.0).sum(1) * weights.float())
