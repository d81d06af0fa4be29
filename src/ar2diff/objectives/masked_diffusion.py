"""Absorbing-state ("masked") diffusion loss, the noise of MDLM, DiffuLLaMA and Dream.

Per example draw a rate t ~ U(0, 1); replace each target token with probability t by the mask
token; predict the original tokens at the masked positions in one pass. Weighting each
cross-entropy by 1 / t makes the mean over target tokens the ELBO bound on their NLL.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ar2diff.data.batching import Batch
from ar2diff.models.backbone import Backbone
from ar2diff.noise import mask_corrupt


def masked_diffusion_loss(
    backbone: Backbone,
    batch: Batch,
    mask_id: int,
    generators: list[torch.Generator],
    shift: bool = False,
    anneal: tuple[float, torch.Generator] | None = None,
    mode: str = "diffusion",
) -> tuple[torch.Tensor, int]:
    """Summed 1/t-weighted loss over the masked target tokens, and the number of target tokens.

    Arguments as for :func:`~ar2diff.objectives.sundae.sundae_loss`; padding positions count as
    targets, so that the length is learned.
    """
    fed, rates = mask_corrupt(batch.target_ids, mask_id, generators)
    batch = batch.to(backbone.device)
    fed, rates = fed.to(backbone.device), rates.to(backbone.device)
    x0, mask = batch.target_ids, batch.target_mask
    logits = backbone.target_logits(batch, fed, mode, shift, anneal)
    picked = mask & (fed == mask_id)
    weights = (1 / rates)[:, None].expand_as(x0)[picked]
    ce = F.cross_entropy(logits[picked].float(), x0[picked], reduction="none")
    return (ce * weights).sum(), int(mask.sum())
