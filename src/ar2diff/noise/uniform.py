"""SUNDAE's uniform noise (the paper's).

Per example draw a rate r ~ U(0, 1) and replace each target token, independently with
probability r, by a token drawn uniformly from the vocabulary. Training uses the step-unrolled
loss L(1:unroll); sampling starts from uniformly random tokens and redraws every position at
every step.
"""

from __future__ import annotations

import torch

from ar2diff.data.batching import Batch
from ar2diff.losses.sundae import sundae_loss
from ar2diff.models.backbone import Backbone
from ar2diff.models.meta import ModelMeta
from ar2diff.noise.base import Block, NoiseProcess, StepRule


def uniform_corrupt(
    targets: torch.Tensor, vocab_size: int, generators: list[torch.Generator]
) -> torch.Tensor:
    """SUNDAE corruption of ``targets`` ``[B, L]``, one generator per row."""
    rows = []
    for row, gen in zip(targets, generators, strict=True):
        rate = torch.rand((), generator=gen)
        replace = torch.rand(row.shape, generator=gen) < rate
        noise = torch.randint(0, vocab_size, row.shape, generator=gen)
        rows.append(torch.where(replace, noise, row))
    return torch.stack(rows)


class UniformNoise(NoiseProcess):
    """Uniform replacement noise over the first ``vocab_size`` token ids."""

    name = "uniform"

    def __init__(self, vocab_size: int, unroll: int = 2, unroll_input: str = "argmax"):
        self.vocab_size, self.unroll, self.unroll_input = vocab_size, unroll, unroll_input

    @classmethod
    def from_meta(cls, meta: ModelMeta, vocab_size: int, unroll: int = 1,
                  unroll_input: str = "argmax",
                  mask_rates: tuple[float, float] = (1e-3, 1.0)) -> UniformNoise:
        return cls(meta.noise_vocab or vocab_size, unroll, unroll_input)

    def loss(self, backbone: Backbone, batch: Batch, generators: list[torch.Generator],
             shift: bool, layout: str,
             anneal: tuple[float, torch.Generator] | None = None) -> tuple[torch.Tensor, int]:
        fed = uniform_corrupt(batch.target_ids, self.vocab_size, generators)
        return sundae_loss(backbone, batch, fed, self.unroll, shift, anneal, layout,
                           self.unroll_input, generators)

    def initial_canvas(self, uniforms: torch.Tensor) -> torch.Tensor:
        return (uniforms * self.vocab_size).long().clamp(max=self.vocab_size - 1)

    def schedule(self, steps: int, length: int, block_length: int) -> list[Block]:
        """Every position is redrawn at every step: one block of ``steps`` steps."""
        return [(0, length, steps)]

    def update(self, canvas: torch.Tensor, drawn: torch.Tensor, drawn_logp: torch.Tensor,
               confidence: torch.Tensor, logp: torch.Tensor, block: Block,
               rule: StepRule) -> tuple[torch.Tensor, torch.Tensor]:
        return drawn, drawn_logp

    def finished(self, before: torch.Tensor, after: torch.Tensor,
                 early_stop: bool) -> torch.Tensor | None:
        """With ``early_stop``: whether the step left all the candidates unchanged."""
        return (before == after).all() if early_stop else None
