"""The fast block-diffusion pass: a static cache and the lean step over a block of tokens.

Block diffusion (:mod:`ar2diff.sampling.block_diffusion`) runs a few tokens per forward pass
over a cache that grows block by block; through ``transformers`` each pass pays the model
call's fixed costs (mask and cache bookkeeping, many small modules), which dominate at this
width on a CPU. Here the prompt's keys and values are copied once into preallocated buffers
with room for the whole target, and every pass runs the lean step of
:mod:`ar2diff.sampling.fast_ar` (Llama-style models) over the block: the block being denoised
writes its keys and values at its own columns and attends to everything before them and to
itself; a finished block's clean tokens are written there for good, in the same pass as the
next block's first step, and do not see that block. Where the lean step does not apply,
:func:`block_cache` returns ``None`` and the sampler keeps the model's own forward.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from ar2diff.models.backbone import Backbone, PrefixState
from ar2diff.sampling.fast_ar import lean_for


@dataclass
class _Prompt:
    """One prompt's rows of the batch and its static cache (keys and values per layer)."""

    rows: slice
    t: int  # the cache column of its next target token
    keys: list[torch.Tensor]
    values: list[torch.Tensor]


class BlockCache:
    """The candidate rows of one or more prompts: each prompt's cache and finished blocks in
    static buffers of its own width, so prompts of different lengths need no padding."""

    def __init__(self, lean, states: Sequence[PrefixState], capacity: int):
        self.lean, self.prompts, first = lean, [], 0
        for state in states:
            layers = state.cache.layers[: lean.n_layers]
            rows, _, width, _ = layers[0].keys.shape
            shape = (rows, lean.kv_heads, width + capacity, lean.head_dim)
            keys, values = [], []
            for layer in layers:
                for store, part in ((keys, layer.keys), (values, layer.values)):
                    buf = torch.empty(shape, dtype=part.dtype, device=part.device)
                    buf[:, :, :width] = part
                    store.append(buf)
            self.prompts.append(_Prompt(slice(first, first + rows), width, keys, values))
            first += rows
        device = states[0].last_hidden.device
        self.pos = torch.tensor([[p.t] for p in self.prompts for _ in range(p.rows.start, p.rows.stop)],
                                device=device)  # each row's next position id (no padding)
        self.last_hidden = torch.cat([s.last_hidden for s in states])
        self.tables = lean.tables(max(p.t for p in self.prompts) + capacity + 1, device)

    def keep(self, positions: list[int]) -> None:
        """Keep only the prompts at ``positions`` (in that order); their rows close up and the
        others' buffers are freed (prompts that ended leave the passes)."""
        prompts = [self.prompts[j] for j in positions]
        idx = torch.tensor([r for p in prompts for r in range(p.rows.start, p.rows.stop)],
                           dtype=torch.long, device=self.pos.device)
        self.pos, self.last_hidden = self.pos[idx], self.last_hidden[idx]
        first = 0
        for p in prompts:
            rows = p.rows.stop - p.rows.start
            p.rows, first = slice(first, first + rows), first + rows
        self.prompts = prompts

    def _run(self, tokens: torch.Tensor, clean: int) -> torch.Tensor:
        """The lean step over ``tokens``; its first ``clean`` tokens do not see the rest."""
        pos = self.pos + torch.arange(tokens.shape[1], device=tokens.device)
        parts = [(p.rows, p.t, p.keys, p.values,
                  self._mask(p.t, tokens.shape[1], clean, tokens.device))
                 for p in self.prompts]
        return self.lean.block_hidden(tokens, pos, parts, self.tables)

    @staticmethod
    def _mask(t: int, total: int, clean: int, device: torch.device) -> torch.Tensor | None:
        if not clean:
            return None
        mask = torch.ones((1, 1, total, t + total), dtype=torch.bool, device=device)
        mask[:, :, :clean, t + clean:] = False  # the clean block does not see the next one
        return mask

    def _shifted(self, hidden: torch.Tensor, shift: bool) -> torch.Tensor:
        return torch.cat([self.last_hidden[:, None], hidden[:, :-1]], 1) if shift else hidden

    @torch.no_grad()
    def hidden(self, fed: torch.Tensor, shift: bool) -> torch.Tensor:
        """Final hidden states ``[rows, m, D]`` of the block ``fed`` over the cache (as
        :meth:`Backbone.hidden_from_prefix`); the cache keeps nothing of it."""
        return self._shifted(self._run(fed, 0), shift)

    @torch.no_grad()
    def extend_and_hidden(self, clean: torch.Tensor, fed: torch.Tensor,
                          shift: bool) -> torch.Tensor:
        """Add the finished block ``clean`` to the cache and return the hidden states of the
        next block ``fed`` over it, in one pass (as :meth:`Backbone.extend_and_hidden`)."""
        n = clean.shape[1]
        hidden = self._run(torch.cat([clean, fed], 1), n)
        self.last_hidden = hidden[:, n - 1]
        for p in self.prompts:
            p.t += n
        self.pos = self.pos + n
        return self._shifted(hidden[:, n:], shift)


def block_cache(backbone: Backbone, states: PrefixState | Sequence[PrefixState],
                capacity: int) -> BlockCache | None:
    """A :class:`BlockCache` over ``states`` (one state of prompts without padding, or one
    state per prompt, of any lengths) with room for ``capacity`` target tokens, or ``None``
    where the lean step does not apply (encoder–decoder and other families). Reads nothing
    back to the host."""
    states = [states] if isinstance(states, PrefixState) else list(states)
    if any(s.cache is None for s in states):
        return None
    lean = lean_for(backbone, max(s.roles.shape[1] for s in states) + capacity)
    if lean is None or not hasattr(lean, "block_hidden"):
        return None
    return BlockCache(lean, states, capacity)


def lean_blocks(backbone: Backbone) -> bool:
    """Whether block passes of ``backbone`` can run through the lean step."""
    if backbone.is_encoder_decoder:
        return False
    lean = lean_for(backbone, 1)
    return lean is not None and hasattr(lean, "block_hidden")
