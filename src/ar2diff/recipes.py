"""AR2Diff: turn a pretrained autoregressive LM into a diffusion model.

1. Start from any decoder-only causal LM (``--model``: HF folder, .gguf, hub id, smollm2-135m).
2. ``adapt``: switch its attention to the diffusion mask (targets bidirectional; the input
   causal by default, bidirectional as in the paper with ``objective.input_attention=prefix``) and
   continue pretraining N steps with the diffusion prefix-LM objective on text + code
   (AR2Diff_N). Defaults, measured in ``docs/ar2diff.md``: the "shift" (position i predicts
   token i+1, as the AR head was trained) and attention-mask annealing over the first K steps.
3. ``finetune``: train on an end task (a named one or your own JSONL file) as a diffusion
   (or AR) model. Fine-tuning the AR checkpoint directly as diffusion is AR2Diff_0.

Both are ordinary runs of the one training loop, built from packaged YAML presets.

Which recipe each default belongs to: fine-tuning an adapted model inherits what it was adapted
with (noise, layout, shift, decoding defaults but the length). AR2Diff_0 (fine-tuning an AR
model as diffusion) takes the default ``adapt`` recipe's noise, layout and decoding
(absorbing-mask noise, T = 32 in blocks of 4), so that AR2Diff_0 and
AR2Diff_N differ only in the adaptation; ``recipe="paper"`` (``--recipe paper``, for ``adapt``
too) gives the paper's: SUNDAE uniform noise with L(1:2), the input attended bidirectionally,
no shift, no attention annealing, T = 10.
"""

from __future__ import annotations

import dataclasses
from importlib import resources
from pathlib import Path

from ar2diff.config import RunConfig, load_config
from ar2diff.errors import Ar2DiffError
from ar2diff.models.checkpoint import is_ar2diff_folder, load_meta
from ar2diff.models.meta import ModelMeta
from ar2diff.training.assemble import run_training
from ar2diff.training.loop import TrainResult


def preset(name: str) -> Path:
    """Path of a packaged config preset (``ar2diff/configs/NAME.yaml``)."""
    return Path(str(resources.files("ar2diff") / "configs" / f"{name}.yaml"))


RECIPES = ("ar2diff", "paper")

# The paper's adaptation recipe (Han et al., 2024): SUNDAE uniform noise with L(1:2), the input
# attended bidirectionally, no shift, no attention annealing, and its decoding (T = 10, N = 8).
PAPER_ADAPT = ["objective.noise=uniform", "objective.unroll=2", "objective.input_attention=prefix",
               "objective.shift=false", "objective.anneal_steps=0", "sample.steps=10",
               "sample.block_length=0", "sample.candidates=8", "sample.temperature=0.2"]


def adapt_config(model: str, steps: int, out: str, data: list[str] | None = None,
                 overrides: list[str] | None = None, recipe: str = "ar2diff") -> RunConfig:
    """The AR2Diff adaptation run (step 2) as a config: the ``adapt`` preset (recipe
    ``ar2diff``, measured in ``docs/ar2diff.md``) or the paper's recipe (``paper``)."""
    if recipe not in RECIPES:
        raise Ar2DiffError(f"--recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    extra = [f"model.pretrained={model}", f"train.steps={steps}", f"train.out_dir={out}"]
    if recipe == "paper":
        extra += PAPER_ADAPT
    if data:
        extra.append("data.corpus=[" + ", ".join(repr(d) for d in data) + "]")
    return load_config(preset("adapt"), [*extra, *(overrides or [])])

INHERITED_DECODING = ("steps", "temperature", "candidates", "repetition_penalty", "block_length",
                      "threshold", "factor", "confidence", "eos_stop", "eos_penalty", "order")


def finetune_config(model: str, task: str | None, mode: str, out: str, steps: int | None = None,
                    overrides: list[str] | None = None, *, data: str | None = None,
                    recipe: str = "ar2diff") -> RunConfig:
    """Fine-tuning on an end task (step 3) as AR or diffusion.

    ``task`` names a task (``data`` then is a local copy of it), or is None with ``data`` your
    own JSONL file. Defaults by recipe: see the module docstring.
    """
    if recipe not in RECIPES:
        raise Ar2DiffError(f"--recipe {recipe!r}: choose one of {', '.join(RECIPES)}")
    if task is None and data is None:
        raise Ar2DiffError("finetune needs a task: --task NAME or --data FILE.jsonl (your own)")
    extra = [f"model.pretrained={model}", f"data.task={task or 'jsonl'}",
             f"objective.kind={mode}", f"train.out_dir={out}"]
    if data is not None:
        extra.append(f"data.task_path={data}")
    meta = load_meta(model) if is_ar2diff_folder(model) else None
    if mode == "diffusion" and meta is not None and meta.mode == "diffusion":
        extra += _inherited(meta)  # keep what it was adapted with
    elif mode == "diffusion" and recipe == "ar2diff":  # AR2Diff_0 under the adapt recipe
        extra += _adapt_recipe()
    elif mode == "diffusion":  # AR2Diff_0 under the paper's recipe
        extra += [o for o in PAPER_ADAPT if o != "objective.anneal_steps=0"]
    if steps is not None:
        extra.append(f"train.steps={steps}")
    return load_config(preset("finetune"), [*extra, *(overrides or [])])


def _inherited(meta: ModelMeta) -> list[str]:
    """Overrides that keep an adapted model's noise, layout, shift and decoding defaults."""
    causal_input = meta.layout == "diffusion-causal-input"
    noise = meta.noise or "uniform"
    extra = [f"objective.shift={str(meta.shift).lower()}",
             f"objective.input_attention={'causal' if causal_input else 'prefix'}",
             f"objective.noise={noise}"]
    if noise == "mask":
        extra.append("objective.unroll=1")
    if meta.block_size:
        extra += [f"objective.block_size={meta.block_size}", "objective.anneal_steps=0"]
    decoding = dataclasses.asdict(meta.decoding)
    return extra + [f"sample.{k}={decoding[k]}" for k in INHERITED_DECODING]


def _adapt_recipe() -> list[str]:
    """Overrides that give fine-tuning the ``adapt`` preset's noise, layout and decoding."""
    cfg = load_config(preset("adapt"))
    o = cfg.objective
    extra = [f"objective.noise={o.noise}", f"objective.unroll={o.unroll}",
             f"objective.shift={str(o.shift).lower()}",
             f"objective.input_attention={o.input_attention}"]
    decoding = dataclasses.asdict(cfg.sample)
    return extra + [f"sample.{k}={decoding[k]}" for k in INHERITED_DECODING]


def adapt(model: str, steps: int, out: str, data: list[str] | None = None,
          overrides: list[str] | None = None, resume: bool = False, overwrite: bool = False,
          force: bool = False, recipe: str = "ar2diff") -> TrainResult:
    """Run AR2Diff adaptation (resumable; see :func:`run_training` for the run folder)."""
    return run_training(adapt_config(model, steps, out, data, overrides, recipe), resume=resume,
                        overwrite=overwrite, force=force)


def finetune(model: str, out: str, task: str | None = None, data: str | None = None,
             mode: str = "diffusion", steps: int | None = None,
             overrides: list[str] | None = None, recipe: str = "ar2diff", resume: bool = False,
             overwrite: bool = False, force: bool = False) -> TrainResult:
    """Run fine-tuning (step 3) on a named task or your own JSONL ``data``."""
    config = finetune_config(model, task, mode, out, steps, overrides, data=data, recipe=recipe)
    return run_training(config, resume=resume, overwrite=overwrite, force=force)
