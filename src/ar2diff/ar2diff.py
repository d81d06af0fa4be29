"""AR2Diff: turn a pretrained autoregressive LM into a diffusion model.

1. Start from any decoder-only causal LM (``--model``: HF folder, .gguf, hub id, smollm2-135m).
2. ``adapt``: switch its attention to the diffusion mask (targets bidirectional; the input
   causal by default, bidirectional as in the paper with ``objective.attention=prefix``) and
   continue pretraining N steps with the diffusion prefix-LM objective on text + code
   (AR2Diff_N). Defaults, measured in ``docs/ar2diff.md``: the "shift" (position i predicts
   token i+1, as the AR head was trained) and attention-mask annealing over the first K steps.
3. ``finetune``: train on an end task as a diffusion (or AR) model. Fine-tuning the AR
   checkpoint directly as diffusion is AR2Diff_0.

Both are ordinary runs of the one training loop, built from packaged YAML presets.
"""

from __future__ import annotations

import time
from importlib import resources
from pathlib import Path

from ar2diff.config import RunConfig, load_config
from ar2diff.generation import DecodeOptions, TextGenerator
from ar2diff.models.checkpoint import is_ar2diff_folder, load_meta
from ar2diff.runs import run_training
from ar2diff.train import TrainResult


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
    if is_ar2diff_folder(model) and load_meta(Path(model)).get("kind") == "diffusion":
        meta = load_meta(Path(model))  # keep the layout the model was adapted with
        extra.append(f"objective.shift={str(bool(meta.get('shift'))).lower()}")
        causal_input = meta.get("attention") == "diffusion-causal-input"
        extra.append(f"objective.attention={'causal' if causal_input else 'prefix'}")
        extra.append(f"objective.noise={meta.get('noise') or 'uniform'}")
    if steps:
        extra.append(f"train.steps={steps}")
    return load_config(preset("finetune"), [*extra, *(overrides or [])])


def adapt(model: str, steps: int, out: str, data: list[str] | None = None,
          overrides: list[str] | None = None, resume: bool = False) -> TrainResult:
    """Run AR2Diff adaptation; resumable."""
    return run_training(adapt_config(model, steps, out, data, overrides), resume=resume)


DEMO_PROMPT = "The capital of France is"
DEMO_STEPS = 60


def adapt_demo(out: str, steps: int | None = None, model: str = "smollm2-135m") -> None:
    """Load SmolLM2-135M, adapt it briefly, and answer one prompt by AR and by diffusion."""
    steps = steps or DEMO_STEPS
    print(f"loading {model} and adapting it to diffusion for {steps} steps "
          "(AR2Diff step 2, masked-diffusion prefix LM on books + code) …")
    result = adapt(model, steps, str(Path(out) / "adapted"),
                   overrides=["train.eval_every=0", "train.save_every=0",
                              "data.segment_length=64", f"objective.anneal_steps={steps // 3}"])
    base = TextGenerator.load(model)
    adapted = TextGenerator.load(str(result.model_dir))
    for name, gen, opts in (  # plain completion: the adaptation text is plain prose
        ("AR (original model, greedy)", base,
         DecodeOptions(mode="ar", max_new_tokens=12, chat=False)),
        ("diffusion (adapted; T=12, N=8, blocks of 4: the adapted model's defaults)", adapted,
         DecodeOptions(mode="diffusion", max_new_tokens=12, chat=False)),
    ):
        start = time.perf_counter()
        text = gen.generate([DEMO_PROMPT], opts)[0][0]
        print(f"\n{name} — {time.perf_counter() - start:.1f} s\n  {DEMO_PROMPT}…{text}")
    print(f"\nadapted checkpoint saved to {result.model_dir}")
