"""Text in, text out: one object that decodes a loaded model by AR or by diffusion."""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from ar2diff.errors import Ar2DiffError
from ar2diff.models.backbone import Backbone
from ar2diff.models.factory import load_any
from ar2diff.sampling.autoregressive import ARSampling, ar_generate
from ar2diff.sampling.diffusion import DiffusionSampling, diffusion_generate
from ar2diff.tokenization import special_ids


@dataclass
class DecodeOptions:
    """Decoding options shared by the CLI, evaluation and benchmarks."""

    mode: str | None = None  # ar | diffusion; default: what the model was trained for
    steps: int | None = None  # diffusion steps T
    num_return: int = 1  # completions returned per prompt (e.g. n for pass@k)
    parallel: int | None = None  # diffusion: N samples denoised in parallel, best one returned
    temperature: float | None = None
    max_new_tokens: int | None = None
    seed: int = 0
    strategy: str = "greedy"  # AR: greedy | sample | beam
    top_p: float = 1.0
    num_beams: int = 4
    chat: bool | None = None  # apply the tokenizer's chat template (default: if it has one)
    early_stop: bool = False  # diffusion: stop an input once a step changes none of its samples
    repetition_penalty: float | None = None  # diffusion; default: the model's (1 = off)
    block_length: int | None = None  # masked diffusion; default: the model's (0 = one block)


class TextGenerator:
    """A model, its tokenizer and metadata, ready to decode text by AR or by diffusion."""

    def __init__(self, model, tokenizer, meta: dict):
        self.backbone = Backbone(model.eval())
        self.tokenizer, self.meta = tokenizer, meta
        self.ids = special_ids(tokenizer)

    @classmethod
    def load(cls, spec: str, dtype: torch.dtype | None = None) -> TextGenerator:
        """From an ar2diff model folder or any pretrained spec (folder, .gguf, hub id, alias)."""
        return cls(*load_any(spec, dtype))

    def encode_prompt(self, prompt: str, chat: bool | None) -> list[int]:
        """Prompt text → ids (through the chat template when asked); checks the length."""
        if not prompt.strip():
            raise Ar2DiffError("the prompt is empty; pass some text with --prompt")
        ids = self._encode(prompt, chat)
        limit = getattr(self.backbone.model.config, "max_position_embeddings", None) or getattr(
            self.backbone.model.config, "n_positions", None)
        if limit and len(ids) >= limit:
            raise Ar2DiffError(f"the prompt is too long: {len(ids)} tokens, the model takes at most "
                               f"{limit} positions (prompt and output); shorten it")
        return ids

    def _encode(self, prompt: str, chat: bool | None) -> list[int]:
        tok = self.tokenizer
        use_chat = bool(getattr(tok, "chat_template", None)) if chat is None else chat
        if use_chat:
            if not getattr(tok, "chat_template", None):
                raise Ar2DiffError("--chat: this model's tokenizer has no chat template")
            text = tok.apply_chat_template([{"role": "user", "content": prompt}], tokenize=False,
                                           add_generation_prompt=True)
            return tok.encode(text, add_special_tokens=False)
        return tok.encode(prompt, add_special_tokens=False)

    def generate_ids(self, inputs: list[list[int]], opts: DecodeOptions) -> list[list[list[int]]]:
        """Token ids in → ``[prompt][completion]`` token ids out (``opts.num_return`` each).

        Diffusion returns independent runs (seeds ``seed``, ``seed + 1``, …), each the best of
        ``opts.parallel`` samples.
        """
        mode = opts.mode or self.meta.get("kind", "ar")
        defaults = self.meta.get("sample", {})
        if mode == "ar":
            cfg = ARSampling(
                strategy=opts.strategy,
                max_new_tokens=opts.max_new_tokens or defaults.get("max_new_tokens", 64),
                temperature=1.0 if opts.temperature is None else opts.temperature,
                top_p=opts.top_p, num_beams=opts.num_beams, samples=opts.num_return, seed=opts.seed,
                attention=self.meta.get("attention", "causal") if self.meta.get("kind") == "ar"
                else "prefix",
            )
            return ar_generate(self.backbone, inputs, cfg, self.ids["eos"], self.ids["pad"])
        if mode != "diffusion":
            raise Ar2DiffError(f"--mode {mode!r}: choose ar or diffusion")
        cfg = self.diffusion_config(opts)
        out = []
        for k in range(opts.num_return):
            res = diffusion_generate(self.backbone, inputs, replace(cfg, seed=opts.seed + k),
                                     self.meta.get("noise_vocab", len(self.tokenizer)),
                                     self.ids["pad"], self.ids["eos"])
            out.append([r.tokens for r in res])
        return [[o[i] for o in out] for i in range(len(inputs))]

    def diffusion_mode(self) -> str:
        """The diffusion mask the model was trained with (``diffusion`` for AR models)."""
        mode = self.meta.get("attention", "diffusion")
        return mode if mode.startswith("diffusion") else "diffusion"

    def diffusion_config(self, opts: DecodeOptions) -> DiffusionSampling:
        defaults = self.meta.get("sample", {})
        if opts.block_length is not None and opts.block_length < 0:
            raise Ar2DiffError(f"--block-length {opts.block_length}: use 0 (one block) or more")
        return DiffusionSampling(
            steps=opts.steps or defaults.get("steps", 10),
            temperature=defaults.get("temperature", 0.2) if opts.temperature is None
            else opts.temperature,
            samples=opts.parallel or defaults.get("samples", 8),
            target_length=opts.max_new_tokens or self.meta.get("target_length", 32),
            shift=bool(self.meta.get("shift", False)),
            seed=opts.seed,
            early_stop=opts.early_stop,
            mode=self.diffusion_mode(),
            repetition_penalty=defaults.get("repetition_penalty", 1.0)
            if opts.repetition_penalty is None else opts.repetition_penalty,
            mask_id=self.meta.get("mask_id") if self.meta.get("noise") == "mask" else None,
            block_length=defaults.get("block_length", 0) if opts.block_length is None
            else opts.block_length,
        )

    def generate(self, prompts: list[str], opts: DecodeOptions) -> list[list[str]]:
        """Prompts in → ``[prompt][sample]`` texts out."""
        inputs = [self.encode_prompt(p, opts.chat) for p in prompts]
        outs = self.generate_ids(inputs, opts)
        return [[self.tokenizer.decode(s, skip_special_tokens=True) for s in row] for row in outs]
