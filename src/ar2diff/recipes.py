"""AR2Diff: turn a pretrained autoregressive LM into a diffusion model.

1. Start from any decoder-only causal LM (``--model``: HF folder, .gguf, hub id, smollm2-135m).
2. ``adapt``: switch its attention to the diffusion mask (targets bidirectional; the input
   causal by default, bidirectional as in the paper with ``objective.input_attention=prefix``) and
   continue pretraining N steps with the diffusion prefix-LM objective on text + code
   (AR2Diff_N). Defaults, measured in ``docs/ar2diff.md``: the "shift" (position i predicts
   token i+1, as the AR head was trained) and attention-mask annealing over the first K steps.
3. ``finetune``: train on an end task as a diffusion (or AR) model. Fine-tuning the AR
   checkpoint directly as diffusion is AR2Diff_0.

Both are ordinary runs of the one training loop, built from packaged YAML presets.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from ar2diff.config import RunConfig, load_config
from ar2diff.models.checkpoint import is_ar2diff_folder, load_meta
from ar2diff.training.assemble import run_training
from ar2diff.training.loop import TrainResult


def preset(name: str) -> Path:
    """Path of a packaged config preset (``ar2diff/configs/NAME.yaml``)."""
    return Path(str(resources.files("ar2diff") / "configs" / f"{name}.yaml"))


def adapt_config(model: str, steps: int, out: str, data: list[str] | None = None,
                 overrides: list[str] | None = None) -> RunConfig:
    """The AR2Diff adaptation run (step 2) as a config."""
    extra = [f"model.pretrained={model}", f"train.steps={steps}", f"train.out_dir={out}"]
    if data:
        extra.append("data.corpus=[" + ", ".join(repr(d) for d in data) + "]")
    return load_config(preset("adapt"), [*extra, *(overrides or [])])


def finetune_config(model: str, task: str, mode: str, out: str, steps: int | None = None,
                    overrides: list[str] | None = None) -> RunConfig:
    """Fine-tuning on an end task (step 3) as AR or diffusion."""
    extra = [f"model.pretrained={model}", f"data.task={task}", f"objective.kind={mode}",
             f"train.out_dir={out}"]
    meta = load_meta(model) if is_ar2diff_folder(model) else None
    if meta is not None and meta.mode == "diffusion":  # keep the layout it was adapted with
        extra.append(f"objective.shift={str(meta.shift).lower()}")
        causal_input = meta.layout == "diffusion-causal-input"
        extra.append(f"objective.input_attention={'causal' if causal_input else 'prefix'}")
        extra.append(f"objective.noise={meta.noise or 'uniform'}")
        if meta.block_size:
            extra += [f"objective.block_size={meta.block_size}", "objective.anneal_steps=0"]
    if steps is not None:
        extra.append(f"train.steps={steps}")
    return load_config(preset("finetune"), [*extra, *(overrides or [])])


def adapt(model: str, steps: int, out: str, data: list[str] | None = None,
          overrides: list[str] | None = None, resume: bool = False) -> TrainResult:
    """Run AR2Diff adaptation; resumable."""
    return run_training(adapt_config(model, steps, out, data, overrides), resume=resume)
