"""The fast AR path: a static KV cache and a lean one-token step for common decoder-only models.

A ``transformers`` forward pays a fixed cost on every call (mask building, cache bookkeeping,
output classes, hooks on many small modules) that dominates one-token steps of a small model on a
CPU. Here the prompt runs through the model once as usual (its 4-D mask carries the layout and the
padding); its keys and values are then copied into preallocated per-layer buffers
``[B, kv_heads, L, head_dim]`` and every later token runs through a plain function of the model's
own weights, written for two families:

* Llama-style (``LlamaForCausalLM``, ``Qwen2ForCausalLM``, ``MistralForCausalLM``): RMSNorm,
  rotary positions (from the model's own rotary module), grouped-query attention, SwiGLU;
* ``GPT2LMHeadModel``: LayerNorm, learned positions, fused QKV.

The step does what the model's forward does, op for op, except that attention always runs
through ``scaled_dot_product_attention`` with one query (the keys of grouped heads packed as in
``transformers``); in fp32 it decodes the same tokens as ``transformers``' greedy ``generate``.

Where it does not apply (encoder–decoder models, other families, rotary scalings that depend on
the length, sliding windows, a model in training mode, autocast, weights on several devices),
:func:`fast_decoder` returns ``None`` and the caller keeps its generic path.

On a CPU, bf16 weights are reordered once into oneDNN's blocked layout (the same kernel as
``F.linear``, bitwise equal results, read about 1.7× faster for one-row inputs), Q/K/V and
gate/up fused, and kept per model until a weight changes (a copy of the linear weights, as long
as the model lives). With ``compile`` (on by default on CUDA) the step runs at fixed shapes under
``torch.compile`` (CUDA graphs on a GPU); if compiling fails the eager step takes over.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from ar2diff.models.attention import position_ids
from ar2diff.models.backbone import Backbone
from ar2diff.sampling.packed_linear import PackedLinear, Projections, linear, packing_works

logger = logging.getLogger(__name__)

_LLAMA_LIKE = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")
_GPT2 = ("GPT2LMHeadModel",)
_STATIC_ROPE = ("default", "linear", "llama3")  # inverse frequencies that do not depend on the length


class _Lean:
    """The weights one step needs, prepared once per model; :meth:`hidden` runs one token per row
    (appending its key and value at cache column ``t``) to the final hidden state ``[B, D]``."""

    kv_heads: int
    head_dim: int
    n_layers: int
    head: PackedLinear  # the output projection

    def hidden(self, tokens, pos, t, keys, values, mask, span, tables):  # pragma: no cover
        raise NotImplementedError

    def tables(self, n_positions: int, device: torch.device) -> tuple[torch.Tensor, ...]:
        """Per-position tables the step indexes (rotary cos / sin); none by default."""
        return ()


def _rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotary positions as ``transformers`` applies them (rotate-half convention)."""
    half = x.shape[-1] // 2
    return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin


