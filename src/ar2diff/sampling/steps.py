"""A per-step record of decoding: the canvas after each step and which positions changed.

Diffusion fills a canvas ``[N, L]`` (N candidates, L target positions) in T steps; AR decoding
is the special case of one row that gains one position per step (positions not yet generated
hold :data:`BLANK`). The record keeps the canvas before the first step and after each one, so
a viewer can replay the steps and colour each token by the step that last changed it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch

from ar2diff.noise.base import NoiseProcess
from ar2diff.rng import keyed_uniform, prompt_key
from ar2diff.sampling.diffusion import CANVAS

BLANK = -1  # a position that holds no token yet (AR)


class StepRecord:
    """Canvases of one input, step by step (row = candidate, column = target position)."""

    def __init__(self, initial: Sequence[Sequence[int]]):
        self.canvases: list[list[list[int]]] = [[list(r) for r in initial]]

    def add(self, canvas: torch.Tensor | Sequence[Sequence[int]]) -> list[list[int]]:
        """Append the canvas after a step; returns the positions it changed, per row."""
        rows = canvas.tolist() if isinstance(canvas, torch.Tensor) else [list(r) for r in canvas]
        self.canvases.append(rows)
        return self.changed(len(self.canvases) - 1)

    @property
    def steps(self) -> int:
        return len(self.canvases) - 1

    def changed(self, step: int) -> list[list[int]]:
        """Positions of each row that step ``step`` (1-based) changed."""
        before, after = self.canvases[step - 1], self.canvases[step]
        return [[j for j, (a, b) in enumerate(zip(r0, r1, strict=True)) if a != b]
                for r0, r1 in zip(before, after, strict=True)]

    def last_change(self, upto: int | None = None) -> list[list[int]]:
        """For each row and position, the step (1-based, up to ``upto``) that last changed it;
        0 where no step did."""
        upto = self.steps if upto is None else upto
        out = [[0] * len(r) for r in self.canvases[0]]
        for step in range(1, upto + 1):
            for r, cols in enumerate(self.changed(step)):
                for j in cols:
                    out[r][j] = step
        return out


def diffusion_start(noise: NoiseProcess, seed: int, prompt: Sequence[int], candidates: int,
                    length: int) -> list[list[int]]:
    """The canvas diffusion decoding of ``prompt`` starts from (the sampler's own keyed draws)."""
    cand = torch.arange(candidates)[:, None]
    pos = torch.arange(length)[None, :]
    return noise.initial_canvas(keyed_uniform(seed, prompt_key(prompt), CANVAS, 0, cand, pos)).tolist()


def ar_start(rows: int, length: int) -> list[list[int]]:
    """The canvas AR decoding starts from: nothing generated."""
    return [[BLANK] * length for _ in range(rows)]


def ar_canvas(previous: list[list[int]], step: int, tokens: Sequence[int]) -> list[list[int]]:
    """The AR canvas after step ``step`` wrote ``tokens`` (one per row) at that position."""
    rows = [list(r) for r in previous]
    for r, tok in enumerate(tokens):
        if step < len(rows[r]):
            rows[r][step] = int(tok)
    return rows


def format_steps(record: StepRecord, token_text: Callable[[int], str], row: int = 0,
                 colour: bool = True) -> list[str]:
    """One line per step of ``row``: its text, the tokens that step changed in bold colour
    (ANSI; in brackets without ``colour``)."""
    lines = []
    for step in range(1, record.steps + 1):
        changed = set(record.changed(step)[row])
        parts = []
        for j, tok in enumerate(record.canvases[step][row]):
            text = token_text(tok)
            if j in changed:
                text = f"\x1b[1;{31 + step % 6}m{text}\x1b[0m" if colour else f"[{text}]"
            parts.append(text)
        lines.append(f"step {step:>3}: " + "".join(parts))
    return lines
