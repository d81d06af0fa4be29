"""Text in, text out: one object that decodes a loaded model by AR or by diffusion."""

from __future__ import annotations

from dataclasses import replace

import torch

from ar2diff.decoding import DEFAULT_AR_TEMPERATURE, MODES, DecodeOptions, check_rules
from ar2diff.devices import resolve_device, resolve_dtype
from ar2diff.errors import Ar2DiffError
from ar2diff.models.backbone import Backbone
from ar2diff.models.hub import load_any
from ar2diff.models.meta import ModelMeta
from ar2diff.noise import noise_for
from ar2diff.noise.base import NoiseProcess
from ar2diff.sampling.autoregressive import ARSampling, ar_generate
from ar2diff.sampling.block_diffusion import block_generate
from ar2diff.sampling.diffusion import DiffusionSampling, diffusion_generate
from ar2diff.sampling.steps import StepRecord, ar_canvas, ar_start, diffusion_start
from ar2diff.tokenization import special_ids


class TextGenerator:
    """A model, its tokenizer and metadata, ready to decode text by AR or by diffusion."""

    def __init__(self, model, tokenizer, meta: ModelMeta):
        self.backbone = Backbone(model.eval(), meta.block_size if meta.mode == "diffusion" else 0)
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
        return self._checked(self._encode(prompt, chat))

    def encode_messages(self, messages: list[dict[str, str]]) -> list[int]:
        """Chat messages (``role``, ``content``) → ids through the chat template, ready for the
        assistant's answer; checks the length."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise Ar2DiffError("this model's tokenizer has no chat template; send a plain prompt")
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._checked(tok.encode(text, add_special_tokens=False))

    @property
    def max_positions(self) -> int | None:
        """The most positions (prompt and output) the model takes, if it says."""
        config = self.backbone.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    def _checked(self, ids: list[int]) -> list[int]:
        limit = self.max_positions
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
            sample = block_generate if self.backbone.block_size else diffusion_generate
            res = sample(self.backbone, inputs, replace(cfg, seed=opts.seed + k), self.noise,
                         self.ids["pad"], self.ids["eos"])
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
        rules = {k: getattr(d, k) if getattr(opts, k) is None else getattr(opts, k)
                 for k in ("threshold", "factor", "confidence", "eos_stop", "eos_penalty")}
        check_rules(rules["threshold"], rules["factor"], rules["confidence"], rules["eos_penalty"])
        if (rules["threshold"] or rules["factor"]) and not self.noise.follows_rules:
            raise Ar2DiffError(f"--threshold / --factor decode masked-diffusion models; this one "
                               f"uses {self.noise.name!r} noise")
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
            **rules,
        )

    def decode_with_steps(self, ids: list[int], opts: DecodeOptions) -> tuple[StepRecord, list[int], int]:
        """One prompt decoded with a record of every step: ``(record, completion, row)``, the
        row being the chosen candidate's (AR: greedy or sampling, one completion)."""
        if self.mode(opts) == "ar":
            cfg = replace(self.ar_config(opts), completions=1)
            record = StepRecord(ar_start(1, cfg.max_new_tokens))
            out = ar_generate(self.backbone, [ids], cfg, self.ids["eos"], self.ids["pad"],
                              on_token=lambda t, tok: record.add(ar_canvas(record.canvases[-1], t,
                                                                          tok.tolist())))
            return record, out[0][0], 0
        cfg = self.diffusion_config(opts)
        record = StepRecord(diffusion_start(self.noise, cfg.seed, ids, cfg.candidates,
                                            cfg.target_length))
        sample = block_generate if self.backbone.block_size else diffusion_generate
        res = sample(self.backbone, [ids], cfg, self.noise, self.ids["pad"], self.ids["eos"],
                     on_step=lambda i, s, c: record.add(c))[0]
        return record, res.tokens, res.all_scores.index(res.score)

    def generate(self, prompts: list[str], opts: DecodeOptions) -> list[list[str]]:
        """Prompts in → ``[prompt][sample]`` texts out."""
        inputs = [self.encode_prompt(p, opts.chat) for p in prompts]
        outs = self.generate_ids(inputs, opts)
        return [[self.tokenizer.decode(s, skip_special_tokens=True) for s in row] for row in outs]
