"""The Python API: the functions the command line calls, for use from Python.

``load`` gives a :class:`Model`; ``adapt``, ``finetune`` and ``evaluate`` run what ``ar2diff
adapt``, ``ar2diff finetune`` and ``ar2diff evaluate`` run (``docs/api.md`` has examples).
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import torch

from ar2diff.decoding import DecodeOptions
from ar2diff.errors import Ar2DiffError
from ar2diff.evaluation.run import evaluate_model
from ar2diff.generation import TextGenerator
from ar2diff.recipes import adapt as _adapt
from ar2diff.recipes import finetune as _finetune
from ar2diff.training.loop import TrainResult

_DECODING = {f.name for f in dataclasses.fields(DecodeOptions)}


def decode_options(mode: str | None = None, **decoding) -> DecodeOptions:
    """:class:`DecodeOptions` from keyword arguments (the names of ``ar2diff generate``'s
    options: ``steps``, ``candidates``, ``completions``, ``temperature``, ``max_new_tokens``,
    ``seed``, ``chat``, …); an unknown name is refused."""
    unknown = sorted(set(decoding) - _DECODING)
    if unknown:
        raise Ar2DiffError(f"unknown decoding option {unknown[0]!r}; known: "
                           f"{', '.join(sorted(_DECODING - {'mode'}))}")
    return DecodeOptions(mode=mode, **decoding)


class Model:
    """A loaded model ready to decode; ``generator`` is the underlying :class:`TextGenerator`."""

    def __init__(self, generator: TextGenerator):
        self.generator = generator

    @property
    def meta(self):
        """The model's :class:`~ar2diff.models.meta.ModelMeta` (mode, noise, prompt format…)."""
        return self.generator.meta

    def generate(self, prompts: str | Sequence[str], mode: str | None = None,
                 **decoding) -> str | list[str] | list[list[str]]:
        """Complete ``prompts`` as ``ar2diff generate`` does (same options, same seeds, same
        text). One prompt gives a string, a list of prompts a list; with ``completions=n > 1``
        each prompt gives a list of n strings."""
        single = isinstance(prompts, str)
        opts = decode_options(mode, **decoding)
        outs = self.generator.generate([prompts] if single else list(prompts), opts)
        rows = [row if opts.completions > 1 else row[0] for row in outs]
        return rows[0] if single else rows


def load(model: str | os.PathLike, device: str | torch.device = "auto",
         dtype: str | torch.dtype | None = None) -> Model:
    """Load ``model`` (an ar2diff model folder, a Hugging Face folder, a ``.gguf`` file, a hub
    id or ``smollm2-135m``) onto ``device`` (``auto``: the GPU when there is one) in ``dtype``
    (``float32`` / ``bfloat16``; default: an ar2diff folder's own, else float32)."""
    return Model(TextGenerator.load(os.fspath(model), dtype, device))


def adapt(model: str, out: str | os.PathLike, steps: int = 200,
          data: Sequence[str] | None = None, overrides: Sequence[str] = (), *,
          recipe: str = "ar2diff", resume: bool = False, overwrite: bool = False,
          force: bool = False) -> TrainResult:
    """AR2Diff step 2 (``ar2diff adapt``): adapt AR ``model`` to diffusion on text files,
    folders or JSONL files ``data`` (default: books + Python stdlib); the model is saved in
    ``out/model``; ``recipe="paper"`` adapts with the paper's SUNDAE recipe."""
    return _adapt(model, steps, os.fspath(out), list(data) if data else None, list(overrides),
                  resume=resume, overwrite=overwrite, force=force, recipe=recipe)


def finetune(model: str, out: str | os.PathLike, *, task: str | None = None,
             data: str | os.PathLike | None = None, mode: str = "diffusion",
             steps: int | None = None, recipe: str = "ar2diff", overrides: Sequence[str] = (),
             resume: bool = False, overwrite: bool = False, force: bool = False) -> TrainResult:
    """AR2Diff step 3 (``ar2diff finetune``): fine-tune on a named ``task`` or your own JSONL
    file ``data`` as ``mode`` (diffusion or ar); the model is saved in ``out/model``."""
    return _finetune(model, os.fspath(out), task, None if data is None else os.fspath(data),
                     mode, steps, list(overrides), recipe, resume=resume, overwrite=overwrite,
                     force=force)


def evaluate(model: str | os.PathLike | Model, *, task: str | None = None,
             data: str | os.PathLike | None = None, out: str | os.PathLike | None = None,
             split: str = "test", limit: int | None = None, ks: Sequence[int] = (1,),
             metric: str | None = None, batch_size: int = 8, device: str = "auto",
             dtype: str | None = None, progress: bool = False, mode: str | None = None,
             **decoding) -> dict:
    """``ar2diff evaluate``: decode a named ``task`` or your own JSONL ``data`` with ``model``,
    score it (``metric`` for your own data) and return the results (also written to ``out``)."""
    spec = model.generator if isinstance(model, Model) else os.fspath(model)
    return evaluate_model(spec, task, decode_options(mode, **decoding), split=split,
                          data=None if data is None else os.fspath(data), limit=limit, ks=ks,
                          batch_size=batch_size, dtype=dtype, device=device, out=out,
                          progress=progress, metric=metric)