class _LlamaLean(_Lean):
    def __init__(self, model: nn.Module, pack: bool):
        base = model.base_model
        cfg = model.config
        self.embed = base.embed_tokens.weight
        self.rotary = base.rotary_emb
        self.n_heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = base.layers[0].self_attn.head_dim
        self.n_layers = len(base.layers)
        self.layers = [(layer.input_layernorm,
                        Projections([layer.self_attn.q_proj, layer.self_attn.k_proj,
                                      layer.self_attn.v_proj], pack),
                        linear(layer.self_attn.o_proj, pack), layer.post_attention_layernorm,
                        Projections([layer.mlp.gate_proj, layer.mlp.up_proj], pack),
                        layer.mlp.act_fn, linear(layer.mlp.down_proj, pack),
                        layer.self_attn.scaling) for layer in base.layers]
        self.norm = base.norm
        self.head = _head(model, pack)

    def tables(self, n_positions, device):
        pos = torch.arange(n_positions, device=device)[None]
        cos, sin = self.rotary(torch.zeros((), dtype=self.embed.dtype, device=device), pos)
        return cos[0], sin[0]

    def hidden(self, tokens, pos, t, keys, values, mask, span, tables):
        b, hd, kvh = tokens.shape[0], self.head_dim, self.kv_heads
        n_q = self.n_heads * hd
        cos, sin = tables[0][pos][:, None], tables[1][pos][:, None]  # [B, 1, hd]
        x = F.embedding(tokens, self.embed)  # [B, D]
        for i, (norm1, qkv, o_proj, norm2, gate_up, act, down, scale) in enumerate(self.layers):
            q, k, v = qkv(norm1(x))
            q, k, v = q.view(b, -1, hd), k.view(b, kvh, hd), v.view(b, kvh, hd)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            keys[i].index_copy_(2, t, k[:, :, None])
            values[i].index_copy_(2, t, v[:, :, None])
            att = F.scaled_dot_product_attention(
                q.view(b, kvh, -1, hd), keys[i][:, :, :span], values[i][:, :, :span],
                attn_mask=mask, scale=scale)
            x = x + o_proj(att.reshape(b, n_q))
            g, u = gate_up(norm2(x))
            x = x + down(act(g) * u)
        return self.norm(x)

    def block_hidden(self, tokens, pos, parts, tables):
        """Several tokens per row ``[B, m]`` (positions ``pos`` ``[B, m]``) over the caches of
        ``parts``: for each group of rows ``(rows, t, keys, values, mask)`` (a slice of the
        batch and its own static cache), the tokens' keys and values are written at cache
        columns ``t .. t + m - 1`` and they attend to columns ``:t + m`` under ``mask``
        (``[1, 1, m, t + m]``, None: all). The linear layers run over all rows at once,
        attention group by group, each as it runs alone. Final hidden states ``[B, m, D]``."""
        b, m = tokens.shape
        hd, kvh = self.head_dim, self.kv_heads
        groups = self.n_heads // kvh
        cos, sin = tables[0][pos][:, :, None], tables[1][pos][:, :, None]  # [B, m, 1, hd]
        masks = [mask if mask is None or groups == 1 else mask.repeat(1, 1, groups, 1)
                 for *_, mask in parts]  # query rows are (head of the group, token)
        x = F.embedding(tokens, self.embed).view(b * m, -1)
        for i, (norm1, qkv, o_proj, norm2, gate_up, act, down, scale) in enumerate(self.layers):
            q, k, v = qkv(norm1(x))
            q, k, v = q.view(b, m, -1, hd), k.view(b, m, kvh, hd), v.view(b, m, kvh, hd)
            q, k = _rope(q, cos, sin), _rope(k, cos, sin)
            outs = []
            for (rows, t, keys, values, _), mask in zip(parts, masks, strict=True):
                r = rows.stop - rows.start
                keys[i][:, :, t:t + m] = k[rows].transpose(1, 2)
                values[i][:, :, t:t + m] = v[rows].transpose(1, 2)
                qr = q[rows].reshape(r, m, kvh, groups, hd).permute(0, 2, 3, 1, 4)
                att = F.scaled_dot_product_attention(
                    qr.reshape(r, kvh, -1, hd), keys[i][:, :, :t + m], values[i][:, :, :t + m],
                    attn_mask=mask, scale=scale)
                outs.append(att.view(r, kvh, groups, m, hd).permute(0, 3, 1, 2, 4).reshape(r * m, -1))
            x = x + o_proj(outs[0] if len(outs) == 1 else torch.cat(outs))
            g, u = gate_up(norm2(x))
            x = x + down(act(g) * u)
        return self.norm(x).view(b, m, -1)


