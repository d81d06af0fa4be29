"""Corruption processes for discrete diffusion.

``uniform`` is SUNDAE's (the paper's): per example draw a rate r ~ U(0, 1) and replace each
target token, independently with probability r, by a token drawn uniformly from the vocabulary.
``mask`` is absorbing-state diffusion (MDLM, DiffuLLaMA, Dream): replace each target token with
probability r by a dedicated mask token, so the model knows which positions are unknown.
"""

from __future__ import annotations

import torch


def example_generator(seed: int, *keys: int) -> torch.Generator:
    """A generator for one example, keyed by integers (e.g. seed, example index, step).

    Keying randomness by example rather than by batch makes results independent of how
    examples are grouped into batches.
    """
    mixed = seed & 0xFFFFFFFF
    for key in keys:
        mixed = (mixed * 6364136223846793005 + (key & 0xFFFFFFFFFFFF) + 1442695040888963407) % (
            1 << 63
        )
    return torch.Generator().manual_seed(mixed)


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


def uniform_tokens(shape: tuple[int, ...], vocab_size: int, gen: torch.Generator) -> torch.Tensor:
    """Tokens drawn uniformly from the vocabulary: the diffusion sampler's starting point."""
    return torch.randint(0, vocab_size, shape, generator=gen)
