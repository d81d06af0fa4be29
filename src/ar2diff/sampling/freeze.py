"""Freezing for SUNDAE sampling: settle positions that have become stable and confident.

SUNDAE redraws every target position at every step, so a sample never settles on its own and
runs its T steps (or stops when a whole step changes nothing, ``early_stop``). With a freeze
threshold p, a position freezes once a step draws again the token the step before drew there,
with probability at least p (at tau = 1); a frozen position keeps its token and score for good.
An input is done when every position of its N candidates is frozen, or lies after a frozen end
token — the masked sampler's threshold rule, carried over to a process without masks.
"""

from __future__ import annotations

import math

import torch

from ar2diff.noise.base import end_seen


def freeze_step(before: torch.Tensor, new: torch.Tensor, new_logp: torch.Tensor,
                old_logp: torch.Tensor, frozen: torch.Tensor, threshold: float,
                end_ids: tuple[int, ...] = ()
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Apply one step's freezing to one input's rows ``[N, L]``.

    ``before`` / ``old_logp``: the canvas and its log-probabilities before the step; ``new`` /
    ``new_logp``: what the step drew; ``frozen``: positions frozen so far. Returns the canvas,
    its log-probabilities, the frozen positions after the step, and whether the input is done
    (a bool tensor on the device).
    """
    new = torch.where(frozen, before, new)
    new_logp = torch.where(frozen, old_logp, new_logp)
    frozen = frozen | ((new == before) & (new_logp >= math.log(threshold)))
    covered = frozen
    if end_ids:  # positions after a frozen end token are cut from the sample
        ends = end_seen(torch.where(frozen, new, -1), end_ids).roll(1, dims=1)
        ends[:, 0] = False
        covered = frozen | ends
    return new, new_logp, frozen, covered.all()