class _GPT2Lean(_Lean):
    def __init__(self, model: nn.Module, pack: bool):
        base = model.base_model
        cfg = model.config
        self.wte, self.wpe = base.wte.weight, base.wpe.weight
        self.n_heads = cfg.num_attention_heads
        self.kv_heads, self.head_dim = self.n_heads, cfg.hidden_size // self.n_heads
        self.n_layers = len(base.h)
        self.layers = [(block.ln_1, self._conv(block.attn.c_attn, pack),
                        self._conv(block.attn.c_proj, pack), block.attn.scaling, block.ln_2,
                        self._conv(block.mlp.c_fc, pack), block.mlp.act,
                        self._conv(block.mlp.c_proj, pack)) for block in base.h]
        self.norm = base.ln_f
        self.head = _head(model, pack)

    @staticmethod
    def _conv(conv: nn.Module, pack: bool):
        """GPT-2's ``Conv1D`` (``addmm(b, x, W)``, ``W`` of shape ``[in, out]``)."""
        if pack:
            return PackedLinear(conv.weight.t().contiguous(), conv.bias, True)
        weight, bias = conv.weight, conv.bias
        return lambda x: torch.addmm(bias, x, weight)

    def hidden(self, tokens, pos, t, keys, values, mask, span, tables):
        b, hd, d = tokens.shape[0], self.head_dim, self.n_heads * self.head_dim
        x = F.embedding(tokens, self.wte) + F.embedding(pos, self.wpe)
        for i, (ln1, c_attn, c_proj, scale, ln2, c_fc, act, mlp_proj) in enumerate(self.layers):
            q, k, v = c_attn(ln1(x)).split(d, dim=-1)
            keys[i].index_copy_(2, t, k.view(b, -1, 1, hd))
            values[i].index_copy_(2, t, v.view(b, -1, 1, hd))
            att = F.scaled_dot_product_attention(
                q.view(b, -1, 1, hd), keys[i][:, :, :span], values[i][:, :, :span],
                attn_mask=mask, scale=scale)
            x = c_proj(att.reshape(b, d)) + x
            x = x + mlp_proj(act(c_fc(ln2(x))))
        return self.norm(x)


def _head(model: nn.Module, pack: bool) -> PackedLinear:
    return linear(model.get_output_embeddings(), pack)


def _family(model: nn.Module, length: int) -> type[_Lean] | None:
    """Which lean step fits ``model`` for ``length`` positions, if any."""
    name, cfg = type(model).__name__, model.config
    if name in _GPT2:
        return None if getattr(cfg, "add_cross_attention", False) else _GPT2Lean
    if name not in _LLAMA_LIKE:
        return None
    if getattr(model.base_model.rotary_emb, "rope_type", "default") not in _STATIC_ROPE:
        return None
    if any(kind != "full_attention" for kind in getattr(cfg, "layer_types", None) or ()):
        return None
    window = getattr(cfg, "sliding_window", None)
    if name == "MistralForCausalLM" and window is not None and window < length:
        return None
    return _LlamaLean


class _Prepared:
    """A lean step per model, kept while the weights it read are unchanged.

    Its key holds each parameter's address and version counter (bumped by in-place updates such
    as an optimizer step or ``load_state_dict``); ``sources`` keeps the storages alive, so that a
    replaced weight cannot come back at the same address.
    """

    def __init__(self, key: tuple, lean: _Lean, sources: list[torch.Tensor]):
        self.key, self.lean, self.sources = key, lean, sources
        self.compiled = None  # the compiled fixed-shape step, built on first use
        self.static = None  # (shape, keys, values, mask): buffers the compiled step reuses


_PREPARED: weakref.WeakKeyDictionary[nn.Module, _Prepared] = weakref.WeakKeyDictionary()


def _prepared(model: nn.Module, family: type[_Lean], pack: bool) -> _Prepared:
    params = list(model.parameters())
    key = (family, pack, tuple((p.data_ptr(), p.dtype, p._version) for p in params))
    entry = _PREPARED.get(model)
    if entry is None or entry.key != key:
        _PREPARED.pop(model, None)  # drop the old copies before making new ones
        entry = _Prepared(key, family(model, pack), [p.detach() for p in params])
        _PREPARED[model] = entry
    return entry


