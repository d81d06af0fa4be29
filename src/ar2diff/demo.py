"""``ar2diff demo``: the project's main job, end to end, in a few minutes on a CPU."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from ar2diff.config import RunConfig, load_config
from ar2diff.data.sources import HELD_OUT
from ar2diff.data.toy import toy_pair
from ar2diff.decoding import DEFAULT_CANDIDATES, DEFAULT_STEPS, DEFAULT_TEMPERATURE, DecodeOptions
from ar2diff.errors import Ar2DiffError
from ar2diff.generation import TextGenerator
from ar2diff.recipes import adapt
from ar2diff.training.assemble import run_training

TOY_OVERRIDES = [
    "data.source=toy", "data.toy_task=copy", "data.toy_min_len=3", "data.toy_max_len=10",
    "data.target_length=12", "tokenizer.kind=toy", "model.arch=llama", "model.size=tiny",
    "objective.kind=diffusion", "objective.unroll=2", "train.batch_size=32",
    "optim.lr=3e-3", "optim.warmup_steps=30", "train.eval_every=0", "sample.max_new_tokens=12",
]


def toy_exact_match(gen: TextGenerator, task: str, seed: int, n: int, opts: DecodeOptions,
                    min_len: int = 3, max_len: int = 10) -> tuple[float, list[tuple[str, str, str]]]:
    """Exact match on ``n`` held-out toy examples, and the (input, reference, output) triples."""
    pairs = [toy_pair(task, HELD_OUT + i, seed, min_len, max_len) for i in range(n)]
    outs = gen.generate([p[0] for p in pairs], opts)
    rows = [(src, ref, out[0].strip()) for (src, ref), out in zip(pairs, outs, strict=True)]
    return sum(ref == out for _, ref, out in rows) / n, rows


@dataclass
class ToyRun:
    """A trained toy-task model: its generator and config, training seconds and final loss."""

    gen: TextGenerator
    config: RunConfig
    seconds: float
    final_loss: float


def train_toy(task: str, steps: int, out_dir: str | Path, extra: Sequence[str] = ()) -> ToyRun:
    """Train a tiny model on toy ``task`` (:data:`TOY_OVERRIDES` with ``extra`` on top), timed;
    resumes a run already in ``out_dir``."""
    config = load_config(None, [*TOY_OVERRIDES, *extra, f"data.toy_task={task}",
                                f"train.steps={steps}", "train.progress=false",
                                f"train.out_dir={out_dir}"])
    start = time.perf_counter()
    result = run_training(config)
    return ToyRun(TextGenerator.load(str(result.model_dir)), config, time.perf_counter() - start,
                  result.history[-1]["loss"])


def toy_demo(out: str, steps: int | None = None, n_eval: int = 200) -> float:
    """Train a tiny diffusion model to copy digit strings, sample it, print exact match."""
    start = time.perf_counter()
    config = load_config(None, [*TOY_OVERRIDES, f"train.steps={800 if steps is None else steps}",
                                f"train.out_dir={Path(out) / 'toy'}"])
    result = run_training(config, overwrite=True)  # a demo starts afresh each time
    trained = time.perf_counter()
    gen = TextGenerator.load(str(result.model_dir))
    em, rows = toy_exact_match(gen, config.data.toy_task, config.train.seed, n_eval,
                               DecodeOptions(mode="diffusion", chat=False))
    for src, ref, hyp in rows[:3]:
        print(f"  {src!r:40} → {hyp!r}   (reference {ref!r})")
    print(f"diffusion (T={DEFAULT_STEPS}, N={DEFAULT_CANDIDATES}, tau={DEFAULT_TEMPERATURE}) "
          f"exact match on {n_eval} held-out examples: "
          f"{100 * em:.1f} %")
    print(f"trained in {trained - start:.0f} s, sampled in {time.perf_counter() - trained:.0f} s; "
          f"model saved to {result.model_dir}")
    return em


DEMO_PROMPT = "The capital of France is"
DEMO_STEPS = 60


def ar2diff_demo(out: str, steps: int | None = None, model: str = "smollm2-135m") -> None:
    """Load SmolLM2-135M, adapt it briefly, and answer one prompt by AR and by diffusion."""
    steps = DEMO_STEPS if steps is None else steps
    if steps < 1:
        raise Ar2DiffError(f"--steps {steps}: must be at least 1")
    print(f"loading {model} and adapting it to diffusion for {steps} steps "
          "(AR2Diff step 2, masked-diffusion prefix LM on books + code) …")
    result = adapt(model, steps, str(Path(out) / "adapted"),
                   overrides=["train.eval_every=0", "train.save_every=0",
                              "data.segment_length=64", f"objective.anneal_steps={steps // 3}"],
                   overwrite=True)
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
