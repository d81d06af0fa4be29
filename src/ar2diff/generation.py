"""Text in, text out: one object that decodes a loaded model by AR or by diffusion."""

from __future__ import annotations

from collections.abc import Sequence
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
from ar2diff.sampling.block_diffusion import sampler_for
from ar2diff.sampling.diffusion import LOGITS_BUDGET, DiffusionSampling
from ar2diff.sampling.diffusion_group import diffusion_generate_group
from ar2diff.sampling.steps import StepRecord, ar_canvas, ar_start, diffusion_start
from ar2diff.stops import StopWatch
from ar2diff.tokenization import encode_prompt_text, special_ids


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
        try:
            prompt.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise Ar2DiffError(f"the prompt is not valid UTF-8 (undecodable byte at character "
                               f"{exc.start}); pass UTF-8 text") from None
        return self._checked(self._encode(prompt, chat))

    def encode_messages(self, messages: list[dict[str, str]]) -> list[int]:
        """Chat messages (``role``, ``content``) → ids through the chat template, ready for the
        assistant's answer; checks the length."""
        tok = self.tokenizer
        if not getattr(tok, "chat_template", None):
            raise Ar2DiffError("this model's tokenizer has no chat template; send a plain prompt")
        text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return self._checked(tok.encode(text, add_special_tokens=False))

    def _checked(self, ids: list[int]) -> list[int]:
        limit = self.position_limit()
        if limit and len(ids) >= limit:
            raise Ar2DiffError(f"the prompt is too long: {len(ids)} tokens, the model takes at most "
                               f"{limit} positions (prompt and output); shorten it")
        return ids

    def position_limit(self) -> int | None:
        """How many positions (prompt and output together) the model takes; None: no fixed limit."""
        config = self.backbone.model.config
        return getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", None)

    def check_fits(self, inputs: list[list[int]], opts: DecodeOptions) -> None:
        """Refuse outputs beyond the model's positions, or too large for the memory there is."""
        mode = self.mode(opts)
        length = (self.ar_config(opts).max_new_tokens if mode == "ar"
                  else self.diffusion_config(opts).target_length)
        flag = "--max-new-tokens"
        prompt = max((len(x) for x in inputs), default=0)
        limit = self.position_limit()
        decoder_only = not getattr(self.backbone.model.config, "is_encoder_decoder", False)
        if limit and decoder_only and prompt + length > limit:
            raise Ar2DiffError(f"{flag} {length}: the prompt ({prompt} tokens) and the output must fit "
                               f"the model's {limit} positions; use at most {max(0, limit - prompt)}")
        need = self.memory_estimate(prompt, length, opts, mode, len(inputs))
        free = available_memory(self.backbone.device)
        if free is not None and need > free:
            raise Ar2DiffError(
                f"{flag} {length}: decoding needs about {need / 2**30:.1f} GiB, but only "
                f"{free / 2**30:.1f} GiB is free on {self.backbone.device}; ask for fewer tokens, "
                "candidates or completions"
            )

    def memory_estimate(self, prompt: int, length: int, opts: DecodeOptions, mode: str,
                        inputs: int = 1) -> int:
        """Bytes a decoding request of ``inputs`` prompts needs at its peak, roughly: float32
        logits and one copy (diffusion: at most ``LOGITS_BUDGET`` at once), the attention
        scores of one layer, the KV cache (an upper bound meant to catch what cannot fit)."""
        config = self.backbone.model.config
        vocab = len(self.tokenizer)
        hidden = getattr(config, "hidden_size", None) or getattr(config, "d_model", 0) or 0
        layers = getattr(config, "num_hidden_layers", None) or getattr(config, "num_layers", 1)
        heads = getattr(config, "num_attention_heads", None) or getattr(config, "num_heads", 1)
        total = prompt + length
        if mode == "ar":
            rows = opts.completions * (opts.num_beams if opts.strategy == "beam" else 1)
            return rows * (2 * layers * total * hidden * 4 + 2 * vocab * 4)
        # a request's runs (prompts x completions, N candidates each) may share passes
        rows = self.diffusion_config(opts).candidates * opts.completions * inputs
        logits = 2 * 4 * min(rows * length * vocab, LOGITS_BUDGET)
        step = logits + rows * length * (2 * heads * total * 4 + 4 * hidden * 4)
        return step + rows * 2 * layers * total * hidden * 4

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

    def generate_ids(self, inputs: list[list[int]], opts: DecodeOptions,
                     stops: Sequence[str] = ()) -> list[list[list[int]]]:
        """Token ids in → ``[prompt][completion]`` token ids out (``opts.completions`` each).

        Diffusion returns independent runs (seeds ``seed``, ``seed + 1``, …), each the best of
        ``opts.candidates`` candidates. With ``stops``, AR decoding of a completion ends at the
        token that completes one of them (its text still holds it: cut with
        :func:`~ar2diff.stops.cut_at_stops`); diffusion decodes its canvas whole.
        """
        self.check_fits(inputs, opts)
        if self.mode(opts) == "ar":
            cfg = self.ar_config(opts)
            watch = StopWatch(self.tokenizer, [list(stops)] * (len(inputs) * cfg.completions),
                              (self.ids["eos"],)) if stops else None
            return ar_generate(self.backbone, inputs, cfg, self.ids["eos"], self.ids["pad"],
                               on_token=None if watch is None else lambda _, tok: watch.ended(tok.tolist()))
        cfg, k = self.diffusion_config(opts), opts.completions
        runs = diffusion_generate_group(  # all runs share passes where that leaves them as alone
            self.backbone, [x for x in inputs for _ in range(k)],
            [opts.seed + j for _ in inputs for j in range(k)], cfg, self.noise, self.ids["pad"],
            self.ids["eos"])
        return [[r.tokens for r in runs[i * k:(i + 1) * k]] for i in range(len(inputs))]

    def ar_config(self, opts: DecodeOptions) -> ARSampling:
        """AR sampling settings: ``opts`` over the model's defaults."""
        meta = self.meta
        return ARSampling(
            strategy=opts.strategy,
            max_new_tokens=meta.decoding.max_new_tokens if opts.max_new_tokens is None
            else opts.max_new_tokens,
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
                 for k in ("threshold", "factor", "confidence", "eos_stop", "eos_penalty",
                           "order")}
        check_rules(rules["threshold"], rules["factor"], rules["confidence"], rules["eos_penalty"],
                    order=rules["order"])
        if ((rules["threshold"] or rules["factor"] or rules["order"] != "confidence")
                and not self.noise.follows_rules):
            raise Ar2DiffError(f"--threshold / --factor / --order decode masked-diffusion models; "
                               f"this one uses {self.noise.name!r} noise")
        if opts.freeze and self.noise.follows_rules:
            raise Ar2DiffError(f"--freeze decodes SUNDAE models; this one uses "
                               f"{self.noise.name!r} noise (use --threshold)")
        return DiffusionSampling(
            steps=d.steps if opts.steps is None else opts.steps,
            temperature=d.temperature if opts.temperature is None else opts.temperature,
            candidates=d.candidates if opts.candidates is None else opts.candidates,
            target_length=self.meta.target_length if opts.max_new_tokens is None
            else opts.max_new_tokens,
            shift=self.meta.shift,
            seed=opts.seed,
            early_stop=opts.early_stop,
            layout=self.meta.diffusion_layout,
            repetition_penalty=d.repetition_penalty if opts.repetition_penalty is None
            else opts.repetition_penalty,
            block_length=d.block_length if opts.block_length is None else opts.block_length,
            freeze=opts.freeze,
            **rules,
        )

    def decode_with_steps(self, ids: list[int], opts: DecodeOptions) -> tuple[StepRecord, list[int], int]:
        """One prompt decoded with a record of every step: ``(record, completion, row)``, the
        row being the chosen candidate's (AR: greedy or sampling, one completion)."""
        if self.mode(opts) == "ar":
            cfg = replace(self.ar_config(opts), completions=1)
            record = StepRecord(ar_start(1, cfg.max_new_tokens))

            def on_token(t: int, tok: torch.Tensor) -> None:  # records; ends no row
                record.add(ar_canvas(record.canvases[-1], t, tok.tolist()))

            out = ar_generate(self.backbone, [ids], cfg, self.ids["eos"], self.ids["pad"],
                              on_token=on_token)
            return record, out[0][0], 0
        cfg = self.diffusion_config(opts)
        record = StepRecord(diffusion_start(self.noise, cfg.seed, ids, cfg.candidates,
                                            cfg.target_length))
        sample = sampler_for(self.backbone)
        res = sample(self.backbone, [ids], cfg, self.noise, self.ids["pad"], self.ids["eos"],
                     on_step=lambda i, s, c: record.add(c))[0]
        return record, res.tokens, res.all_scores.index(res.score)

    def generate(self, prompts: list[str], opts: DecodeOptions) -> list[list[str]]:
        """Prompts in → ``[prompt][sample]`` texts out."""
        inputs = [self.encode_prompt(p, opts.chat) for p in prompts]
        outs = self.generate_ids(inputs, opts)
        return [[self.tokenizer.decode(s, skip_special_tokens=True) for s in row] for row in outs]


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a request on ``device``: the GPU's free memory, or on the CPU the smaller
    of the system's available memory and what the process's memory cgroup still allows."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    if device.type != "cpu":
        return None
    free = []
    try:
        with open("/proc/meminfo") as f:
            info = dict(line.split(":", 1) for line in f)
        free.append(int(info["MemAvailable"].split()[0]) * 1024)
    except (OSError, KeyError, ValueError):
        pass
    for limit, usage in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                         ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                          "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            with open(limit) as f, open(usage) as g:
                text = f.read().strip()
                if text != "max" and int(text) < 1 << 60:
                    free.append(int(text) - int(g.read().strip()))
        except (OSError, ValueError):
            continue
    return min(free) if free else None