def _applies(backbone: Backbone) -> bool:
    model = backbone.model
    if backbone.is_encoder_decoder or model.training:
        return False
    if torch.is_autocast_enabled(backbone.device.type):
        return False
    if any(hasattr(m, "_hf_hook") for m in model.modules()):  # accelerate offloading / dispatch
        return False
    return len({p.device for p in model.parameters()}) == 1


def left_pad(inputs: Sequence[Sequence[int]], pad_id: int,
             device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids ``[B, W]`` right-aligned in one width (at least 1), and where they are valid."""
    width = max(1, max(len(x) for x in inputs))
    ids = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    valid = torch.zeros_like(ids, dtype=torch.bool)
    for i, x in enumerate(inputs):
        if len(x):
            ids[i, width - len(x):] = torch.tensor(list(x))
            valid[i, width - len(x):] = True
    return ids.to(device), valid.to(device)


class FastDecoder:
    """The decoding state of one batch: a static KV cache, a key mask and the next positions.

    :meth:`start` runs the prompts and :meth:`step` one token per row; both return next-token
    logits ``[B, V]`` on the model's device, in the model's dtype. Column ``t`` of the cache holds
    the ``t``-th token of every row (prompts left-padded to one width); ``mask`` says which
    columns hold a real token, so the newest token attends to every non-padding key, as in every
    layout.
    """

    def __init__(self, backbone: Backbone, entry: _Prepared, inputs: Sequence[Sequence[int]],
                 pad_id: int, layout: str, max_new_tokens: int, compile: bool):
        self.bb, self.entry, self.lean, self.layout = backbone, entry, entry.lean, layout
        self.ids, self.valid = left_pad(inputs, pad_id, backbone.device)
        self.width = self.ids.shape[1]
        self.length = self.width + max_new_tokens
        if compile:  # fewer distinct shapes, fewer compilations
            self.length = -(-self.length // 256) * 256
        self.compile = compile
        self.padded = not bool(self.valid.all())  # without padding the step needs no mask

    @torch.no_grad()
    def start(self) -> torch.Tensor:
        """Run the prompts through the model's own forward; next-token logits ``[B, V]``."""
        lean = self.lean
        state = self.bb.encode_prefix(self.ids, self.valid, self.layout)
        layers = state.cache.layers[: lean.n_layers]
        shape = (len(self.ids), lean.kv_heads, self.length, lean.head_dim)
        self.keys, self.values, self.mask = self._buffers(shape, layers[0].keys.dtype)
        for keys, values, layer in zip(self.keys, self.values, layers, strict=True):
            keys[:, :, : self.width] = layer.keys
            values[:, :, : self.width] = layer.values
        self.mask[:, 0, 0, : self.width] = self.valid
        self.tables = lean.tables(self.length + 1, self.bb.device)
        self.pos = position_ids(state.roles)[:, -1] + 1  # [B]: next positions (padding not counted)
        self.t = self.width  # the cache column of the next token
        self._t = torch.tensor([self.t], device=self.bb.device)
        return lean.head(state.last_hidden)

    def _buffers(self, shape: tuple[int, ...], dtype: torch.dtype):
        """Keys and values per layer, and the key mask ``[B, 1, 1, L]``."""
        dev, n = self.bb.device, self.lean.n_layers
        mask_shape = (shape[0], 1, 1, shape[2])
        if not self.compile:
            return ([torch.empty(shape, dtype=dtype, device=dev) for _ in range(n)],
                    [torch.empty(shape, dtype=dtype, device=dev) for _ in range(n)],
                    torch.zeros(mask_shape, dtype=torch.bool, device=dev))
        # the compiled step (a CUDA graph) wants the same addresses from call to call
        static = self.entry.static
        if static is None or static[0] != (shape, dtype):
            keys = [torch.zeros(shape, dtype=dtype, device=dev) for _ in range(n)]
            values = [torch.zeros(shape, dtype=dtype, device=dev) for _ in range(n)]
            mask = torch.zeros(mask_shape, dtype=torch.bool, device=dev)
            for buf in (*keys, *values, mask):
                torch._dynamo.mark_static_address(buf)
            static = self.entry.static = ((shape, dtype), keys, values, mask)
        for buf in (*static[1], *static[2], static[3]):
            buf.zero_()  # whole-cache attention reads every column: no stale values
        return static[1], static[2], static[3]

    @torch.no_grad()
    def step(self, tokens: torch.Tensor) -> torch.Tensor:
        """Append ``tokens`` ``[B, 1]``; returns the next-token logits ``[B, V]``."""
        tokens = tokens.reshape(-1).to(self.bb.device)
        self.mask[:, 0, 0, self.t] = True
        self._t.fill_(self.t)
        logits = self._compiled(tokens) if self.compile else None
        if logits is None:  # eager: attend to the filled columns only
            span = self.t + 1
            mask = self.mask[..., :span] if self.padded else None
            hidden = self.lean.hidden(tokens, self.pos, self._t, self.keys, self.values, mask,
                                      span, self.tables)
            logits = self.lean.head(hidden)
        self.pos = self.pos + 1
        self.t += 1
        return logits

    def _compiled(self, tokens: torch.Tensor) -> torch.Tensor | None:
        """The compiled step's logits; ``None`` (and eager from now on) if compiling fails."""
        entry = self.entry
        if entry.compiled is None:
            entry.compiled = _compile(self.lean, self.bb.device.type)
        if entry.compiled is not False:
            try:
                if self.bb.device.type == "cuda":
                    torch.compiler.cudagraph_mark_step_begin()
                return entry.compiled(tokens, self.pos, self._t, self.keys, self.values,
                                      self.mask, self.tables).clone()
            except Exception as err:  # noqa: BLE001 - whatever the compiler raises
                logger.warning("the compiled AR step failed (%s: %s); decoding without it",
                               type(err).__name__, err)
                entry.compiled = False
        self.compile = False
        return None


def _compile(lean: _Lean, device_type: str):
    """``torch.compile`` of the fixed-shape step (attention over the whole static cache)."""

    def static_step(tokens, pos, t, keys, values, mask, tables):
        hidden = lean.hidden(tokens, pos, t, keys, values, mask, keys[0].shape[2], tables)
        return lean.head(hidden)

    try:
        mode = "reduce-overhead" if device_type == "cuda" else None
        return torch.compile(static_step, mode=mode, dynamic=False, fullgraph=True)
    except Exception as err:  # noqa: BLE001
        logger.warning("torch.compile unavailable (%s); decoding without compilation", err)
        return False


def _entry(backbone: Backbone, length: int, compile: bool) -> _Prepared | None:
    """The prepared lean step of ``backbone``'s model over ``length`` positions (bf16 weights
    prepacked on a CPU unless compiled), or ``None`` where the fast path does not apply."""
    if not _applies(backbone):
        return None
    family = _family(backbone.model, length)
    if family is None:
        return None
    pack = (backbone.device.type == "cpu" and not compile
            and packing_works(backbone.model.get_input_embeddings().weight.dtype))
    return _prepared(backbone.model, family, pack)


def lean_for(backbone: Backbone, length: int) -> _Lean | None:
    """The eager lean step of ``backbone``'s model over ``length`` positions, or ``None``
    where the fast path does not apply."""
    entry = _entry(backbone, length, compile=False)
    return None if entry is None else entry.lean


@torch.no_grad()
def fast_decoder(backbone: Backbone, inputs: Sequence[Sequence[int]], pad_id: int, layout: str,
                 max_new_tokens: int, compile: bool | None = None) -> FastDecoder | None:
    """A :class:`FastDecoder` for ``inputs``, or ``None`` where the fast path does not apply.

    ``compile``: ``None`` compiles on CUDA only.
    """
    if compile is None:
        compile = backbone.device.type == "cuda"
    width = max(1, max(len(x) for x in inputs))
    entry = _entry(backbone, width + max_new_tokens, compile)
    if entry is None:
        return None
    return FastDecoder(backbone, entry, inputs, pad_id, layout, max_new_tokens, compile)
