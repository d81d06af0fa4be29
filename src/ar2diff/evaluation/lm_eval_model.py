"""The lm-evaluation-harness model ``ar2diff``: any model ``--model`` accepts, scored and decoded
by AR or by diffusion.

* ``loglikelihood`` / ``loglikelihood_rolling``: exact under AR (as lm-eval's ``hf`` model
  computes them); under diffusion the mean of ``samples`` seeded draws of the masked-diffusion
  ELBO (:mod:`ar2diff.likelihood`), a lower bound in expectation; rolling scores cut a document
  into pieces of ``window`` tokens, each conditioned on the text before it.
* ``generate_until``: AR or diffusion decoding with our options, cut at the stop sequences.

lm-eval 0.4.13 finds no third-party models by itself (its registry holds only its own), so this
module registers ``ar2diff`` when imported: run ``ar2diff-lm-eval`` (or ``python -m
ar2diff.evaluation.lm_eval_model``), which is lm-eval's own command line with the model
registered, or import this module before calling ``lm_eval.simple_evaluate``.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import defaultdict
from typing import Any

import lm_eval.models  # noqa: F401  (lm-eval's own models first: it fills only an empty registry)
import torch
from lm_eval import utils as lm_utils
from lm_eval.api.model import TemplateLM
from lm_eval.api.registry import model_registry
from lm_eval.models.utils import resolve_max_length
from tqdm import tqdm

from ar2diff.decoding import MODES, DecodeOptions
from ar2diff.errors import Ar2DiffError
from ar2diff.generation import TextGenerator
from ar2diff.likelihood import (
    Bound,
    ar_log_likelihoods,
    diffusion_bounds,
    document_pairs,
    truncate_pair,
)
from ar2diff.stops import cut_at_stops

LM_EVAL_DEFAULT_DEVICE = "cuda:0"
DEFAULT_SAMPLES = 32  # Monte-Carlo draws of the diffusion bound per request
DEFAULT_AR_MAX_GEN_TOKS = 256  # as lm-eval's hf model
ARGS = ("pretrained", "mode", "samples", "seed", "batch_size", "max_batch_size", "device", "dtype",
        "max_length", "max_gen_toks", "window", "steps", "candidates", "temperature",
        "block_length")


def _int_arg(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str) or not str(value).isdigit() \
            or int(value) < low:
        raise Ar2DiffError(f"--model_args {name}={value}: use a whole number of at least {low}")
    return int(value)


def _opt_int(name: str, value: Any, low: int) -> int | None:
    return None if value is None else _int_arg(name, value, low)


def _opt_float(name: str, value: Any) -> float | None:
    try:
        return None if value is None else float(value)
    except (TypeError, ValueError):
        raise Ar2DiffError(f"--model_args {name}={value}: use a number") from None


class Ar2DiffLM(TemplateLM):
    """An ar2diff model (``pretrained``: a model folder, .gguf, hub id or alias) in lm-eval."""

    def __init__(self, pretrained: str | None = None, mode: str | None = None,
                 samples: int = DEFAULT_SAMPLES, seed: int = 0, batch_size: int | str = 8,
                 device: str | None = "auto", dtype: str | None = None, **options: Any):
        super().__init__()
        unknown = sorted(set(options) - set(ARGS))
        if unknown:
            raise Ar2DiffError(f"--model_args {unknown[0]}={options[unknown[0]]}: unknown argument; "
                               f"ar2diff takes {', '.join(ARGS)}")
        if not pretrained:
            raise Ar2DiffError("--model_args pretrained=…: name the model (a folder, .gguf, hub id "
                               "or smollm2-135m)")
        if mode is not None and mode not in MODES:
            raise Ar2DiffError(f"--model_args mode={mode}: choose ar or diffusion")
        self.samples = _int_arg("samples", samples, 2)
        self.seed = _int_arg("seed", seed, 0)
        self.batch = 8 if str(batch_size).startswith("auto") else _int_arg("batch_size", batch_size, 1)
        self._max_length = _opt_int("max_length", options.get("max_length"), 2)
        self._max_gen = _opt_int("max_gen_toks", options.get("max_gen_toks"), 1)
        window = _opt_int("window", options.get("window"), 1)
        decode = {"steps": _opt_int("steps", options.get("steps"), 1),
                  "candidates": _opt_int("candidates", options.get("candidates"), 1),
                  "block_length": _opt_int("block_length", options.get("block_length"), 0),
                  "temperature": _opt_float("temperature", options.get("temperature"))}
        self.gen = TextGenerator.load(str(pretrained), dtype, _device(device))  # arguments first
        self.spec, self.dtype = str(pretrained), dtype
        self.mode = self.gen.mode(DecodeOptions(mode=mode))
        self.window = window or self.gen.meta.target_length
        self.options = DecodeOptions(mode=self.mode, seed=self.seed, **decode)
        self.bounds: list[Bound] = []

    # ---- what lm-eval asks of a model -----------------------------------------------------

    @property
    def tokenizer(self):
        return self.gen.tokenizer

    @property
    def eot_token_id(self) -> int:
        return self.tokenizer.eos_token_id

    @property
    def prefix_token_id(self) -> int:
        bos = self.tokenizer.bos_token_id
        return self.tokenizer.eos_token_id if bos is None else bos

    @property
    def max_length(self) -> int:
        return self._max_length or resolve_max_length(self.gen.backbone.model.config,
                                                      self.tokenizer)

    @property
    def device(self):
        return self.gen.backbone.device

    @property
    def tokenizer_name(self) -> str:
        return str(self.tokenizer.name_or_path).replace("/", "__")

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return getattr(self.tokenizer, "chat_template", None) if chat_template else None

    def apply_chat_template(self, chat_history: list[dict[str, str]],
                            add_generation_prompt: bool = True) -> str:
        return self.tokenizer.apply_chat_template(chat_history, tokenize=False,
                                                  add_generation_prompt=add_generation_prompt)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs) -> list[int]:
        """As lm-eval's ``hf`` model: the tokenizer's own special tokens unless told, none when
        the text already starts with the prefix token."""
        flags = {} if add_special_tokens is None else {"add_special_tokens": add_special_tokens}
        if add_special_tokens is None and string.startswith(self.tokenizer.decode(self.prefix_token_id)):
            flags = {"add_special_tokens": False}
        return self.tokenizer.encode(string, **flags)

    def get_model_info(self) -> dict:
        """Stamped into lm-eval's results ``config``: the setup and the bounds' spread."""
        info = {"ar2diff": {"pretrained": self.spec, "mode": self.mode, "dtype": self.dtype,
                            "decoding": dataclasses.asdict(self.options)}}
        if self.mode == "diffusion":
            info["ar2diff"]["likelihood"] = {
                "estimator": "masked-diffusion ELBO, l of L tokens masked, l ~ U{1..L}",
                "samples": self.samples, "seed": self.seed, "window": self.window,
                "requests": len(self.bounds),
                "mean_variance": _mean([b.variance for b in self.bounds]),
                "mean_stderr": _mean([b.stderr for b in self.bounds]),
            }
        return info

    # ---- scoring ----------------------------------------------------------------------------

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False,
                              override_bs: int | None = None) -> list[tuple[float, bool]]:
        pairs = [truncate_pair(ctx, cont, self.max_length) for _, ctx, cont in requests]
        out: list[tuple[float, bool]] = []
        step = self.batch
        for lo in tqdm(range(0, len(pairs), step), desc=f"loglikelihood ({self.mode})",
                       disable=disable_tqdm):
            chunk = pairs[lo:lo + step]
            if self.mode == "ar":
                out += ar_log_likelihoods(self.gen.backbone, chunk, self._ar_layout(), self.batch)
            else:
                out += [(b.mean, False) for b in self._bounds(chunk)]
        for (key, _, _), res in zip(requests, out, strict=True):
            if key is not None:
                self.cache_hook.add_partial("loglikelihood", key, res)
        return out

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False) -> list[float]:
        out = []
        for (text,) in [r.args for r in requests]:
            tokens = self.tok_encode(text)
            if self.mode == "ar":
                windows = lm_utils.get_rolling_token_windows(
                    token_list=tokens, prefix_token=self.prefix_token_id,
                    max_seq_len=self.max_length, context_len=1)
                pairs = [lm_utils.make_disjoint_window(w) for w in windows]
                total = sum(s for s, _ in ar_log_likelihoods(
                    self.gen.backbone, pairs, self._ar_layout(), self.batch))
            else:
                pairs = document_pairs(tokens, self.prefix_token_id, self.window,
                                       max(1, self.max_length - self.window))
                total = sum(b.mean for b in self._bounds(pairs))
            self.cache_hook.add_partial("loglikelihood_rolling", (text,), total)
            out.append(total)
        return out

    def _bounds(self, pairs) -> list[Bound]:
        meta = self.gen.meta
        bounds = diffusion_bounds(self.gen.backbone, self.gen.noise, pairs, self.samples,
                                  self.seed, meta.shift, meta.diffusion_layout, self.batch)
        self.bounds += bounds
        return bounds

    def _ar_layout(self) -> str:
        return self.gen.ar_config(self.options).layout

    # ---- generation ------------------------------------------------------------------------

    def generate_until(self, requests, disable_tqdm: bool = False) -> list[str]:
        out: list[str | None] = [None] * len(requests)
        groups: dict[str, list[int]] = defaultdict(list)
        for i, r in enumerate(requests):
            groups[json.dumps(r.args[1], sort_keys=True, default=str)].append(i)
        for idxs in groups.values():
            kwargs = dict(requests[idxs[0]].args[1])
            until = kwargs.pop("until", None) or []
            until = [until] if isinstance(until, str) else list(until)
            opts = self._generation_options(kwargs)
            room = max(1, self.max_length - opts.max_new_tokens)
            for lo in tqdm(range(0, len(idxs), self.batch), desc=f"generate_until ({self.mode})",
                           disable=disable_tqdm):
                chunk = idxs[lo:lo + self.batch]
                inputs = [self.tok_encode(requests[i].args[0])[-room:] for i in chunk]
                for i, row in zip(chunk, self.gen.generate_ids(inputs, opts, until), strict=True):
                    text = cut_at_stops(self.tokenizer.decode(row[0], skip_special_tokens=True),
                                        until)
                    self.cache_hook.add_partial("generate_until", requests[i].args, text)
                    out[i] = text
        return out

    def _generation_options(self, kwargs: dict) -> DecodeOptions:
        """The decoding of one group of requests: a task's ``max_gen_toks`` and (AR) sampling
        settings over the model arguments."""
        default = self._max_gen or (DEFAULT_AR_MAX_GEN_TOKS if self.mode == "ar"
                                    else self.gen.meta.target_length)
        opts = dataclasses.replace(self.options,
                                   max_new_tokens=int(kwargs.get("max_gen_toks") or default))
        if self.mode == "ar" and kwargs.get("do_sample") and float(kwargs.get("temperature", 1)):
            opts = dataclasses.replace(opts, strategy="sample",
                                       temperature=float(kwargs.get("temperature", 1.0)),
                                       top_p=float(kwargs.get("top_p") or 1.0))
        return opts


def _device(name: str | None) -> str:
    """lm-eval's default device ``cuda:0`` means "the accelerator if any" (as its ``hf`` model
    reads it); any other name must exist."""
    return "auto" if name is None or (name == LM_EVAL_DEFAULT_DEVICE and not torch.cuda.is_available()) \
        else name


def _mean(values: list[float]) -> float | None:
    return sum(values) / len(values) if values else None


def register() -> None:
    """Register ``ar2diff`` with lm-eval (by module path, so that running this file as a script
    and importing it agree on one class)."""
    if "ar2diff" not in model_registry:
        model_registry.register("ar2diff", target="ar2diff.evaluation.lm_eval_model:Ar2DiffLM")


register()


def main(argv: list[str] | None = None) -> None:
    """lm-eval's command line with the ``ar2diff`` model registered; our errors as one line."""
    from lm_eval.__main__ import cli_evaluate

    if argv is not None:
        sys.argv = [sys.argv[0], *argv]
    try:
        cli_evaluate()
    except Ar2DiffError as exc:
        sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
