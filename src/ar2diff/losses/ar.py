"""The AR loss: teacher-forced cross-entropy, each target token predicted from those before it."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ar2diff.data.batching import Batch
from ar2diff.models.backbone import Backbone


def ar_loss(backbone: Backbone, batch: Batch, layout: str = "causal") -> tuple[torch.Tensor, int]:
    """Summed token cross-entropy over the target and the number of target tokens.

    ``layout`` is ``causal`` (an ordinary LM) or ``prefix`` (bidirectional over the input).
    """
    batch = batch.to(backbone.device)
    logits = backbone.target_logits(batch, batch.target_ids, layout, shift=True)
    mask = batch.target_mask
    loss = F.cross_entropy(logits[mask].float(), batch.target_ids[mask], reduction="sum")
    return loss, int(mask.sum())
