"""Autoregressive decoding with a KV cache: greedy, temperature / top-p sampling and beam search.

Inputs of different lengths are left-padded; padding is masked and does not shift positions, so
a batch decodes the same tokens as each input alone. Every sequence stops at EOS. Sampling draws
from one generator per (input, sample index), so results do not depend on batching.

Greedy decoding and sampling of the decoder-only families :mod:`ar2diff.sampling.fast_ar` knows
(Llama, Qwen2, Mistral, GPT-2) take its fast path (static KV cache, lean one-token step); other
models, and beam search, run :class:`_IncrementalDecoder` (the model's own forward, one call per
token, with a growing cache).
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache, EncoderDecoderCache
from transformers.modeling_outputs import BaseModelOutput

from ar2diff.models.attention import PAD, TARGET, position_ids
from ar2diff.models.backbone import Backbone
from ar2diff.rng import example_generator, prompt_key
from ar2diff.sampling.fast_ar import fast_decoder, left_pad


@dataclass
class ARSampling:
    """How to decode: ``greedy`` | ``sample`` | ``beam``."""

    strategy: str = "greedy"
    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 1.0
    num_beams: int = 4
    length_penalty: float = 1.0
    completions: int = 1
    seed: int = 0
    layout: str = "causal"  # attention layout over the input: causal | prefix
    fast: bool = True  # the fast path (greedy / sample) where it applies
    compile: bool | None = None  # torch.compile the fast step; None: on CUDA only


class _IncrementalDecoder:
    """Feeds one token per sequence at a time through a cached backbone."""

    def __init__(self, backbone: Backbone, inputs: Sequence[Sequence[int]], pad_id: int,
                 layout: str):
        self.bb = backbone
        self.layout = layout
        self.ids, self.valid = left_pad(inputs, pad_id, backbone.device)

    @torch.no_grad()
    def start(self) -> torch.Tensor:
        """Run the prompts; returns next-token logits ``[B, V]``."""
        model = self.bb.model
        if self.bb.is_encoder_decoder:
            enc = model.get_encoder()(input_ids=self.ids, attention_mask=self.valid.long())
            self.encoder_out = enc.last_hidden_state
            self.cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
            start = torch.full((len(self.ids), 1), model.config.decoder_start_token_id)
            return self.step(start)
        state = self.bb.encode_prefix(self.ids, self.valid, self.layout)
        self.roles, self.cache = state.roles, state.cache
        self.next_pos = position_ids(self.roles)[:, -1:] + 1
        return self.bb.head(state.last_hidden).float().cpu()

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``[B, 1]``; returns the next-token logits ``[B, V]`` (on the CPU)."""
        model = self.bb.model
        tokens = tokens.to(self.bb.device)
        if self.bb.is_encoder_decoder:
            out = model(encoder_outputs=BaseModelOutput(last_hidden_state=self.encoder_out),
                        attention_mask=self.valid.long(), decoder_input_ids=tokens,
                        cache=self.cache, use_cache=True)
            self.cache = out.past_key_values
            return out.logits[:, -1].float().cpu()
        # the newest token is the last position: in every layout it sees all non-padding keys
        # (within a sliding-window model's window)
        self.roles = torch.cat([self.roles, torch.full_like(tokens, TARGET)], dim=1)
        allowed = (self.roles != PAD)[:, None, :]
        if self.bb.window is not None:
            cols = torch.arange(self.roles.shape[1], device=self.roles.device)
            allowed = allowed & (cols > self.roles.shape[1] - 1 - self.bb.window)
        hidden = model.base_model(
            input_ids=tokens, attention_mask=self.bb.attention_mask(allowed),
            position_ids=self.next_pos, cache=self.cache, use_cache=True,
        ).last_hidden_state
        self.next_pos = self.next_pos + 1
        return self.bb.head(hidden[:, -1]).float().cpu()

    def select(self, rows: torch.Tensor) -> None:
        """Keep (and reorder) the given batch rows, e.g. for beam search."""
        rows = rows.to(self.bb.device)
        self.cache.reorder_cache(rows)
        self.ids, self.valid = self.ids[rows], self.valid[rows]
        if self.bb.is_encoder_decoder:
            self.encoder_out = self.encoder_out[rows]
        else:
            self.roles, self.next_pos = self.roles[rows], self.next_pos[rows]


