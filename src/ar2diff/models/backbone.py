"""A Hugging Face model run under an attention layout: the one switch from AR to diffusion.

:class:`Backbone` wraps any decoder-only causal LM (Llama, Qwen2, GPT-2, …) or T5-style
encoder–decoder and computes logits for the *target* part of a batch. The attention layout
(``causal`` | ``prefix`` | ``diffusion``, see :mod:`ar2diff.models.attention`) is passed as the 4-D
attention mask the model already accepts, so no modeling file is forked.

With ``block_size`` > 0 the target is denoised in blocks (BD3-LM): training runs a noisy and a
clean copy of the target under :func:`~ar2diff.models.attention.block_diffusion_keys`, sampling
caches each finished block exactly (:meth:`Backbone.extend_prefix`).

``shift=True`` means that target token ``j`` is predicted at the position holding the fed token
``j-1`` (the last input token for ``j = 0``): how an AR head is trained. ``shift=False`` predicts
token ``j`` at its own position (the paper's diffusion setup).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import DynamicCache, PreTrainedModel
from transformers.modeling_outputs import BaseModelOutput

from ar2diff.data.batching import Batch
from ar2diff.errors import Ar2DiffError
from ar2diff.models.attention import (
    INPUT,
    PAD,
    TARGET,
    allowed_keys,
    annealed_keys,
    block_diffusion_keys,
    position_ids,
)


@dataclass
class PrefixState:
    """What the targets need from the input, computed once per request.

    Decoder-only: the input's key/value cache, roles, lengths and the last input hidden state.
    Encoder–decoder: the encoder outputs.
    """

    input_mask: torch.Tensor
    cache: DynamicCache | None = None
    roles: torch.Tensor | None = None
    last_hidden: torch.Tensor | None = None
    encoder_out: BaseModelOutput | None = None

    @staticmethod
    def stack(states: Sequence[PrefixState]) -> PrefixState:
        """Decoder-only states of one width, stacked along the batch (their caches too: the
        first state's cache object holds them all)."""
        first = states[0]
        if len({s.input_mask.shape[1] for s in states}) > 1:
            raise ValueError("only prefix states of one width stack")
        for i, layer in enumerate(first.cache.layers):
            layer.keys = torch.cat([s.cache.layers[i].keys for s in states])
            layer.values = torch.cat([s.cache.layers[i].values for s in states])
        return PrefixState(
            input_mask=torch.cat([s.input_mask for s in states]), cache=first.cache,
            roles=torch.cat([s.roles for s in states]),
            last_hidden=torch.cat([s.last_hidden for s in states]),
        )

    def repeat_interleave(self, n: int) -> PrefixState:
        """The state of each row repeated ``n`` times (for ``n`` samples per input)."""
        if self.cache is not None:
            self.cache.batch_repeat_interleave(n)
        enc = self.encoder_out
        return PrefixState(
            input_mask=self.input_mask.repeat_interleave(n, 0),
            cache=self.cache,
            roles=None if self.roles is None else self.roles.repeat_interleave(n, 0),
            last_hidden=None if self.last_hidden is None else self.last_hidden.repeat_interleave(n, 0),
            encoder_out=None if enc is None else BaseModelOutput(
                last_hidden_state=enc.last_hidden_state.repeat_interleave(n, 0)
            ),
        )


class Backbone(nn.Module):
    """A decoder-only or encoder–decoder HF model with a switchable attention layout."""

    def __init__(self, model: PreTrainedModel, block_size: int = 0):
        super().__init__()
        self.model = model
        self.is_encoder_decoder = bool(model.config.is_encoder_decoder)
        if block_size and self.is_encoder_decoder:
            raise Ar2DiffError("block diffusion (objective.block_size) needs a decoder-only model")
        self.block_size = block_size  # > 0: diffusion layouts run as block diffusion
        self.window = None if self.is_encoder_decoder else attention_window(model.config)
        if block_size and self.window:
            raise Ar2DiffError("block diffusion (objective.block_size) does not support "
                               f"sliding-window attention (window {self.window})")

    @property
    def device(self) -> torch.device:
        return self.model.get_input_embeddings().weight.device

    @property
    def vocab_size(self) -> int:
        return int(self.model.get_output_embeddings().weight.shape[0])

    # ---- masks -----------------------------------------------------------------------------

    def attention_mask(self, allowed: torch.Tensor) -> torch.Tensor:
        """The 4-D mask the model takes for a boolean ``[B, Q, K]`` "may attend" tensor.

        SDPA takes a boolean mask; eager attention adds a float one (in the compute dtype).
        """
        dtype = self._dtype()
        allowed = allowed[:, None].to(self.device)
        if self.model.config._attn_implementation == "sdpa":
            return allowed
        zero = torch.zeros((), dtype=dtype, device=self.device)
        return torch.where(allowed, zero, torch.finfo(dtype).min)

    def _dtype(self) -> torch.dtype:
        dtype = self.model.get_input_embeddings().weight.dtype
        kind = self.device.type
        if torch.is_autocast_enabled(kind):
            dtype = torch.get_autocast_dtype(kind)
        return dtype

    # ---- full forward (training) -----------------------------------------------------------

    def target_logits(self, batch: Batch, fed: torch.Tensor, layout: str, shift: bool,
                      anneal: tuple[float, torch.Generator] | None = None) -> torch.Tensor:
        """Logits ``[B, Lt, V]`` for the target positions, with ``fed`` as the target tokens.

        ``anneal=(fraction, generator)`` replaces the layout's mask by the annealed one
        (:func:`~ar2diff.models.attention.annealed_keys`; decoder-only models).
        """
        batch = batch.to(self.device)
        fed = fed.to(self.device)
        if self.is_encoder_decoder:
            return self._enc_dec_logits(batch.input_ids, batch.input_mask, fed, batch.target_mask,
                                        layout, shift, None)
        if shift and bool((batch.input_mask.sum(1) == 0).any()):
            raise ValueError("shift=True needs at least one input token (e.g. BOS) per example")
        if self.block_size and layout.startswith("diffusion"):
            if anneal is not None:
                raise ValueError("block diffusion does not anneal its attention")
            return self._block_logits(batch, fed, layout, shift)
        tokens, roles, tgt_cols = _pack(batch, fed)
        allowed = (allowed_keys(roles, roles, layout, window=self.window) if anneal is None
                   else annealed_keys(roles, *anneal, layout, window=self.window))
        mask = self.attention_mask(allowed)
        return self(tokens, mask, position_ids(roles), (tgt_cols - int(shift)).clamp(min=0))

    def _block_logits(self, batch: Batch, fed: torch.Tensor, layout: str, shift: bool) -> torch.Tensor:
        """Block-diffusion training logits for the noisy target ``fed``: one pass over
        ``[input][noisy target][clean target]`` (BD3-LM), read at the noisy copy (with ``shift``,
        a block's first token is read where the clean copy's previous token stands)."""
        tokens, roles, blocks, clean, positions, noisy_cols, clean_cols = _pack_blocks(
            batch, fed, self.block_size)
        input_attention = "causal" if layout == "diffusion-causal-input" else "prefix"
        mask = self.attention_mask(block_diffusion_keys(roles, blocks, clean, input_attention))
        cols = noisy_cols
        if shift:
            prev = torch.cat([noisy_cols[:, :1] - 1, clean_cols[:, :-1]], dim=1)  # input's last
            first = (torch.arange(fed.shape[1], device=fed.device) % self.block_size == 0)[None]
            cols = torch.where(first, prev, torch.cat([noisy_cols[:, :1], noisy_cols[:, :-1]], 1))
        return self(tokens, mask, positions, cols)

    def forward(self, tokens: torch.Tensor, mask: torch.Tensor, positions: torch.Tensor,
                cols: torch.Tensor) -> torch.Tensor:
        """Decoder-only training forward: logits ``[B, Lt, V]`` at the hidden-state columns ``cols``.

        One module call from tokens to logits, so that FSDP can wrap the backbone as its root.
        """
        hidden = self.model.base_model(
            input_ids=tokens, attention_mask=mask, position_ids=positions, use_cache=False
        ).last_hidden_state
        picked = torch.gather(hidden, 1, cols[:, :, None].expand(-1, -1, hidden.shape[-1]))
        return self.model.get_output_embeddings()(picked)

    # ---- prefix cache (sampling) -----------------------------------------------------------

    @torch.no_grad()
    def encode_prefix(self, input_ids: torch.Tensor, input_mask: torch.Tensor, layout: str) -> PrefixState:
        """Run the input (left- or right-padded) once; targets attend to it through
        :meth:`logits_from_prefix`, AR decoding through the cache it returns."""
        input_ids, input_mask = input_ids.to(self.device), input_mask.to(self.device)
        if self.is_encoder_decoder:
            enc = self.model.get_encoder()(input_ids=input_ids, attention_mask=input_mask.long())
            return PrefixState(input_mask=input_mask, encoder_out=enc)
        roles = torch.where(input_mask, INPUT, PAD)
        # a sliding-window cache would drop the keys our masks index: the window is in the mask
        cache = DynamicCache() if self.window else DynamicCache(config=self.model.config)
        mask = self.attention_mask(allowed_keys(roles, roles, layout, window=self.window))
        out = self.model.base_model(input_ids=input_ids, attention_mask=mask,
                                    position_ids=position_ids(roles), cache=cache,
                                    use_cache=True)
        cols = torch.arange(input_mask.shape[1], device=self.device)
        last = torch.where(input_mask, cols, 0).max(1).values  # last input column, either padding
        last_hidden = out.last_hidden_state[torch.arange(len(last), device=self.device), last]
        return PrefixState(input_mask=input_mask, cache=cache, roles=roles, last_hidden=last_hidden)

    @torch.no_grad()
    def logits_from_prefix(self, state: PrefixState, fed: torch.Tensor, layout: str,
                           shift: bool) -> torch.Tensor:
        """Target logits ``[B, Lt, V]`` given a prefix state; equal to :meth:`target_logits`."""
        fed = fed.to(self.device)
        if self.is_encoder_decoder:
            full = torch.ones_like(fed, dtype=torch.bool)
            return self._enc_dec_logits(None, state.input_mask, fed, full, layout, shift,
                                        state.encoder_out)
        return self.model.get_output_embeddings()(self.hidden_from_prefix(state, fed, layout, shift))

    @torch.no_grad()
    def hidden_from_prefix(self, state: PrefixState, fed: torch.Tensor, layout: str,
                           shift: bool) -> torch.Tensor:
        """Decoder-only: the final hidden states ``[B, Lt, D]`` that predict each target slot.

        Apply :meth:`head` to (chunks of) them: full-vocabulary logits for every position need
        not exist at once.
        """
        fed = fed.to(self.device)
        n_in, n_tg = state.roles.shape[1], fed.shape[1]
        roles = torch.cat([state.roles, torch.full_like(fed, TARGET)], dim=1)
        pos = position_ids(roles)[:, n_in:]
        query_pos = torch.arange(n_in, n_in + n_tg, device=self.device)
        allowed = allowed_keys(roles[:, n_in:], roles, layout, query_pos=query_pos,
                               window=self.window)
        hidden = self.model.base_model(
            input_ids=fed, attention_mask=self.attention_mask(allowed), position_ids=pos,
            cache=state.cache, use_cache=True,
        ).last_hidden_state
        state.cache.crop(-n_tg)
        if shift:
            hidden = torch.cat([state.last_hidden[:, None], hidden[:, :-1]], dim=1)
        return hidden

    @torch.no_grad()
    def extend_prefix(self, state: PrefixState, tokens: torch.Tensor) -> PrefixState:
        """Append finished target tokens ``[B, n]`` to a prefix state: they see the cache and
        each other (a clean block of block diffusion); their keys and values stay cached and
        the last one's hidden state predicts the next token under ``shift``."""
        tokens = tokens.to(self.device)
        roles = torch.cat([state.roles, torch.full_like(tokens, TARGET)], dim=1)
        n = tokens.shape[1]
        query_pos = torch.arange(roles.shape[1] - n, roles.shape[1], device=self.device)
        allowed = allowed_keys(roles[:, -n:], roles, "diffusion", query_pos=query_pos)
        hidden = self.model.base_model(
            input_ids=tokens, attention_mask=self.attention_mask(allowed),
            position_ids=position_ids(roles)[:, -n:], cache=state.cache, use_cache=True,
        ).last_hidden_state
        return PrefixState(input_mask=state.input_mask, cache=state.cache, roles=roles,
                           last_hidden=hidden[:, -1])

    @torch.no_grad()
    def extend_and_hidden(self, state: PrefixState, clean: torch.Tensor, fed: torch.Tensor,
                          layout: str, shift: bool) -> tuple[PrefixState, torch.Tensor]:
        """:meth:`extend_prefix` with ``clean`` and :meth:`hidden_from_prefix` of ``fed`` over
        the result, in one forward pass: the clean block sees the cache and itself (not ``fed``),
        ``fed`` sees the cache, the clean block and itself, as in two separate passes."""
        clean, fed = clean.to(self.device), fed.to(self.device)
        n, m, n_in = clean.shape[1], fed.shape[1], state.roles.shape[1]
        roles = torch.cat([state.roles, torch.full_like(clean, TARGET),
                           torch.full_like(fed, TARGET)], dim=1)
        cols = torch.arange(n_in, n_in + n + m, device=self.device)
        keys = allowed_keys(roles[:, n_in:n_in + n], roles[:, :n_in + n], "diffusion",
                            query_pos=cols[:n])
        allowed = torch.cat([
            torch.cat([keys, torch.zeros_like(keys[:, :, :m])], dim=2),  # clean: not fed
            allowed_keys(roles[:, n_in + n:], roles, layout, query_pos=cols[n:]),
        ], dim=1)
        hidden = self.model.base_model(
            input_ids=torch.cat([clean, fed], dim=1), attention_mask=self.attention_mask(allowed),
            position_ids=position_ids(roles)[:, n_in:], cache=state.cache, use_cache=True,
        ).last_hidden_state
        state.cache.crop(-m)
        extended = PrefixState(input_mask=state.input_mask, cache=state.cache,
                               roles=roles[:, :n_in + n], last_hidden=hidden[:, n - 1])
        out = hidden[:, n:]
        if shift:
            out = torch.cat([extended.last_hidden[:, None], out[:, :-1]], dim=1)
        return extended, out

    def head(self, hidden: torch.Tensor) -> torch.Tensor:
        """The output projection (hidden states → vocabulary logits)."""
        return self.model.get_output_embeddings()(hidden)

    # ---- encoder–decoder ---------------------------------------------------------------------

    def _enc_dec_logits(self, input_ids, input_mask, fed, target_mask, layout, shift, encoder_out):
        dec_in = _shift_right(fed, self.model.config.decoder_start_token_id) if shift else fed
        roles = torch.where(target_mask, TARGET, PAD)
        dec_layout = "causal" if layout in ("causal", "prefix") else "diffusion"
        mask = self.attention_mask(allowed_keys(roles, roles, dec_layout))
        return self.model(
            input_ids=input_ids, attention_mask=input_mask.long(), encoder_outputs=encoder_out,
            decoder_input_ids=dec_in, decoder_attention_mask=mask, use_cache=False,
        ).logits


# Model types whose attention adds ALiBi biases computed from a 2-D padding mask.
_ALIBI_TYPES = ("bloom", "mpt", "baichuan")


def attention_window(config) -> int | None:
    """The sliding window every layer of a decoder uses (None: full attention everywhere).

    Raises ``Ar2DiffError`` naming the feature for attention the layouts cannot express:
    ALiBi position biases, and layers that mix sliding-window and full (or other) attention.
    """
    kind = getattr(config, "model_type", "") or type(config).__name__
    if (kind in _ALIBI_TYPES or getattr(config, "alibi", False)
            or getattr(getattr(config, "attn_config", None), "alibi", False)):
        raise Ar2DiffError(f"model type {kind}: ALiBi attention biases are not supported by "
                           "ar2diff's attention layouts; use a model with rotary or learned positions")
    window = getattr(config, "sliding_window", None)
    layer_types = set(getattr(config, "layer_types", None) or ())
    if layer_types - {"full_attention", "sliding_attention"} or len(layer_types) > 1:
        raise Ar2DiffError(
            f"model type {kind}: its layers mix attention kinds ({', '.join(sorted(layer_types))}"
            f"{f', window {window}' if window else ''}), which one attention layout cannot "
            "express; use a model whose layers all attend alike"
        )
    if layer_types == {"full_attention"} or getattr(config, "use_sliding_window", True) is False:
        return None
    return int(window) if isinstance(window, int) and window > 0 else None


def _shift_right(ids: torch.Tensor, start_id: int) -> torch.Tensor:
    start = torch.full_like(ids[:, :1], start_id)
    return torch.cat([start, ids[:, :-1]], dim=1)


def _pack(batch: Batch, fed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Lay each row out as ``[input][target][padding]`` with no gap between input and target.

    Returns tokens ``[B, S]``, roles ``[B, S]`` and the column of every target slot ``[B, Lt]``.
    """
    b, n_in = batch.input_ids.shape
    n_tg = fed.shape[1]
    dev = fed.device
    in_len = batch.input_mask.sum(1)
    width = int((in_len + batch.target_mask.sum(1)).max())
    tgt_cols = in_len[:, None] + torch.arange(n_tg, device=dev)[None]
    tokens = torch.zeros((b, width + 1), dtype=torch.long, device=dev)
    roles = torch.zeros((b, width + 1), dtype=torch.long, device=dev)
    sink = torch.full_like(tgt_cols, width)  # unused slots land in a dropped column
    in_cols = torch.where(batch.input_mask, torch.arange(n_in, device=dev)[None], width)
    tg_cols = torch.where(batch.target_mask, tgt_cols, sink)
    tokens.scatter_(1, in_cols, batch.input_ids)
    tokens.scatter_(1, tg_cols, fed)
    roles.scatter_(1, in_cols, torch.where(batch.input_mask, INPUT, PAD))
    roles.scatter_(1, tg_cols, torch.where(batch.target_mask, TARGET, PAD))
    return tokens[:, :width], roles[:, :width], tgt_cols.clamp(max=width - 1)


def _pack_blocks(batch: Batch, fed: torch.Tensor, block: int) -> tuple[torch.Tensor, ...]:
    """Lay each row out as ``[input][noisy target][clean target][padding]``.

    Returns tokens, roles, block index, clean flag and position ids ``[B, S]``, and the
    columns of the noisy and clean target slots ``[B, Lt]``; both copies of a target token share
    its position id.
    """
    b, n_in = batch.input_ids.shape
    n_tg = fed.shape[1]
    dev = fed.device
    in_len = batch.input_mask.sum(1)
    width = int((in_len + 2 * n_tg).max()) + 1  # the last column is a sink for unused slots
    j = torch.arange(n_tg, device=dev)[None]
    noisy_cols, clean_cols = in_len[:, None] + j, in_len[:, None] + n_tg + j
    in_cols = torch.where(batch.input_mask, torch.arange(n_in, device=dev)[None], width - 1)
    tokens = torch.zeros((b, width), dtype=torch.long, device=dev)
    roles, blocks = torch.zeros_like(tokens), torch.full_like(tokens, -1)
    clean = torch.zeros_like(tokens, dtype=torch.bool)
    positions = torch.zeros_like(tokens)
    tgt_role = torch.where(batch.target_mask, TARGET, PAD)
    for cols, values, is_clean in ((noisy_cols, fed, False), (clean_cols, batch.target_ids, True)):
        cols = torch.where(batch.target_mask, cols, width - 1)
        tokens.scatter_(1, cols, values)
        roles.scatter_(1, cols, tgt_role)
        blocks.scatter_(1, cols, (j // block).expand(b, -1))
        clean.scatter_(1, cols, torch.full_like(cols, is_clean, dtype=torch.bool))
        positions.scatter_(1, cols, (in_len[:, None] + j).expand(b, -1))
    tokens.scatter_(1, in_cols, batch.input_ids)
    roles.scatter_(1, in_cols, torch.where(batch.input_mask, INPUT, PAD))
    positions.scatter_(1, in_cols, (batch.input_mask.cumsum(1) - 1).clamp(min=0))
    roles[:, -1] = PAD
    return (tokens, roles, blocks, clean, positions, noisy_cols, clean_cols)
