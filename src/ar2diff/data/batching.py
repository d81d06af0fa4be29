"""Examples and batches: (input tokens, target tokens) pairs and their padded tensors."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Example:
    """One training or evaluation example as token ids.

    ``input_ids`` is the conditioning prefix; ``target_ids`` the tokens to predict (for diffusion
    already padded to its fixed length, so that the padding is learned).
    """

    input_ids: tuple[int, ...]
    target_ids: tuple[int, ...]


@dataclass
class Batch:
    """Right-padded input and target tensors with masks of the real positions."""

    input_ids: torch.Tensor  # [B, Lin] long
    input_mask: torch.Tensor  # [B, Lin] bool, a prefix of each row
    target_ids: torch.Tensor  # [B, Lt] long
    target_mask: torch.Tensor  # [B, Lt] bool, a prefix of each row

    def __len__(self) -> int:
        return self.input_ids.shape[0]

    def to(self, device: torch.device) -> Batch:
        """The batch on ``device`` (itself when already there)."""
        if self.input_ids.device == device:
            return self
        return Batch(*(t.to(device) for t in self.tensors()))

    def tensors(self) -> tuple[torch.Tensor, ...]:
        return (self.input_ids, self.input_mask, self.target_ids, self.target_mask)


def _pad(rows: Sequence[Sequence[int]], pad_id: int, width: int) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.bool)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
        mask[i, : len(row)] = True
    return ids, mask


def collate(examples: Sequence[Example], pad_id: int) -> Batch:
    """Pad a list of examples into a :class:`Batch` (widths = the longest row, at least 1)."""
    in_w = max(1, max(len(e.input_ids) for e in examples))
    tg_w = max(1, max(len(e.target_ids) for e in examples))
    input_ids, input_mask = _pad([e.input_ids for e in examples], pad_id, in_w)
    target_ids, target_mask = _pad([e.target_ids for e in examples], pad_id, tg_w)
    return Batch(input_ids, input_mask, target_ids, target_mask)