def _top_p_filter(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    if top_p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(descending=True)
    probs = sorted_logits.softmax(-1)
    drop = probs.cumsum(-1) - probs > top_p  # keep the smallest set whose mass reaches top_p
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(-1, order, sorted_logits)


def _sample(logits: torch.Tensor, cfg: ARSampling, gens: list[torch.Generator]) -> torch.Tensor:
    """One draw per row (CPU logits ``[B, V]``), each from its own generator."""
    probs = _top_p_filter(logits / cfg.temperature, cfg.top_p).softmax(-1)
    return torch.cat([torch.multinomial(p[None], 1, generator=g)[0] for p, g in zip(probs, gens,
                                                                                     strict=True)])


TokenHook = Callable[[int, torch.Tensor], Collection[int] | None]
"""Called after every AR step with (step index, the token each row took ``[rows]``, pad once a
row has ended); rows are the inputs' completions in order. It may return rows to end after this
token (e.g. at a stop sequence); raising from it ends decoding."""


@torch.no_grad()
def ar_generate(backbone: Backbone, inputs: Sequence[Sequence[int]], cfg: ARSampling,
                eos_id: int, pad_id: int, on_token: TokenHook | None = None) -> list[list[list[int]]]:
    """``cfg.completions`` continuations per input (token ids, EOS excluded), in input order.

    ``on_token`` (greedy and sampling) sees each step's tokens; it costs a host read per step.
    """
    if cfg.strategy not in ("greedy", "sample", "beam"):
        raise ValueError(f"unknown AR strategy {cfg.strategy!r}; use greedy, sample or beam")
    if cfg.strategy == "beam":
        return [[seq] for seq in _beam_search(backbone, inputs, cfg, eos_id, pad_id)]
    n = cfg.completions
    rows = [x for x in inputs for _ in range(n)]
    gens = [example_generator(cfg.seed, prompt_key(x), k) for x in inputs for k in range(n)]
    dec = (fast_decoder(backbone, rows, pad_id, cfg.layout, cfg.max_new_tokens, cfg.compile)
           if cfg.fast and cfg.max_new_tokens > 0 else None)
    if dec is None:
        dec = _IncrementalDecoder(backbone, rows, pad_id, cfg.layout)
    logits = dec.start()
    device = logits.device
    greedy = cfg.strategy == "greedy" or cfg.temperature == 0
    out = torch.full((len(rows), max(cfg.max_new_tokens, 0)), pad_id, dtype=torch.long,
                     device=device)
    done = torch.zeros(len(rows), dtype=torch.bool, device=device)
    ends = [cfg.max_new_tokens] * len(rows)  # rows ended by the hook keep their tokens so far
    for t in range(cfg.max_new_tokens):
        # greedy picks on the device; sampling draws on the CPU from the per-row generators
        tok = (logits.argmax(-1) if greedy
               else _sample(logits.float().cpu(), cfg, gens).to(device))
        tok = torch.where(done, pad_id, tok)
        out[:, t] = tok
        done |= tok == eos_id
        if on_token is not None:
            for r in on_token(t, tok.cpu()) or ():
                ends[r] = min(ends[r], t + 1)
                done[r] = True
        if bool(done.all()) or t + 1 == cfg.max_new_tokens:
            break
        logits = dec.step(tok[:, None])
    seqs = [_until_eos(row[:end].tolist(), eos_id) for row, end in zip(out.cpu(), ends, strict=True)]
    return [seqs[i * n:(i + 1) * n] for i in range(len(inputs))]


def _until_eos(tokens: list[int], eos_id: int) -> list[int]:
    return tokens[: tokens.index(eos_id)] if eos_id in tokens else tokens


def _beam_search(backbone: Backbone, inputs: Sequence[Sequence[int]], cfg: ARSampling,
                 eos_id: int, pad_id: int) -> list[list[int]]:
    """Beam search; finished beams keep their score and compete with open ones.

    Hypotheses are ranked by log-probability / length ** length_penalty.
    """
    k, b = cfg.num_beams, len(inputs)
    dec = _IncrementalDecoder(backbone, [x for x in inputs for _ in range(k)], pad_id, cfg.layout)
    logp = dec.start().log_softmax(-1)
    scores = torch.full((b, k), float("-inf"))
    scores[:, 0] = 0.0  # identical beams at the start: expand only the first
    seqs = torch.zeros((b * k, 0), dtype=torch.long)
    done = torch.zeros(b * k, dtype=torch.bool)
    lengths = torch.zeros(b * k)
    vocab = logp.shape[-1]
    for t in range(cfg.max_new_tokens):
        frozen = torch.full_like(logp, float("-inf"))
        frozen[:, pad_id] = 0.0
        logp = torch.where(done[:, None], frozen, logp)
        total = (scores.view(-1, 1) + logp).view(b, k * vocab)
        top, idx = total.topk(k, dim=-1)
        beam = idx // vocab + torch.arange(b)[:, None] * k
        tok = (idx % vocab).view(-1)
        beam = beam.view(-1)
        seqs = torch.cat([seqs[beam], tok[:, None]], dim=1)
        was_done = done[beam]
        lengths = lengths[beam] + (~was_done).float()
        done = was_done | (tok == eos_id)
        scores = top
        if bool(done.all()) or t + 1 == cfg.max_new_tokens:
            break
        dec.select(beam)
        logp = dec.step(tok[:, None]).log_softmax(-1)
    norm = scores.view(-1) / lengths.clamp(min=1) ** cfg.length_penalty
    best = norm.view(b, k).argmax(-1) + torch.arange(b) * k
    return [_until_eos(seqs[i].tolist(), eos_id) for i in best.tolist()]
