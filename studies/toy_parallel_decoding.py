"""Parallel decoding on a toy task: exact match against tokens per forward pass and time.

Trains, on the same toy task, steps and batch, a masked-diffusion model, two block-diffusion
models (blocks of 4; masking rates from U(0, 1) and from BD3-LM's clipped U(0.3, 0.8)) and an
AR prefix LM, then decodes the same held-out examples with AR greedy, the
masked schedule (one token per step; blocks of 4), confidence thresholds and block diffusion.
Each point: exact match, seconds, and answer tokens per target forward pass. Writes JSON.

    python studies/toy_parallel_decoding.py --task reverse --steps 600 \
        --out studies/results/toy_parallel_decoding.json
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

from quality_latency import Counter
from transformers.utils import logging as hf_logging

from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DecodeOptions
from ar2diff.demo import toy_exact_match, train_toy

MODELS = {
    "masked": ["objective.noise=mask", "objective.unroll=1"],
    "block": ["objective.noise=mask", "objective.unroll=1", "objective.block_size=4"],
    "block-clipped": ["objective.noise=mask", "objective.unroll=1", "objective.block_size=4",
                      "objective.mask_rate_min=0.3", "objective.mask_rate_max=0.8"],
    "ar": ["objective.kind=ar", "objective.input_attention=prefix"],
}
LENGTH = 12
METHODS = [  # (model, name, decoding fields)
    ("ar", "AR greedy", {}),
    ("masked", "masked, 1 token/step", {"steps": LENGTH}),
    ("masked", "masked, blocks of 4, 1 token/step", {"steps": LENGTH, "block_length": 4}),
    ("masked", "masked, T = 4", {"steps": 4}),
    ("masked", "threshold 0.9", {"threshold": 0.9}),
    ("masked", "threshold 0.7", {"threshold": 0.7}),
    ("masked", "threshold 0.5", {"threshold": 0.5}),
    ("masked", "threshold 0.9, blocks of 4", {"threshold": 0.9, "block_length": 4}),
    ("block", "block diffusion, 1 token/step", {"steps": LENGTH}),
    ("block", "block diffusion, threshold 0.9", {"threshold": 0.9}),
    ("block", "block diffusion, threshold 0.7", {"threshold": 0.7}),
    ("block-clipped", "block diffusion, rates in [0.3, 0.8], 1 token/step", {"steps": LENGTH}),
    ("block-clipped", "block diffusion, rates in [0.3, 0.8], threshold 0.9", {"threshold": 0.9}),
    ("block-clipped", "block diffusion, rates in [0.3, 0.8], threshold 0.7", {"threshold": 0.7}),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="reverse", choices=["copy", "reverse", "sort"])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval", type=int, default=200, help="held-out examples")
    p.add_argument("--candidates", type=int, default=1)
    p.add_argument("--work", default="runs/toy_parallel_decoding")
    p.add_argument("--out", default="studies/results/toy_parallel_decoding.json")
    args = p.parse_args()
    hf_logging.disable_progress_bar()
    gens, train = {}, {}
    for name, extra in MODELS.items():
        run = train_toy(args.task, args.steps, Path(args.work) / name, extra)
        train[name] = {"seconds": round(run.seconds, 1), "final_train_loss": run.final_loss}
        gens[name] = run.gen
    counters = {k: Counter(g) for k, g in gens.items() if k != "ar"}
    rows = []
    for model, name, fields in METHODS:
        mode = "ar" if model == "ar" else "diffusion"
        opts = DecodeOptions(mode=mode, chat=False, max_new_tokens=LENGTH,
                             candidates=args.candidates, **fields)
        counter = counters.get(model)
        if counter:
            counter.reset()
        start = time.perf_counter()
        em, _ = toy_exact_match(gens[model], args.task, 0, args.eval, opts)
        seconds = time.perf_counter() - start
        rows.append({"method": name, "model": model, "exact_match": em, "num_examples": args.eval,
                     "seconds": round(seconds, 2), "decoding": fields,
                     "tokens_per_forward": 1.0 if counter is None
                     else round(counter.tokens / max(counter.passes, 1), 3)})
        print(f"{name:36} exact match {100 * em:5.1f} %  {rows[-1]['tokens_per_forward']:5.2f} "
              f"tokens/pass  {seconds:6.1f} s", flush=True)
    write_json_atomic(Path(args.out), {"task": args.task, "train_steps": args.steps,
                                       "candidates": args.candidates, "eval": args.eval,
                                       "machine": platform.platform(), "training": train,
                                       "points": rows})
    print(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
