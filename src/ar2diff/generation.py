"""Text in, text out: one object that decodes a loaded model by AR or by diffusion."""

from __future__ import annotations

from dataclasses import replace

import torch

from ar2diff.decoding import DEFAULT_AR_TEMPERATURE, MODES, DecodeOptions
from ar2diff.devices import resolve_device, resolve_dtype
from ar2diff.errors import Ar2DiffError
from ar2diff.models.backbone import Backbone
from ar2diff.models.hub import load_any
from ar2diff.models.meta import ModelMeta
from ar2diff.noise import noise_for
from ar2diff.noise.base import NoiseProcess
from ar2diff.sampling.autoregressive import ARSampling, ar_generate
from ar2diff.sampling.diffusion import DiffusionSampling, diffusion_generate
from ar2diff.tokenization import encode_prompt_text, special_ids


class TextGenerator:
    """A model, its tokenizer and metadata, ready to decode text by AR or by diffusion."""

    def __init__(self, model, tokenizer, meta: ModelMeta):
        self.backbone = Backbone(model.eval())
        self.tokenizer, self.meta = tokenizer, meta
        self.ids = special_ids(tokenizer)
        self._noise: NoiseProcess | None = None

    @classmethod
    def load(cls, spec: str, dtype: torch.dtype | str | None = None,
             device: torch.device | str | None = "auto") -> TextGenerator:
        """From an ar2diff model folder or any pretrained spec (folder, .gguf, hub id, alias),
        loaded straight onto ``device`` (``auto``: the accelerator when there is one) in
        ``dtype`` (``float32`` / ``bfloat16``; default: an ar2diff folder's own, else float32)."""
        return cls(*load_any(spec, resolve_dtype(dtype), resolve_device(device)))

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

    def prompt_format(self, chat: bool | None) -> str:
        """``chat`` or ``raw``: as asked (``chat`` True / False), else the model's recorded
        format (raw for models that record none, as fine-tuning and evaluation long used)."""
        if chat is None:
            return self.meta.prompt_format or "raw"
        return "chat" if chat else "raw"

    def _encode(self, prompt: str, chat: bool | None) -> list[int]:
        return encode_prompt_text(self.tokenizer, prompt, self.prompt_format(chat))

    def mode(self, opts: DecodeOptions) -> str:
        """The decoding mode ``opts`` asks for, or the one the model was trained for."""
        mode = opts.mode or self.meta.mode
        if mode not in MODES:
            raise Ar2DiffError(f"--mode {mode!r}: choose ar or diffusion")
        return mode

    @property
    def noise(self) -> NoiseProcess:
        """The noise process diffusion decoding runs (the model's own; uniform for AR models)."""
        if self._noise is None:
            self._noise = noise_for(self.meta, len(self.tokenizer))
        return self._noise

    def generate_ids(self, inputs: list[list[int]], opts: DecodeOptions) -> list[list[list[int]]]:
        """Token ids in → ``[prompt][completion]`` token ids out (``opts.completions`` each).

        Diffusion returns independent runs (seeds ``seed``, ``seed + 1``, …), each the best of
        ``opts.candidates`` candidates.
        """
        if self.mode(opts) == "ar":
            return ar_generate(self.backbone, inputs, self.ar_config(opts), self.ids["eos"],
                               self.ids["pad"])
        cfg = self.diffusion_config(opts)
        out = []
        for k in range(opts.completions):
            res = diffusion_generate(self.backbone, inputs, replace(cfg, seed=opts.seed + k),
                                     self.noise, self.ids["pad"], self.ids["eos"])
            out.append([r.tokens for r in res])
        return [[o[i] for o in out] for i in range(len(inputs))]

    def ar_config(self, opts: DecodeOptions) -> ARSampling:
        """AR sampling settings: ``opts`` over the model's defaults."""
        meta = self.meta
        return ARSampling(
            strategy=opts.strategy,
            max_new_tokens=opts.max_new_tokens or meta.decoding.max_new_tokens,
            temperature=DEFAULT_AR_TEMPERATURE if opts.temperature is None else opts.temperature,
            top_p=opts.top_p, num_beams=opts.num_beams, completions=opts.completions, seed=opts.seed,
            layout=meta.layout if meta.mode == "ar" else "prefix",
        )

    def diffusion_config(self, opts: DecodeOptions) -> DiffusionSampling:
        """Diffusion sampling settings: ``opts`` over the model's defaults."""
        d = self.meta.decoding
        if opts.block_length is not None and opts.block_length < 0:
            raise Ar2DiffError(f"--block-length {opts.block_length}: use 0 (one block) or more")
        return DiffusionSampling(
            steps=opts.steps or d.steps,
            temperature=d.temperature if opts.temperature is None else opts.temperature,
            candidates=opts.candidates or d.candidates,
            target_length=opts.max_new_tokens or self.meta.target_length,
            shift=self.meta.shift,
            seed=opts.seed,
            early_stop=opts.early_stop,
            layout=self.meta.diffusion_layout,
            repetition_penalty=d.repetition_penalty if opts.repetition_penalty is None
            else opts.repetition_penalty,
            block_length=d.block_length if opts.block_length is None else opts.block_length,
        )

    def generate(self, prompts: list[str], opts: DecodeOptions) -> list[list[str]]:
        """Prompts in → ``[prompt][sample]`` texts out."""
        inputs = [self.encode_prompt(p, opts.chat) for p in prompts]
        outs = self.generate_ids(inputs, opts)
        return [[self.tokenizer.decode(s, skip_special_tokens=True) for s in row] for row in outs]
