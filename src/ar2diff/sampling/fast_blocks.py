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

import torch

from ar2diff.models.backbone import Backbone, PrefixState
from ar2diff.sampling.fast_ar import lean_for


class BlockCache:
    """One input's candidate rows: the prompt and the finished blocks in static buffers."""

    def __init__(self, lean, state: PrefixState, capacity: int):
        layers = state.cache.layers[: lean.n_layers]
        rows, _, width, _ = layers[0].keys.shape
        shape = (rows, lean.kv_heads, width + capacity, lean.head_dim)
        self.lean = lean
        self.keys, self.values = [], []
        for layer in layers:
            for store, part in ((self.keys, layer.keys), (self.values, layer.values)):
                buf = torch.empty(shape, dtype=part.dtype, device=part.device)
                buf[:, :, :width] = part
                store.append(buf)
        self.t = width  # the cache column of the next target token
        device = state.last_hidden.device
        self.pos = torch.full((rows, 1), width, device=device)  # its position id (no padding)
        self.last_hidden = state.last_hidden
        self.tables = lean.tables(width + capacity + 1, device)

    def _run(self, tokens: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        pos = self.pos + torch.arange(tokens.shape[1], device=tokens.device)
        span = self.t + tokens.shape[1]
        return self.lean.block_hidden(tokens, pos, self.t, self.keys, self.values, mask, span,
                                      self.tables)

    def _shifted(self, hidden: torch.Tensor, shift: bool) -> torch.Tensor:
        return torch.cat([self.last_hidden[:, None], hidden[:, :-1]], 1) if shift else hidden

    @torch.no_grad()
    def hidden(self, fed: torch.Tensor, shift: bool) -> torch.Tensor:
        """Final hidden states ``[rows, m, D]`` of the block ``fed`` over the cache (as
        :meth:`Backbone.hidden_from_prefix`); the cache keeps nothing of it."""
        return self._shifted(self._run(fed, None), shift)

    @torch.no_grad()
    def extend_and_hidden(self, clean: torch.Tensor, fed: torch.Tensor,
                          shift: bool) -> torch.Tensor:
        """Add the finished block ``clean`` to the cache and return the hidden states of the
        next block ``fed`` over it, in one pass (as :meth:`Backbone.extend_and_hidden`)."""
        n, total = clean.shape[1], clean.shape[1] + fed.shape[1]
        mask = torch.ones((1, 1, total, self.t + total), dtype=torch.bool, device=clean.device)
        mask[:, :, :n, self.t + n:] = False  # the clean block does not see the next one
        hidden = self._run(torch.cat([clean, fed], 1), mask)
        self.last_hidden = hidden[:, n - 1]
        self.t, self.pos = self.t + n, self.pos + n
        return self._shifted(hidden[:, n:], shift)


def block_cache(backbone: Backbone, state: PrefixState, capacity: int) -> BlockCache | None:
    """A :class:`BlockCache` over ``state`` (prompts without padding: one prompt, or prompts of
    one length) with room for ``capacity`` target tokens, or ``None`` where the lean step does not
    apply (encoder–decoder and other families). Reads nothing back to the host."""
    if state.cache is None:
        return None
    lean = lean_for(backbone, state.roles.shape[1] + capacity)
    if lean is None or not hasattr(lean, "block_hidden"):
        return None
    return BlockCache(lean, state, capacity)
