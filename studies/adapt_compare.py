"""AR2Diff adaptation options, measured: shift vs no shift, mask annealing vs immediate switch,
bidirectional vs causal attention over the input, uniform (SUNDAE) vs absorbing-mask noise.

Each variant adapts the same pretrained model for the same steps on the same data, and reports
the held-out diffusion loss on books text (code fraction 0) before and after, the gradient
norm over the first steps after the attention switch, and diffusion samples for a few prompts.
Prints a table and writes JSON.

    python studies/adapt_compare.py --model smollm2-135m --steps 40 --out studies/results/adapt_compare.json
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

from transformers.utils import logging as hf_logging

from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DecodeOptions
from ar2diff.generation import TextGenerator
from ar2diff.recipes import adapt_config
from ar2diff.training.assemble import run_training

sys.path.insert(0, str(Path(__file__).resolve().parent))  # books_loss.py sits next to this script
from books_loss import books_loss  # noqa: E402

BIDI = "objective.input_attention=prefix"
SUNDAE = ["objective.noise=uniform", "objective.unroll=2"]  # the paper's noise
VARIANTS = {
    "shift, immediate switch": [*SUNDAE, "objective.shift=true", "objective.anneal_steps=0", BIDI],
    "no shift, immediate switch": [*SUNDAE, "objective.shift=false", "objective.anneal_steps=0",
                                   BIDI],
    "shift, annealed mask": [*SUNDAE, "objective.shift=true", "objective.anneal_steps={anneal}",
                             BIDI],
    "shift, annealed mask, causal input": [*SUNDAE, "objective.shift=true",
                                           "objective.anneal_steps={anneal}",
                                           "objective.input_attention=causal"],
    "masked noise, shift, annealed mask, causal input": ["objective.noise=mask",
                                                         "objective.unroll=1",
                                                         "objective.shift=true",
                                                         "objective.anneal_steps={anneal}",
                                                         "objective.input_attention=causal"],
}
PROMPTS = ["It was a dark and stormy night, and the old house", "The capital of France is",
           "She opened the door and"]


def samples(model_dir: Path) -> list[str]:
    """Diffusion samples (T = 10, N = 8, tau = 0.2, 12 tokens) for :data:`PROMPTS`."""
    gen = TextGenerator.load(str(model_dir))
    opts = DecodeOptions(mode="diffusion", chat=False, max_new_tokens=12)
    return [row[0] for row in gen.generate(PROMPTS, opts)]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="smollm2-135m")
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--anneal", type=int, default=20, help="annealing steps K")
    p.add_argument("--eval", type=int, default=32, help="held-out segments")
    p.add_argument("--work", default="runs/adapt_compare")
    p.add_argument("--out", default="studies/results/adapt_compare.json")
    p.add_argument("--only", type=int, nargs="+", help="run only these variants (0-based)")
    p.add_argument("overrides", nargs="*", help="extra config overrides for every variant")
    args = p.parse_args()
    hf_logging.disable_progress_bar()
    rows = []
    for i, (name, extra) in enumerate(VARIANTS.items()):
        if args.only is not None and i not in args.only:
            continue
        extra = [e.format(anneal=args.anneal) for e in extra]
        out = Path(args.work) / f"v{i}"
        cfg = adapt_config(args.model, args.steps, str(out),
                           overrides=[*extra, "train.eval_every=0", "train.save_every=0",
                                      "train.progress=false", *args.overrides])
        before = books_loss(args.model, cfg, args.eval)
        start = time.perf_counter()
        result = run_training(cfg)
        train_s = time.perf_counter() - start
        after = books_loss(str(result.model_dir), cfg, args.eval)
        norms = [h["grad_norm"] for h in result.history]
        texts = samples(result.model_dir)
        rows.append({"variant": name, "overrides": extra, "samples": dict(zip(PROMPTS, texts, strict=True)),
                     "books_loss_before": before,
                     "books_loss_after": after, "grad_norm_first10": norms[:10],
                     "grad_norm_max": max(norms), "train_loss": [h["loss"] for h in result.history],
                     "train_s": round(train_s, 1),
                     "tokens_per_s": sum(h["tokens"] for h in result.history) / train_s})
        print(f"{name:28} books loss {before:.3f} → {after:.3f}   max grad norm "
              f"{max(norms):.2f}   {train_s:.0f} s", flush=True)
        for prompt, text in zip(PROMPTS, texts, strict=True):
            print(f"    {prompt!r} → {text!r}", flush=True)
    write_json_atomic(Path(args.out), {"model": args.model, "steps": args.steps,
                                       "anneal_steps": args.anneal, "eval_segments": args.eval,
                                       "machine": platform.platform(), "results": rows})
    print(json.dumps([{k: v for k, v in r.items() if k != "train_loss"} for r in rows], indent=1))


if __name__ == "__main__":
    main()
