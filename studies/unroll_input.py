"""SUNDAE's unrolled second pass fed the argmax (ar2diff's default) or a sample (the original).

Trains L(1:2) diffusion on a toy task with each choice and several seeds at equal budget, then
reports held-out exact match (T = 10, tau = 0.2, N = 8) per seed and the mean. Writes JSON.

    python studies/unroll_input.py --task reverse --steps 600 --seeds 0 1 \
        --out studies/results/unroll_input.json
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

from transformers.utils import logging as hf_logging

from ar2diff.atomic import write_json_atomic
from ar2diff.decoding import DecodeOptions
from ar2diff.demo import toy_exact_match, train_toy


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--task", default="reverse", choices=["copy", "reverse", "sort"])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    p.add_argument("--eval", type=int, default=200, help="held-out examples")
    p.add_argument("--work", default="runs/unroll_input")
    p.add_argument("--out", default="studies/results/unroll_input.json")
    args = p.parse_args()
    hf_logging.disable_progress_bar()
    rows = []
    for how in ("argmax", "sample"):
        for seed in args.seeds:
            run = train_toy(args.task, args.steps, Path(args.work) / f"{how}-{seed}",
                            ["objective.unroll=2", f"objective.unroll_input={how}",
                             f"train.seed={seed}"])
            em, _ = toy_exact_match(run.gen, args.task, seed, args.eval,
                                    DecodeOptions(mode="diffusion", chat=False, max_new_tokens=12))
            rows.append({"unroll_input": how, "seed": seed, "exact_match": em,
                         "train_s": round(run.seconds, 1), "final_train_loss": run.final_loss})
            print(f"{how:7} seed {seed}: exact match {100 * em:5.1f} %", flush=True)
    means = {how: sum(r["exact_match"] for r in rows if r["unroll_input"] == how) / len(args.seeds)
             for how in ("argmax", "sample")}
    write_json_atomic(Path(args.out), {"task": args.task, "steps": args.steps, "eval": args.eval,
                                       "seeds": args.seeds, "machine": platform.platform(),
                                       "mean_exact_match": means, "runs": rows})
    print(json.dumps({"mean_exact_match": means, "runs": rows}, indent=1))


if __name__ == "__main__":
    main()
